"""Drive a mesh with gRPC clients no one here wrote, in a process of their own.

tritonclient.grpc and kserve's InferenceGRPCClient each bring their own copy of the
``inference.*`` protos, which cannot share one process with each other, so the test runs this
script once per client:

    python grpc_clients.py triton|kserve HOST:PORT INPUTS_JSON
    python grpc_clients.py triton-repository HOST:PORT MODELS_JSON
    python grpc_clients.py triton-stream HOST:PORT STREAM_JSON

It prints one JSON line: {model_id: {output name: flat list of values}} or {"error": ...}; for
``triton-repository`` ({"models": [...]}): {model_id: {"loaded", "unloaded"}} after tritonclient's
``load_model`` / ``unload_model`` (Triton's repository request shape: the model name is field 2),
and ``__missing__``: the status of loading a model nobody registered; for ``triton-stream``
({"headers": {...}, "requests": [{"model", "id", "request"}, ...], "answers": N}): the N (default:
one per request) answers of one
``start_stream`` / ``async_stream_infer`` stream in the order they came, each
{"id", "model", outputs...} or {"error": message}.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BYTES": np.object_}


def _array(tensor: dict) -> np.ndarray:
    if tensor["datatype"] == "BYTES":
        return np.array([s.encode() for s in tensor["data"]], dtype=np.object_).reshape(tensor["shape"])
    return np.array(tensor["data"], dtype=DTYPES[tensor["datatype"]]).reshape(tensor["shape"])


def _plain(arr: np.ndarray) -> list:
    flat = arr.ravel().tolist()
    return [v.decode() if isinstance(v, bytes) else v for v in flat]


def triton(target: str, cases: dict) -> dict:
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(target)
    assert client.is_server_live() and client.is_server_ready()
    out = {}
    for model_id, case in cases.items():
        inputs = []
        for t in case["request"]["inputs"]:
            arr = _array(t)
            inp = tg.InferInput(t["name"], list(arr.shape), t["datatype"])
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        result = client.infer(model_id, inputs)
        resp = result.get_response()
        out[model_id] = {o.name: _plain(result.as_numpy(o.name)) for o in resp.outputs}
        out[model_id]["__model_name__"] = resp.model_name
    index = client.get_model_repository_index(as_json=True)
    out["__index__"] = sorted(m["name"] for m in index.get("models", []))
    return out


def triton_repository(target: str, cases: dict) -> dict:
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(target)
    out: dict = {}
    for model_id in cases["models"]:
        client.load_model(model_id)
        loaded = client.is_model_ready(model_id)
        client.unload_model(model_id)
        out[model_id] = {"loaded": loaded, "unloaded": not client.is_model_ready(model_id)}
    try:
        client.load_model("no-such-model")
        out["__missing__"] = "loaded"
    except tg.InferenceServerException as exc:
        out["__missing__"] = str(exc.status())
    return out


def triton_stream(target: str, spec: dict) -> dict:
    import queue

    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(target)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=spec.get("headers"))
    try:
        for item in spec["requests"]:
            inputs = []
            for t in item["request"]["inputs"]:
                arr = _array(t)
                inp = tg.InferInput(t["name"], list(arr.shape), t["datatype"])
                inp.set_data_from_numpy(arr)
                inputs.append(inp)
            client.async_stream_infer(item["model"], inputs, request_id=item["id"])
        out = []
        for _ in range(spec.get("answers", len(spec["requests"]))):  # a model that streams answers several times
            result, error = answers.get(timeout=60)
            if error is not None:
                out.append({"error": error.message()})
                continue
            resp = result.get_response()
            out.append({"id": resp.id, "model": resp.model_name,
                        **{o.name: _plain(result.as_numpy(o.name)) for o in resp.outputs}})
    finally:
        client.stop_stream()
    return {"answers": out}


async def kserve_client(target: str, cases: dict) -> dict:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    client = InferenceGRPCClient(target, timeout=60)
    out = {}
    try:
        assert await client.is_server_ready()
        for model_id, case in cases.items():
            inputs = []
            for t in case["request"]["inputs"]:
                arr = _array(t)
                inp = InferInput(t["name"], list(arr.shape), t["datatype"])
                inp.set_data_from_numpy(arr, binary_data=False)
                inputs.append(inp)
            resp = await client.infer(InferRequest(model_name=model_id, infer_inputs=inputs))
            out[model_id] = {o.name: _plain(o.as_numpy()) for o in resp.outputs}
            out[model_id]["__model_name__"] = resp.model_name
    finally:
        await client.close()
    return out


def run(which: str, target: str, spec: dict, folder) -> dict:  # type: ignore[no-untyped-def]
    """Run this script for ``which`` in a process of its own (from a test) and return its answer."""
    import subprocess
    from pathlib import Path

    path = Path(folder) / f"grpc-client-{which}.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, __file__, which, target, str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    which, target, path = sys.argv[1:4]
    with open(path) as fh:
        cases = json.load(fh)
    try:
        if which == "triton":
            result = triton(target, cases)
        elif which == "triton-repository":
            result = triton_repository(target, cases)
        elif which == "triton-stream":
            result = triton_stream(target, cases)
        else:
            result = asyncio.run(kserve_client(target, cases))
    except Exception as exc:  # noqa: BLE001 - reported to the test as data
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
