"""Regenerate the checked-in ``*_pb2.py`` / ``*_pb2_grpc.py`` modules from the ``.proto`` files.

    python -m kserve_mesh.protos.generate            # rewrite the generated modules
    python -m kserve_mesh.protos.generate --check    # exit 1 if they drifted (used by a test)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ("model_mesh.proto", "model_runtime.proto", "v2_repository.proto")


def _fix_imports(text: str) -> str:
    # protoc writes `import model_mesh_pb2`; make it a package-relative import.
    for proto in PROTOS:
        mod = proto.removesuffix(".proto") + "_pb2"
        text = text.replace(f"import {mod} as", f"from kserve_mesh.protos import {mod} as")
    return text


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc  # dev dependency only

    args = ["protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    rc = protoc.main(args + [str(HERE / p) for p in PROTOS])
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    produced = sorted(out_dir.glob("*_pb2*.py"))
    for path in produced:
        path.write_text(_fix_imports(path.read_text()))
    return produced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        drifted = []
        for path in produced:
            target = HERE / path.name
            if opts.check:
                if not target.exists() or target.read_text() != path.read_text():
                    drifted.append(path.name)
            else:
                target.write_text(path.read_text())
    if drifted:
        print("generated protobuf modules drifted: " + ", ".join(drifted), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
