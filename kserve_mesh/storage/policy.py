"""Which files, PVC claims and web hosts a model may be fetched from: the storage policy.

Whoever reaches a mesh's management API chooses model paths, so a path must never make the server
read a file it was not meant to serve (``/etc/passwd``, ``/proc/self/environ``, a key next to the
models). :class:`StoragePolicy` is the one rule book; the mesh checks it when a model is
registered and the fetcher checks it again on every fetch (links can change in between):

- **Local paths** (bare paths and ``file://``) must lie inside one of ``local_roots`` (the
  ``--models`` folder and every ``--allow-local-path``), after every symbolic link is resolved
  (``realpath``). A path with a ``..`` component is refused outright. A relative path is looked
  up in the folder the process was started in, then in each root in order. No roots: every local
  path is refused.
- **PVCs** (``pvc://claim/path`` or a ``pvc`` storage entry) read
  ``pvc_mount_root/claim/path``, which must stay inside the claim's folder; the claim must be named
  by a storage-config entry of type ``pvc`` (``{"type": "pvc", "name": "claim"}``) unless
  ``allow_any_pvc`` (ModelMesh's ``allowAnyPVC``).
- **http(s)** URLs (and every redirect they lead to) must name a host of ``http_allowed_hosts``
  when that list is not empty: an exact host name, or ``.example.com`` for any subdomain of
  ``example.com``.

Every refusal is a :class:`~kserve_mesh.core.errors.StorageNotAllowed` naming the path, what is
allowed and the flag that allows more. The policy does no I/O beyond ``realpath``/``lstat``.
"""

from __future__ import annotations

import functools
import os
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kserve_mesh.core.errors import InvalidArgument, StorageError, StorageNotAllowed

from .config import StorageConfig

DEFAULT_PVC_MOUNT_ROOT = Path("/pvc_mounts")
LOCAL_FLAG = "--allow-local-path"
_CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_HOST = re.compile(r"^\.?[a-z0-9_]([-a-z0-9_.]*[a-z0-9_])?$|^\[?[0-9a-f:.]+\]?$")


class PolicySettings(Protocol):
    """The settings a policy is built from (``kserve_mesh.settings.MeshSettings`` has them)."""

    models_dir: Path | None
    allow_local_paths: tuple[Path, ...]
    pvc_mount_root: Path
    allow_any_pvc: bool
    http_allowed_hosts: tuple[str, ...]


def _absolute(path: Path | str) -> Path:
    return Path(os.path.abspath(path))


def _inside(root: str, candidate: str) -> bool:
    return candidate == root or candidate.startswith(root.rstrip(os.sep) + os.sep)


def has_parent_reference(path: str) -> bool:
    """Whether ``path`` has a ``..`` component (either slash counts as a separator)."""
    return ".." in re.split(r"[\\/]", path)


