"""Pack a root filesystem as an OCI image (image layout + tarball), and read one back. Stdlib only.

    python3 scripts/image/oci.py pack ROOTFS OUT --containerfile Containerfile --name kserve-mesh \\
        --tag 0.1.0 --tag latest [--layer /opt/kserve-mesh] [--epoch SECONDS]
    python3 scripts/image/oci.py check OUT/oci          # verify a layout: digests, sizes, diff_ids

``pack`` writes ``OUT/oci/`` (an OCI image layout: ``oci-layout``, ``index.json``, ``blobs/sha256/``)
and ``OUT/<name>-<tag>.oci.tar``, the same layout as one tarball, with a Docker ``manifest.json``
beside it so that ``docker load`` reads it as well as ``podman load`` and ``skopeo``. The image
config (Entrypoint, Cmd, User, Env, WorkingDir, Labels) is read from the last stage of the
Containerfile, so that the image built without a container engine is configured as the one a
container engine builds from that file.

Layers: the root filesystem less each ``--layer`` path, then each ``--layer`` path (the venv
changes with every build of the project; the OS layer does not). Each layer is a gzipped tar with
entries in sorted order, numeric owners only, modification times clamped to ``--epoch``
(SOURCE_DATE_EPOCH) and gzip's own timestamp 0: the same root filesystem gives the same digests.
The contents of /dev, /proc, /sys, /tmp and /run are left out (a container runtime provides them;
the directories themselves stay, /tmp with its sticky bit).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shlex
import sys
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTIED = ("dev", "proc", "sys", "tmp", "run")  # kept as directories, their contents left out
ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


# -- the Containerfile's final stage -------------------------------------------------------------
def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, line continuations joined, comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.strip().partition(" ")
        yield word.upper(), rest.strip()
        logical = ""
    if logical.strip():
        word, _, rest = logical.strip().partition(" ")
        yield word.upper(), rest.strip()


def _exec_form(value: str) -> list[str]:
    if value.startswith("["):
        form = json.loads(value)
        if not isinstance(form, list) or not all(isinstance(v, str) for v in form):
            raise ValueError(f"not an exec form: {value}")
        return form
    return ["/bin/sh", "-c", value]


def _pairs(value: str) -> dict[str, str]:
    """ENV / LABEL arguments: KEY=VALUE pairs (shell quoting); the legacy ``ENV KEY VALUE`` too."""
    words = shlex.split(value)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    out: dict[str, str] = {}
    for word in words:
        key, sep, val = word.partition("=")
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {word!r} in {value!r}")
        out[key] = val
    return out


def containerfile_config(text: str) -> dict[str, Any]:
    """The image config that the Containerfile's last stage sets (what it inherits is not read:
    every setting the image needs is written in that stage)."""
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _instructions(text):
        if word == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append((word, rest))
    if not stages:
        raise ValueError("no FROM in the Containerfile")
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    config: dict[str, Any] = {}
    for word, rest in stages[-1]:
        if word == "ENV":
            for key, val in _pairs(rest).items():
                if "$" in val:
                    raise ValueError(f"ENV {key}: write the value out (no ${{...}}): {val}")
                env[key] = val
        elif word == "LABEL":
            labels.update(_pairs(rest))
        elif word == "USER":
            config["User"] = rest
        elif word == "WORKDIR":
            config["WorkingDir"] = rest
        elif word == "ENTRYPOINT":
            config["Entrypoint"] = _exec_form(rest)
        elif word == "CMD":
            config["Cmd"] = _exec_form(rest)
        elif word == "EXPOSE":
            config.setdefault("ExposedPorts", {}).update(
                {p if "/" in p else f"{p}/tcp": {} for p in rest.split()})
        elif word == "STOPSIGNAL":
            config["StopSignal"] = rest
    config["Env"] = [f"{k}={v}" for k, v in env.items()]
    if labels:
        config["Labels"] = labels
    return config


# -- writing layers ------------------------------------------------------------------------------
class _Digesting(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink, self.sha, self.size = sink, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.sink.write(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size


def _walk(root: Path, rel: str = "") -> Iterator[str]:
    """Paths under ``root`` (relative, sorted, parents first), not following symlinks."""
    with os.scandir(root / rel if rel else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        yield path
        if entry.is_dir(follow_symlinks=False) and not (not rel and entry.name in EMPTIED):
            yield from _walk(root, path)


def _in(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _parents(prefix: str) -> list[str]:
    parts = prefix.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def write_layer(root: Path, paths: list[str], blobs: Path, epoch: int) -> tuple[dict[str, Any], str]:
    """One gzipped tar layer of ``paths`` (relative to ``root``); its descriptor and diff_id."""
    tmp = blobs / f".layer-{os.getpid()}.tmp"
    with open(tmp, "wb") as out:
        compressed = _Digesting(out)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as gz:
            plain = _Digesting(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for rel in paths:
                    full = root / rel
                    info = tar.gettarinfo(str(full), arcname=rel)
                    if info is None or info.ischr() or info.isblk() or info.isfifo():
                        continue  # sockets, devices, fifos: a container runtime makes its own
                    info.mtime = min(int(info.mtime), epoch)
                    info.uname = info.gname = ""
                    if info.isreg():
                        with open(full, "rb") as fh:
                            tar.addfile(info, fh)
                    else:
                        tar.addfile(info)
    digest = f"sha256:{compressed.sha.hexdigest()}"
    os.replace(tmp, blobs / compressed.sha.hexdigest())
    return ({"mediaType": MT_LAYER, "digest": digest, "size": compressed.size},
            f"sha256:{plain.sha.hexdigest()}")


def _blob(blobs: Path, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    (blobs / sha).write_bytes(data)
    return {"digest": f"sha256:{sha}", "size": len(data)}


def _json(obj: Any) -> bytes:
    return json.dumps(obj, indent=None, separators=(",", ":"), sort_keys=True).encode()


def _tar_dir(src: Path, dest: Path, epoch: int, extra: dict[str, bytes]) -> None:
    """``src`` as a plain tar (sorted, root-owned, mtime ``epoch``), plus the ``extra`` files."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes | None, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = epoch, mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        names = sorted([*(str(p.relative_to(src)) for p in src.rglob("*")), *extra])
        for name in names:
            if name in extra:
                add(name, extra[name], 0o644)
            elif (src / name).is_dir():
                add(name, None, 0o755)
            else:
                info = tarfile.TarInfo(name)
                info.mtime, info.mode, info.size = epoch, 0o644, (src / name).stat().st_size
                with open(src / name, "rb") as fh:
                    tar.addfile(info, fh)


