"""Compressed REST request bodies (``Content-Encoding: gzip | deflate``) against a real mesh process:
tritonclient.http's ``request_compression_algorithm`` works (JSON and binary tensors), the body limit
applies to the decompressed body (a decompression bomb is 413 and never expands in the server's
memory), a corrupt or truncated body is 400, another coding 415; every route gets the decompressed
body (the JSON decode worker, management routes), and so does a peer a request is forwarded to."""

from __future__ import annotations

import gzip
import http.client
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import tritonclient.http as th
from cluster_support import start_mesh, string_models
from etcd_fixture import start_etcd
from mesh_process import MeshProcess

pytestmark = pytest.mark.integration

CALL_S = 30.0
LIMIT = 4 << 20  # --rest-max-body-bytes of the mesh under test
PAD = 10


def request(data: str = "x") -> bytes:
    return json.dumps({"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [data]}]}).encode()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return string_models(tmp_path_factory.mktemp("gzip-models"), ["s1"], pad=PAD)


@pytest.fixture(scope="module")
def mesh(models: Path) -> Iterator[MeshProcess]:
    proc = MeshProcess.start("--models", str(models), "--rest-max-body-bytes", str(LIMIT))
    try:
        yield proc
    finally:
        proc.stop()


def post(mesh: MeshProcess, path: str, body: bytes | Iterator[bytes], encoding: str | None,
         method: str = "POST") -> tuple[int, dict[str, str], Any]:
    """One request on its own connection; an iterator body goes chunked."""
    url = urlsplit(mesh.rest)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=CALL_S)
    headers = {"content-type": "application/json"}
    if encoding is not None:
        headers["content-encoding"] = encoding
    try:
        try:
            conn.request(method, path, body=body, headers=headers, encode_chunked=not isinstance(body, bytes))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) and closed while the body was still going out: read its answer
        answer = conn.getresponse()
        raw = answer.read()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, json.loads(raw) if raw else None
    finally:
        conn.close()


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def triton_infer(rest_url: str, algorithm: str, binary: bool, text: bytes = b"x") -> bytes:
    client = th.InferenceServerClient(rest_url.removeprefix("http://"), network_timeout=CALL_S)
    try:
        inp = th.InferInput("input-0", [1], "BYTES")
        inp.set_data_from_numpy(np.array([text], dtype=np.object_), binary_data=binary)
        result = client.infer("s1", [inp], outputs=[th.InferRequestedOutput("output-0", binary_data=binary)],
                              request_compression_algorithm=algorithm)
        value = result.as_numpy("output-0").tolist()[0]
        return value if isinstance(value, bytes) else value.encode()  # JSON output: str
    finally:
        client.close()


# -- accepted --------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_request_compression(mesh: MeshProcess, algorithm: str, binary: bool) -> None:
    assert triton_infer(mesh.rest, algorithm, binary) == b"s1:" + b"z" * PAD + b"x"


def test_every_form_of_a_compressed_body_reaches_the_routes_decompressed(mesh: MeshProcess, models: Path) -> None:
    expected = ["s1:" + "z" * PAD + "x"]
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    for encoding, body in [("gzip", gzip.compress(request())), ("x-gzip", gzip.compress(request())),
                           ("deflate", zlib.compress(request())), ("deflate", raw.compress(request()) + raw.flush()),
                           ("identity", request()), ("gzip", gzip.compress(request()[:20]) + gzip.compress(request()[20:]))]:
        code, _, answer = post(mesh, "/v2/models/s1/infer", body, encoding)
        assert code == 200 and answer["outputs"][0]["data"] == expected, (encoding, code, answer)
    compressed = gzip.compress(request())  # chunked, in small pieces
    code, _, answer = post(mesh, "/v2/models/s1/infer", iter([compressed[i:i + 7] for i in range(0, len(compressed), 7)]),
                           "gzip")
    assert code == 200 and answer["outputs"][0]["data"] == expected, answer

    # 3 MiB of JSON decompressed: past the 512 KiB from which the decode worker process parses it
    big = "y" * (3 << 20)
    code, _, answer = post(mesh, "/v2/models/s1/infer", gzip.compress(request(big)), "gzip")
    assert code == 200 and answer["outputs"][0]["data"] == ["s1:" + "z" * PAD + big], code

    # a management route too (its limit is 2 MiB, also counted decompressed)
    register = json.dumps({"modelInfo": {"type": "string", "path": str(models / "s1")}}).encode()
    code, _, answer = post(mesh, "/mesh/v1/models/s1-gz", gzip.compress(register), "gzip", method="PUT")
    assert code == 200 and answer["modelId"] == "s1-gz", answer


