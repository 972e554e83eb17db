#!/bin/sh
# Build the kserve-mesh wheel from SRC and install it with its dependencies into a new venv: the
# Python half of the image, run by both builds (the Containerfile's first stage, and
# scripts/build-image.sh inside its Debian root filesystem), so both install the same set.
#
#     sh scripts/image/install-venv.sh SRC VENV DIST
#
# SRC: the source tree; VENV: the venv to create (/opt/kserve-mesh in the image); DIST: where the
# wheel and requirements.txt go. PYTHON: the interpreter (default python3). WHEELHOUSE: a folder of
# wheels kept between builds (build-image.sh mounts its cache there): the requirements are fetched
# into it, then installed from it alone. Everything else pip reads from its PIP_* variables.
#
# Steps: the wheel (pip wheel --no-deps, build isolation), the venv, the wheel with --no-deps, then
# the requirements that scripts/image/requirements.py reads from pyproject.toml constrained by
# scripts/image/constraints.txt (every version pinned; LOCK=1 leaves them out, to re-resolve),
# `pip check`, and then what nothing runs: pip and setuptools in the venv, and the test suites of
# numpy, scipy, pandas, scikit-learn, joblib and psutil (~100 MB). The .pyc files stay: the image
# runs on a read-only root filesystem, where Python could not write them, and without them every
# start compiles every module again (imports take 2-3x longer; measured in docs/image.md).
set -eu
[ $# -eq 3 ] || { echo "usage: $0 SRC VENV DIST" >&2; exit 2; }
SRC=$1 VENV=$2 DIST=$3
# An ARG the build was not given may arrive empty; the tools want a number or nothing.
[ -n "${SOURCE_DATE_EPOCH:-}" ] || unset SOURCE_DATE_EPOCH
PYTHON=${PYTHON:-python3}
CONSTRAINTS="$SRC/scripts/image/constraints.txt"

mkdir -p "$DIST"
"$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }

echo "== the kserve-mesh wheel"
pip wheel --quiet --no-deps --wheel-dir "$DIST" "$SRC"
"$PYTHON" "$SRC/scripts/image/requirements.py" "$SRC/pyproject.toml" >"$DIST/requirements.txt"
set -- -r "$DIST/requirements.txt"
[ "${LOCK:-0}" = 1 ] || set -- "$@" -c "$CONSTRAINTS"

echo "== the dependencies"
if [ -n "${WHEELHOUSE:-}" ]; then
  pip wheel --quiet --wheel-dir "$WHEELHOUSE" --find-links "$WHEELHOUSE" "$@"
  set -- --no-index --find-links "$WHEELHOUSE" "$@"
fi
pip install --quiet --no-deps "$DIST"/kserve_mesh-*.whl
pip install --quiet "$@"
pip check

echo "== trimming the venv"
pip uninstall --quiet --yes pip setuptools wheel 2>/dev/null || true
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
for pkg in numpy scipy pandas sklearn joblib psutil; do
  if [ -d "$SITE/$pkg" ]; then
    find "$SITE/$pkg" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +
  fi
done
echo "venv: $(du -sh "$VENV" | cut -f1)"
