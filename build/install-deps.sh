#!/usr/bin/env bash
# Install what a make target needs, skipping whatever is already there. Usage:
#     build/install-deps.sh build|test [PYTHON]
#   build: what building needs (`make build`): the Debian packages in build/apt-packages.txt and
#          the PyPI packages in build/requirements.txt. No service, nothing that touches the
#          node's network: safe on a production node.
#   test:  the build's packages plus the test stack (`make test`, `make lint`, .ci/run):
#          build/apt-packages-test.txt (containerd, firewalld, podman, qemu, dnsmasq...: services
#          among them) and build/requirements-test.txt (pytest, hypothesis, grpcio, ruff, mypy).
# Debian packages need root when one is missing. The PyPI packages go into the interpreter
# PYTHON (default python3); Debian's own python3 refuses pip installs (PEP 668,
# "externally-managed-environment"), then they go into a venv at build/venv, which the Makefile
# uses whenever it exists. Quiet when everything is present.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mode="${1:-}"
python="${2:-python3}"
venv="$here/venv"
case "$mode" in
build)
    apt_lists=("$here/apt-packages.txt")
    pypi_lists=("$here/requirements.txt")
    ;;
test)
    apt_lists=("$here/apt-packages.txt" "$here/apt-packages-test.txt")
    pypi_lists=("$here/requirements.txt" "$here/requirements-test.txt")
    ;;
*)
    echo "usage: $0 build|test [PYTHON]" >&2
    exit 2
    ;;
esac
requirements="$(mktemp)"
trap 'rm -f "$requirements"' EXIT
cat "${pypi_lists[@]}" >"$requirements"

mapfile -t wanted < <(cat "${apt_lists[@]}" | grep -vE '^\s*(#|$)')
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${missing[*]} (run as root, or install them: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "installing Debian packages ($mode): ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Exit status 0 when every requirement is installed for interpreter $1 (no network, ~50 ms).
satisfied() {
    "$1" - "$requirements" <<'EOF'
import re
import sys
from importlib.metadata import PackageNotFoundError, version

def numbers(text):
    return tuple(int(n) for n in re.findall(r"\d+", text)[:4])

unmet = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, op, wanted = re.match(r"([A-Za-z0-9_.-]+)\s*(==|>=)?\s*(\S*)", line).groups()
    try:
        have = version(name)
    except PackageNotFoundError:
        unmet.append(f"{name} (not installed)")
        continue
    if (op == "==" and numbers(have) != numbers(wanted)) or (
        op == ">=" and numbers(have) < numbers(wanted)
    ):
        unmet.append(f"{name} {have} (want {op}{wanted})")
if unmet:
    print(f"{sys.executable}: missing PyPI packages: {', '.join(unmet)}")
sys.exit(1 if unmet else 0)
EOF
}

# pip may install into this interpreter: a venv, or a python not marked externally managed.
pip_allowed() {
    "$1" -c '
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if in_venv or not managed else 1)' && "$1" -m pip --version >/dev/null 2>&1
}

if [ -x "$venv/bin/python3" ]; then
    python="$venv/bin/python3"
fi
if satisfied "$python" >/dev/null; then
    exit 0
fi
satisfied "$python" || true
if ! pip_allowed "$python"; then
    echo "$python does not take pip installs (Debian's python: PEP 668); using a venv in $venv"
    # --copies: the venv's interpreter is a real file, so launchers that resolve symlinks
    # (build/srcbin.py) still run inside the venv.
    "$python" -m venv --copies "$venv"
    python="$venv/bin/python3"
fi
"$python" -m pip install -q --disable-pip-version-check -r "$requirements"
satisfied "$python"