def pack(rootfs: Path, out: Path, containerfile: Path, name: str, tags: list[str], layers: list[str],
         epoch: int) -> dict[str, Any]:
    """Write ``out/oci`` and ``out/<name>-<tags[0]>.oci.tar``; return sizes and digests."""
    layout = out / "oci"
    blobs = layout / "blobs" / "sha256"
    if layout.exists():
        for old in blobs.glob("*"):
            old.unlink()
    blobs.mkdir(parents=True, exist_ok=True)
    prefixes = [p.strip("/") for p in layers]
    everything = list(_walk(rootfs))
    groups = [[p for p in everything if not any(_in(p, x) for x in prefixes)]]
    for prefix in prefixes:
        groups.append([*(_parents(prefix)), *(p for p in everything if _in(p, prefix))])
    descriptors, diff_ids = [], []
    started = time.monotonic()
    for group in groups:
        desc, diff_id = write_layer(rootfs, group, blobs, epoch)
        descriptors.append(desc)
        diff_ids.append(diff_id)
    created = datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    arch = ARCH.get(platform.machine(), platform.machine())
    config = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": containerfile_config(containerfile.read_text()),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": f"scripts/build-image.sh (layer {i}: "
                     f"{'the root filesystem' if i == 0 else prefixes[i - 1]})"} for i in range(len(groups))],
    }
    config_desc = {"mediaType": MT_CONFIG, **_blob(blobs, _json(config))}
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config_desc, "layers": descriptors}
    manifest_desc = {"mediaType": MT_MANIFEST, **_blob(blobs, _json(manifest))}
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [
        {**manifest_desc, "platform": {"architecture": arch, "os": "linux"},
         "annotations": {"org.opencontainers.image.ref.name": tag,
                         "io.containerd.image.name": f"docker.io/library/{name}:{tag}"}}
        for tag in tags]}
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_bytes(_json(index))
    docker_manifest = [{"Config": f"blobs/sha256/{config_desc['digest'].split(':')[1]}",
                        "RepoTags": [f"{name}:{tag}" for tag in tags],
                        "Layers": [f"blobs/sha256/{d['digest'].split(':')[1]}" for d in descriptors]}]
    tarball = out / f"{name}-{tags[0]}.oci.tar"
    _tar_dir(layout, tarball, epoch, {"manifest.json": _json(docker_manifest)})
    return {
        "tarball": str(tarball),
        "tarball_bytes": tarball.stat().st_size,
        "manifest": manifest_desc["digest"],
        "layers": [{"digest": d["digest"], "compressed_bytes": d["size"], "paths": len(g)}
                   for d, g in zip(descriptors, groups)],
        "pack_seconds": round(time.monotonic() - started, 1),
    }


