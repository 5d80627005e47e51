"""Pack build/dist/bin into a Debian package: build/release/pycni_<version>_<arch>.deb.

What it holds:
- /opt/cni/bin/: the plugin directory exactly as `make build` lays it out (every file and
  folder of build/dist/bin, hard links kept). containerd's default bin_dir is /opt/cni/bin and
  podman searches it too, so both find the plugins with their default settings.
- /usr/bin/cnitool -> /opt/cni/bin/cnitool, and its man page cnitool(8).
- /lib/systemd/system/: every unit file in build/systemd/. The maintainer scripts enable the
  socket units (socket activation starts their services on first use) through
  deb-systemd-helper when it is there, start them when systemd runs, and on removal stop and
  forget them; without systemd they do nothing. They honour DPKG_ROOT (an install into another
  root never touches this machine's systemd).
- /usr/share/doc/pycni/ (copyright, changelog) and lintian overrides with the reasons.

Built with dpkg-deb only (no network, no debhelper). Usage:
    python3 build/deb.py [--dist DIR] [--outdir DIR] [--compression xz|gzip|zstd|none]
"""

import argparse
import gzip
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PACKAGE = "pycni"
PLUGIN_DIR = "opt/cni/bin"
UNIT_DIR = "lib/systemd/system"
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path")
ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}

DESCRIPTION = """\
CNI plugins written in Python (drop-in for containernetworking-plugins)
 The standard CNI plugins (bridge, ptp, macvlan, ipvlan, vlan, host-device,
 loopback, dummy, tap, host-local, static, portmap, bandwidth, tuning,
 firewall, sbr, vrf) with the same names, config keys and on-disk state as
 upstream's, plus GC and STATUS, nftables backends, per-call logs and
 cnitool with a "doctor" that explains what keeps a node's pods off the
 network. Installed into /opt/cni/bin, where containerd and podman look."""

COPYRIGHT = """\
pycni: CNI plugins written in Python.

Copyright: 2025-2026 the pycni authors.
License: no license has been declared in the pycni source tree yet; until the
authors choose one, all rights are reserved by them.

The runtime folder /opt/cni/bin/_internal bundles, as frozen by PyInstaller:
the CPython interpreter and standard library (Python Software Foundation
License, /usr/share/common-licenses does not carry it; see
https://docs.python.org/3/license.html), PyInstaller's bootloader (GPL-2+
with an exception allowing the distribution of frozen programs), pyroute2
(GPL-2+ or Apache-2.0, see /usr/share/common-licenses/Apache-2.0 and
/usr/share/common-licenses/GPL-2), and the shared libraries of the build
machine's Debian packages that CPython links (zlib, OpenSSL, libffi, liblzma,
libbz2, libsqlite3, libuuid) under their own licenses.
"""

# Why each overridden lintian tag does not apply (the override file carries these comments):
# tag -> (context pattern or "", reason).
INTERNAL = "[opt/cni/bin/_internal/*]"
OVERRIDES = {
    "dir-or-file-in-opt": (
        "",
        "CNI's plugin directory: containerd's default bin_dir is "
        "/opt/cni/bin and podman searches it; /usr/lib/cni belongs to containernetworking-plugins",
    ),
    # The frozen runtime folder is CPython as PyInstaller collects it from the build machine:
    "custom-library-search-path": (
        f"RUNPATH * {INTERNAL}",
        "RUNPATH of the build machine's "
        "Python; the bootloader's LD_LIBRARY_PATH (searched first) points at _internal/",
    ),
    "embedded-library": (
        f"* {INTERNAL}",
        "PyInstaller bundles the libraries CPython links; "
        "the executables never load the system's copies",
    ),
    "library-not-linked-against-libc": (
        INTERNAL,
        "CPython extension modules that call no libc function",
    ),
}