@dataclass(frozen=True)
class StoragePolicy:
    """Where model files may come from. Frozen; build one at the process edge and pass it inward.

    ``local_roots`` are made absolute (against the current folder) when the policy is built;
    ``http_allowed_hosts`` are lower-cased. The default policy allows no local path, only the PVC
    claims the storage-config names, and any http(s) host.
    """

    local_roots: tuple[Path, ...] = ()
    pvc_mount_root: Path = DEFAULT_PVC_MOUNT_ROOT
    allow_any_pvc: bool = False
    http_allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        roots: list[Path] = []
        for root in self.local_roots:
            absolute = _absolute(root)
            if absolute not in roots:
                roots.append(absolute)
        object.__setattr__(self, "local_roots", tuple(roots))
        object.__setattr__(self, "pvc_mount_root", _absolute(self.pvc_mount_root))
        hosts: list[str] = []
        for host in self.http_allowed_hosts:
            name = host.strip().lower()
            if not name or not _HOST.match(name):
                raise InvalidArgument(f"not a host name for the http allow-list: {host!r} (examples: "
                                      "models.example.com, .example.com for every subdomain, 10.0.0.5)")
            hosts.append(name.strip("[]"))
        object.__setattr__(self, "http_allowed_hosts", tuple(hosts))

    @classmethod
    def of(
        cls,
        *,
        models_dir: Path | str | None = None,
        allow_local_paths: Iterable[Path | str] = (),
        pvc_mount_root: Path | str = DEFAULT_PVC_MOUNT_ROOT,
        allow_any_pvc: bool = False,
        http_allowed_hosts: Iterable[str] = (),
    ) -> StoragePolicy:
        """A policy from plain values: ``models_dir`` is the first local root."""
        roots = ([Path(models_dir)] if models_dir is not None else []) + [Path(p) for p in allow_local_paths]
        return cls(tuple(roots), Path(pvc_mount_root), bool(allow_any_pvc), tuple(http_allowed_hosts))

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> StoragePolicy:
        """The policy of a mesh process (``models_dir``, ``allow_local_paths``, ``pvc_mount_root``,
        ``allow_any_pvc``, ``http_allowed_hosts``)."""
        return cls.of(models_dir=settings.models_dir, allow_local_paths=settings.allow_local_paths,
                      pvc_mount_root=settings.pvc_mount_root, allow_any_pvc=settings.allow_any_pvc,
                      http_allowed_hosts=settings.http_allowed_hosts)

    def flags(self) -> list[str]:
        """The command-line flags that give a runtime process (``kserve-mesh runtime``) this policy."""
        args: list[str] = []
        for root in self.local_roots:
            args += ["--allow-local-path", str(root)]
        args += ["--pvc-mount-root", str(self.pvc_mount_root)]
        if self.allow_any_pvc:
            args.append("--allow-any-pvc")
        for host in self.http_allowed_hosts:
            args += ["--http-allowed-host", host]
        return args

    # -- local paths -------------------------------------------------------------------------------

    def _roots_text(self) -> str:
        return ", ".join(str(r) for r in self.local_roots)

    def _refuse_local(self, raw: str, why: str) -> StorageNotAllowed:
        if not self.local_roots:
            return StorageNotAllowed(
                f"local model path '{raw}' refused: local paths are not allowed by this process (no "
                f"--models folder and no {LOCAL_FLAG}); start it with {LOCAL_FLAG} DIR to "
                "serve models from DIR")
        return StorageNotAllowed(
            f"local model path '{raw}' refused: {why}; local model paths must lie inside "
            f"{self._roots_text()} (start the process with {LOCAL_FLAG} DIR to allow another folder)")

    def local_path(self, raw: str, shown: str = "") -> tuple[Path, Path]:
        """(the real path ``raw`` names, the allowed root it lies in); :class:`StorageNotAllowed`
        when it is outside every root. ``raw`` need not exist; ``shown`` is how messages name it
        (the URI it came from; default ``raw``)."""
        refuse = functools.partial(self._refuse_local, shown or raw)
        if not raw:
            raise StorageError("empty model path: give a file or folder inside an allowed folder")
        if "\0" in raw:
            raise self._refuse_local((shown or raw).replace("\0", "\\0"), "it contains a NUL character")
        if has_parent_reference(raw):
            raise refuse("it contains '..'")
        if not self.local_roots:
            raise refuse("")
        real_roots = [(root, os.path.realpath(root)) for root in self.local_roots]
        candidate = Path(raw)
        if candidate.is_absolute():
            tries = [os.path.abspath(candidate)]
        else:  # the folder the process started in first, then each root
            tries = [os.path.abspath(candidate)] + [os.path.join(root, candidate) for root in self.local_roots]
        found: tuple[Path, Path] | None = None
        for attempt in tries:
            real = os.path.realpath(attempt)
            root = next((root for root, rr in real_roots if _inside(rr, real)), None)
            if root is None:
                if _lexically_inside(attempt, self.local_roots):  # inside by name, not once links are followed
                    raise refuse("it leads outside the allowed folders through a symbolic link")
                continue  # e.g. the current folder's candidate, outside every root: not a candidate
            if os.path.exists(real):
                return Path(real), root
            found = found or (Path(real), root)
        if found is not None:
            return found  # inside, but missing (yet): the fetch says so
        raise refuse("it is outside the allowed folders")

    def check_links_inside(self, path: Path, roots: Iterable[Path], shown: str) -> None:
        """Every symbolic link under the folder ``path`` must resolve inside ``roots``."""
        roots = tuple(roots)
        real_roots = [os.path.realpath(r) for r in roots]
        if not path.is_dir():
            return
        for folder, dirs, files in os.walk(path, followlinks=False):
            for name in dirs + files:
                entry = os.path.join(folder, name)
                if not os.path.islink(entry):
                    continue
                real = os.path.realpath(entry)
                if not any(_inside(rr, real) for rr in real_roots):
                    rel = os.path.relpath(entry, path)
                    raise StorageNotAllowed(
                        f"model path '{shown}' refused: '{rel}' in it is a symbolic link leading outside "
                        f"the allowed folders ({', '.join(str(r) for r in roots)})")

    # -- PVCs --------------------------------------------------------------------------------------

    def allowed_claims(self, config: StorageConfig) -> list[str]:
        """Claims named by the storage-config's entries of type ``pvc``."""
        return sorted({e.get("name") for e in config.entries.values() if e.type == "pvc" and e.get("name")})

    def pvc_path(self, claim: str, sub: str, config: StorageConfig) -> tuple[Path, Path]:
        """(the real path of ``sub`` in PVC ``claim``, the claim's folder); refused when the claim is
        not allowed or the path leaves the claim's folder."""
        if not claim or not _CLAIM_NAME.match(claim):
            raise StorageNotAllowed(f"invalid PVC claim name '{claim}' (a Kubernetes name: lower-case "
                                    "letters, digits, '-' and '.')")
        if not self.allow_any_pvc:
            claims = self.allowed_claims(config)
            if claim not in claims:
                named = ", ".join(claims) or "none"
                raise StorageNotAllowed(
                    f"PVC '{claim}' refused: only claims named by a storage-config entry of type pvc may be "
                    f"read (named: {named}); add {{\"type\": \"pvc\", \"name\": \"{claim}\"}} to the "
                    "storage-config, or start the instance with --allow-any-pvc (allowAnyPVC)")
        if "\0" in sub or has_parent_reference(sub):
            raise StorageNotAllowed(f"path '{sub}' in PVC '{claim}' refused: it contains '..'; give a path "
                                    "inside the claim")
        claim_root = self.pvc_mount_root / claim
        real_root = os.path.realpath(claim_root)
        real = os.path.realpath(os.path.join(claim_root, sub.lstrip("/")))
        if not _inside(real_root, real):
            raise StorageNotAllowed(f"path '{sub}' in PVC '{claim}' refused: it leads outside the claim's "
                                    f"folder {claim_root} through a symbolic link")
        return Path(real), claim_root

    # -- http(s) -----------------------------------------------------------------------------------

    def host_allowed(self, host: str) -> bool:
        if not self.http_allowed_hosts:
            return True
        name = host.lower().strip("[]").rstrip(".")
        for allowed in self.http_allowed_hosts:
            if allowed.startswith("."):
                if name.endswith(allowed) and len(name) > len(allowed):
                    return True
            elif name == allowed:
                return True
        return False

    def check_url(self, url: str, shown: str = "") -> None:
        """Refuse an http(s) URL whose host is not allow-listed (``shown``: the URL for messages)."""
        parts = urllib.parse.urlsplit(url)
        shown = shown or url
        if parts.scheme.lower() not in ("http", "https"):
            raise StorageNotAllowed(f"URL {shown} refused: only http and https are fetched")
        host = parts.hostname or ""
        if not host:
            raise StorageNotAllowed(f"URL {shown} refused: it names no host")
        if not self.host_allowed(host):
            raise StorageNotAllowed(
                f"URL {shown} refused: host '{host}' is not in the http allow-list "
                f"({', '.join(self.http_allowed_hosts)}); start the instance with --http-allowed-host "
                f"{host} to allow it")


def _lexically_inside(path: str, roots: Iterable[Path]) -> bool:
    normal = os.path.normpath(path)
    return any(_inside(os.path.normpath(root), normal) for root in roots)
