"""The image built by scripts/build-image.sh (issue 14): a valid OCI image, whose root filesystem,
unpacked by umoci and run read-only as the image's non-root user, serves models.

One session fixture builds the image (minutes when cold; cached under build/image/<hash>/ by a hash of
its inputs, so a rerun with the same sources takes seconds). Sizes and times go to
test-artifacts/image/measurements.json.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from example_models import make_models_module
from image_rootfs import ROOT, BuiltImage, container_command, record, run
from mesh_process import MeshProcess

pytestmark = [pytest.mark.integration, pytest.mark.image, pytest.mark.timeout(1800)]

GRPC_CLIENTS = ROOT / "tests" / "integration" / "mesh" / "grpc_clients.py"
OCI_MT = {"index": "application/vnd.oci.image.index.v1+json",
          "manifest": "application/vnd.oci.image.manifest.v1+json",
          "config": "application/vnd.oci.image.config.v1+json",
          "layer": "application/vnd.oci.image.layer.v1.tar+gzip"}


def _blob(layout: Path, desc: dict[str, Any]) -> Path:
    algo, _, hexd = desc["digest"].partition(":")
    assert algo == "sha256" and re.fullmatch(r"[0-9a-f]{64}", hexd), desc["digest"]
    return layout / "blobs" / "sha256" / hexd


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


# -- the OCI image -------------------------------------------------------------------------------
def test_oci_layout_index_manifest_config_and_layer_digests(built_image: BuiltImage) -> None:
    layout = built_image.layout
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_MT["index"]
    refs = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    version = built_image.info["version"]
    assert set(refs) == {version, "latest"}
    assert refs[version]["digest"] == refs["latest"]["digest"]
    entry = refs[version]
    assert entry["mediaType"] == OCI_MT["manifest"]
    assert entry["annotations"]["io.containerd.image.name"] == f"docker.io/library/kserve-mesh:{version}"
    manifest_path = _blob(layout, entry)
    assert _sha256(manifest_path) == entry["digest"].split(":")[1] and manifest_path.stat().st_size == entry["size"]
    manifest = json.loads(manifest_path.read_text())
    assert manifest["schemaVersion"] == 2 and manifest["config"]["mediaType"] == OCI_MT["config"]
    config_path = _blob(layout, manifest["config"])
    assert _sha256(config_path) == manifest["config"]["digest"].split(":")[1]
    assert config_path.stat().st_size == manifest["config"]["size"]
    config = json.loads(config_path.read_text())
    assert config["os"] == "linux" and config["architecture"] in ("amd64", "arm64")
    assert config["config"]["Entrypoint"] == ["kserve-mesh"]
    assert config["config"]["User"] == "65532:65532"
    assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"]) == 2  # the OS, then the venv
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
        assert layer["mediaType"] == OCI_MT["layer"]
        path = _blob(layout, layer)
        assert _sha256(path) == layer["digest"].split(":")[1] and path.stat().st_size == layer["size"]
        plain = hashlib.sha256()
        with gzip.open(path) as gz:
            for chunk in iter(lambda: gz.read(1 << 20), b""):
                plain.update(chunk)
        assert f"sha256:{plain.hexdigest()}" == diff_id
    # every blob in the layout is one of these (no leftovers of an earlier pack)
    named = {manifest_path.name, config_path.name, *(_blob(layout, x).name for x in manifest["layers"])}
    assert {p.name for p in (layout / "blobs" / "sha256").iterdir()} == named


def test_layers_are_normalized(built_image: BuiltImage, image_config: dict[str, Any]) -> None:
    """Numeric owners, no device nodes or /proc, /tmp with its sticky bit, times clamped to
    SOURCE_DATE_EPOCH; the venv (second layer) owned by root, not writable by the user."""
    manifest = json.loads(_blob(built_image.layout, json.loads(
        (built_image.layout / "index.json").read_text())["manifests"][0]).read_text())
    epoch = built_image.info["source_date_epoch"]
    seen: dict[str, tarfile.TarInfo] = {}
    passwd = ""
    for layer in manifest["layers"]:
        with tarfile.open(_blob(built_image.layout, layer), "r|gz") as tar:
            for info in tar:
                assert info.mtime <= epoch, info.name
                assert not (info.ischr() or info.isblk() or info.isfifo()), info.name
                assert info.uname == "" and info.gname == "", info.name
                seen[info.name] = info
                if info.name == "etc/passwd":
                    passwd = tar.extractfile(info).read().decode()  # type: ignore[union-attr]
    assert seen["tmp"].mode & 0o1777 == 0o1777
    assert not any(n.startswith(("proc/", "dev/", "sys/", "tmp/")) for n in seen)
    assert seen["opt/kserve-mesh/bin/kserve-mesh"].uid == 0
    assert not any(i.uid == 65532 for i in seen.values()), "nothing in the image belongs to the user"
    assert "etc/resolv.conf" not in seen and "etc/hostname" not in seen, "no file of the build host"
    assert not any("/pip/" in n or n.endswith("/bin/pip") for n in seen), "pip is not in the venv"
    assert not any("/usr/share/man/" in n for n in seen)
    assert "kserve-mesh:x:65532:65532:" in passwd


def test_tarball_holds_the_layout_and_a_docker_manifest(built_image: BuiltImage) -> None:
    with tarfile.open(built_image.tarball) as tar:
        names = set(tar.getnames())
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        docker = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert {"oci-layout", "index.json", "manifest.json"} <= names
    assert json.loads((built_image.layout / "index.json").read_text()) == index
    version = built_image.info["version"]
    assert docker[0]["RepoTags"] == [f"kserve-mesh:{version}", "kserve-mesh:latest"]
    assert {docker[0]["Config"], *docker[0]["Layers"]} <= names


def test_sizes(built_image: BuiltImage) -> None:
    """Not a tight bound: a regression that brings back the CUDA builds (xgboost + NCCL, ~700 MB)
    or the pip caches fails it."""
    info = built_image.info
    assert info["rootfs_bytes"] < 1200 * 2**20
    assert info["image"]["tarball_bytes"] < 400 * 2**20


# -- the image's root filesystem, run as a container would run it ------------------------------------
def test_runs_as_the_non_root_user_with_the_manifests_commands(built_image: BuiltImage, image_rootfs: Path,
                                                               image_config: dict[str, Any]) -> None:
    done = run(image_rootfs, image_config, args=["--version"])  # through the entrypoint
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"kserve-mesh {built_image.info['version']}"
    ident = run(image_rootfs, image_config, command=["id"], args=[])
    assert ident.stdout.startswith("uid=65532(kserve-mesh) gid=65532(kserve-mesh)"), ident.stdout + ident.stderr
    # what the controller runs in runtime pods, and the runtimes' libraries
    for argv in (["kserve-mesh", "instance", "--help"], ["kserve-mesh", "runtime", "--help"],
                 ["kserve-mesh", "controller", "--help"], ["python", "-m", "kserve_mesh.runtime.mlserver", "--help"],
                 ["python", "-c", "import sklearn, xgboost, lightgbm, onnxruntime, boto3, etcd3aio, kopf, socket"]):
        done = run(image_rootfs, image_config, command=argv, args=[])
        assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    # nothing can be written but /tmp
    done = run(image_rootfs, image_config, command=["python", "-c", "open('/opt/kserve-mesh/x', 'w')"], args=[])
    assert done.returncode != 0 and ("Read-only file system" in done.stderr or "Permission denied" in done.stderr)


def _manifest_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((ROOT / "manifests").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            spec = doc.get("spec") or {}
            pod = ((spec.get("template") or {}).get("spec")) or spec
            for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
                if isinstance(c, dict) and isinstance(c.get("image"), str):
                    yield f"{path.relative_to(ROOT)}:{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}", c


KSERVE_MESH_REF = re.compile(r"^(?:[\w.:-]+/)*kserve-mesh(?::(?P<tag>[\w.-]+))?(?:@sha256:[0-9a-f]{64})?$")


def test_manifests_name_this_image_and_their_commands_run_in_it(built_image: BuiltImage, image_rootfs: Path,
                                                                 image_config: dict[str, Any]) -> None:
    """Every container of manifests/ that names the kserve-mesh image names a tag the build makes,
    and its command (with --help) runs in the image; so do its exec probes' programs."""
    index = json.loads((built_image.layout / "index.json").read_text())
    tags = {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]}
    ours = [(where, c) for where, c in _manifest_containers() if KSERVE_MESH_REF.match(c["image"])]
    assert ours, "manifests/ name the kserve-mesh image somewhere"
    for where, c in ours:
        tag = KSERVE_MESH_REF.match(c["image"]).group("tag") or "latest"  # type: ignore[union-attr]
        assert tag in tags, f"{where}: {c['image']} is not a tag of the built image ({sorted(tags)})"
        for env in c.get("env") or []:
            if env.get("name", "").endswith("_IMAGE") and isinstance(env.get("value"), str) \
                    and "kserve-mesh" in env["value"]:
                m = KSERVE_MESH_REF.match(env["value"])
                assert m and (m.group("tag") or "latest") in tags, f"{where}: env {env['name']}={env['value']}"
        argv = [*(c.get("command") or image_config["config"]["Entrypoint"]), *(c.get("args") or [])]
        _check_runs(image_rootfs, image_config, argv, where)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = ((c.get(probe) or {}).get("exec") or {}).get("command")
            if command:
                _check_runs(image_rootfs, image_config, command, f"{where} {probe}")


