#!/usr/bin/env bash
# Build kserve-mesh's JupyterLab extension (jupyter_ext/) with JupyterLab's own tooling — jlpm (the
# yarn the jupyterlab wheel brings; versions pinned by jupyter_ext/yarn.lock) and `jupyter builder
# build` — into jupyter_ext/labextension/ (gitignored: produced here, never committed).
#
# Then, unless --no-link, put it where Jupyter looks for this Python (what `jupyter labextension
# develop` does for an editable install, which gets no data files from setuptools): a link
# $prefix/share/jupyter/labextensions/kserve-mesh-jupyterlab -> jupyter_ext/labextension, and the
# server extension's config in $prefix/etc/jupyter/jupyter_server_config.d/kserve_mesh.json.
# A wheel (`pip wheel .` / `python -m build` after this script with --no-link) carries both itself.
#
# Needs the package's jupyter extra installed in this Python (`pip install -e '.[jupyter]'`; PYTHON
# picks another interpreter) and Node.js >= 20 with the npm registry reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
link=1
[ "${1:-}" = "--no-link" ] && link=0

if ! "$PY" -c 'import jupyterlab, jupyter_builder' 2>/dev/null; then
  echo "build-labextension: $PY has no jupyterlab; install the package with its jupyter extra first" >&2
  exit 1
fi
if ! command -v node >/dev/null 2>&1; then
  echo "build-labextension: Node.js (>= 20) is needed to build the JupyterLab extension" >&2
  exit 1
fi
# jlpm and `jupyter builder` of this interpreter, whatever else is on PATH.
PATH="$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
export PATH

echo "== JupyterLab extension: jlpm install + build (jupyter_ext/labextension)"
(cd jupyter_ext && jlpm install --immutable && jlpm build:prod) >/tmp/kserve-mesh-labextension-build.log 2>&1 || {
  tail -40 /tmp/kserve-mesh-labextension-build.log >&2
  echo "build-labextension: the build failed (whole log: /tmp/kserve-mesh-labextension-build.log)" >&2
  exit 1
}
test -f jupyter_ext/labextension/package.json

if [ "$link" = 1 ]; then
  prefix=$("$PY" -c 'import sys; print(sys.prefix)')
  labext="$prefix/share/jupyter/labextensions/kserve-mesh-jupyterlab"
  mkdir -p "$(dirname "$labext")" "$prefix/etc/jupyter/jupyter_server_config.d"
  rm -rf "$labext"
  ln -s "$PWD/jupyter_ext/labextension" "$labext"
  cp jupyter_ext/jupyter-config/jupyter_server_config.d/kserve_mesh.json "$prefix/etc/jupyter/jupyter_server_config.d/"
  echo "== linked $labext -> jupyter_ext/labextension; server extension enabled in $prefix/etc/jupyter"
fi
