"""What ``POST /mesh/v1/apply`` reads is bounded before it is expanded or stored: YAML aliases are
refused ("billion laughs": 500 bytes became a million strings), JSON and YAML nest at most
``MAX_NESTING`` levels (deeper was a 500 RecursionError), and a resource larger than
``MAX_STORED_BYTES`` as JSON is not stored."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kserve_mesh.core.clock import SystemClock
from kserve_mesh.core.limits import MAX_NESTING
from kserve_mesh.kube.core.errors import InvalidSpec
from kserve_mesh.kube.core.manifest import load_documents
from kserve_mesh.kube.standalone.service import MAX_STORED_BYTES, KubeService
from kserve_mesh.store.keys import Keys
from kserve_mesh.store.kube_resources import KubeResourceStore
from kserve_mesh.store.memory import MemoryStore

YAML = "application/yaml"
JSON = "application/json"
RUNTIME = """apiVersion: serving.kserve.io/v1alpha1
kind: ServingRuntime
metadata:
  name: rt
spec:
  supportedModelFormats: [{name: fmt}]
  containers:
  - name: c
    env: %s
"""


def _alias_bomb(levels: int) -> str:
    anchors = ['x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    anchors += [f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return RUNTIME % ("{ " + ", ".join(anchors) + " }")


@pytest.mark.parametrize("text", [
    _alias_bomb(2), _alias_bomb(9), "a: &x 1\nb: *x\n", "a: &x {k: v}\nb: {<<: *x}\n",
    "---\nkind: A\n---\na: &x [1]\nb: [*x, *x]\n",
])
def test_yaml_aliases_are_refused_naming_the_line(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidSpec, match=r"invalid YAML at line \d+, column \d+: YAML aliases are not accepted "
                                          r"\(found \*\w+\)"):
        load_documents(text, YAML)
    assert time.perf_counter() - started < 0.5


def test_anchors_without_aliases_and_asterisks_in_strings_are_fine() -> None:
    docs = load_documents('a: &x 1\nb: "*x"\nc: \'*y\'\nd: "&z"\n', YAML)
    assert docs == [{"a": 1, "b": "*x", "c": "*y", "d": "&z"}]


@pytest.mark.parametrize(("text", "content_type"), [
    ("a: " + "[" * 100_000 + "]" * 100_000, YAML),
    ("a: " + "[" * 1_000_000, YAML),
    ("a: " + "{b: " * 10_000 + "1" + "}" * 10_000, YAML),
    ("a: " + "[x, " * 10_000, YAML),
    ("".join("  " * i + "k:\n" for i in range(MAX_NESTING + 1)) + "  " * (MAX_NESTING + 1) + "1\n", YAML),
    ("- " * 100_000 + "1\n", YAML),
    ("[" * 100_000 + "]" * 100_000, JSON),
    ('{"a":' * 100_000 + "1" + "}" * 100_000, JSON),
    ("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), JSON),
])
def test_deep_nesting_is_refused_quickly_naming_the_nesting(text: str, content_type: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidSpec, match=f"nested more than {MAX_NESTING} levels deep"):
        load_documents(text, content_type)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(("text", "content_type"), [
    ("a: " + "[" * (MAX_NESTING - 1) + "]" * (MAX_NESTING - 1), YAML),  # the document itself is a level
    ("a: " + "{b: " * (MAX_NESTING - 1) + "1" + "}" * (MAX_NESTING - 1), YAML),
    ("".join("  " * i + "k:\n" for i in range(MAX_NESTING)) + "  " * MAX_NESTING + "1\n", YAML),
    ('{"a":' * (MAX_NESTING - 1) + "[]" + "}" * (MAX_NESTING - 1), JSON),
])
def test_nesting_up_to_the_limit_is_read(text: str, content_type: str) -> None:
    assert len(load_documents(text, content_type)) == 1


class _NoReconciler:
    """Nothing may be reconciled: every document here is refused before."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"reconciler.{name} used")


@pytest.fixture()
async def store() -> AsyncIterator[MemoryStore]:
    mem = MemoryStore()
    mem.start()
    try:
        yield mem
    finally:
        await mem.close()


def _runtime(name: str, env_value: str) -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime", "metadata": {"name": name},
            "spec": {"supportedModelFormats": [{"name": "fmt"}],
                     "containers": [{"name": "c", "env": [{"name": "E", "value": env_value}]}]}}


async def test_a_resource_too_large_to_store_is_refused_and_nothing_is_applied(store: MemoryStore) -> None:
    keys = Keys.for_namespace("t")
    service = KubeService(KubeResourceStore(store, keys), _NoReconciler(), SystemClock())  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec, match=rf"the resource is \d+ bytes as JSON; at most {MAX_STORED_BYTES} bytes "
                                          r"are stored per resource \(document 2: ServingRuntime big\)"):
        await service.apply([_runtime("small", "x"), _runtime("big", "y" * MAX_STORED_BYTES)])
    assert await store.range(keys.root_prefix()) == []
