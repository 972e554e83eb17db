"""Runtime selection: explicit runtime, autoSelect, priority, versions, namespace override,
disabled / single-model runtimes, protocol, and the messages of NoSupportingRuntime /
RuntimeNotRecognized."""

from __future__ import annotations

import pytest

from kserve_mesh.kube.core.errors import NoSupportingRuntime, RuntimeNotRecognized
from kserve_mesh.kube.core.resources import ModelFormat, ModelSource, ObjectMeta, ServingRuntime, SupportedModelFormat
from kserve_mesh.kube.core.runtimes import (
    BUILTIN_RUNTIME,
    BUILTIN_RUNTIMES,
    MLSERVER_RUNTIME,
    effective_runtimes,
    select_runtime,
    versions_match,
)


def rt(name: str, *formats: tuple[str, str | None, bool, int | None], namespace: str = "ns", cluster: bool = False,
       multi: bool = True, disabled: bool = False, protocols: tuple[str, ...] = ("grpc-v2",)) -> ServingRuntime:
    return ServingRuntime(ObjectMeta(name, "" if cluster else namespace),
                          tuple(SupportedModelFormat(*f) for f in formats), cluster=cluster, multi_model=multi,
                          disabled=disabled, protocol_versions=protocols)


def model(name: str = "sklearn", version: str | None = None, runtime: str | None = None,
          protocol: str | None = None) -> ModelSource:
    return ModelSource(ModelFormat(name, version), runtime=runtime, protocol_version=protocol, storage_uri="s3://b/m")


def test_builtin_python_runtime_outranks_mlserver_for_sklearn() -> None:
    assert select_runtime(model("sklearn"), "ns", BUILTIN_RUNTIMES).name == BUILTIN_RUNTIME
    assert select_runtime(model("onnx"), "ns", BUILTIN_RUNTIMES).name == BUILTIN_RUNTIME
    assert select_runtime(model("string"), "ns", BUILTIN_RUNTIMES).name == BUILTIN_RUNTIME


def test_explicit_runtime_wins_over_priority() -> None:
    assert select_runtime(model("sklearn", runtime=MLSERVER_RUNTIME), "ns", BUILTIN_RUNTIMES).name == MLSERVER_RUNTIME


def test_higher_priority_wins_and_ties_prefer_namespaced_then_name() -> None:
    low = rt("a-low", ("sklearn", None, True, 1), cluster=True)
    high = rt("z-high", ("sklearn", None, True, 5), cluster=True)
    assert select_runtime(model(), "ns", [low, high]).name == "z-high"
    tie_cluster = rt("a-cluster", ("sklearn", None, True, 5), cluster=True)
    tie_local = rt("b-local", ("sklearn", None, True, 5))
    assert select_runtime(model(), "ns", [tie_cluster, tie_local]).name == "b-local"
    assert select_runtime(model(), "ns", [rt("b", ("sklearn", None, True, None), cluster=True),
                                          rt("a", ("sklearn", None, True, None), cluster=True)]).name == "a"


def test_no_priority_counts_as_lowest() -> None:
    none = rt("none", ("sklearn", None, True, None))
    one = rt("one", ("sklearn", None, True, 1))
    assert select_runtime(model(), "ns", [none, one]).name == "one"


def test_auto_selection_needs_autoselect() -> None:
    manual = rt("manual", ("sklearn", None, False, 9))
    auto = rt("auto", ("sklearn", None, True, 1))
    assert select_runtime(model(), "ns", [manual, auto]).name == "auto"
    with pytest.raises(NoSupportingRuntime) as info:
        select_runtime(model(), "ns", [manual])
    assert "manual (format not autoSelect)" in str(info.value)
    # ...but an explicit runtime needs only the format
    assert select_runtime(model(runtime="manual"), "ns", [manual]).name == "manual"


@pytest.mark.parametrize(
    ("wanted", "offered", "ok"),
    [(None, "1", True), ("1", None, True), ("1", "1", True), ("1", "1.2", True), ("1.2", "1", True),
     ("1.2", "1.3", False), ("2", "1", False), ("1.0", "1.0.5", True)],
)
def test_versions_match(wanted: str | None, offered: str | None, ok: bool) -> None:
    assert versions_match(wanted, offered) is ok


