"""Pack build/dist/bin into a release tarball laid out like upstream's.

build/release/cni-plugins-linux-<arch>-v<version>.tgz holds, at its top level, one executable
per program (the native front door, hard links of one file, stored once in the tarball), the
`_internal/` runtime folder with the frozen program, and README.md and LICENSE when present.
Unpack it into /opt/cni/bin as usual:

    tar -C /opt/cni/bin -xzf cni-plugins-linux-amd64-vX.Y.Z.tgz

The executables must stay next to `_internal/` (symlinks to them from elsewhere work).
Usage: python3 build/release.py [--dist DIR] [--outdir DIR]
"""

import argparse
import os
import platform
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}
EXTRAS = ("README.md", "LICENSE")


def version() -> str:
    sys.path.insert(0, REPO)
    from libcni import PYCNI_VERSION

    return PYCNI_VERSION


def release_name() -> str:
    arch = ARCHES.get(platform.machine(), platform.machine())
    return f"cni-plugins-linux-{arch}-v{version()}.tgz"


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Installed by root for root, like upstream's tarball; no build machine user names.
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def pack(dist: str, outdir: str) -> str:
    if not os.path.isfile(os.path.join(dist, "_internal", "pycni")):
        raise SystemExit(f"{dist} has no frozen build: run `make build` first")
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, release_name())
    with tarfile.open(path + ".tmp", "w:gz") as tar:
        # tarfile stores a second path to an inode it already packed as a hard link, so the
        # per-plugin names cost nothing and stay links when extracted.
        for name in sorted(os.listdir(dist)):
            tar.add(os.path.join(dist, name), arcname=f"./{name}", filter=_normalized)
        for extra in EXTRAS:
            if os.path.exists(os.path.join(REPO, extra)):
                tar.add(os.path.join(REPO, extra), arcname=f"./{extra}", filter=_normalized)
    os.replace(path + ".tmp", path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", default=os.path.join(HERE, "dist", "bin"))
    parser.add_argument("--outdir", default=os.path.join(HERE, "release"))
    args = parser.parse_args()
    path = pack(args.dist, args.outdir)
    print(f"{path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
