#!/usr/bin/env bash
# The fresh-machine check: both README commands, to the end, on a minimal Debian 12.
#
#   sudo scripts/fresh-machine.sh [REF]        REF: commit or branch of this repo (default: HEAD)
#
# Builds a minbase Debian 12 (bookworm) root with debootstrap holding only what the README
# promises a fresh machine has (python3, python3-venv, python3-pip, git, make, curl,
# ca-certificates), clones this repository at REF into it with ../shared beside it (the host's
# shared directory, bind-mounted read-only), and in a chroot runs
#   1. `make demo` until the server answers /map and the sample county is ingested, then stops it;
#   2. `CI=true make test` (the whole suite).
# Run it before every submission that touches setup (scripts/setup.sh, pyproject.toml, Makefile).
# Needs root and the Debian package debootstrap on the host. It takes a long time (apt, pip, npm
# downloads, then the suite): run it in the background with its output in a file.
#
# The chroot shares the host's network namespace, so its ports must not collide with servers
# already running on the host: FRESH_PORT (HTTP, default 18000), FRESH_PG_PORT (demo cluster,
# default 55700) and FRESH_TEST_PG_PORT (test cluster, default 55701) are passed as GEOBASE_PORT,
# GEOBASE_PG_PORT and GEOBASE_TEST_PG_PORT.
# Other knobs: FRESH_ROOT (where the root is built; default /var/tmp/geobase-fresh-<time>),
# FRESH_KEEP=1 (keep the root afterwards), FRESH_MIRROR (Debian mirror), FRESH_SHARED (the
# directory that becomes ../shared; default ../shared of this checkout).
# Exit status: 0 when both commands succeeded; the logs are in $FRESH_ROOT/../<name>-*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
REF=${1:-HEAD}
COMMIT=$(git -C "$REPO" rev-parse --verify "$REF^{commit}")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
ROOT=${FRESH_ROOT:-/var/tmp/geobase-fresh-$STAMP}
LOGDIR=$(dirname "$ROOT")
LOG_PREFIX="$LOGDIR/$(basename "$ROOT")"
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
SHARED=${FRESH_SHARED:-$(cd "$REPO/.." && pwd)/shared}
PORT=${FRESH_PORT:-18000}
PG_PORT=${FRESH_PG_PORT:-55700}
TEST_PG_PORT=${FRESH_TEST_PG_PORT:-55701}
PKGS=python3,python3-venv,python3-pip,git,make,curl,ca-certificates