# -- reading a layout back -----------------------------------------------------------------------
def _read_blob(layout: Path, desc: dict[str, Any]) -> bytes:
    algo, _, hexd = desc["digest"].partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexd):
        raise ValueError(f"bad digest {desc['digest']}")
    data = (layout / "blobs" / "sha256" / hexd).read_bytes()
    if hashlib.sha256(data).hexdigest() != hexd or len(data) != desc["size"]:
        raise ValueError(f"blob {desc['digest']}: content or size does not match its descriptor")
    return data


def _layer_digests(layout: Path, desc: dict[str, Any]) -> str:
    """Check a (large) layer blob against its descriptor as it streams; its uncompressed sha256."""
    hexd = desc["digest"].removeprefix("sha256:")
    compressed, plain, size = hashlib.sha256(), hashlib.sha256(), 0

    class Tee(io.RawIOBase):
        def __init__(self, raw: BinaryIO) -> None:
            self.raw = raw

        def readable(self) -> bool:
            return True

        def readinto(self, buf: Any) -> int:
            nonlocal size
            n = self.raw.readinto(buf)
            compressed.update(memoryview(buf)[:n])
            size += n
            return n

    with open(layout / "blobs" / "sha256" / hexd, "rb") as fh, gzip.GzipFile(fileobj=Tee(fh)) as gz:  # type: ignore[arg-type]
        for chunk in iter(lambda: gz.read(1 << 20), b""):
            plain.update(chunk)
    if compressed.hexdigest() != hexd or size != desc["size"]:
        raise ValueError(f"layer {desc['digest']}: content or size does not match its descriptor")
    return plain.hexdigest()


def check(layout: Path) -> dict[str, Any]:
    """Verify an image layout: every blob against its descriptor, every layer's diff_id against
    its uncompressed content. Returns the config and manifest of the first image."""
    if json.loads((layout / "oci-layout").read_text()).get("imageLayoutVersion") != "1.0.0":
        raise ValueError("oci-layout: imageLayoutVersion is not 1.0.0")
    index = json.loads((layout / "index.json").read_text())
    if index.get("schemaVersion") != 2 or not index.get("manifests"):
        raise ValueError("index.json: schemaVersion 2 with at least one manifest expected")
    result: dict[str, Any] = {}
    for entry in index["manifests"]:
        if entry.get("mediaType") != MT_MANIFEST:
            raise ValueError(f"index.json: unexpected mediaType {entry.get('mediaType')}")
        manifest = json.loads(_read_blob(layout, entry))
        if manifest.get("config", {}).get("mediaType") != MT_CONFIG:
            raise ValueError("manifest: config mediaType")
        config = json.loads(_read_blob(layout, manifest["config"]))
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["layers"]):
            raise ValueError("config: one diff_id per layer expected")
        if not result:
            for layer, diff_id in zip(manifest["layers"], diff_ids):
                if layer.get("mediaType") != MT_LAYER:
                    raise ValueError(f"layer {layer['digest']}: mediaType {layer.get('mediaType')}")
                if f"sha256:{_layer_digests(layout, layer)}" != diff_id:
                    raise ValueError(f"layer {layer['digest']}: uncompressed content does not match {diff_id}")
            result = {"manifest": manifest, "config": config,
                      "refs": [m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                               for m in index["manifests"]]}
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("rootfs", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--containerfile", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--tag", action="append", required=True)
    p.add_argument("--layer", action="append", default=[])
    p.add_argument("--epoch", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    c = sub.add_parser("check")
    c.add_argument("layout", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        print(json.dumps(pack(args.rootfs, args.out, args.containerfile, args.name, args.tag, args.layer,
                              args.epoch), indent=1))
    else:
        result = check(args.layout)
        print(json.dumps({"refs": result["refs"], "config": result["config"]["config"],
                          "layers": len(result["manifest"]["layers"])}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
