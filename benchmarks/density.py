"""Density: how each plugin's ADD and DEL cost grows as a node fills up with pods.

One stand-in node (a host netns this benchmark creates) per side; pods are added one after
another up to --pods (300), each with the Kubernetes-like list bridge+host-local (ipMasq,
hairpin), portmap (a host port of its own per pod), bandwidth, tuning, firewall, run through
libcni's list functions (libcni.runtime.netlist.Runtime: prevResult chaining, the result cache,
capability args) exec'ing every plugin like a runtime. Then the pods are deleted, last one
first, so the n-th DEL runs with n pods on the node. Sides are interleaved in chunks of 10
pods so machine noise hits them alike:

  go       Debian's Go plugins (--go, default /usr/lib/cni), iptables (Go 1.1.1 has no other)
  ipt      pycni (--b) with iptables backends (bridge ipMasqBackend, portmap, firewall)
  nft      pycni with nftables backends

With --daemon pycni's calls go through a pycni-daemon on a private socket (PYCNI_SOCKET), started
in a netns and a private mount namespace of its own, as bench.py does.

Printed per verb: the median wall time (ms) of each plugin and of the whole list in windows of
20 pods (1-20, then the 20 pods up to each multiple of 50: 31-50, ..., 281-300), and the growth
(last window / first). --execs also counts, for one more pod on a node of --pods pods, the
processes each plugin call starts (strace -f -e trace=execve; the plugin itself not counted,
exec'd pycni only), split into netfilter tools (iptables*, ip6tables*, nft) and others.

The backend probe's cache (PYCNI_NETFILTER_CACHE) goes to a temporary directory, never /run.
Needs root. Usage: python3 benchmarks/density.py [--pods 300] [--sides go,ipt,nft]
[--daemon] [--execs] [--b DIR] [--go DIR] [--json FILE]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

import bench  # noqa: E402  (benchmarks/ is not a package)

from libcni.runtime import conflist, netlist  # noqa: E402

CHUNK = 10
WINDOW = 20
PLUGINS = ("bridge", "portmap", "bandwidth", "tuning", "firewall")
PROGRAM = re.compile(r'execve\("(?:[^"]*/)?([^"/]+)"')
NETFILTER_TOOL = re.compile(r"ip6?tables.*|nft")


def pod_list(side: str, data: str) -> dict:
    """The Kubernetes-like list of one side (backends named explicitly for pycni's)."""
    nft = side == "nft"
    bridge = bench.bridge_plugin(data, hairpinMode=True)
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    firewall = {"type": "firewall", "backend": "nftables" if nft else "iptables"}
    if side != "go":
        bridge["ipMasqBackend"] = "nftables" if nft else "iptables"
        portmap["backend"] = "nftables" if nft else "iptables"
        firewall["dataDir"] = os.path.join(data, "firewall")
    return {
        "cniVersion": "1.0.0",
        "name": "density",
        "plugins": [
            bridge,
            portmap,
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
            {
                "type": "tuning",
                "sysctl": {"net.core.somaxconn": "512"},
                "dataDir": os.path.join(data, "tuning"),
            },
            firewall,
        ],
    }


class TimedRuntime(netlist.Runtime):
    """libcni's runtime, timing each plugin exec (wall, ms) into `self.times`; with `strace`
    set, every exec runs under strace and its execve lines land in `self.traces`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.times: list = []
        self.strace: str = ""
        self.traces: list = []

    def _exec(self, plugin, verb, stdin, rt):
        if self.strace:
            return self._traced(plugin, verb, stdin, rt)
        started = time.perf_counter()
        try:
            return super()._exec(plugin, verb, stdin, rt)
        finally:
            self.times.append((plugin.type, (time.perf_counter() - started) * 1000))

    def _traced(self, plugin, verb, stdin, rt):
        with tempfile.NamedTemporaryFile("r", prefix="pycni-density-strace-") as trace:
            argv = ["strace", "-f", "-qq", "-z", "-e", "trace=execve", "-o", trace.name]
            proc = subprocess.run(
                [*argv, self.find(plugin.type)],
                input=stdin,
                env=self.env(verb, rt),
                capture_output=True,
            )
            lines = [line for line in trace.read().splitlines() if "execve(" in line]
        if proc.returncode != 0:
            raise RuntimeError(f"{plugin.type} {verb}: {proc.stdout!r} {proc.stderr[-500:]!r}")
        # The first is strace starting the plugin; a frozen pycni's bootloader may exec itself
        # once more (counted among the others).
        names = [m.group(1) for line in lines[1:] if (m := PROGRAM.search(line))]
        tools = [n for n in names if NETFILTER_TOOL.fullmatch(n)]
        self.traces.append((plugin.type, verb, tools, [n for n in names if n not in tools]))
        return proc.stdout


class Node:
    """One side's stand-in node: a host netns, data dirs, a runtime, pods added so far."""

    def __init__(self, side: str, plugin_dir: str, env: dict, namespaces, workdir: str):
        self.side = side
        self.namespaces = namespaces
        self.host = namespaces.new()
        bench.in_netns(self.host, "ip", "link", "set", "lo", "up")
        data = os.path.join(workdir, side)
        os.makedirs(data)
        self.network = conflist.list_from_bytes(json.dumps(pod_list(side, data)).encode())
        self.runtime = TimedRuntime(
            [plugin_dir], cache_dir=os.path.join(data, "cache"), environ=env
        )
        self.pods: list = []

    def attachment(self, number: int, netns: str) -> netlist.RuntimeConf:
        caps = {
            "portMappings": [{"hostPort": 20000 + number, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {
                "ingressRate": 100_000_000,
                "ingressBurst": 1_000_000,
                "egressRate": 100_000_000,
                "egressBurst": 1_000_000,
            },
        }
        return netlist.RuntimeConf(
            container_id=f"density-{self.side}-{number}",
            netns=netns,
            ifname="eth0",
            args=[("IgnoreUnknown", "1"), ("K8S_POD_NAME", f"pod{number}")],
            capability_args=caps,
        )

    def run(self, verb: str, rt: netlist.RuntimeConf) -> dict:
        """One list call in the host netns; {plugin: ms, "list": ms}."""
        self.runtime.times = []
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            bench.setns(self.host)
            started = time.perf_counter()
            if verb == "ADD":
                self.runtime.add(self.network, rt)
            else:
                self.runtime.delete(self.network, rt)
            total = (time.perf_counter() - started) * 1000
        finally:
            bench._libc.setns(home, bench.CLONE_NEWNET)
            os.close(home)
        sample = dict(self.runtime.times)
        sample["list"] = total
        return sample

    def add(self) -> dict:
        number = len(self.pods) + 1
        rt = self.attachment(number, self.namespaces.new())
        sample = self.run("ADD", rt)
        self.pods.append(rt)
        return sample

    def delete(self) -> dict:
        sample = self.run("DEL", self.pods[-1])
        self.pods.pop()
        return sample


def windows(pods: int) -> list:
    """(first, last) pod numbers of each reported window."""
    ends = [min(WINDOW, pods)] + [e for e in range(50, pods + 1, 50) if e > WINDOW]
    if ends[-1] != pods:
        ends.append(pods)
    return [(max(1, end - WINDOW + 1), end) for end in ends]


def report(samples: dict, pods: int) -> list:
    """samples[(side, verb)] = {pod number: {plugin: ms}} -> printed tables; the rows."""
    rows = []
    spans = windows(pods)
    for verb in ("ADD", "DEL"):
        print(f"\n{verb}: median wall per call (ms), by pods on the node")
        head = " ".join(f"{f'{a}-{b}':>9}" for a, b in spans)
        print(f"{'side':<5} {'plugin':<10} {head}   growth")
        for (side, this_verb), by_pod in samples.items():
            if this_verb != verb:
                continue
            for plugin in (*PLUGINS, "list"):
                medians = []
                for first, last in spans:
                    values = [by_pod[n][plugin] for n in range(first, last + 1) if n in by_pod]
                    medians.append(statistics.median(values) if values else float("nan"))
                growth = medians[-1] / medians[0] if medians[0] else float("nan")
                cells = " ".join(f"{m:9.1f}" for m in medians)
                print(f"{side:<5} {plugin:<10} {cells}   {growth:5.2f}x")
                row = {"side": side, "verb": verb, "plugin": plugin, "windows": spans}
                rows.append(dict(row, medians_ms=medians, growth=growth))
    return rows


def count_execs(nodes: list) -> list:
    """One more pod's ADD and DEL on each node, every plugin under strace."""
    print("\nprocesses started per call (netfilter tools + others), one pod on a full node")
    rows = []
    for node in nodes:
        node.runtime.strace = "on"
        node.runtime.traces = []
        try:
            node.add()
            node.delete()
        finally:
            node.runtime.strace = ""
        for plugin, verb, tools, others in node.runtime.traces:
            print(f"{node.side:<5} {verb:<4} {plugin:<10} {len(tools)} + {len(others)}  ", end="")
            print(" ".join(tools + [f"({name})" for name in others]))
            row = {"side": node.side, "verb": verb, "plugin": plugin}
            rows.append(dict(row, netfilter=tools, other=others))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=300, help="pods per node (default 300)")
    parser.add_argument("--sides", default="go,ipt,nft", help="of go, ipt, nft (default all)")
    parser.add_argument("--go", default="/usr/lib/cni", help="Go plugin dir")
    parser.add_argument("--b", default=os.path.join(REPO, "build", "dist", "bin"), help="pycni")
    parser.add_argument("--daemon", action="store_true", help="pycni through a pycni-daemon")
    parser.add_argument("--execs", action="store_true", help="count processes per call")
    parser.add_argument("--json", metavar="FILE", help="also write the rows here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("density.py needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    sides = [s for s in args.sides.split(",") if s]
    if any(s not in ("go", "ipt", "nft") for s in sides):
        parser.error("--sides takes go, ipt and nft")
    workdir = tempfile.mkdtemp(prefix="pycni-density-")
    base = dict(bench.BASE_ENV, PYCNI_NETFILTER_CACHE=os.path.join(workdir, "probe-cache"))
    # Without the daemon the fast path looks for a socket that is not there (never the default
    # path, in case this machine runs a daemon).
    no_socket = os.path.join(workdir, "no-daemon.sock")
    daemon = bench.Daemon(args.b) if args.daemon and sides != ["go"] else None
    socket = daemon.socket if daemon else no_socket
    samples: dict = {}
    try:
        with bench.Namespaces() as namespaces:
            nodes = [
                bench_node(side, args, dict(base, PYCNI_SOCKET=socket), namespaces, workdir)
                for side in sides
            ]
            print(
                f"{args.pods} pods per node, sides {', '.join(sides)} interleaved in chunks of "
                f"{CHUNK}; pycni = {args.b}{' via pycni-daemon' if daemon else ''}; "
                f"go = {args.go}",
                flush=True,
            )
            for verb in ("ADD", "DEL"):
                for start in range(0, args.pods, CHUNK):
                    for node in nodes:
                        by_pod = samples.setdefault((node.side, verb), {})
                        for _ in range(min(CHUNK, args.pods - start)):
                            if verb == "ADD":
                                by_pod[len(node.pods) + 1] = node.add()
                            else:
                                by_pod[len(node.pods)] = node.delete()
                    print(f"  {verb} {min(start + CHUNK, args.pods)}/{args.pods}", flush=True)
                if verb == "ADD" and args.execs:
                    exec_nodes = [n for n in nodes if n.side == "go" or not daemon]
                    exec_rows = count_execs(exec_nodes)
            rows = report(samples, args.pods)
    finally:
        if daemon:
            daemon.stop()
        subprocess.run(["rm", "-rf", workdir], check=False)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "execs": exec_rows if args.execs else []}, f, indent=2)
    return 0


def bench_node(side: str, args, env: dict, namespaces, workdir: str) -> Node:
    plugin_dir = args.go if side == "go" else args.b
    return Node(side, plugin_dir, env, namespaces, workdir)


if __name__ == "__main__":
    sys.exit(main())
