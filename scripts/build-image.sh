#!/usr/bin/env bash
# Build the kserve-mesh image without a container engine: the same image as the Containerfile's
# (same venv, same pinned versions, same config), on Debian's Python instead of python:slim's.
#
#   scripts/build-image.sh [--output DIR] [--cache DIR] [--rootfs-only] [--lock]
#                          [--mirror URL] [--security-mirror URL] [--snapshot TIMESTAMP]
#
#  1. mmdebstrap: a minimal Debian bookworm root filesystem (the Essential packages, python3,
#     python3-venv, ca-certificates, libgomp1, libstdc++6; no docs, man pages, locales, apt lists)
#  2. inside it (chroot): scripts/image/install-venv.sh -- the wheel built from this checkout and its
#     dependencies from PyPI in /opt/kserve-mesh, as the Containerfile's first stage does
#  3. the non-root user (65532), no host files left behind (resolv.conf, hostname, caches)
#  4. scripts/image/oci.py: an OCI image layout in DIR/oci and the tarball DIR/kserve-mesh-VERSION.oci.tar
#     (tags VERSION and latest), its config read from the Containerfile
#
# Output (DIR, default build/image/out): rootfs/, dist/ (the wheel, requirements.txt), oci/,
# kserve-mesh-VERSION.oci.tar, build-info.json (sizes, digests, the time of each step).
# --rootfs-only stops after step 3. --cache DIR (default build/image/cache) keeps the wheels of the
# dependencies between builds. --lock re-resolves the dependencies without scripts/image/constraints.txt
# and writes the versions installed there. --snapshot 20250520T000000Z takes the Debian packages
# from snapshot.debian.org at that time (with SOURCE_DATE_EPOCH and the pinned Python packages:
# a rebuild gives the same files). SOURCE_DATE_EPOCH defaults to the time of the last commit.
#
# Needs root (mmdebstrap --mode=root, chroot, mount) on Debian or Ubuntu, apt-installs mmdebstrap when
# it is missing, and reaches the Debian mirror and PyPI (pip honours PIP_INDEX_URL; the host's CA
# bundle is used inside, for networks with a TLS-inspecting proxy).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/build/image/out
CACHE=$ROOT/build/image/cache
ROOTFS_ONLY=0
LOCK=0
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY_MIRROR=http://deb.debian.org/debian-security
SNAPSHOT=
NAME=kserve-mesh
VENV=/opt/kserve-mesh
UID_GID=65532

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --output) OUT=$2; shift 2 ;;
    --cache) CACHE=$2; shift 2 ;;
    --rootfs-only) ROOTFS_ONLY=1; shift ;;
    --lock) LOCK=1; shift ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --security-mirror) SECURITY_MIRROR=$2; shift 2 ;;
    --snapshot) SNAPSHOT=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option $1" >&2; usage 2 >&2 ;;
  esac
done
APTOPTS=()
if [ -n "$SNAPSHOT" ]; then
  MIRROR=http://snapshot.debian.org/archive/debian/$SNAPSHOT
  SECURITY_MIRROR=http://snapshot.debian.org/archive/debian-security/$SNAPSHOT
  APTOPTS+=(--aptopt='Acquire::Check-Valid-Until "false"')  # a snapshot's Release files have expired
fi
[ "$(id -u)" = 0 ] || { echo "build-image.sh: run as root (mmdebstrap --mode=root, chroot, mount)" >&2; exit 1; }
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
CACHE=$(mkdir -p "$CACHE/wheels" && cd "$CACHE" && pwd)
R=$OUT/rootfs
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}

STARTED=$EPOCHREALTIME
STEPS=()
step_started=$STARTED
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
step() {  # step NAME: records the time since the previous step
  local took; took=$(since "$step_started")
  STEPS+=("\"$1\": $took")
  echo "== $1 done in $took s"
  step_started=$EPOCHREALTIME
}

# -- 0: tools ----------------------------------------------------------------------------------------
if ! command -v mmdebstrap >/dev/null; then
  echo "== installing mmdebstrap (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq mmdebstrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq mmdebstrap >/dev/null; }
fi

# -- 1: the Debian root filesystem --------------------------------------------------------------------
echo "== root filesystem: Debian $SUITE from $MIRROR"
rm -rf --one-file-system "$R" "$R.tmp"
mmdebstrap --mode=root --variant=essential --quiet "${APTOPTS[@]}" \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python3-venv,ca-certificates,libgomp1,libstdc++6 \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  "$SUITE" "$R.tmp" \
  "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main"
mv "$R.tmp" "$R"
step debian_rootfs

# -- 2: the venv, inside the root filesystem --------------------------------------------------------------
echo "== the venv: kserve-mesh from $ROOT and its dependencies"
B=$R/tmp/build  # sources, wheel, CA bundle and the wheel cache's mount point; removed below
mkdir -p "$B/src" "$B/wheelhouse"
# The paths the Containerfile's build context holds ("!" lines of .containerignore), from git when
# this is a checkout (tracked and untracked files, not the ignored ones), else as they are.
mapfile -t paths < <(sed -n 's#^!\(.*\)#\1#p' "$ROOT/.containerignore" | sed 's#/$##')
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard -- "${paths[@]}" \
    | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$B/src"
