"""The standalone mesh's ``ResourceStore`` port over the mesh's Store (``store/kube_resources.py``).

Keys are the ones a standalone mesh has always written (so resources stored by an earlier version
are read back): InferenceServices under ``Keys.isvc``, the other kinds under
``<root>/kuberesources/<plural>/<namespace or "_">/<name>``; values are JSON ``{"object", "status"}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from kserve_mesh.kube.standalone.ports import ResourceStore
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.kube_resources import KubeResourceStore
from kserve_mesh.store.memory import MemoryStore

KEYS = Keys.for_namespace("t")


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    mem = MemoryStore()
    mem.start()
    try:
        yield mem
    finally:
        await mem.close()


def _obj(kind: str, name: str, namespace: str = "") -> dict[str, object]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": kind, "metadata": meta, "spec": {}}


async def test_keys_and_values_are_the_ones_a_standalone_mesh_always_wrote(store: MemoryStore) -> None:
    resources: ResourceStore = KubeResourceStore(store, KEYS)
    isvc = _obj("InferenceService", "a", "ns")
    await resources.put("inferenceservices", "ns", "a", isvc, {"ready": True})
    await resources.put("predictors", "ns", "p/1", _obj("Predictor", "p/1", "ns"), {})
    await resources.put("clusterservingruntimes", "", "rt", _obj("ClusterServingRuntime", "rt"), {})
    keys = [kv.key for kv in await store.range(KEYS.root_prefix())]
    assert sorted(keys) == sorted([
        "kserve-mesh/t/isvcs/ns/a",
        "kserve-mesh/t/kuberesources/predictors/ns/p%2F1",
        "kserve-mesh/t/kuberesources/clusterservingruntimes/_/rt",
    ])
    kv = await store.get(KEYS.isvc("ns", "a"))
    assert kv is not None and json.loads(kv.value) == {"object": isvc, "status": {"ready": True}}


async def test_get_list_and_delete(store: MemoryStore) -> None:
    resources = KubeResourceStore(store, KEYS)
    for ns, name in (("a", "x"), ("a", "y"), ("b", "x")):
        await resources.put("predictors", ns, name, _obj("Predictor", name, ns), {})
    assert await resources.get("predictors", "a", "z") is None
    got = await resources.get("predictors", "b", "x")
    assert got is not None and got.resource["metadata"] == {"name": "x", "namespace": "b"} and got.status == {}
    kv = await store.get(KEYS.kube_resource("predictors", "b", "x"))
    assert kv is not None and got.revision == kv.mod_revision
    assert len(await resources.list("predictors")) == 3
    assert [r.resource["metadata"]["name"] for r in await resources.list("predictors", "a")] == ["x", "y"]
    assert await resources.list("servingruntimes") == []
    await resources.delete("predictors", "a", "x")
    assert await resources.get("predictors", "a", "x") is None
    assert len(await resources.list("predictors")) == 2
