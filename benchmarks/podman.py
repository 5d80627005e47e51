"""`podman run --rm IMAGE true` on a CNI bridge network (bridge + portmap + firewall + tuning,
as podman generates it) next to `--network none`, with Debian's Go plugins (A) and ours (B).

The network's cost is the difference between the two. Everything runs inside a node netns and
a private mount namespace owned by the benchmark (tests/kit/podman/node.py), deleted afterwards.
Usage: python3 benchmarks/podman.py [-n 10] [--a DIR] [--b DIR]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(REPO, "tests")]

from conftest import NetnsFactory  # noqa: E402
from kit.podman.node import IMAGE, PodmanNode  # noqa: E402


def timed(node, *options) -> float:
    started = time.perf_counter()
    node.podman("run", "--rm", *options, IMAGE, "true")
    return time.perf_counter() - started


def measure(plugin_dir: str, repetitions: int) -> dict:
    namespaces = NetnsFactory()
    node = PodmanNode(namespaces, plugin_dir)
    try:
        node.podman("network", "create", "--subnet", "10.89.100.0/24", "bench")
        timed(node, "--network", "none")  # warm the image and storage
        samples: dict = {"none": [], "cni": []}
        for _ in range(repetitions):
            samples["none"].append(timed(node, "--network", "none"))
            samples["cni"].append(timed(node, "--network", "bench", "-p", "18080:80"))
        return {k: statistics.median(v) * 1000 for k, v in samples.items()}
    finally:
        node.close()
        namespaces.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--a", default="/usr/lib/cni")
    parser.add_argument("--b", default=os.path.join(REPO, "build", "dist", "bin"))
    args = parser.parse_args()
    if os.geteuid() != 0 or subprocess.run(["which", "podman"], capture_output=True).returncode:
        print("needs root and podman", file=sys.stderr)
        return 2
    rows = {label: measure(path, args.n) for label, path in (("A", args.a), ("B", args.b))}
    print(f"A = {args.a}\nB = {args.b}\nmedians of n = {args.n}, ms\n")
    print(f"{'':<26}{'A':>9}{'B':>9}{'B/A':>7}")
    for key, text in (("none", "podman run --network none"), ("cni", "podman run on CNI (+-p)")):
        a, b = rows["A"][key], rows["B"][key]
        print(f"{text:<26}{a:9.1f}{b:9.1f}{b / a:7.2f}")
    a_net = rows["A"]["cni"] - rows["A"]["none"]
    b_net = rows["B"]["cni"] - rows["B"]["none"]
    print(f"{'network share (ADD+DEL)':<26}{a_net:9.1f}{b_net:9.1f}{b_net / a_net:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