else
  (cd "$ROOT" && tar --exclude=__pycache__ --exclude='*.egg-info' -cf - "${paths[@]}") | tar -xf - -C "$B/src"
fi
CA=${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}}
pip_env=(PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore)
if [ -f "$CA" ]; then cp "$CA" "$B/ca.pem"; pip_env+=(PIP_CERT=/tmp/build/ca.pem); fi
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT; do
  [ -n "${!var:-}" ] && pip_env+=("$var=${!var}")
done
# A private mount namespace: the mounts go with it, whatever happens.
unshare --mount --propagation private -- bash -euo pipefail -c '
  R=$1; CACHE=$2; shift 2
  mount --bind "$CACHE/wheels" "$R/tmp/build/wheelhouse"
  mount -t proc proc "$R/proc"
  mount --rbind /dev "$R/dev"
  cp /etc/resolv.conf "$R/etc/resolv.conf"
  chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@" \
    sh /tmp/build/src/scripts/image/install-venv.sh /tmp/build/src '"$VENV"' /tmp/build/dist
' bash "$R" "$CACHE" "${pip_env[@]}" SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" LOCK="$LOCK" \
  WHEELHOUSE=/tmp/build/wheelhouse
rm -rf "$OUT/dist" && cp -r "$B/dist" "$OUT/dist"
WHEEL=$(basename "$(ls "$OUT"/dist/kserve_mesh-*.whl)")
VERSION=$(echo "$WHEEL" | cut -d- -f2)
if [ "$LOCK" = 1 ]; then
  {
    echo "# The versions the kserve-mesh image installs (scripts/image/install-venv.sh, both builds), for"
    echo "# builds that give the same image. Written by scripts/build-image.sh --lock (Python $(chroot "$R" python3 -c 'import platform; print(platform.python_version())'),"
    echo "# $(date -u +%Y-%m-%d)); a dependency missing here is installed unpinned and fails tests/integration/image."
    chroot "$R" "$VENV/bin/python" -c '
import importlib.metadata as m
for d in sorted(m.distributions(), key=lambda d: d.metadata["Name"].lower()):
    if d.metadata["Name"] != "kserve-mesh":
        print(d.metadata["Name"] + "==" + d.version)'
  } >"$ROOT/scripts/image/constraints.txt"
  echo "== wrote scripts/image/constraints.txt"
fi
rm -rf --one-file-system "$B"
step python_venv

# -- 3: the user, and nothing of the host or of the build left ------------------------------------
echo "$NAME:x:$UID_GID:$UID_GID:$NAME:/tmp:/usr/sbin/nologin" >>"$R/etc/passwd"
echo "$NAME:x:$UID_GID:" >>"$R/etc/group"
rm -f "$R/etc/resolv.conf" "$R/etc/hostname"
rm -rf --one-file-system "$R"/var/cache/apt/* "$R"/var/cache/ldconfig/aux-cache "$R"/var/lib/apt/lists/* \
  "$R"/var/log/* "$R"/root/.cache \
  "$R"/var/lib/dpkg/*-old
find "$R/tmp" -mindepth 1 -delete
chmod 1777 "$R/tmp"
ROOTFS_BYTES=$(du -sb "$R" | cut -f1)
VENV_BYTES=$(du -sb "$R$VENV" | cut -f1)
step finish_rootfs

write_info() {
  local total; total=$(since "$STARTED")
  local steps; steps=$(IFS=,; echo "${STEPS[*]}")
  cat >"$OUT/build-info.json" <<EOF
{"version": "$VERSION", "wheel": "$WHEEL", "source_date_epoch": $SOURCE_DATE_EPOCH,
 "rootfs_bytes": $ROOTFS_BYTES, "venv_bytes": $VENV_BYTES, "seconds": {$steps, "total": $total},
 "image": ${1:-null}}
EOF
  echo "== root filesystem: $((ROOTFS_BYTES / 1048576)) MiB (venv $((VENV_BYTES / 1048576)) MiB); built in $total s"
}

if [ "$ROOTFS_ONLY" = 1 ]; then
  write_info
  echo "== $R"
  exit 0
fi

# -- 4: the OCI image ---------------------------------------------------------------------------------
echo "== OCI image $NAME:$VERSION"
rm -f "$OUT"/*.oci.tar
IMAGE=$(python3 "$ROOT/scripts/image/oci.py" pack "$R" "$OUT" --containerfile "$ROOT/Containerfile" \
  --name "$NAME" --tag "$VERSION" --tag latest --layer "$VENV" --epoch "$SOURCE_DATE_EPOCH")
step oci_image
write_info "$IMAGE"
python3 - "$OUT/build-info.json" <<'EOF'
import json, sys
info = json.load(open(sys.argv[1]))
img = info["image"]
layers = ", ".join(f"{l['compressed_bytes'] / 2**20:.0f} MiB" for l in img["layers"])
print(f"== image: {img['tarball']} ({img['tarball_bytes'] / 2**20:.0f} MiB; layers {layers}); manifest {img['manifest']}")
EOF
