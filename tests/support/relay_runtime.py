"""A runtime process with services of its own besides KServe V2, for the relay tests (issue 11).

Run as ``python relay_runtime.py MODELS_DIR MARKS_DIR NAME CAPACITY_BYTES``: the built-in runtime
(string models from MODELS_DIR, room for CAPACITY_BYTES) behind the ModelRuntime gRPC API, plus a TF-Serving-style service the mesh knows
nothing about, ``tfserving.PredictionService`` (messages are ``google.protobuf.Struct``):

- ``Predict`` (unary): answers ``{"model": <mm-model-id>, "runtime": NAME, "inputs": <its inputs>,
  "loaded": <whether the model is loaded here>}``; a model that is not loaded is NOT_FOUND, and a
  request without ``inputs`` is INVALID_ARGUMENT (the runtime's own status, passed through);
- ``Count`` (server streaming): ``{"n": N, "delay": s}`` -> N answers ``{"i": k, "model": ...}``, one
  every ``delay`` seconds; when the caller cancels, a file ``cancelled-<model>`` appears in MARKS_DIR;
- ``Chat`` (bidirectional): each message answered at once with ``{"echo": <it>, "model": ...}``.

It prints ``runtime listening <port>`` once it serves; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

SERVICE = "tfserving.PredictionService"


def _struct(doc: dict) -> Struct:
    out = Struct()
    out.update(doc)
    return out


def _model(context: grpc.aio.ServicerContext) -> str:
    return next((str(v) for k, v in context.invocation_metadata() or () if k == "mm-model-id"), "")


def handlers(runtime, name: str, marks: Path) -> grpc.GenericRpcHandler:  # type: ignore[no-untyped-def]
    async def predict(request: Struct, context: grpc.aio.ServicerContext) -> Struct:
        model = _model(context)
        loaded = bool(model) and runtime.is_loaded(model)
        if not loaded:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model '{model}' is not loaded in runtime {name}")
        doc = json_format.MessageToDict(request)
        if "inputs" not in doc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Predict needs 'inputs'")
        return _struct({"model": model, "runtime": name, "inputs": doc["inputs"], "loaded": loaded})

    async def count(request: Struct, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        model = _model(context)
        doc = json_format.MessageToDict(request)
        try:
            for i in range(int(doc.get("n", 3))):
                yield _struct({"i": i, "model": model, "runtime": name})
                await asyncio.sleep(float(doc.get("delay", 0.0)))
        except asyncio.CancelledError:
            (marks / f"cancelled-{model}").write_text("cancelled")
            raise

    async def chat(requests, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        model = _model(context)
        async for message in requests:
            yield _struct({"echo": json_format.MessageToDict(message), "model": model, "runtime": name})

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Predict": grpc.unary_unary_rpc_method_handler(predict, Struct.FromString, Struct.SerializeToString),
        "Count": grpc.unary_stream_rpc_method_handler(count, Struct.FromString, Struct.SerializeToString),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, Struct.FromString, Struct.SerializeToString),
    })


async def main(models: Path, marks: Path, name: str, capacity: int) -> None:
    from kserve_mesh.runtime.builtin.runtime import BuiltinRuntime, RuntimeConfig
    from kserve_mesh.runtime.server import serve
    from kserve_mesh.storage import StoragePolicy, make_fetcher

    config = RuntimeConfig(capacity_bytes=capacity)
    fetcher = make_fetcher(None, marks / f"cache-{name}", StoragePolicy.of(allow_local_paths=[models]))
    runtime = BuiltinRuntime(config, fetcher)
    server, port = await serve(config, "127.0.0.1", 0, runtime=runtime, extra_handlers=[handlers(runtime, name, marks)])
    print(f"runtime listening {port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1.0)
    await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
