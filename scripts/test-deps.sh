#!/usr/bin/env bash
# What the tests need besides the Python packages of the dev extra: Debian's Chromium (the notebook
# browser test; never a test tool's own browser download), Debian's libjemalloc2, the JupyterLab extension built from
# jupyter_ext/ and linked into this Python (an editable install gets no data files; needs Node 20 and
# the npm registry) and MLServer in its own venv (it cannot share one with kserve). Idempotent; run
# as root on Debian (CI is).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# libjemalloc2: the runtime child's optional allocator (--runtime-allocator jemalloc), tested
[ -e /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libjemalloc.so.2 ] \
  || missing+=(libjemalloc2)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bash scripts/build-labextension.sh
bash scripts/mlserver-venv.sh
