"""Runtime Deployment planning (kube/controller/deploy/plan.py) and the sync that carries plans out
(kube/controller/runtime_sync.py) on a fake Kubernetes API: create, leave alone, update on change, mark
unused, scale to zero after the grace period, come back, delete when the runtime is gone."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from kserve_mesh.kube.controller.deploy.config import ServingConfig
from kserve_mesh.kube.controller.deploy.objects import ANNOTATION_LAST_USED
from kserve_mesh.kube.controller.deploy.plan import ANNOTATION_SPEC_HASH, Create, Delete, Patch, plan_namespace
from kserve_mesh.kube.controller.kube_api import KubeApiError
from kserve_mesh.kube.controller.runtime_sync import ConfigSource, RuntimeSync

RT = {
    "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterServingRuntime",
    "metadata": {"name": "py", "uid": "u1"},
    "spec": {"supportedModelFormats": [{"name": "sklearn", "autoSelect": True}], "multiModel": True,
             "containers": [{"name": "rt", "image": "img:1"}]},
}
CONFIG = ServingConfig(pods_per_runtime=2, scale_to_zero_grace_seconds=60)


class FakeKube:
    """An in-memory KubeApi: objects by path, merge patches applied like the API server does."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    async def get(self, path: str) -> dict[str, Any] | None:
        self.calls.append(("GET", path))
        return copy.deepcopy(self.objects.get(path))

    async def list(self, path: str) -> list[dict[str, Any]]:
        self.calls.append(("LIST", path))
        return [copy.deepcopy(o) for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path]

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("POST", path))
        meta = body["metadata"]
        name = meta.get("name") or f"{meta['generateName']}{len(self.objects)}"
        if f"{path}/{name}" in self.objects:
            raise KubeApiError(409, "exists")
        self.objects[f"{path}/{name}"] = copy.deepcopy(dict(body))
        return dict(body)

    async def patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("PATCH", path))
        self.objects[path] = _merge(self.objects[path], body)
        return self.objects[path]

    async def delete(self, path: str) -> None:
        self.calls.append(("DELETE", path))
        self.objects.pop(path, None)


def _merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


DEP = "/apis/apps/v1/namespaces/ns/deployments/modelmesh-serving-py"
SVC = "/api/v1/namespaces/ns/services/modelmesh-serving"


def make_sync(kube: FakeKube, runtimes: dict[str, Any], clock: list[float]) -> RuntimeSync:
    async def config() -> ServingConfig:
        return CONFIG

    return RuntimeSync(kube, config, lambda ns: runtimes, wall_clock=lambda: clock[0])


async def test_a_used_runtime_gets_its_deployment_and_the_service_once() -> None:
    kube, clock = FakeKube(), [1000.0]
    sync = make_sync(kube, {"py": RT}, clock)
    sync.use("ns", "InferenceService/a", "py")
    actions = await sync.sync_namespace("ns")
    assert [type(a).__name__ + ":" + a.kind for a in actions] == ["Create:Deployment", "Create:Service"]
    assert kube.objects[DEP]["spec"]["replicas"] == 2
    assert ANNOTATION_SPEC_HASH in kube.objects[DEP]["metadata"]["annotations"]
    assert SVC in kube.objects
    # A second pass changes nothing.
    assert await sync.sync_namespace("ns") == []


async def test_unused_runtime_is_marked_then_scaled_to_zero_then_back() -> None:
    kube, clock = FakeKube(), [1000.0]
    sync = make_sync(kube, {"py": RT}, clock)
    sync.use("ns", "InferenceService/a", "py")
    await sync.sync_namespace("ns")
    sync.drop("ns", "InferenceService/a")
    await sync.sync_namespace("ns")
    dep = kube.objects[DEP]
    assert dep["metadata"]["annotations"][ANNOTATION_LAST_USED] == "1000"
    assert dep["spec"]["replicas"] == 2  # still within the grace period
    clock[0] = 1030.0
    assert await sync.sync_namespace("ns") == []
    clock[0] = 1061.0
    await sync.sync_namespace("ns")
    assert kube.objects[DEP]["spec"]["replicas"] == 0
    # Used again: full replicas, mark removed.
    sync.use("ns", "Predictor/b", "py")
    await sync.sync_namespace("ns")
    assert kube.objects[DEP]["spec"]["replicas"] == 2
    assert ANNOTATION_LAST_USED not in kube.objects[DEP]["metadata"]["annotations"]


async def test_a_changed_runtime_updates_its_deployment_and_a_vanished_one_deletes_it() -> None:
    kube, clock = FakeKube(), [0.0]
    runtimes = {"py": copy.deepcopy(RT)}
    sync = make_sync(kube, runtimes, clock)
    sync.use("ns", "InferenceService/a", "py")
    await sync.sync_namespace("ns")
    runtimes["py"]["spec"]["containers"][0]["image"] = "img:2"
    actions = await sync.sync_namespace("ns")
    assert [type(a) for a in actions] == [Patch]
    containers = kube.objects[DEP]["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers if c["name"] == "rt"] == ["img:2"]
    sync.drop("ns", "InferenceService/a")
    runtimes.clear()
    actions = await sync.sync_namespace("ns")
    assert [type(a) for a in actions] == [Delete]
    assert DEP not in kube.objects


def test_plan_ignores_deployments_of_others_and_runtimes_in_use_that_vanished() -> None:
    assert plan_namespace(CONFIG, "ns", {}, {"ghost"}, {}, False, 0.0) == []
    actions = plan_namespace(CONFIG, "ns", {"py": RT}, {"py"}, {}, True, 0.0)
    assert [type(a) for a in actions] == [Create]


async def test_sync_loop_syncs_poked_namespaces_and_survives_api_errors() -> None:
    import asyncio

    kube, clock = FakeKube(), [0.0]
    sync = make_sync(kube, {"py": RT}, clock)
    failing = {"n": 1}
    real_list = kube.list

    async def flaky_list(path: str) -> list[dict[str, Any]]:
        if failing["n"]:
            failing["n"] -= 1
            raise KubeApiError(500, "boom")
        return await real_list(path)

    kube.list = flaky_list  # type: ignore[method-assign]
    sync.interval_s = 0.05
    task = asyncio.create_task(sync.run())
    try:
        sync.use("ns", "InferenceService/a", "py")
        for _ in range(200):
            if DEP in kube.objects:
                break
            await asyncio.sleep(0.01)
        assert DEP in kube.objects  # the first pass failed, a later one made it
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_config_source_reads_the_configmap_and_keeps_the_last_good_one() -> None:
    kube = FakeKube()
    path = "/api/v1/namespaces/sys/configmaps/model-serving-config"
    kube.objects[path] = {"data": {"config.yaml": "podsPerRuntime: 3"}}
    source = ConfigSource(kube, "sys", "model-serving-config", image="reg/mesh:9", ttl_s=0)
    config = await source()
    assert config.pods_per_runtime == 3 and config.image == "reg/mesh:9"
    kube.objects[path] = {"data": {"config.yaml": "podsPerRuntime: many\ngrpcMaxMessageSizeBytes: 1024"}}
    config = await source()  # a bad key: its default, and every other key used
    assert config.pods_per_runtime == 2 and config.grpc_max_message_bytes == 1024
    kube.objects[path] = {"data": {"config.yaml": "podsPerRuntime: 3"}}
    await source()
    kube.objects[path] = {"data": {"config.yaml": "- not a mapping"}}
    assert (await source()).pods_per_runtime == 3  # unreadable config.yaml: the last good one stays
    del kube.objects[path]
    assert (await source()).pods_per_runtime == 2  # no ConfigMap: the defaults
