"""The checked-in ``pipelines/example_pipeline.yaml`` is exactly what the example compiles to, and
its steps run in the intended order."""

from __future__ import annotations

import builtins
import difflib
import symtable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kserve_mesh_pipelines import deploy_inference_service, example_pipeline, register_model, smoke_test
from kserve_mesh_pipelines.example_components import train_iris_model, upload_to_s3


def test_checked_in_yaml_matches_a_fresh_compile(tmp_path: Path) -> None:
    fresh = example_pipeline.compile_pipeline(tmp_path / "example_pipeline.yaml").read_text()
    checked_in = example_pipeline.COMPILED.read_text()
    # Nothing is volatile in kfp 2.17's output (no timestamps, no ids): compare every byte.
    if fresh != checked_in:
        diff = difflib.unified_diff(checked_in.splitlines(), fresh.splitlines(), "checked-in", "fresh", lineterm="")
        pytest.fail("pipelines/example_pipeline.yaml is stale; recompile with "
                    "`python -m kserve_mesh_pipelines.example_pipeline`:\n" + "\n".join(list(diff)[:40]))


def test_steps_train_upload_register_then_smoke_test() -> None:
    spec = yaml.safe_load(example_pipeline.COMPILED.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    after = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert after == {
        "train-iris-model": set(),
        "upload-to-s3": {"train-iris-model"},
        "register-model": {"upload-to-s3"},
        "smoke-test": {"register-model", "train-iris-model"},
    }
    register_inputs = tasks["register-model"]["inputs"]["parameters"]
    assert register_inputs["storage_uri"]["taskOutputParameter"] == {"outputParameterKey": "Output",
                                                                      "producerTask": "upload-to-s3"}
    assert register_inputs["model_format"]["runtimeValue"]["constant"] == "sklearn"
    assert spec["sdkVersion"] == "kfp-2.17.0"


def test_mesh_components_need_nothing_but_the_standard_library() -> None:
    spec = yaml.safe_load(example_pipeline.COMPILED.read_text())
    for name in ("exec-register-model", "exec-smoke-test"):
        container = spec["deploymentSpec"]["executors"][name]["container"]
        install = container["command"][2]
        assert "kfp==2.17.0" in install and "pip install --quiet --no-warn-script-location 'kfp" in install
        assert "&& python3 -m pip install" not in install, f"{name} installs extra packages"
        assert container["image"] == "python:3.11-slim"


def _globals_used(table: symtable.SymbolTable) -> set[str]:
    """Names that the functions in ``table`` (and anything nested in them) read as globals."""
    names: set[str] = set()
    for child in table.get_children():
        if isinstance(child, symtable.Function):
            names |= set(child.get_globals())
        names |= _globals_used(child)
    return names


@pytest.mark.parametrize("component", [register_model, deploy_inference_service, smoke_test,
                                       train_iris_model, upload_to_s3], ids=lambda c: c.name)
def test_each_component_program_defines_every_helper_it_calls(component: Any) -> None:
    """KFP runs only the program it embeds: every helper a component calls must be in it."""
    program = component.component_spec.implementation.container.command[-1]
    namespace: dict[str, Any] = {}
    exec(compile(program, f"<{component.name}>", "exec"), namespace)  # imports kfp, defines functions
    used = _globals_used(symtable.symtable(program, f"<{component.name}>", "exec"))
    missing = {name for name in used if name not in namespace and not hasattr(builtins, name)}
    assert not missing, f"{component.name} calls {sorted(missing)} but its program does not define them"
