"""Pods through containerd 1.6's CRI plugin (the kubelet's path) on the Kubernetes-like list
(bridge + host-local, portmap, bandwidth, tuning, firewall), Debian's Go plugins (A) against ours
(B), each on its own containerd node (tests/kit/cri/node.py), interleaved in one run.

Per pod: RunPodSandbox (create: loopback + the list's ADD chain) and StopPodSandbox +
RemovePodSandbox (teardown: two whole DEL chains), next to a host-network pod (no CNI) whose
difference is the network's share. Then 20 pods at once: the wall time of 20 concurrent
RunPodSandbox calls, and of their 20 concurrent Stop + Remove. Medians.
With --daemon, a third node C runs B's plugins through pycni-daemon (the fast path).
Usage: python3 benchmarks/cri.py [-n 10] [--batches 3] [--daemon] [--a DIR] [--b DIR]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(REPO, "tests")]

from conftest import NetnsFactory  # noqa: E402
from kit.cri.node import CriNode, Lan, build_pod_image, kubernetes_conflist  # noqa: E402

BATCH = 20
BANDWIDTH = {"kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "10M"}


def timed(func, *args) -> tuple:
    started = time.perf_counter()
    value = func(*args)
    return time.perf_counter() - started, value


def one_pod(node, name: str, host_network: bool) -> tuple:
    create, pod = timed(
        lambda: node.run_pod(
            name,
            ports=[(0, 80, 18080, "")],
            annotations=BANDWIDTH,
            host_network=host_network,
            wait_serving=False,
        )
    )
    teardown, _ = timed(node.remove_pod, pod)
    return create, teardown


def batch(node, round_number: int) -> tuple:
    names = [f"b{round_number}-{n}" for n in range(BATCH)]
    with ThreadPoolExecutor(BATCH) as pool:
        add_wall, pods = timed(
            lambda: list(
                pool.map(
                    lambda name: node.run_pod(name, annotations=BANDWIDTH, wait_serving=False),
                    names,
                )
            )
        )
        if len({node.pod_ip(pod) for pod in pods}) != BATCH:
            raise RuntimeError("the batch did not get distinct pod IPs")
        del_wall, _ = timed(lambda: list(pool.map(node.remove_pod, pods)))
    return add_wall, del_wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="single pods per side and kind")
    parser.add_argument("--batches", type=int, default=3, help="20-pod batches per side")
    parser.add_argument("--a", default="/usr/lib/cni")
    parser.add_argument("--b", default=os.path.join(REPO, "build", "dist", "bin"))
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="also C: B's plugins through pycni-daemon on a third node",
    )
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("containerd") is None:
        print("needs root and containerd (Debian packages containerd, runc)", file=sys.stderr)
        return 2
    namespaces = NetnsFactory()
    work = tempfile.mkdtemp(prefix="pycni-cri-bench-")
    nodes: dict = {}
    try:
        image = build_pod_image(os.path.join(work, "pod.tar"), work)
        sides = [("A", args.a), ("B", args.b)] + ([("C", args.b)] if args.daemon else [])
        for label, plugin_dir in sides:
            node = nodes[label] = CriNode(
                namespaces, plugin_dir, Lan(namespaces), "192.168.210.1", image
            )
            if label == "C":
                node.start_fast_path()
            node.set_conflist(kubernetes_conflist(node, "1.0.0", "10.244.200"))
            one_pod(node, "warm", False)  # image, snapshot, first-use costs
        samples = {
            label: {
                k: []
                for k in (
                    "create",
                    "teardown",
                    "host-create",
                    "host-teardown",
                    "add-batch",
                    "del-batch",
                )
            }
            for label in nodes
        }
        for i in range(args.n):
            for label, node in nodes.items():
                for prefix, host in (("", False), ("host-", True)):
                    create, teardown = one_pod(node, f"p{i}{prefix[:1]}", host)
                    samples[label][f"{prefix}create"].append(create)
                    samples[label][f"{prefix}teardown"].append(teardown)
        for round_number in range(args.batches):
            for label, node in nodes.items():
                add_wall, del_wall = batch(node, round_number)
                samples[label]["add-batch"].append(add_wall)
                samples[label]["del-batch"].append(del_wall)
    finally:
        for node in nodes.values():
            node.close()
        namespaces.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    med = {
        label: {k: statistics.median(v) * 1000 for k, v in rows.items()}
        for label, rows in samples.items()
    }
    columns = list(med)
    print(f"A = {args.a}\nB = {args.b}" + ("\nC = B via pycni-daemon" if args.daemon else ""))
    print(
        f"containerd 1.6 CRI, Kubernetes-like list at 1.0.0, "
        f"medians of n = {args.n} pods and {args.batches} batches of {BATCH}, ms\n"
    )
    ratios = ["B"] + (["C"] if "C" in med else [])
    print(
        f"{'':<40}"
        + "".join(f"{c:>9}" for c in columns)
        + "".join(f"{r + '/A':>7}" for r in ratios)
    )
    rows = [
        ("create", "RunPodSandbox (CNI)"),
        ("teardown", "Stop + Remove (CNI)"),
        ("host-create", "RunPodSandbox (host network)"),
        ("host-teardown", "Stop + Remove (host network)"),
        ("add-batch", f"{BATCH} pods at once: ADD batch wall"),
        ("del-batch", f"{BATCH} pods at once: DEL batch wall"),
    ]
    for key in ("create", "teardown"):
        for label in columns:
            med[label][f"net-{key}"] = med[label][key] - med[label][f"host-{key}"]
    rows += [
        ("net-create", "network share of create"),
        ("net-teardown", "network share of teardown"),
    ]
    for key, text in rows:
        values = [med[label][key] for label in columns]
        print(
            f"{text:<40}"
            + "".join(f"{v:9.1f}" for v in values)
            + "".join(f"{med[r][key] / med['A'][key]:7.2f}" for r in ratios)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
