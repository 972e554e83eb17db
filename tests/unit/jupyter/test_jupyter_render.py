"""The panel's HTML: sizes and ages people read, escaping of everything that came from outside."""

from __future__ import annotations

import numpy as np

from kserve_mesh.jupyter_ext import render


def test_human_bytes_and_ago() -> None:
    assert [render.human_bytes(n) for n in (0, 512, 2048, 5 * 1024**2, 3 * 1024**3)] == \
        ["-", "512 B", "2.0 KiB", "5.0 MiB", "3.0 GiB"]
    now = 1_000_000.0
    assert render.ago(0, now) == "-"
    assert render.ago(int(now * 1000) + 5000, now) == "just now"
    assert render.ago(int((now - 12) * 1000), now) == "12 s ago"
    assert render.ago(int((now - 180) * 1000), now) == "3 min ago"
    assert render.ago(int((now - 7200) * 1000), now) == "2 h ago"


def test_models_table_escapes_and_marks_rows() -> None:
    table = render.models_table([
        {"modelId": "b<script>", "status": "LOADING_FAILED", "errors": ["bad <path>", "bad <path>"],
         "modelInfo": {"type": "sklearn"}, "sizeBytes": 0, "copies": 0, "lastUsedTime": 0},
        {"modelId": "a", "status": "LOADED", "errors": [], "sizeBytes": 2048, "copies": 1, "lastUsedTime": 0},
    ])
    assert "<script>" not in table and "b&lt;script&gt;" in table
    assert table.index('data-model-id="a"') < table.index('data-model-id="b&lt;script&gt;"')
    assert 'data-state="LOADED"' in table and "2.0 KiB" in table
    assert table.count("bad &lt;path&gt;") == 1
    assert "No models registered yet" in render.models_table([])


def test_outputs_and_message() -> None:
    out = render.outputs({"p": np.array([[0.5, 0.25]], dtype=np.float32)}, 3.14159, "m")
    assert 'data-output="p"' in out and "float32 [1, 2]" in out and "3.1 ms" in out
    assert render.message("") == ""
    assert render.message("x <y>", "error") == '<div class="kserve-mesh-error" style="color:#cf222e">✖ x &lt;y&gt;</div>'