def _check_runs(rootfs: Path, config: dict[str, Any], argv: list[str], where: str) -> None:
    """What can be checked of a container's command without its cluster: `kserve-mesh SUB ...`
    parses (with --help), `python -m MODULE` finds its module, any other program is on the PATH."""
    if Path(argv[0]).name == "kserve-mesh":
        done = run(rootfs, config, command=[*argv, "--help"], args=[])
    elif Path(argv[0]).name.startswith("python") and argv[1:2] == ["-m"]:
        done = run(rootfs, config, command=[argv[0], "-c", ("import importlib.util, sys; "
                                            "sys.exit(importlib.util.find_spec(sys.argv[1]) is None)"), argv[2]], args=[])
    else:
        done = run(rootfs, config, command=["sh", "-c", 'command -v "$0"', argv[0]], args=[])
    assert done.returncode == 0, f"{where}: {argv} does not run in the image: {done.stdout[-1500:]}{done.stderr[-1500:]}"


def _start(rootfs: Path, config: dict[str, Any], args: list[str], mounts: tuple[tuple[Path, str], ...],
           timeout: float = 120) -> tuple[MeshProcess, float]:
    """``kserve-mesh up ARGS`` from the image; the mesh and the seconds from start to ready."""
    started = time.monotonic()
    try:
        mesh = MeshProcess.run(container_command(rootfs, config, args=args, mounts=mounts), timeout=timeout)
    except RuntimeError as exc:
        raise AssertionError(f"kserve-mesh up from the image did not become ready: {exc}") from None
    return mesh, time.monotonic() - started


