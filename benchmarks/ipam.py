"""host-local ADD/CHECK/DEL next to Go's, through benchmarks/bench.py's harness.

Each repetition allocates from a fresh data dir (a temp dir, never /var/lib/cni/networks).
Usage: python3 benchmarks/ipam.py [-n 30] [--a DIR] [--b DIR] [--daemon]
"""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


@bench.scenario("host-local", needs=("host-local",))
def host_local(side) -> list:
    """host-local ADD, CHECK, DEL (dual stack) on a fresh data dir."""
    data_dir = tempfile.mkdtemp(prefix="pycni-bench-ipam-")
    conf = {
        "cniVersion": "1.0.0",
        "name": "bench-ipam",
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir,
            "ranges": [[{"subnet": "10.123.0.0/16"}], [{"subnet": "fd00:123::/64"}]],
        },
    }
    try:
        return [
            (verb, side.exec("host-local", verb, conf, netns="/var/run/netns/none")[0])
            for verb in ("ADD", "CHECK", "DEL")
        ]
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    if "host-local" not in sys.argv:
        sys.argv.append("host-local")
    sys.exit(bench.main())
