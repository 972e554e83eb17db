"""gRPC RepositoryModelLoad / Unload accept both request shapes: KServe's V2 (``model_name`` is
field 1) and Triton's (``repository_name`` = 1, ``model_name`` = 2, ``parameters`` = 3), which
tritonclient.grpc sends. Encoded here by hand, field by field, as each client's proto would."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from kserve_mesh.api.grpc_v2 import handlers
from kserve_mesh.protocol import v2


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2); payloads here are shorter than 128 bytes."""
    return bytes([number << 3 | 2, len(payload)]) + payload


def kserve_shape(model: str) -> bytes:
    return _field(1, model.encode())


def triton_shape(model: str, repository: str = "", parameters: bool = False) -> bytes:
    parameter = _field(1, b"unload_dependents") + _field(2, bytes([1 << 3 | 0, 1]))  # map entry: key, {bool_param}
    return ((_field(1, repository.encode()) if repository else b"") + _field(2, model.encode())
            + (_field(3, parameter) if parameters else b""))


class FakePlane:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def repository_load(self, name: str, route: Any) -> str:
        self.calls.append(("load", name))
        return name

    async def repository_unload(self, name: str, route: Any) -> str:
        self.calls.append(("unload", name))
        return name


class FakeContext:
    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


async def _call(plane: FakePlane, method: str, data: bytes) -> Any:
    behaviour = handlers(plane)[method]
    return await behaviour.unary_unary(data, FakeContext())


@pytest.mark.parametrize(("data", "model"), [
    (kserve_shape("m-1"), "m-1"),
    (triton_shape("m-2"), "m-2"),
    (triton_shape("m-3", parameters=True), "m-3"),
    (triton_shape("m-4", repository="models"), "m-4"),  # field 1 is then the repository, not the model
])
async def test_load_and_unload_take_the_model_name_from_either_shape(data: bytes, model: str) -> None:
    plane = FakePlane()
    loaded = await _call(plane, "RepositoryModelLoad", data)
    unloaded = await _call(plane, "RepositoryModelUnload", data)
    assert plane.calls == [("load", model), ("unload", model)]
    assert (loaded.model_name, loaded.isLoaded) == (model, True)
    assert (unloaded.model_name, unloaded.isUnloaded) == (model, True)
    assert v2.RepositoryModelLoadRequest.FromString(kserve_shape(model)).model_name == model  # the encoding is KServe's