def _close(actual: list[Any], expected: list[Any]) -> bool:
    if len(actual) != len(expected):
        return False
    return all(a == e if isinstance(e, (str, bool)) or isinstance(a, str) else abs(a - e) <= 1e-5 + 1e-5 * abs(e)
               for a, e in zip(actual, expected))


def _check(model_id: str, outputs: dict[str, list[Any]], case: dict[str, Any]) -> None:
    for out in case["expected"]["outputs"]:
        assert out["name"] in outputs, f"{model_id}: no output {out['name']}: {outputs}"
        assert _close(outputs[out["name"]], out["data"]), f"{model_id} {out['name']}: {outputs[out['name']]} != {out['data']}"


def test_serves_models_from_the_read_only_image(image_rootfs: Path, image_config: dict[str, Any],
                                                tmp_path: Path) -> None:
    """`kserve-mesh up` from the image (its example models, made at start in $HOME/.cache, on the
    /tmp tmpfs), plus an ONNX model made here and mounted read-only at /mnt like a volume: V2 REST
    and gRPC answers equal to the training libraries' own predictions."""
    models = tmp_path / "models"
    onnx_case = make_models_module().make_onnx(models)
    models.chmod(0o755)
    mesh, ready_s = _start(image_rootfs, image_config,
                           ["up", "--rest-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                            "--allow-local-path", "/mnt"], mounts=((models, "/mnt"),))
    try:
        record(up_ready_seconds=round(ready_s, 2))
        status = Path(f"/proc/{mesh.proc.pid}/status").read_text()
        assert re.search(r"^Uid:\s+65532\s+65532\s+65532\s+65532$", status, re.MULTILINE), "the mesh runs as the image's user"
        # the example models were made inside the image, with its libraries
        inputs = json.loads(Path(f"/proc/{mesh.proc.pid}/root/tmp/.cache/kserve-mesh/example-models/inputs.json")
                            .read_text())
        assert {"sklearn-iris", "xgboost-iris", "lightgbm-iris", "string-1"} <= set(inputs)
        assert inputs["sklearn-iris"]["expected"]["outputs"][0]["data"] == [0, 1, 2], "iris rows 0, 50, 100"
        status_code, body = mesh.call("PUT", "/mesh/v1/models/onnx-iris",
                                      {"modelInfo": {"type": "onnx", "path": "/mnt/onnx-iris"}})
        assert status_code in (200, 201), body
        cases = {**{k: v for k, v in inputs.items() if k in ("sklearn-iris", "xgboost-iris", "lightgbm-iris",
                                                                 "string-1")},
                 "onnx-iris": onnx_case}
        first_infer = None
        for model_id, case in cases.items():
            t0 = time.monotonic()
            code, body = mesh.call("POST", f"/v2/models/{model_id}/infer", case["request"])
            first_infer = first_infer or time.monotonic() - t0
            assert code == 200, f"{model_id}: {body}"
            _check(model_id, {o["name"]: o["data"] for o in body["outputs"]}, case)
        record(first_inference_seconds=round(first_infer or 0, 2))
        # gRPC (V2), from tritonclient in a process of its own
        cases_file = tmp_path / "cases.json"
        cases_file.write_text(json.dumps(cases))
        done = subprocess.run([sys.executable, str(GRPC_CLIENTS), "triton", mesh.grpc, str(cases_file)],
                              capture_output=True, text=True, timeout=120, check=False)
        result = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {"error": done.stderr}
        assert "error" not in result, result
        for model_id, case in cases.items():
            _check(model_id, result[model_id], case)
    finally:
        code = mesh.stop()
    assert code == 0 or code == -signal.SIGTERM, mesh.log()[-3000:]
