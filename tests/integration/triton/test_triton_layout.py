"""The Triton repository layout (``runtime.triton.layout``), without a Triton: config.pbtxt rewriting
at the top level only, model types, names, backend plans and the folders laid out."""

from __future__ import annotations

from pathlib import Path

import pytest

from kserve_mesh.core.errors import ModelLoadFailed
from kserve_mesh.runtime.triton import layout

CONFIG = """# a comment with name: "not-this"
name: "upstream-name"   # trailing comment
platform: 'onnxruntime_onnx'
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
output { name: "y}" data_type: TYPE_FP32 dims: [ 3 ] }
parameters { key: "backend" value: { string_value: "keep-me" } }
"""


def test_rewrite_changes_the_top_level_name_and_backend_only() -> None:
    out = layout.rewrite_config(CONFIG, "mesh-id", None)
    assert out.startswith('name: "mesh-id"\n') and "upstream-name" not in out
    assert "platform: 'onnxruntime_onnx'" in out and 'name: "x"' in out and 'name: "y}"' in out
    assert '# a comment with name: "not-this"' in out
    swapped = layout.rewrite_config(CONFIG, "mesh-id", "python")
    assert swapped.startswith('name: "mesh-id"\nbackend: "python"\n') and "onnxruntime_onnx" not in swapped
    assert 'string_value: "keep-me"' in swapped and "max_batch_size: 8" in swapped
    assert layout.config_backend(CONFIG) == "onnxruntime" and layout.config_backend('backend: "python"') == "python"
    assert layout.rewrite_config("", "m", "python") == 'name: "m"\nbackend: "python"\n'


def test_model_types_keys_and_names() -> None:
    assert layout.model_format("ONNX", "") == "onnx" and layout.model_format("triton-python", "") == "python"
    assert layout.model_format("keras", "") == "tensorflow" and layout.model_format("", "") == ""
    assert layout.model_format("rt:triton-2.x", '{"model_type": {"name": "onnx"}, "storage_key": "s3"}') == "onnx"
    assert layout.storage_key('{"model_type": {"name": "onnx"}, "storage_key": "s3"}') == "s3"
    with pytest.raises(ModelLoadFailed, match="unsupported model type 'caffe' for the Triton runtime"):
        layout.model_format("caffe", "")
    assert layout.triton_name("iris__isvc-1") == "iris__isvc-1"
    unsafe = layout.triton_name("team/iris v2")
    assert unsafe != layout.triton_name("team/iris v3") and "/" not in unsafe and " " not in unsafe


def test_plans_name_what_is_missing(tmp_path: Path) -> None:
    python_only = frozenset({"python"})
    assert layout.plan_backend("m", "onnx", tmp_path, python_only, True, "env") == layout.Plan("onnx", "python", True)
    assert layout.plan_backend("m", "onnx", tmp_path, frozenset({"onnxruntime"}), False, "env").backend == "onnxruntime"
    with pytest.raises(ModelLoadFailed, match="onnxruntime package.*not installed in env"):
        layout.plan_backend("m", "onnx", tmp_path, python_only, False, "env")
    with pytest.raises(ModelLoadFailed, match="model 'm' needs Triton's 'tensorflow' backend.*it has: python"):
        layout.plan_backend("m", "tensorflow", tmp_path, python_only, True, "env")
    (tmp_path / "config.pbtxt").write_text('platform: "pytorch_libtorch"\n')
    with pytest.raises(ModelLoadFailed, match="'pytorch' backend"):
        layout.plan_backend("m", "triton", tmp_path, python_only, True, "env")
    (tmp_path / "config.pbtxt").write_text("max_batch_size: 0\n")
    with pytest.raises(ModelLoadFailed, match="names no backend or platform"):
        layout.plan_backend("m", "triton", tmp_path, python_only, True, "env")


def test_lay_out_takes_the_largest_version_and_links_the_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for version in ("1", "3", "12"):
        (src / version).mkdir(parents=True)
        (src / version / "weights.onnx").write_bytes(version.encode())
    repo = tmp_path / "repo"
    plan = layout.plan_backend("m", layout.detect_format(src), src, frozenset({"python"}), True, "env")
    dest = layout.lay_out(src, "m", plan, repo)
    assert (dest / "12" / "model.onnx").read_bytes() == b"12" and (dest / "12" / "model.onnx").is_symlink()
    assert "onnxruntime" in (dest / "12" / "model.py").read_text()
    assert (dest / "config.pbtxt").read_text() == 'name: "m"\nbackend: "python"\n'
    again = layout.lay_out(src, "m", plan, repo)  # a second load replaces the folder
    assert sorted(p.name for p in again.iterdir()) == ["12", "config.pbtxt"]
    (tmp_path / "two").mkdir()
    for name in ("a.onnx", "b.pt"):
        (tmp_path / "two" / name).write_bytes(b"x")
    with pytest.raises(ModelLoadFailed, match="several: onnx, pytorch"):
        layout.detect_format(tmp_path / "two")


def test_a_missing_triton_or_a_numpy_2_backend_is_a_clear_start_error(triton_venv: Path, tmp_path: Path) -> None:
    import sys

    from kserve_mesh.core.errors import Unavailable
    from kserve_mesh.runtime.triton.config import find_triton, probe_python

    with pytest.raises(Unavailable, match=r"no Triton Inference Server found .*python -m kserve_mesh.runtime.triton.venv"):
        find_triton(venv=tmp_path / "no-venv")
    dist, python = find_triton(venv=triton_venv)
    env = probe_python(python, dist)
    assert env.numpy.startswith("1.") and env.onnxruntime
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:  # the project's own env: refused, with the reason
        with pytest.raises(Unavailable, match="answers empty output tensors with numpy 2"):
            probe_python(Path(sys.executable), dist)
