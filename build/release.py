"""Pack build/dist/bin into a release tarball laid out like upstream's.

build/release/cni-plugins-linux-<arch>-v<version>.tgz holds, at its top level, one executable
per plugin (hard links of one file, so the tarball stays small), the shared `_internal/`
runtime, README.md and LICENSE when present. Unpack it into /opt/cni/bin as usual.
"""

import os
import platform
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}


def release_name() -> str:
    sys.path.insert(0, REPO)
    from libcni import PYCNI_VERSION

    arch = ARCHES.get(platform.machine(), platform.machine())
    return f"cni-plugins-linux-{arch}-v{PYCNI_VERSION}.tgz"


def pack(dist: str, outdir: str) -> str:
    if not os.path.isfile(os.path.join(dist, "pycni")):
        raise SystemExit(f"{dist} has no frozen build: run `make build` first")
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, release_name())
    with tarfile.open(path + ".tmp", "w:gz") as tar:
        # tarfile stores a second path to an inode it already packed as a hard link.
        for name in sorted(os.listdir(dist)):
            tar.add(os.path.join(dist, name), arcname=f"./{name}")
        for extra in ("README.md", "LICENSE"):
            if os.path.exists(os.path.join(REPO, extra)):
                tar.add(os.path.join(REPO, extra), arcname=f"./{extra}")
    os.replace(path + ".tmp", path)
    return path


if __name__ == "__main__":
    print(pack(os.path.join(HERE, "dist", "bin"), os.path.join(HERE, "release")))
