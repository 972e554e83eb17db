"""What "Deploy to mesh" may name: files and folders inside Jupyter's root dir, nothing else.

A path from the browser is relative to the root dir (JupyterLab's API paths) or absolute inside it;
``..`` is refused outright (400), and so is anything that resolves outside the root, symbolic links
included (403); hidden files follow the contents manager's ``allow_hidden``.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

MODEL_TYPES: dict[str, tuple[str, ...]] = {
    "sklearn": (".joblib", ".pkl", ".pickle"),
    "xgboost": (".json", ".ubj"),
    "lightgbm": (".txt",),
    "onnx": (".onnx",),
    "pytorch": (".pt", ".pth", ".torchscript"),
    "keras": (".keras", ".h5"),
    "openvino_ir": (".xml",),
    "string": (".string", ".str"),
}
"""Model file extensions per type of the built-in runtime (kserve_mesh.runtime.builtin.models)."""

_BY_SUFFIX = {suffix: kind for kind, suffixes in MODEL_TYPES.items() for suffix in suffixes}
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


class PathRefused(Exception):
    """A path the extension will not hand to the mesh; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def resolve_in_root(root_dir: str | Path, path: str, *, allow_hidden: bool = False) -> Path:
    """The real path of ``path`` (relative to ``root_dir``, or absolute inside it)."""
    if not isinstance(path, str) or not path.strip():
        raise PathRefused(400, "a file path is required (relative to Jupyter's root dir)")
    if "\x00" in path:
        raise PathRefused(400, "the file path holds a NUL character")
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if ".." in parts:
        raise PathRefused(400, f"'{path}' is refused: '..' may not appear in a path (paths stay inside "
                               "Jupyter's root dir)")
    root = Path(root_dir).expanduser().resolve()
    candidate = Path(path) if Path(path).is_absolute() else root / path.lstrip("/")
    real = candidate.resolve()
    if real != root and not real.is_relative_to(root):
        raise PathRefused(403, f"'{path}' is outside Jupyter's root dir ({root}); only files under it can be "
                               "deployed")
    if not allow_hidden and any(p.startswith(".") for p in real.relative_to(root).parts):
        raise PathRefused(403, f"'{path}' is a hidden file or folder (ContentsManager.allow_hidden is off)")
    if not real.exists():
        raise PathRefused(404, f"'{path}' does not exist in Jupyter's root dir")
    return real


def model_type_of(path: Path) -> str:
    """The model type a file's extension (or the first model file in a folder) stands for; '' if none."""
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.is_file() and child.suffix.lower() in _BY_SUFFIX:
                return _BY_SUFFIX[child.suffix.lower()]
        return ""
    return _BY_SUFFIX.get(path.suffix.lower(), "")


def model_id_of(path: Path) -> str:
    """A model id from a file or folder name: its stem, with anything but ``A-Za-z0-9._-`` as ``-``."""
    stem = path.stem if path.is_file() else path.name
    return _UNSAFE_ID.sub("-", stem).strip("-.") or "model"


def is_storage_uri(path: str) -> bool:
    """A remote storage URI (s3://, gs://, http(s)://, pvc://…) goes to the mesh as is; local paths
    and ``file://`` URIs are confined to the root dir."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() != "file" and "/" not in scheme
