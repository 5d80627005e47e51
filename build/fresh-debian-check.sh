#!/usr/bin/env bash
# Proves the README's first command on a bare Debian 12: debootstraps `--variant=minbase
# bookworm` into build/work/fresh-debian/root, installs make there as root (the README's one
# prerequisite), copies this checkout in and runs `make build` in a chroot, then checks that a
# frozen plugin answers VERSION and that no test-stack package got installed. Not part of the
# default suite: it needs root, network to the Debian mirror and a few minutes.
#
# Usage: build/fresh-debian-check.sh [MIRROR]   (default http://deb.debian.org/debian)
# Behind a TLS-intercepting proxy, FRESH_CHECK_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# copies that (public) trust store into the root for pip (PIP_CERT); nothing else is shared.
# Leaves the root in place for a look afterwards; `make clean` removes it (build/work).
set -euo pipefail
cd "$(dirname "$0")/.."
mirror="${1:-http://deb.debian.org/debian}"
work="build/work/fresh-debian"
root="$work/root"
if [ "$(id -u)" != 0 ]; then
    echo "must run as root (debootstrap, chroot)" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null; then
    echo "debootstrap missing: apt-get install debootstrap" >&2
    exit 1
fi
# The chroot's mounts live in a private mount namespace: nothing leaks into the machine's.
if [ -z "${FRESH_CHECK_UNSHARED:-}" ]; then
    exec unshare --mount --propagation private env FRESH_CHECK_UNSHARED=1 "$0" "$@"
fi
started=$SECONDS
mounted=()
cleanup() {
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT

if [ ! -x "$root/bin/bash" ]; then
    rm -rf "$root"
    mkdir -p "$root"
    echo "== debootstrap --variant=minbase bookworm ($mirror)"
    debootstrap --variant=minbase bookworm "$root" "$mirror"
fi
for fs in proc sys dev; do
    mount --rbind "/$fs" "$root/$fs"
    mounted+=("$root/$fs")
done
cp /etc/resolv.conf "$root/etc/resolv.conf"

echo "== a bare system has no make"
if chroot "$root" sh -c 'command -v make' >/dev/null; then
    echo "(make already there: the root was reused)"
fi
echo "== apt-get install make (the one prerequisite)"
chroot "$root" apt-get update -qq
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make >/dev/null

echo "== copy of this checkout into /src"
rm -rf "$root/src"
mkdir -p "$root/src"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$root/src"

pip_env=()
if [ -n "${FRESH_CHECK_CA_BUNDLE:-}" ]; then
    mkdir -p "$root/etc/ssl"
    cp "$FRESH_CHECK_CA_BUNDLE" "$root/etc/ssl/host-ca-bundle.crt"
    pip_env=(PIP_CERT=/etc/ssl/host-ca-bundle.crt)
fi

echo "== make build"
chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "${pip_env[@]}" make -C /src build

echo "== checks"
answer="$(chroot "$root" env -i CNI_COMMAND=VERSION /src/build/dist/bin/loopback </dev/null)"
echo "loopback VERSION: $answer"
case "$answer" in *supportedVersions*) ;; *)
    echo "FAIL: the frozen loopback gave no VERSION answer" >&2
    exit 1
    ;;
esac
leaked=()
while read -r pkg; do
    if chroot "$root" dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        leaked+=("$pkg")
    fi
done < <(grep -vE '^\s*(#|$)' build/apt-packages-test.txt)
for pkg in containerd firewalld podman qemu-system-x86 dnsmasq-base; do
    case " ${leaked[*]-} " in *" $pkg "*) echo "FAIL: make build installed $pkg" >&2 && exit 1 ;; esac
done
echo "test-stack packages present after make build: ${leaked[*]-none}"
echo "PASS: make build on a fresh Debian 12 minbase root in $((SECONDS - started)) s"
