"""Train tiny example models for every type the built-in runtime serves, and sample requests.

    python examples/make_models.py [OUT_DIR] [--installed-only]   # default: examples/models

The models and ``inputs.json`` as ``kserve_mesh.cli.example_models`` describes them (packaged, so
that ``kserve-mesh up`` makes them outside a clone too); ``--installed-only`` skips the models whose
training libraries are missing. Tests import the ``make_*`` functions and ``arrays_of`` from here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kserve_mesh.cli.example_models import (
    SAMPLE_ROWS,
    SEED,
    STRING_MODELS,
    TRAINED,
    arrays_of,
    make_all,
    make_lightgbm,
    make_onnx,
    make_sklearn,
    make_string,
    make_xgboost,
    missing_libraries,
)
from kserve_mesh.cli.example_models import main as _main

__all__ = ["SAMPLE_ROWS", "SEED", "STRING_MODELS", "TRAINED", "arrays_of", "main", "make_all", "make_lightgbm",
           "make_onnx", "make_sklearn", "make_string", "make_xgboost", "missing_libraries"]


def main(argv: list[str] | None = None) -> int:
    return _main(argv, default_out=Path(__file__).resolve().parent / "models")


if __name__ == "__main__":
    sys.exit(main())
