"""HTML for the notebook panel: the models table, inference outputs and the message line.

Pure functions of plain data (no widgets, no I/O), so they test without a kernel. Every value that
came from the mesh or the user is escaped. Rows and cells carry ``data-*`` attributes and classes
so a browser test can find them.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

STATE_COLORS = {
    "LOADED": "#1a7f37",
    "LOADING": "#9a6700",
    "QUEUED": "#9a6700",
    "NOT_LOADED": "#57606a",
    "UNLOADING": "#57606a",
    "LOADING_FAILED": "#cf222e",
}
_CELL = "padding:2px 10px;text-align:left;border-bottom:1px solid #d0d7de"


def human_bytes(n: int) -> str:
    if n <= 0:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - the loop always returns


def ago(epoch_ms: int, now_s: float | None = None) -> str:
    if epoch_ms <= 0:
        return "-"
    seconds = (time.time() if now_s is None else now_s) - epoch_ms / 1000
    if seconds < 1:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def models_table(models: Sequence[Mapping[str, Any]], now_s: float | None = None) -> str:
    if not models:
        return '<div class="kserve-mesh-models kserve-mesh-empty">No models registered yet.</div>'
    head = "".join(f'<th style="{_CELL}">{h}</th>' for h in
                   ("Model", "Type", "State", "Size", "Copies", "Last use", "Error"))
    rows = []
    for m in sorted(models, key=lambda m: str(m.get("modelId", ""))):
        model_id = str(m.get("modelId", ""))
        state = str(m.get("status", ""))
        errors = list(dict.fromkeys(str(e) for e in m.get("errors") or []))
        color = STATE_COLORS.get(state, "#57606a")
        cells = [
            html.escape(model_id),
            html.escape(str((m.get("modelInfo") or {}).get("type", ""))),
            f'<span class="kserve-mesh-state" style="color:{color};font-weight:600">{html.escape(state)}</span>',
            human_bytes(int(m.get("sizeBytes") or 0)),
            str(int(m.get("copies") or 0)),
            ago(int(m.get("lastUsedTime") or 0), now_s),
            html.escape("; ".join(errors)[:200]),
        ]
        tds = "".join(f'<td style="{_CELL}">{c}</td>' for c in cells)
        rows.append(f'<tr class="kserve-mesh-model" data-model-id="{html.escape(model_id, quote=True)}" '
                    f'data-state="{html.escape(state, quote=True)}">{tds}</tr>')
    return (f'<table class="kserve-mesh-models" style="border-collapse:collapse">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def summary(status: Mapping[str, Any] | None, count: int) -> str:
    if not status:
        return f"{count} models"
    used, capacity = int(status.get("usedBytes") or 0), int(status.get("capacityBytes") or 0)
    return (f"{count} models, {int(status.get('modelsLoaded') or 0)} loaded, "
            f"{human_bytes(used)} of {human_bytes(capacity)} used")


def _values(arr: np.ndarray) -> str:
    return np.array2string(arr, threshold=60, edgeitems=4, max_line_width=100, precision=6)


def outputs(outputs: Mapping[str, np.ndarray], latency_ms: float, model: str) -> str:
    rows = "".join(
        f'<tr class="kserve-mesh-output" data-output="{html.escape(name, quote=True)}">'
        f'<td style="{_CELL}"><b>{html.escape(name)}</b></td>'
        f'<td style="{_CELL}">{html.escape(str(arr.dtype))} {list(arr.shape)}</td>'
        f'<td style="{_CELL}"><pre style="margin:0">{html.escape(_values(arr))}</pre></td></tr>'
        for name, arr in outputs.items()
    )
    return (f'<div class="kserve-mesh-result"><div class="kserve-mesh-latency">{html.escape(model)}: '
            f"answered in <b>{latency_ms:.1f} ms</b></div>"
            f'<table style="border-collapse:collapse">{rows}</table></div>')


def message(text: str, kind: str = "info") -> str:
    if not text:
        return ""
    color = {"error": "#cf222e", "ok": "#1a7f37"}.get(kind, "#57606a")
    mark = {"error": "✖ ", "ok": "✔ "}.get(kind, "")
    return f'<div class="kserve-mesh-{kind}" style="color:{color}">{mark}{html.escape(text, quote=False)}</div>'
