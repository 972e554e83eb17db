#!/usr/bin/env bash
# Create the separate virtual environment that MLServer runs from (idempotent).
#
# MLServer 1.7.1 cannot share a venv or a process with kserve 0.21 (starlette pins, duplicate V2
# proto symbols), so kserve_mesh.runtime.mlserver starts it as its own process from this venv.
# uvloop is pinned to 0.21.0: newer releases crash-loop MLServer's workers.
#
#   scripts/mlserver-venv.sh            # creates .venv-mlserver/ at the repository root
#   KSERVE_MESH_MLSERVER_VENV=/opt/mls scripts/mlserver-venv.sh
#
# Prints the venv's path on its last line. Exits 0 at once when the venv already has the pinned
# versions; a half-made venv (interrupted install) is repaired by running it again.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${KSERVE_MESH_MLSERVER_VENV:-$root/.venv-mlserver}"
python="${PYTHON:-python3}"
packages=(mlserver==1.7.1 mlserver-sklearn==1.7.1 uvloop==0.21.0)

installed() {
    [ -x "$venv/bin/python" ] && [ -x "$venv/bin/mlserver" ] || return 1
    "$venv/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md, sys
want = {"mlserver": "1.7.1", "mlserver-sklearn": "1.7.1", "uvloop": "0.21.0"}
sys.exit(0 if all(md.version(n) == v for n, v in want.items()) else 1)
PY
}

if installed; then
    echo "$venv"
    exit 0
fi

echo "creating the MLServer venv in $venv" >&2
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
if ! installed; then
    echo "mlserver-venv.sh: $venv does not hold ${packages[*]} after installing" >&2
    exit 1
fi
echo "$venv"
