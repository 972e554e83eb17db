"""Call a TLS mesh with gRPC/REST clients no one here wrote, in a process of their own (tritonclient's
and kserve's protos cannot share one process):

    python tls_clients.py CLIENT TARGET CONFIG_JSON

CLIENT is triton-grpc | kserve-grpc | kserve-rest; CONFIG_JSON holds ``ca`` (PEM path), ``token``
(may be empty), ``cert``/``key`` (client certificate, may be empty), ``model`` and ``input`` (a V2
JSON tensor). Prints one JSON line: {"output": [...]} or {"error": "<code>: <message>"}.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np


def _array(t: dict) -> np.ndarray:
    return np.array(t["data"], dtype=np.float64).reshape(t["shape"])


def triton_grpc(target: str, cfg: dict) -> dict:
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    tls = {"root_certificates": cfg["ca"]}
    if cfg.get("cert"):
        tls.update(private_key=cfg["key"], certificate_chain=cfg["cert"])
    client = tg.InferenceServerClient(target, ssl=True, **tls)
    headers = {"authorization": f"Bearer {cfg['token']}"} if cfg.get("token") else None
    out: dict = {"live": client.is_server_live()}  # health needs no token
    arr = _array(cfg["input"])
    inp = tg.InferInput(cfg["input"]["name"], list(arr.shape), "FP64")
    inp.set_data_from_numpy(arr)
    try:
        result = client.infer(cfg["model"], [inp], headers=headers)
        out["output"] = result.as_numpy("output-0").ravel().tolist()
    except InferenceServerException as exc:
        out["error"] = f"{exc.status()}: {exc.message()}"
    try:
        client.load_model(cfg["model"], headers=headers)
        out["load"] = "ok"
    except InferenceServerException as exc:
        out["load"] = f"{exc.status()}: {exc.message()}"
    return out


async def kserve_grpc(target: str, cfg: dict) -> dict:
    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    kw = {"use_ssl": True, "root_certificates": cfg["ca"]}
    if cfg.get("cert"):
        kw.update(private_key=cfg["key"], certificate_chain=cfg["cert"])
    client = InferenceGRPCClient(target, timeout=30, retries=0, **kw)
    arr = _array(cfg["input"])
    inp = InferInput(cfg["input"]["name"], list(arr.shape), "FP64")
    inp.set_data_from_numpy(arr)
    headers = (("authorization", f"Bearer {cfg['token']}"),) if cfg.get("token") else None
    try:
        resp = await client.infer(InferRequest(model_name=cfg["model"], infer_inputs=[inp]), headers=headers)
        return {"output": resp.outputs[0].as_numpy().ravel().tolist()}
    except grpc.aio.AioRpcError as exc:
        return {"error": f"{exc.code().name}: {exc.details()}"}
    finally:
        await client.close()


async def kserve_rest(target: str, cfg: dict) -> dict:
    import httpx
    from kserve import InferenceRESTClient, RESTConfig

    cert = (cfg["cert"], cfg["key"]) if cfg.get("cert") else None
    client = InferenceRESTClient(RESTConfig(protocol="v2", verify=cfg["ca"], cert=cert, retries=0, timeout=30))
    body = {"inputs": [cfg["input"]]}
    headers = {"authorization": f"Bearer {cfg['token']}"} if cfg.get("token") else None
    try:
        resp = await client.infer(target, body, model_name=cfg["model"], headers=headers)
        if isinstance(resp, dict):
            return {"output": list(np.ravel(resp["outputs"][0]["data"]))}
        return {"output": resp.outputs[0].as_numpy().ravel().tolist()}
    except httpx.HTTPStatusError as exc:
        return {"error": f"{exc.response.status_code}: {exc.response.text}"}
    finally:
        await client.close()


def main() -> None:
    which, target, path = sys.argv[1:4]
    with open(path) as f:
        cfg = json.load(f)
    if which == "triton-grpc":
        out = triton_grpc(target, cfg)
    elif which == "kserve-grpc":
        out = asyncio.run(kserve_grpc(target, cfg))
    elif which == "kserve-rest":
        out = asyncio.run(kserve_rest(target, cfg))
    else:
        raise SystemExit(f"unknown client {which}")
    print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