[ "$(id -u)" -eq 0 ] || { echo "fresh-machine: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "fresh-machine: install the Debian package debootstrap" >&2; exit 1; }
[ -d "$SHARED" ] || { echo "fresh-machine: no shared directory at $SHARED (set FRESH_SHARED)" >&2; exit 1; }

t0=$(date +%s)
say() { echo "fresh-machine [$(( $(date +%s) - t0 ))s] $*"; }

MOUNTS=()
cleanup() {
  set +e
  # end the processes that run inside this root (the demo cluster, a left-over server): found by
  # their root directory, so nothing outside the chroot is touched
  for pass in TERM KILL; do
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] && kill -s "$pass" "${p#/proc/}" 2>/dev/null
    done
    sleep 2
  done
  for ((i=${#MOUNTS[@]}-1; i>=0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null; done
  if [ "${FRESH_KEEP:-0}" != 1 ]; then
    # only after every mount is gone: never delete through a bind mount into the host
    if ! grep -q " $ROOT/" /proc/mounts; then rm -rf "$ROOT"; fi
  fi
  say "done (root ${FRESH_KEEP:+kept at $ROOT})"
}
trap cleanup EXIT

say "debootstrap --variant=minbase bookworm into $ROOT (only $PKGS)"
mkdir -p "$ROOT"
debootstrap --variant=minbase --include="$PKGS" bookworm "$ROOT" "$MIRROR" >"$LOG_PREFIX-debootstrap.log" 2>&1 \
  || { tail -20 "$LOG_PREFIX-debootstrap.log"; exit 1; }
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# a host behind a TLS-inspecting proxy trusts extra CAs: the chroot must trust them too, or no
# download (pip, npm) gets through. The image stays minimal: only certificates are added.
CA_ENV=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  chroot "$ROOT" update-ca-certificates >/dev/null 2>&1
  B=/etc/ssl/certs/ca-certificates.crt
  CA_ENV=(PIP_CERT=$B SSL_CERT_FILE=$B REQUESTS_CA_BUNDLE=$B CURL_CA_BUNDLE=$B NODE_EXTRA_CA_CERTS=$B)
fi

mnt() { mount "$@"; MOUNTS+=("${@: -1}"); }
mnt -t proc proc "$ROOT/proc"
mnt -t sysfs sys "$ROOT/sys"
mnt --bind /dev "$ROOT/dev"
mnt -t devpts devpts "$ROOT/dev/pts" -o newinstance,ptmxmode=0666
mnt -t tmpfs shm "$ROOT/dev/shm" -o mode=1777
mkdir -p "$ROOT/work/shared"
mnt --bind "$SHARED" "$ROOT/work/shared"
mount -o remount,bind,ro "$ROOT/work/shared"

say "cloning $REPO at $COMMIT into /work/geobase (../shared beside it, read-only)"
git clone -q --no-local "$REPO" "$ROOT/work/geobase"
git -C "$ROOT/work/geobase" checkout -q "$COMMIT"

in_root() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 TERM=dumb "${CA_ENV[@]}" GEOBASE_PORT="$PORT" GEOBASE_PG_PORT="$PG_PORT" GEOBASE_TEST_PG_PORT="$TEST_PG_PORT" \
    "$@"
}

# --- 1. make demo: until /map answers and the sample is in, then stop it ------------------------
say "make demo (log: $LOG_PREFIX-demo.log)"
in_root /bin/bash -c 'cd /work/geobase && exec make demo' >"$LOG_PREFIX-demo.log" 2>&1 &
DEMO=$!
B="http://127.0.0.1:$PORT"
demo_ok=0
for _ in $(seq 1 1800); do   # up to an hour (apt + pip + npm downloads, then the ingest)
  if ! kill -0 "$DEMO" 2>/dev/null; then break; fi
  if curl -fsS -m 5 -o /dev/null "$B/map" 2>/dev/null \
     && curl -fsS -m 10 "$B/collections/land_use/items?limit=1" 2>/dev/null | grep -q '"Feature"'; then
    demo_ok=1; break
  fi
  sleep 2
done
if [ "$demo_ok" = 1 ]; then
  say "demo: /map answers and land_use has features"
  kill -TERM "$DEMO" 2>/dev/null
  # the server runs inside make inside the chroot: stop it by the processes rooted there
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] || continue
    grep -qa "geobase" "$p/cmdline" 2>/dev/null && grep -qa "demo" "$p/cmdline" 2>/dev/null && kill -TERM "${p#/proc/}" 2>/dev/null
  done
  wait "$DEMO" 2>/dev/null || true
  in_root /bin/bash -c 'cd /work/geobase && .venv/bin/geobase db stop' >>"$LOG_PREFIX-demo.log" 2>&1 || true
else
  say "demo FAILED (it exited or never answered); last lines:"
  tail -30 "$LOG_PREFIX-demo.log"
  exit 1
fi

# --- 2. CI=true make test ---------------------------------------------------------------------
say "CI=true make test (log: $LOG_PREFIX-test.log)"
set +e
in_root /bin/bash -c 'cd /work/geobase && CI=true exec make test' >"$LOG_PREFIX-test.log" 2>&1
rc=$?
set -e
tail -5 "$LOG_PREFIX-test.log"
if [ "$rc" = 0 ]; then say "PASS: make demo and make test on a minbase Debian 12 ($(( $(date +%s) - t0 ))s)"
else say "FAIL: make test exited $rc ($(( $(date +%s) - t0 ))s)"; fi
exit "$rc"
