"""serve() in this process: what a runtime's unexpected failure looks like to a gRPC client."""

from __future__ import annotations

from pathlib import Path

import pytest

from kserve_mesh.core.errors import InternalError
from kserve_mesh.core.records import ModelInfo
from kserve_mesh.protocol import v2
from kserve_mesh.runtime.builtin import BuiltinRuntime, LocalFetcher, RuntimeConfig
from kserve_mesh.runtime.grpc_client import GrpcRuntimeClient
from kserve_mesh.runtime.server import serve

pytestmark = pytest.mark.integration


class BuggyRuntime(BuiltinRuntime):
    """A runtime with a bug in one method (a real runtime, one method replaced)."""

    async def model_metadata(self, model_id: str) -> v2.ModelMetadataResponse:
        raise RuntimeError("secret internal detail")


async def test_a_bug_answers_internal_without_details_and_the_server_keeps_serving(models_dir: Path) -> None:
    runtime = BuggyRuntime(RuntimeConfig(), LocalFetcher([models_dir]))
    server, port = await serve(RuntimeConfig(), port=0, runtime=runtime)
    client = GrpcRuntimeClient(f"127.0.0.1:{port}", deadline_s=5)
    try:
        with pytest.raises(InternalError) as caught:
            await client.model_metadata("m")
        assert str(caught.value) == "internal error in ModelMetadata: RuntimeError"
        result = await client.load_model("s", ModelInfo(type="string", path=str(models_dir / "string-1")))
        assert result.size_bytes == await client.model_size("s")
    finally:
        await client.close()
        await server.stop(grace=1)
        await runtime.close()
