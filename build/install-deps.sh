#!/usr/bin/env bash
# Install what `make build` and `make test` need: Debian packages (only the missing ones) and
# the Python packages in build/requirements.txt for the interpreter given as $1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${1:-python3}"

mapfile -t wanted < <(grep -vE '^\s*(#|$)' "$here/apt-packages.txt")
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! "$python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"; then
    echo "pip install failed" >&2
    exit 1
fi