POSTINST = """\
#!/bin/sh
# Enable the socket units: systemd then starts each daemon on its first connection.
set -e
UNITS="{units}"
case "$1" in
configure|abort-upgrade|abort-deconfigure|abort-remove)
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        for unit in $UNITS; do
            deb-systemd-helper unmask "$unit" >/dev/null || true
            # was-enabled is true on a first install, and after an upgrade of an enabled unit.
            if deb-systemd-helper --quiet was-enabled "$unit"; then
                deb-systemd-helper enable "$unit" >/dev/null || true
            else
                deb-systemd-helper update-state "$unit" >/dev/null || true
            fi
        done
    fi
    if [ -z "${{DPKG_ROOT:-}}" ] && [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        deb-systemd-invoke start $UNITS >/dev/null || true
    fi
    ;;
esac
exit 0
"""

PRERM = """\
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -z "${{DPKG_ROOT:-}}" ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop {all_units} >/dev/null || true
fi
exit 0
"""

POSTRM = """\
#!/bin/sh
# No conffiles: removing is purging, and leaves no enablement symlink or state behind.
set -e
case "$1" in
remove|purge)
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        deb-systemd-helper purge {units} >/dev/null || true
    fi
    if [ -z "${{DPKG_ROOT:-}}" ] && [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
    ;;
esac
exit 0
"""


def version() -> str:
    sys.path.insert(0, REPO)
    from libcni import PYCNI_VERSION

    return PYCNI_VERSION


def build_time() -> int:
    """SOURCE_DATE_EPOCH, else the last commit's time: the same tree packs the same bytes."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    proc = subprocess.run(
        ["git", "-C", REPO, "log", "-1", "--format=%ct"], capture_output=True, text=True
    )
    return int(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else 0


def maintainer() -> str:
    if os.environ.get("DEB_MAINTAINER"):
        return os.environ["DEB_MAINTAINER"]
    fields = []
    for key in ("user.name", "user.email"):
        proc = subprocess.run(["git", "-C", REPO, "config", key], capture_output=True, text=True)
        fields.append(proc.stdout.strip())
    name, email = fields
    return f"{name or 'pycni developers'} <{email or 'root@localhost'}>"


def glibc_needed(root: str) -> str:
    """The newest GLIBC_x.y symbol version any ELF file of the plugin dir needs."""
    newest = (2, 17)
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    continue
            out = subprocess.run(["objdump", "-T", path], capture_output=True, text=True).stdout
            for match in re.findall(r"GLIBC_(\d+)\.(\d+)", out):
                newest = max(newest, (int(match[0]), int(match[1])))
    return f"{newest[0]}.{newest[1]}"


# Debian's containernetworking-plugins ships /lib/systemd/system/cni-dhcp.{socket,service} on
# /run/cni/dhcp.sock: ours are pycni-dhcp.* on /run/pycni/dhcp.sock in build/systemd already, so
# both packages install and run together and nothing needs renaming here.
UNIT_RENAMES: dict = {}


def packaged_name(name: str) -> str:
    for old, new in UNIT_RENAMES.items():
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def packaged_unit(text: str) -> str:
    """A unit's text with the units it names renamed as in the package."""
    for old, new in UNIT_RENAMES.items():
        for kind in ("socket", "service"):
            text = text.replace(old + kind, new + kind)
    return text


def units() -> tuple:
    """(every unit file in build/systemd, the ones to enable): sockets, and services no socket
    activates."""
    directory = os.path.join(HERE, "systemd")
    names = sorted(n for n in os.listdir(directory) if n.endswith(UNIT_SUFFIXES))
    sockets = {n.removesuffix(".socket") for n in names if n.endswith(".socket")}
    enabled = []
    for name in names:
        stem, _, kind = name.rpartition(".")
        with open(os.path.join(directory, name)) as f:
            installable = "[Install]" in f.read()
        if installable and (kind == "socket" or (kind == "service" and stem not in sockets)):
            enabled.append(name)
    return names, enabled


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _gzip(path: str, data: bytes, mtime: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime, filename="", compresslevel=9) as f,
    ):
        f.write(data)
    os.chmod(path, 0o644)