# -- refused ---------------------------------------------------------------------------------------
def test_a_decompression_bomb_is_413_and_never_expands(mesh: MeshProcess) -> None:
    pid = mesh.proc.pid
    before = peak_rss_bytes(pid)
    member = gzip.compress(bytes(1 << 20), compresslevel=9)  # 1 MiB of zeros in ~1 KiB
    bomb = member * 1024  # 1 GiB decompressed, ~1 MiB sent (gzip members, one after another)
    assert len(bomb) < LIMIT
    code, headers, answer = post(mesh, "/v2/models/s1/infer", bomb, "gzip")
    assert code == 413 and answer["type"] == "PayloadTooLarge", answer
    assert f"limit of {LIMIT} bytes" in answer["error"] and "decompressed" in answer["error"], answer
    assert headers.get("connection") == "close"
    one_stream = gzip.compress(bytes(64 << 20), compresslevel=1)  # a single stream: 64 MiB in ~280 KiB
    code, _, answer = post(mesh, "/v2/models/s1/infer", iter([one_stream[i:i + 65536] for i in range(0, len(one_stream), 65536)]),
                           "gzip")
    assert code == 413 and "decompressed" in answer["error"], answer
    assert peak_rss_bytes(pid) - before < 64 << 20  # never near the 1 GiB it would have become
    code, _, answer = post(mesh, "/v2/models/s1/infer", gzip.compress(request()), "gzip")
    assert code == 200, answer  # and the server serves on


def test_corrupt_truncated_and_unknown_encodings(mesh: MeshProcess) -> None:
    code, _, answer = post(mesh, "/v2/models/s1/infer", b"this is not gzip", "gzip")
    assert code == 400 and answer["type"] == "InvalidArgument" and "not valid gzip" in answer["error"], answer
    code, _, answer = post(mesh, "/v2/models/s1/infer", gzip.compress(request())[:-6], "gzip")
    assert code == 400 and "truncated" in answer["error"], answer
    code, _, answer = post(mesh, "/v2/models/s1/infer", zlib.compress(request()) + b"junk", "deflate")
    assert code == 400 and "after the end" in answer["error"], answer
    for encoding in ("br", "zstd", "gzip, gzip"):
        code, headers, answer = post(mesh, "/v2/models/s1/infer", request(), encoding)
        assert code == 415 and answer["type"] == "UnsupportedMediaType", answer
        assert "is not supported" in answer["error"] and "gzip, deflate" in answer["error"], answer
        assert headers["accept-encoding"] == "gzip, deflate"


# -- forwarded -------------------------------------------------------------------------------------
def test_a_forwarded_compressed_request_reaches_the_peer_decompressed(tmp_path: Path) -> None:
    string_models(tmp_path, ["fw"], pad=PAD)
    etcd = start_etcd()
    try:
        mesh = start_mesh(etcd, 2, "--allow-local-path", str(tmp_path))
        try:
            code, body = mesh.instances[0].call("PUT", "/mesh/v1/models/fw", {
                "modelInfo": {"type": "string", "path": str(tmp_path / "fw")}}, timeout=CALL_S)
            assert code == 200, body
            assert mesh.infer(0, "fw", timeout=CALL_S)[0] == 200
            (holder,) = mesh.holders("fw")
            other = mesh.instances[1 - mesh.instance_ids().index(holder)]
            client = th.InferenceServerClient(other.rest.removeprefix("http://"), network_timeout=CALL_S)
            try:
                for algorithm in ("gzip", "deflate"):
                    inp = th.InferInput("input-0", [1], "BYTES")
                    inp.set_data_from_numpy(np.array([b"x"], dtype=np.object_), binary_data=True)
                    result = client.infer("fw", [inp], outputs=[th.InferRequestedOutput("output-0", binary_data=True)],
                                          request_compression_algorithm=algorithm)
                    assert result.as_numpy("output-0").tolist() == [b"fw:" + b"z" * PAD + b"x"]
            finally:
                client.close()
            assert mesh.placements()["fw"] == [holder]  # served by the one copy: forwarded, not loaded here
        finally:
            for p in mesh.instances:
                p.stop()
    finally:
        etcd.close()
