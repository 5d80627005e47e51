"""dhcp ADD next to Go's: each side's plugin and daemon against the same dnsmasq.

The node of tests/kit/dhcpnode.py (a node netns with the daemons and a lan netns with dnsmasq, both
ours, removed at the end); this process enters the node netns, so every exec runs there. Per
repetition and side, interleaved: a fresh pod netns with a macvlan link made beforehand, then
the timed IPAM ADD alone (`dhcp`, DHCP exchange included), its DEL, and a full macvlan + dhcp
ADD and DEL in another pod.
With --ipv6 dnsmasq also serves DHCPv6, and ours (Go's dhcp has no DHCPv6) also times the IPAM
ADD and DEL of an IPv6-only and a dual-stack lease (`families`).
Usage (root): python3 benchmarks/dhcp.py [-n 20] [--ours build/dist/bin] [--go /usr/lib/cni]
    [--ipv6]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(REPO, "tests"), HERE]
import bench  # noqa: E402
from kit.dhcpnode import DaemonProcess, Node  # noqa: E402


def run(bin_dir: str, plugin: str, command: str, conf: dict, netns: str, cid: str) -> float:
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": bin_dir,
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [os.path.join(bin_dir, plugin)],
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
        timeout=300,
    )
    elapsed = (time.perf_counter() - started) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{bin_dir}/{plugin} {command} failed: {proc.stdout!r} {proc.stderr!r}")
    return elapsed


def pod(name: str, with_link: bool) -> str:
    subprocess.run(["ip", "netns", "add", name], check=True)
    if with_link:
        link = f"mvb{os.getpid() % 10000}"
        subprocess.run(
            ["ip", "link", "add", "link", "mst0", "name", link, "type", "macvlan"], check=True
        )
        subprocess.run(["ip", "link", "set", link, "netns", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", link, "name", "eth0"], check=True)
    return f"/var/run/netns/{name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="repetitions per side")
    parser.add_argument("--ours", default=os.path.join(REPO, "build", "dist", "bin"))
    parser.add_argument("--go", default="/usr/lib/cni")
    parser.add_argument("--json", help="also write the samples here")
    parser.add_argument("--ipv6", action="store_true", help="also time DHCPv6 leases (ours)")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="pycni-bench-dhcp-")
    node = Node(f"dhb{os.getpid() % 100000}", workdir, ipv6=args.ipv6)
    daemons = {}
    samples: dict = {}
    try:
        node.start_dnsmasq()
        for side, bin_dir in (("go", args.go), ("ours", args.ours)):
            os.makedirs(os.path.join(workdir, side))
            daemon = DaemonProcess(node, os.path.join(bin_dir, "dhcp"), os.path.join(workdir, side))
            if side == "go":
                daemon.argv = lambda d=daemon: [
                    d.executable,
                    "daemon",
                    "-socketpath",
                    d.socket,
                    "-pidfile",
                    d.pidfile,
                ]  # type: ignore
            daemons[side] = (daemon.start(), bin_dir)
        bench.setns(node.path)  # from here on, every exec (and `ip link`) runs in the node
        for rep in range(args.n):
            for side, (daemon, bin_dir) in daemons.items():
                ipam = {"type": "dhcp", "daemonSocketPath": daemon.socket}
                conf = {"cniVersion": "1.0.0", "name": "dhbench", "ipam": ipam}
                mv_conf = dict(conf, type="macvlan", master="mst0")
                cid = f"b{side}{rep}"
                netns = pod(f"dhbp{os.getpid() % 100000}{side}{rep}", with_link=True)
                samples.setdefault(f"{side} dhcp ADD", []).append(
                    run(bin_dir, "dhcp", "ADD", conf, netns, cid)
                )
                samples.setdefault(f"{side} dhcp DEL", []).append(
                    run(bin_dir, "dhcp", "DEL", conf, netns, cid)
                )
                subprocess.run(["ip", "netns", "del", os.path.basename(netns)], check=True)
                netns = pod(f"dhbq{os.getpid() % 100000}{side}{rep}", with_link=False)
                samples.setdefault(f"{side} macvlan+dhcp ADD", []).append(
                    run(bin_dir, "macvlan", "ADD", mv_conf, netns, cid + "m")
                )
                samples.setdefault(f"{side} macvlan+dhcp DEL", []).append(
                    run(bin_dir, "macvlan", "DEL", mv_conf, netns, cid + "m")
                )
                subprocess.run(["ip", "netns", "del", os.path.basename(netns)], check=True)
                if side != "ours" or not args.ipv6:
                    continue
                for label, families in (("dhcp6", ["ipv6"]), ("dual-stack", ["ipv4", "ipv6"])):
                    conf6 = dict(conf, ipam=dict(ipam, families=families))
                    netns = pod(f"dhbr{os.getpid() % 100000}{label[:2]}{rep}", with_link=True)
                    samples.setdefault(f"ours {label} ADD", []).append(
                        run(bin_dir, "dhcp", "ADD", conf6, netns, cid + label)
                    )
                    samples.setdefault(f"ours {label} DEL", []).append(
                        run(bin_dir, "dhcp", "DEL", conf6, netns, cid + label)
                    )
                    subprocess.run(["ip", "netns", "del", os.path.basename(netns)], check=True)
    finally:
        for daemon, _ in daemons.values():
            daemon.stop(signal.SIGKILL)
        node.close()
    print(f"dhcp ADD/DEL medians over {args.n} runs, ms (Go: {args.go}, ours: {args.ours})")
    for call in ("dhcp ADD", "dhcp DEL", "macvlan+dhcp ADD", "macvlan+dhcp DEL"):
        go, ours = (statistics.median(samples[f"{side} {call}"]) for side in ("go", "ours"))
        print(f"  {call:18} Go {go:8.1f}   pycni {ours:8.1f}")
    for call in ("dhcp6 ADD", "dhcp6 DEL", "dual-stack ADD", "dual-stack DEL"):
        if f"ours {call}" in samples:
            ours = statistics.median(samples[f"ours {call}"])
            print(f"  {call:18} Go        -   pycni {ours:8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(samples, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
