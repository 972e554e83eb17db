"""The files MLServer's repository reads: ``settings.json`` for the server, and one
``model-settings.json`` per model.

MLServer finds a model to load by globbing ``<repository>/**/model-settings.json`` for the
``name`` asked for, so the adapter writes one file per model, named after the concrete model id,
in its own folder, with ``parameters.uri`` pointing at the model file it fetched. Files are
written atomically (MLServer may glob while one is written). MLServer parses every settings file
of the repository on each load, so a load's cost grows with the number of models held (not
measured at ModelMesh densities).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kserve_mesh.runtime.builtin.models import LIGHTGBM, SKLEARN, XGBOOST
from kserve_mesh.storage import safe_name

_SAFE = re.compile(r"[A-Za-z0-9._-]{1,200}")

# Model format -> (MLServer runtime class, the pip package that ships it).
IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    SKLEARN: ("mlserver_sklearn.SKLearnModel", "mlserver-sklearn"),
    XGBOOST: ("mlserver_xgboost.XGBoostModel", "mlserver-xgboost"),
    LIGHTGBM: ("mlserver_lightgbm.LightGBMModel", "mlserver-lightgbm"),
}


def installed_formats(venv: Path) -> frozenset[str]:
    """Formats whose MLServer runtime package is installed in ``venv``."""
    found = set()
    for fmt, (impl, _package) in IMPLEMENTATIONS.items():
        module = impl.split(".", 1)[0]
        if any((site / module).is_dir() for site in venv.glob("lib/python*/site-packages")):
            found.add(fmt)
    return frozenset(found)


def server_settings(*, http_port: int, grpc_port: int, parallel_workers: int, max_message_bytes: int,
                    repository: Path) -> dict[str, Any]:
    """MLServer's ``settings.json``: loopback only, our ports, nothing loaded until asked."""
    return {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "model_repository_root": str(repository),
        "load_models_at_startup": False,
        "parallel_workers": parallel_workers,
        "metrics_endpoint": None,  # no metrics server (it would need one more port)
        "grpc_max_message_length": max_message_bytes,
        "debug": False,
    }


def model_settings(model_id: str, model_format: str, uri: Path) -> dict[str, Any]:
    implementation, _package = IMPLEMENTATIONS[model_format]
    return {"name": model_id, "implementation": implementation, "parameters": {"uri": str(uri)}}


def model_dir(repository: Path, model_id: str) -> Path:
    """The model's folder: named after the id when that is a safe file name, as MLServer expects
    (it logs a warning per model on every load otherwise); a hashed safe name if not."""
    if _SAFE.fullmatch(model_id) and not model_id.startswith("."):
        return repository / model_id
    return repository / safe_name(model_id)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_model_settings(repository: Path, model_id: str, model_format: str, uri: Path) -> Path:
    path = model_dir(repository, model_id) / "model-settings.json"
    write_json(path, model_settings(model_id, model_format, uri))
    return path


def remove_model_settings(repository: Path, model_id: str) -> None:
    shutil.rmtree(model_dir(repository, model_id), ignore_errors=True)
