#!/usr/bin/env bash
# Install what `make build` and `make test` need, skipping whatever is already there:
#   - the Debian packages in build/apt-packages.txt (apt-get; needs root when one is missing),
#   - the PyPI packages in build/requirements.txt for the interpreter given as $1.
# Debian's own python3 refuses pip installs (PEP 668, "externally-managed-environment"); then the
# PyPI packages go into a venv at build/venv, which the Makefile uses whenever it exists.
# Quiet when everything is present.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${1:-python3}"
venv="$here/venv"
requirements="$here/requirements.txt"

mapfile -t wanted < <(grep -vE '^\s*(#|$)' "$here/apt-packages.txt")
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "installing Debian packages: ${missing[*]}"
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