def stage(dist: str, root: str, when: int) -> dict:
    """Lay the package's files out under `root`; returns what the control file needs."""
    shutil.rmtree(root, ignore_errors=True)
    plugin_dir = os.path.join(root, PLUGIN_DIR)
    os.makedirs(os.path.dirname(plugin_dir))
    # cp -a keeps the hard links between the per-plugin names and whatever else the dir holds.
    subprocess.run(["cp", "-a", dist, plugin_dir], check=True)
    # Shared libraries need no execute bit (Debian policy 8.1); the executables keep theirs.
    for directory, _, files in os.walk(plugin_dir):
        for name in files:
            path = os.path.join(directory, name)
            if ".so" in name and not os.path.islink(path):
                os.chmod(path, 0o644)
    os.makedirs(os.path.join(root, "usr/bin"))
    os.symlink(f"/{PLUGIN_DIR}/cnitool", os.path.join(root, "usr/bin/cnitool"))
    all_units, enabled = units()
    for name in all_units:
        with open(os.path.join(HERE, "systemd", name)) as f:
            text = packaged_unit(f.read())
        _write(os.path.join(root, UNIT_DIR, packaged_name(name)), text)
    with open(os.path.join(HERE, "deb", "cnitool.8"), "rb") as f:
        _gzip(os.path.join(root, "usr/share/man/man8/cnitool.8.gz"), f.read(), when)
    doc = os.path.join(root, "usr/share/doc", PACKAGE)
    _write(os.path.join(doc, "copyright"), COPYRIGHT)
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))
    changelog = (
        f"{PACKAGE} ({version()}) unstable; urgency=medium\n\n"
        f"  * Built from the pycni source tree (make deb).\n\n"
        f" -- {maintainer()}  {date}\n"
    )
    _gzip(os.path.join(doc, "changelog.gz"), changelog.encode(), when)
    overrides = "".join(
        f"# {why}\n{PACKAGE}: {tag} {context}".rstrip() + "\n"
        for tag, (context, why) in OVERRIDES.items()
    )
    _write(os.path.join(root, "usr/share/lintian/overrides", PACKAGE), overrides)
    return {
        "units": [packaged_name(n) for n in enabled],
        "all_units": [packaged_name(n) for n in all_units],
    }


def control(root: str, staged: dict) -> None:
    debian = os.path.join(root, "DEBIAN")
    os.makedirs(debian)
    sums = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "DEBIAN")
        for name in sorted(files):
            path = os.path.join(directory, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as f:
                sums.append(f"{hashlib.md5(f.read()).hexdigest()}  {os.path.relpath(path, root)}\n")
    _write(os.path.join(debian, "md5sums"), "".join(sums))
    size = subprocess.run(
        ["du", "-sk", "--exclude=DEBIAN", root], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    arch = ARCHES.get(platform.machine(), platform.machine())
    fields = {
        "Package": PACKAGE,
        "Version": version(),
        "Architecture": arch,
        "Maintainer": maintainer(),
        "Installed-Size": size,
        "Depends": f"libc6 (>= {glibc_needed(os.path.join(root, PLUGIN_DIR))})",
        "Recommends": "iptables | nftables, iproute2",
        "Section": "net",
        "Priority": "optional",
        "Description": DESCRIPTION,
    }
    _write(os.path.join(debian, "control"), "".join(f"{k}: {v}\n" for k, v in fields.items()))
    words = {"units": " ".join(staged["units"]), "all_units": " ".join(staged["all_units"])}
    for name, template in (("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)):
        _write(os.path.join(debian, name), template.format(**words), 0o755)


def build(dist: str, outdir: str, compression: str = "xz", workdir: str = "") -> str:
    if not os.path.isfile(os.path.join(dist, "loopback")):
        raise SystemExit(f"{dist} has no frozen build: run `make build` first")
    when = build_time()
    root = os.path.join(workdir or os.path.join(HERE, "work", "deb"), PACKAGE)
    staged = stage(dist, root, when)
    control(root, staged)
    os.makedirs(outdir, exist_ok=True)
    arch = ARCHES.get(platform.machine(), platform.machine())
    path = os.path.join(outdir, f"{PACKAGE}_{version()}_{arch}.deb")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(when))
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", root, path],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", default=os.path.join(HERE, "dist", "bin"))
    parser.add_argument("--outdir", default=os.path.join(HERE, "release"))
    parser.add_argument("--compression", default="xz", choices=("xz", "gzip", "zstd", "none"))
    args = parser.parse_args()
    path = build(args.dist, args.outdir, args.compression)
    print(f"{path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
