#!/bin/sh
# Install the Debian packages blockd needs to build, run and test.
# Idempotent and quiet when everything is present. Runs apt-get as root
# (directly when we are root, through sudo otherwise).
set -e

PKGS="build-essential pkg-config liburing-dev librocksdb-dev uuid-dev libisal-dev
libjson-c-dev libmicrohttpd-dev libcurl4-openssl-dev libnbd-dev libcriterion-dev
libnbd-bin python3-libnbd nbdkit qemu-utils fio clang libclang-rt-14-dev procps curl
iproute2 valgrind
qemu-system-x86 busybox-static linux-image-amd64 e2fsprogs cpio"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "install-deps: need root to install:$missing" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
