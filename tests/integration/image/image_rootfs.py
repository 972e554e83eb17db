"""Build the image once (cached by a hash of its inputs), unpack it, and run commands from it.

The image is built by scripts/build-image.sh into ``build/image/<hash>/`` (git-ignored); a rerun
with the same inputs (the files the image is built from) reuses it. The image is then unpacked by
``umoci raw unpack`` (an OCI implementation we did not write) and run the way a container runtime
with ``readOnlyRootFilesystem: true`` would: in a private mount namespace, the root filesystem
bind-mounted read-only, a fresh tmpfs on /tmp (the manifests' emptyDir), /proc, a minimal /dev,
then ``chroot`` as the user of the image's config, with only the config's environment, in its
working directory, through its entrypoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
IMAGE_DIR = ROOT / "build" / "image"
BUILD_SCRIPT = ROOT / "scripts" / "build-image.sh"
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
ARTIFACTS = Path(os.environ.get("KSERVE_MESH_ARTIFACTS") or ROOT / "test-artifacts") / "image"


def record(**values: Any) -> None:
    """Add measurements (sizes, times) to test-artifacts/image/measurements.json."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "measurements.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(values)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def input_paths() -> list[Path]:
    """The files the image is built from: the build context of the Containerfile (the "!" lines of
    .containerignore, as git lists them: tracked and untracked, not ignored) and the build itself."""
    listed = [line[1:].rstrip("/") for line in (ROOT / ".containerignore").read_text().splitlines()
              if line.startswith("!")]
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *listed],
                             cwd=ROOT, capture_output=True, check=True).stdout.decode()
        files = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = [p for name in listed for p in ([ROOT / name] if (ROOT / name).is_file()
                                                 else sorted((ROOT / name).rglob("*")))]
    files += [ROOT / "Containerfile", ROOT / ".containerignore", BUILD_SCRIPT]
    return sorted({p for p in files if p.is_file() and "__pycache__" not in p.parts})


def inputs_hash() -> str:
    sha = hashlib.sha256(platform.machine().encode())
    for path in input_paths():
        sha.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()[:16]


@dataclass
class BuiltImage:
    out: Path
    info: dict[str, Any]
    """build-info.json: sizes, digests, the seconds of each step."""
    built_now: bool
    """Whether this session built it (else it came from the cache)."""

    @property
    def layout(self) -> Path:
        return self.out / "oci"

    @property
    def rootfs(self) -> Path:
        return self.out / "rootfs"

    @property
    def tarball(self) -> Path:
        return Path(self.info["image"]["tarball"])


def build_image(key: str, log: Path) -> BuiltImage:
    """The image for ``key``: from build/image/<key>/ when a build finished there, else built now
    (the other builds under build/image are removed first; the wheel cache stays)."""
    out = IMAGE_DIR / key
    complete = out / ".complete"
    built_now = False
    if not complete.exists():
        for old in IMAGE_DIR.glob("*"):
            if old.is_dir() and old.name != "cache" and len(old.name) == 16:
                shutil.rmtree(old, ignore_errors=True)
            elif old.suffix == ".log" and old != log:
                old.unlink()
        out.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            done = subprocess.run(["bash", str(BUILD_SCRIPT), "--output", str(out)], stdout=fh,
                                  stderr=subprocess.STDOUT, cwd=ROOT, timeout=1800, check=False)
        if done.returncode != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-60:])
            raise RuntimeError(f"scripts/build-image.sh failed ({done.returncode}); the end of {log}:\n{tail}")
        complete.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        built_now = True
    info = json.loads((out / "build-info.json").read_text())
    return BuiltImage(out, info, built_now)


def unpack(image: BuiltImage, ref: str) -> Path:
    """The image ``ref`` unpacked by umoci into build/image/<key>/unpacked (kept with the build)."""
    target = image.out / "unpacked"
    marker = image.out / ".unpacked"
    if not marker.exists():
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["umoci", "raw", "unpack", "--image", f"{image.layout}:{ref}", str(target)],
                       check=True, capture_output=True, timeout=600)
        marker.write_text(ref)
    return target


def can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "--mount", "--", "true"], capture_output=True, timeout=30,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def container_command(rootfs: Path, config: dict[str, Any], args: list[str] | None = None,
                      command: list[str] | None = None,
                      mounts: tuple[tuple[Path, str], ...] = ()) -> list[str]:
    """The host command that runs the image at ``rootfs`` as a container with a read-only root.

    ``command`` replaces the config's Entrypoint (a pod's ``command``), ``args`` its Cmd;
    ``mounts``: (host folder, folder of the image) pairs, bind-mounted read-only (the image's
    folder must exist: a read-only root cannot make one). Every ``exec`` keeps one process: the
    returned command's pid is the pid of the program the image runs."""
    cfg = config["config"]
    argv = [*(command if command is not None else cfg.get("Entrypoint") or []),
            *(args if args is not None else cfg.get("Cmd") or [])]
    user = cfg.get("User") or "0:0"
    if ":" not in user:
        user = f"{user}:{user}"
    workdir = cfg.get("WorkingDir") or "/"
    r = shlex.quote(str(rootfs))
    lines = [
        "set -eu",
        f"mount --bind {r} {r}",
        f"mount -o remount,bind,ro {r}",
        f"mount -t proc proc {r}/proc",
        f"mount -t tmpfs -o mode=1777,nosuid,nodev,size=1g tmpfs {r}/tmp",
        f"mount -t tmpfs -o mode=755,nosuid,size=1m tmpfs {r}/dev",
        *(f"touch {r}/dev/{n} && mount --bind /dev/{n} {r}/dev/{n}" for n in DEV_NODES),
        f"mkdir {r}/dev/shm && mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {r}/dev/shm",
        f"ln -s /proc/self/fd {r}/dev/fd",
        *(f"mount --bind -o ro {shlex.quote(str(host))} {r}{shlex.quote(inside)}" for host, inside in mounts),
        "exec chroot --userspec=" + shlex.quote(user) + f" {r} /usr/bin/env -i -C {shlex.quote(workdir)} "
        + " ".join(shlex.quote(e) for e in cfg.get("Env") or []) + " " + " ".join(shlex.quote(a) for a in argv),
    ]
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(lines)]


def run(rootfs: Path, config: dict[str, Any], args: list[str] | None = None, command: list[str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(container_command(rootfs, config, args, command), capture_output=True, text=True,
                          timeout=timeout, check=False, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
