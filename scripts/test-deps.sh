#!/usr/bin/env bash
# What the tests need besides the Python packages of the dev extra: Debian's Chromium (the notebook
# browser test; never a test tool's own browser download), Debian's libjemalloc2, the JupyterLab extension built from
# jupyter_ext/ and linked into this Python (an editable install gets no data files; needs Node 20 and
# the npm registry), MLServer in its own venv (it cannot share one with kserve) and Triton in its own
# (nvidia-pytriton pins numpy<2). Idempotent; run as root on Debian (CI is).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# libjemalloc2: the runtime child's optional allocator (--runtime-allocator jemalloc), tested
[ -e /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libjemalloc.so.2 ] \
  || missing+=(libjemalloc2)
# libpython3.X: Triton's Python backend stub embeds the shared Python library (the Triton venv's)
py_ver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
py_lib=$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
[ -e "$py_lib/libpython$py_ver.so.1.0" ] || ldconfig -p | grep "libpython$py_ver.so.1.0" >/dev/null \
  || missing+=("libpython$py_ver")
# umoci: tests/integration/image unpacks the image that scripts/build-image.sh builds with it (an OCI
# implementation we did not write); the build script installs its own mmdebstrap
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bash scripts/build-labextension.sh
bash scripts/mlserver-venv.sh
# Triton (nvidia-pytriton's server, files only) and its Python backend's env (numpy<2, onnxruntime)
python3 -m kserve_mesh.runtime.triton.venv .venv-triton