def test_version_selects_the_runtime() -> None:
    v0 = rt("sk0", ("sklearn", "0", True, 1))
    v1 = rt("sk1", ("sklearn", "1", True, 1))
    assert select_runtime(model(version="1"), "ns", [v0, v1]).name == "sk1"
    assert select_runtime(model(version="0.24"), "ns", [v0, v1]).name == "sk0"
    with pytest.raises(NoSupportingRuntime) as info:
        select_runtime(model(version="2"), "ns", [v0, v1])
    assert "model format 'sklearn' version '2'" in str(info.value)


def test_format_names_compare_case_blind() -> None:
    assert select_runtime(model("SKLearn"), "ns", [rt("r", ("sklearn", None, True, 1))]).name == "r"


def test_namespaced_runtime_overrides_cluster_runtime_of_the_same_name() -> None:
    cluster = rt("shared", ("sklearn", None, True, 1), cluster=True)
    local = rt("shared", ("xgboost", None, True, 1), namespace="ns")
    assert effective_runtimes("ns", [cluster, local]) == [local]
    assert effective_runtimes("other", [cluster, local]) == [cluster]
    with pytest.raises(NoSupportingRuntime):
        select_runtime(model("sklearn"), "ns", [cluster, local])
    assert select_runtime(model("sklearn"), "other", [cluster, local]) is cluster
    assert select_runtime(model("xgboost", runtime="shared"), "ns", [cluster, local]) is local


def test_runtimes_of_other_namespaces_are_not_candidates() -> None:
    elsewhere = rt("r", ("sklearn", None, True, 1), namespace="other")
    with pytest.raises(NoSupportingRuntime):
        select_runtime(model(), "ns", [elsewhere])
    with pytest.raises(RuntimeNotRecognized):
        select_runtime(model(runtime="r"), "ns", [elsewhere])


def test_disabled_and_single_model_runtimes_are_skipped() -> None:
    disabled = rt("off", ("sklearn", None, True, 9), disabled=True)
    single = rt("single", ("sklearn", None, True, 9), multi=False)
    good = rt("good", ("sklearn", None, True, 1))
    assert select_runtime(model(), "ns", [disabled, single, good]).name == "good"
    with pytest.raises(NoSupportingRuntime) as info:
        select_runtime(model(), "ns", [disabled, single])
    assert "off (disabled)" in str(info.value) and "single (not multiModel)" in str(info.value)


def test_explicit_runtime_errors_say_what_was_looked_for() -> None:
    off = rt("off", ("sklearn", None, True, 1), disabled=True)
    single = rt("single", ("sklearn", None, True, 1), multi=False)
    xgb = rt("xgb", ("xgboost", None, True, 1))
    with pytest.raises(RuntimeNotRecognized, match="runtime 'nope' not found.*namespace 'ns'.*known runtimes: off"):
        select_runtime(model(runtime="nope"), "ns", [off])
    with pytest.raises(RuntimeNotRecognized, match="ServingRuntime 'off' is disabled"):
        select_runtime(model(runtime="off"), "ns", [off])
    with pytest.raises(RuntimeNotRecognized, match="not a multi-model runtime"):
        select_runtime(model(runtime="single"), "ns", [single])
    with pytest.raises(NoSupportingRuntime, match="'xgb' does not support model format 'sklearn'.*supports: xgboost"):
        select_runtime(model(runtime="xgb"), "ns", [xgb])


def test_protocol_version_must_be_supported() -> None:
    grpc_only = rt("grpc", ("sklearn", None, True, 5), protocols=("grpc-v2",))
    rest_too = rt("rest", ("sklearn", None, True, 1), protocols=("grpc-v2", "v2"))
    assert select_runtime(model(protocol="v2"), "ns", [grpc_only, rest_too]).name == "rest"
    assert select_runtime(model(), "ns", [grpc_only, rest_too]).name == "grpc"
    with pytest.raises(NoSupportingRuntime, match="with protocol 'v1'.*protocol not supported"):
        select_runtime(model(protocol="v1"), "ns", [grpc_only, rest_too])
    with pytest.raises(NoSupportingRuntime, match="does not support protocol 'v1'"):
        select_runtime(model(protocol="v1", runtime="rest"), "ns", [rest_too])


def test_no_runtime_at_all() -> None:
    with pytest.raises(NoSupportingRuntime) as info:
        select_runtime(model("pmml"), "ns", BUILTIN_RUNTIMES)
    assert info.value.reason == "NoSupportingRuntime"
    assert "supports model format 'pmml' with autoSelect" in str(info.value)
