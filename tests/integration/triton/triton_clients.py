"""tritonclient.grpc calls, in a process of their own (its generated ``inference.*`` protos cannot
share a process with kserve's, which the tests load):

    python triton_clients.py infer HOST:PORT CASES_JSON   # [{"model", "headers", "inputs": {name: [[...]]}}]
    python triton_clients.py stream HOST:PORT SPEC_JSON   # {"requests": [{"model", "id", "inputs"}], "expect": N}
    python triton_clients.py index HOST:PORT              # Triton's RepositoryIndex

Prints one JSON line: for ``infer`` a list of {"model_name", output name: nested list} or
{"error": message} per case; for ``index`` {model name: [state, reason]}.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def infer(target: str, cases: list[dict]) -> list[dict]:
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(target)
    out = []
    for case in cases:
        inputs = []
        for name, value in case["inputs"].items():
            arr = np.asarray(value, dtype=np.float32)
            inp = tg.InferInput(name, list(arr.shape), "FP32")
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        try:
            result = client.infer(case["model"], inputs, headers=case.get("headers") or None, client_timeout=60)
        except tg.InferenceServerException as exc:
            out.append({"error": str(exc)})
            continue
        resp = result.get_response()
        out.append({"model_name": resp.model_name, **{o.name: result.as_numpy(o.name).tolist() for o in resp.outputs}})
    return out


def stream(target: str, spec: dict) -> list:
    """One start_stream: sends each request ({"model", "id", "inputs"}), then collects ``expect``
    answers (a decoupled model sends several per request) in the order they came."""
    import queue

    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(target)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    out = []
    try:
        for item in spec["requests"]:
            inputs = []
            for name, value in item["inputs"].items():
                arr = np.asarray(value, dtype=np.float32)
                inp = tg.InferInput(name, list(arr.shape), "FP32")
                inp.set_data_from_numpy(arr)
                inputs.append(inp)
            client.async_stream_infer(item["model"], inputs, request_id=item["id"])
        for _ in range(spec["expect"]):
            result, error = answers.get(timeout=60)
            if error is not None:
                out.append({"error": str(error)})
                continue
            resp = result.get_response()
            out.append({"id": resp.id, "model_name": resp.model_name,
                        **{o.name: result.as_numpy(o.name).tolist() for o in resp.outputs}})
    finally:
        client.stop_stream()
    return out


def index(target: str) -> dict:
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(target)
    found = client.get_model_repository_index(as_json=True)
    return {m["name"]: [m.get("state", ""), m.get("reason", "")] for m in found.get("models", [])}


def main() -> None:
    which, target = sys.argv[1:3]
    if which == "infer":
        with open(sys.argv[3]) as fh:
            print(json.dumps(infer(target, json.load(fh))))
    elif which == "stream":
        with open(sys.argv[3]) as fh:
            print(json.dumps(stream(target, json.load(fh))))
    elif which == "index":
        print(json.dumps(index(target)))
    else:
        raise SystemExit(f"unknown command {which}")


if __name__ == "__main__":
    main()
