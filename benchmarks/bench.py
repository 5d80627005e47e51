"""Side-by-side timing of two plugin directories, exec'ing plugins the way a runtime does.

Every scenario runs against directory A (default: Debian's Go plugins in /usr/lib/cni) and B
(default: our frozen build/dist/bin), interleaved A/B in one run (the order alternates each
repetition) so machine noise hits both, then prints per step the median wall time, the B/A
ratio and the median peak RSS of each side.

Each exec is timed from just before fork to the child's exit (wall) and its CPU time is the
child's own rusage from wait4(). Peak RSS needs care: a forked child starts with its parent's
RSS as high-water mark and Linux folds the pre-exec mark into ru_maxrss, so a child of this
Python harness would never report less than the harness's ~17 MiB. Peak RSS is therefore taken
in extra repetitions (--rss-reps) where every exec goes through GNU time (`time -f %M`, a
~1 MiB process forking the plugin): that is the plugin's own maximum, across the PyInstaller
bootloader's re-exec too. With --daemon, B's RSS is the forwarding client's only.

Scenarios are a registry: decorate a function `run(side) -> [(step, Sample), ...]` with
`@scenario("name", needs=("plugin", ...))`; it runs only when both directories have every
plugin it needs. `run_chain()` runs a network list like a runtime does (ADD in order passing
prevResult, CHECK with the final result, DEL in reverse order).

Every namespace the harness makes has a unique name and is deleted afterwards, also on error.
--both adds a third side: B on its own and C = B's calls through a private pycni-daemon, all
three interleaved in one run. The CPU column is per exec: a step's CPU time over the execs it
made. Each side's execs start in a cgroup of the harness's own (cpuacct, or cgroup2: the harness
moves there before it forks) and the CPU time is that cgroup's counter across the exec: it
includes what the plugin started and, through the daemon, the worker's time (workers join their
caller's cgroups), plus the harness's own ~0.1 ms around the fork. --rusage-cpu takes the
exec'd process's own user+sys time (wait4) instead.

Needs root. Usage: python3 benchmarks/bench.py [-n 20] [--rss-reps 3] [--a DIR] [--b DIR]
[--daemon | --both] [--json FILE] [--list] [SCENARIO ...]   (SCENARIO: name substrings to run)
"""

import argparse
import atexit
import contextlib
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# The netfilter backend probe's cache goes to a folder of this run (removed at exit), never the
# machine's /run/pycni: each stand-in node is a netns of its own and would leave a file there.
_PROBE_CACHE = tempfile.mkdtemp(prefix="pycni-bench-probe-")
atexit.register(shutil.rmtree, _PROBE_CACHE, True)
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYCNI_NETFILTER_CACHE": _PROBE_CACHE,
}
CLONE_NEWNET = 0x40000000
# Executables in a plugin dir that are not CNI plugins.
NOT_PLUGINS = {"pycni", "pycni-daemon", "cnitool"}  # (older builds had the first two here)


GNU_TIME = "/usr/bin/time"


@dataclass
class Sample:
    wall: float  # seconds, fork to exit (0 in an RSS repetition)
    cpu: float  # user + system seconds of the exec'd processes
    maxrss_kib: int = 0  # peak RSS of the exec'd process (only in an RSS repetition)
    execs: int = 1  # plugin execs this sample covers (a list step, a batch)


@dataclass
class Scenario:
    name: str
    run: Callable
    needs: tuple = ()
    doc: str = ""


SCENARIOS: dict = {}


def scenario(name: str, needs: tuple = ()):
    """Register `run(side) -> [(step, Sample), ...]` under `name`."""

    def register(run):
        SCENARIOS[name] = Scenario(name, run, tuple(needs), (run.__doc__ or "").strip())
        return run

    return register


_libc = None


def setns(path: str) -> None:
    """Enter the network namespace at `path` (used in a child between fork and exec)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


class PluginFailed(RuntimeError):
    pass


class CpuCgroup:
    """A cgroup of the harness's own for one side: the harness moves into it before it starts
    an exec of that side (the child is born there, no move of its own), and its CPU counter
    takes in everything the call cost, also a daemon worker's (workers join their caller's
    cgroups) and the programs a plugin starts. Removed by close()."""

    def __init__(self, label: str):
        self.dir = None
        for mount, usage, hierarchy in (
            ("/sys/fs/cgroup/cpuacct", "cpuacct.usage", ":cpuacct:"),
            ("/sys/fs/cgroup/unified", "cpu.stat", "0::"),
            ("/sys/fs/cgroup", "cpu.stat", "0::"),
        ):
            if os.path.exists(os.path.join(mount, usage)):
                self.dir = os.path.join(mount, f"pycni-bench-{os.getpid()}-{label}")
                os.mkdir(self.dir)
                self.usage_file = os.path.join(self.dir, usage)
                with open("/proc/self/cgroup") as f:
                    ours = next(line for line in f if hierarchy in line)
                self.home = os.path.join(mount, ours.strip().split(":", 2)[2].lstrip("/"))
                break
        if self.dir is None:
            raise RuntimeError("no cpuacct or cgroup2 hierarchy to count CPU time in")

    def join(self) -> None:
        with open(os.path.join(self.dir, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def leave(self) -> None:
        with open(os.path.join(self.home, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def seconds(self) -> float:
        with open(self.usage_file) as f:
            text = f.read()
        if self.usage_file.endswith("cpuacct.usage"):
            return int(text) / 1e9
        usage = next(line for line in text.splitlines() if line.startswith("usage_usec"))
        return int(usage.split()[1]) / 1e6

    def close(self) -> None:
        self.leave()
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(self.dir)
                return
            except OSError:  # a last worker still exiting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@dataclass
class Side:
    """One plugin directory under test, and how to exec its plugins."""

    label: str
    plugin_dir: str
    extra_env: dict = field(default_factory=dict)
    common: list = field(default_factory=list)  # plugins present in both directories
    rss: bool = False  # exec through GNU time to get the plugin's own peak RSS
    cgroup: CpuCgroup | None = None  # count CPU time there instead of the child's rusage

    def exec(
        self,
        name: str,
        command: str,
        conf: dict,
        *,
        netns: str = "",
        ifname: str = "eth0",
        container_id: str = "bench1",
        host_netns: str | None = None,
    ) -> tuple[Sample, bytes]:
        """Exec plugin `name` once like a runtime; returns its Sample and stdout.

        `host_netns` makes the plugin run in that namespace (a benchmark's stand-in host), as
        if the runtime lived there.
        """
        env = dict(
            BASE_ENV,
            CNI_COMMAND=command,
            CNI_CONTAINERID=container_id,
            CNI_NETNS=netns,
            CNI_IFNAME=ifname,
            CNI_PATH=self.plugin_dir,
            **self.extra_env,
        )
        stdin = json.dumps(conf).encode()
        preexec = (lambda: setns(host_netns)) if host_netns else None
        if self.cgroup:
            self.cgroup.join()
        cpu_before = self.cgroup.seconds() if self.cgroup else 0.0
        argv = [os.path.join(self.plugin_dir, name)]
        with (
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
            tempfile.NamedTemporaryFile("r") as rss_file,
        ):
            if self.rss:
                argv = [GNU_TIME, "-f", "%M", "-o", rss_file.name, *argv]
            started = time.perf_counter()
            proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err, preexec_fn=preexec
            )
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(stdin)
                proc.stdin.close()
            # wait4 on this child: its own rusage, not RUSAGE_CHILDREN of the harness.
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
            maxrss = int(rss_file.read().split()[-1]) if self.rss and proc.returncode == 0 else 0
        if proc.returncode != 0:
            raise PluginFailed(
                f"{self.label}: {name} {command} exited {proc.returncode}: "
                f"{stdout.decode(errors='replace')} "
                f"{stderr.decode(errors='replace')[-2000:]}"
            )
        if self.rss:
            return Sample(0.0, 0.0, maxrss), stdout
        if self.cgroup:  # (in a parallel batch only the batch's total means anything)
            return Sample(wall, self.cgroup.seconds() - cpu_before), stdout
        return Sample(wall, usage.ru_utime + usage.ru_stime), stdout


class Namespaces:
    """Network namespaces with unique names, all deleted on exit (also on error)."""

    counter = 0

    def __init__(self):
        self.names: list = []

    def new(self) -> str:
        Namespaces.counter += 1
        name = f"pycni-bench-{os.getpid()}-{Namespaces.counter}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.names.append(name)
        return f"/var/run/netns/{name}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "del", name], check=False, stderr=subprocess.DEVNULL)


def in_netns(netns: str, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", os.path.basename(netns), *argv], check=True)


def combine(samples: list) -> Sample:
    """Several execs as one step: total wall and CPU, the largest peak RSS."""
    return Sample(
        sum(s.wall for s in samples),
        sum(s.cpu for s in samples),
        max(s.maxrss_kib for s in samples),
        sum(s.execs for s in samples),
    )


def run_chain(
    side: Side,
    conflist: dict,
    netns: str,
    *,
    ifname: str = "eth0",
    container_id: str = "bench1",
    host_netns: str | None = None,
    check: bool = True,
) -> list:
    """A network list the way libcni runs it: ADD each plugin in order with the previous
    result as prevResult, CHECK each with the final result, DEL in reverse order with it."""
    kwargs = dict(netns=netns, ifname=ifname, container_id=container_id, host_netns=host_netns)
    steps = {}
    confs, final, steps["ADD"] = chain_add(side, conflist, kwargs)
    if check:
        steps["CHECK"] = combine(
            [side.exec(c["type"], "CHECK", dict(c, prevResult=final), **kwargs)[0] for c in confs]
        )
    steps["DEL"] = chain_del(side, confs, final, kwargs)
    return list(steps.items())


def chain_add(side: Side, conflist: dict, kwargs: dict) -> tuple:
    """ADD of every plugin of the list in order, each given the previous result: the plugin
    configs, the final result and the step's Sample."""
    version = conflist.get("cniVersion", "1.0.0")
    confs = [
        dict(plugin, cniVersion=version, name=conflist["name"]) for plugin in conflist["plugins"]
    ]
    prev, added = None, []
    for conf in confs:
        if prev is not None:
            conf = dict(conf, prevResult=prev)
        sample, out = side.exec(conf["type"], "ADD", conf, **kwargs)
        added.append(sample)
        prev = json.loads(out)
    return confs, dict(prev or {}, cniVersion=version), combine(added)


def chain_del(side: Side, confs: list, final: dict, kwargs: dict) -> Sample:
    """DEL of every plugin in reverse order with the final result, as libcni does."""
    return combine(
        [
            side.exec(c["type"], "DEL", dict(c, prevResult=final), **kwargs)[0]
            for c in reversed(confs)
        ]
    )


# --- scenarios -----------------------------------------------------------------------------


@scenario("VERSION")
def version_of_every_plugin(side: Side) -> list:
    """CNI_COMMAND=VERSION of every plugin present in both directories."""
    conf = {"cniVersion": "1.0.0"}
    return [(name, side.exec(name, "VERSION", conf)[0]) for name in side.common]


@scenario("loopback", needs=("loopback",))
def loopback(side: Side) -> list:
    """loopback ADD, CHECK, DEL in a fresh netns."""
    conf = {"cniVersion": "1.0.0", "name": "bench-lo", "type": "loopback"}
    with Namespaces() as ns:
        netns = ns.new()
        return [
            (verb, side.exec("loopback", verb, conf, netns=netns, ifname="lo")[0])
            for verb in ("ADD", "CHECK", "DEL")
        ]


@contextlib.contextmanager
def host_with_master(master: str = "bench0"):
    """A stand-in host netns holding `master` (a veth: the dummy link type is not built into
    every kernel), and an empty pod netns."""
    with Namespaces() as ns:
        host, pod = ns.new(), ns.new()
        in_netns(host, "ip", "link", "add", master, "type", "veth", "peer", "name", "bench1")
        in_netns(host, "ip", "link", "set", master, "up")
        yield host, pod


def macvlan_list(ipam: dict) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "bench-macvlan",
        "plugins": [{"type": "macvlan", "master": "bench0", "mode": "bridge", "ipam": ipam}],
    }


@scenario("macvlan", needs=("macvlan",))
def macvlan_without_ipam(side: Side) -> list:
    """macvlan without IPAM on a veth master in a stand-in host netns."""
    with host_with_master() as (host, pod):
        return run_chain(side, macvlan_list({}), pod, host_netns=host)


@scenario("macvlan+static", needs=("macvlan", "static"))
def macvlan_with_static(side: Side) -> list:
    """macvlan with static IPAM (an address and a default route)."""
    ipam = {
        "type": "static",
        "addresses": [{"address": "10.77.0.2/24", "gateway": "10.77.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    with host_with_master() as (host, pod):
        return run_chain(side, macvlan_list(ipam), pod, host_netns=host)


@scenario("macvlan+host-local", needs=("macvlan", "host-local"))
def macvlan_with_host_local(side: Side) -> list:
    """macvlan with host-local IPAM, its store in a private temporary dataDir."""
    with tempfile.TemporaryDirectory(prefix="pycni-bench-ipam-") as data_dir:
        ipam = {
            "type": "host-local",
            "dataDir": data_dir,
            "ranges": [[{"subnet": "10.78.0.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
        }
        with host_with_master() as (host, pod):
            return run_chain(side, macvlan_list(ipam), pod, host_netns=host)


@contextlib.contextmanager
def bench_node():
    """A stand-in host netns (lo up) and a private host-local data dir."""
    with Namespaces() as ns, tempfile.TemporaryDirectory(prefix="pycni-bench-ipam-") as data:
        host = ns.new()
        in_netns(host, "ip", "link", "set", "lo", "up")
        yield ns, host, data


def host_local(data_dir: str, subnet: str) -> dict:
    return {
        "type": "host-local",
        "dataDir": data_dir,
        "ranges": [[{"subnet": subnet}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }


def bridge_plugin(data_dir: str, **extra) -> dict:
    return dict(
        {
            "type": "bridge",
            "bridge": "bench-br0",
            "isGateway": True,
            "ipMasq": True,
            "ipam": host_local(data_dir, "10.79.0.0/16"),
        },
        **extra,
    )


@scenario("bridge+host-local", needs=("bridge", "host-local"))
def bridge_with_host_local(side: Side) -> list:
    """bridge (gateway, ipMasq via iptables) with host-local, in a stand-in host netns."""
    with bench_node() as (ns, host, data):
        conflist = {"cniVersion": "1.0.0", "name": "bench-bridge", "plugins": [bridge_plugin(data)]}
        return run_chain(side, conflist, ns.new(), host_netns=host)


@scenario("ptp+host-local", needs=("ptp", "host-local"))
def ptp_with_host_local(side: Side) -> list:
    """ptp (ipMasq via iptables) with host-local, in a stand-in host netns."""
    with bench_node() as (ns, host, data):
        conflist = {
            "cniVersion": "1.0.0",
            "name": "bench-ptp",
            "plugins": [{"type": "ptp", "ipMasq": True, "ipam": host_local(data, "10.80.0.0/16")}],
        }
        return run_chain(side, conflist, ns.new(), host_netns=host)


PORT_MAPPINGS = [
    {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
    {"hostPort": 15353, "containerPort": 5353, "protocol": "udp"},
]


@scenario("podman-chain", needs=("bridge", "host-local", "portmap", "firewall", "tuning"))
def podman_chain(side: Side) -> list:
    """What podman generates: bridge+host-local, portmap (2 mappings), firewall, tuning."""
    with bench_node() as (ns, host, data):
        conflist = {
            "cniVersion": "0.4.0",
            "name": "bench-podman",
            "plugins": [
                bridge_plugin(data, hairpinMode=True),
                {
                    "type": "portmap",
                    "capabilities": {"portMappings": True},
                    "runtimeConfig": {"portMappings": PORT_MAPPINGS},
                },
                {"type": "firewall", "backend": "", "dataDir": f"{data}/firewall"},
                {"type": "tuning", "dataDir": f"{data}/tuning"},
            ],
        }
        return run_chain(side, conflist, ns.new(), host_netns=host, check=False)


@scenario("k8s-chain", needs=("bridge", "host-local", "portmap", "bandwidth", "tuning", "firewall"))
def k8s_chain(side: Side) -> list:
    """A Kubernetes-style list: bridge+host-local, portmap, bandwidth, tuning, firewall."""
    with bench_node() as (ns, host, data):
        # No CHECK: Go 1.1.1's portmap CHECK fails for an IPv4-only pod (it looks for ipv6).
        return run_chain(
            side, k8s_list(data, PORT_MAPPINGS), ns.new(), host_netns=host, check=False
        )


def k8s_list(data: str, port_mappings: list) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "bench-k8s",
        "plugins": [
            bridge_plugin(data, hairpinMode=True),
            {
                "type": "portmap",
                "capabilities": {"portMappings": True},
                "runtimeConfig": {"portMappings": port_mappings},
            },
            {
                "type": "bandwidth",
                "capabilities": {"bandwidth": True},
                "runtimeConfig": {
                    "bandwidth": {
                        "ingressRate": 100_000_000,
                        "ingressBurst": 1_000_000,
                        "egressRate": 100_000_000,
                        "egressBurst": 1_000_000,
                    }
                },
            },
            {
                "type": "tuning",
                "sysctl": {"net.core.somaxconn": "512"},
                "dataDir": f"{data}/tuning",
            },
            {"type": "firewall", "backend": "iptables", "dataDir": f"{data}/firewall"},
        ],
    }


PODS_AT_ONCE = 20


@scenario(
    "k8s-pods-20", needs=("bridge", "host-local", "portmap", "bandwidth", "tuning", "firewall")
)
def k8s_pods_at_once(side: Side) -> list:
    """20 pods' Kubernetes-style lists at once (each pod its own host port), ADD batch then
    DEL batch (wall of each batch; a node starting and stopping a ReplicaSet)."""
    with bench_node() as (ns, host, data):
        pods = [ns.new() for _ in range(PODS_AT_ONCE)]
        # The chains the first ADD creates exist before the batch, as on a running node (Go
        # 1.1.1's firewall races on creating CNI-ADMIN otherwise).
        warm = k8s_list(data, [])
        confs, final, _ = chain_add(
            side, warm, dict(netns=ns.new(), container_id="warm", host_netns=host)
        )
        state: dict = {}

        def add(number: int) -> list:
            ports = [dict(m, hostPort=m["hostPort"] + number) for m in PORT_MAPPINGS]
            kwargs = dict(netns=pods[number], container_id=f"pod{number}", host_netns=host)
            state[number] = chain_add(side, k8s_list(data, ports), kwargs) + (kwargs,)
            return [state[number][2]]

        def delete(number: int) -> list:
            confs, final, _, kwargs = state[number]
            return [chain_del(side, confs, final, kwargs)]

        added = timed_batch(side, PODS_AT_ONCE, add)
        addresses = {state[n][1]["ips"][0]["address"] for n in state}
        if len(addresses) != PODS_AT_ONCE:
            raise PluginFailed(f"{side.label}: duplicate addresses among {PODS_AT_ONCE} pods")
        deleted = timed_batch(side, PODS_AT_ONCE, delete)
        return [(f"ADD x{PODS_AT_ONCE}", added), (f"DEL x{PODS_AT_ONCE}", deleted)]


def timed_batch(side: Side, count: int, one) -> Sample:
    """`one(number) -> [Sample, ...]` in `count` threads at once: the batch's wall time, and
    its CPU time (the side's cgroup counter, or the execs' own)."""
    import threading

    samples: list = []

    def run(number: int) -> None:
        samples.extend(one(number))

    started = time.perf_counter()
    cpu_before = side.cgroup.seconds() if side.cgroup else 0.0
    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if len(samples) != count:
        raise PluginFailed(f"{side.label}: {count - len(samples)} of {count} failed")
    cpu = side.cgroup.seconds() - cpu_before if side.cgroup else sum(s.cpu for s in samples)
    return Sample(wall, cpu, max(s.maxrss_kib for s in samples), sum(s.execs for s in samples))


PARALLEL = 50


@scenario("bridge-parallel-50", needs=("bridge", "host-local"))
def bridge_parallel(side: Side) -> list:
    """50 bridge+host-local ADDs at once on one new bridge, then 50 DELs at once (wall of
    each batch; a runtime starting a node's pods). Fails on a duplicate address."""
    with bench_node() as (ns, host, data):
        pods = [ns.new() for _ in range(PARALLEL)]
        conf = dict(bridge_plugin(data, ipMasq=False), cniVersion="1.0.0", name="bench-par")
        results: dict = {}

        def batch(command: str) -> Sample:
            def one(number: int) -> list:
                setns(host)  # this thread only; the plugin it forks starts in the host netns
                sample, out = side.exec(
                    "bridge", command, conf, netns=pods[number], container_id=f"par{number}"
                )
                if command == "ADD":
                    results[number] = json.loads(out)["ips"][0]["address"]
                return [sample]

            return timed_batch(side, PARALLEL, one)

        added = batch("ADD")
        if len(set(results.values())) != PARALLEL:
            raise PluginFailed(f"{side.label}: duplicate addresses among {PARALLEL} ADDs")
        return [(f"ADD x{PARALLEL}", added), (f"DEL x{PARALLEL}", batch("DEL"))]


# --- harness -------------------------------------------------------------------------------


def plugins_in(directory: str) -> set:
    return {
        e.name
        for e in os.scandir(directory)
        if e.is_file() and os.access(e.path, os.X_OK) and not e.name.startswith("_")
    }


def daemon_program(plugin_dir: str) -> str:
    """pycni-daemon lives in the frozen build's runtime folder, beside source launchers."""
    inside = os.path.join(plugin_dir, "_internal", "pycni-daemon")
    return inside if os.path.exists(inside) else os.path.join(plugin_dir, "pycni-daemon")


class Daemon:
    """Our pycni-daemon on a private socket, for measuring the preloaded fast path. It runs in
    a netns of its own and a private mount namespace (its workers enter each caller's)."""

    def __init__(self, plugin_dir: str, args: tuple = (), log=subprocess.DEVNULL):
        self.dir = tempfile.mkdtemp(prefix="pycni-bench-")
        self.socket = os.path.join(self.dir, "pycni.sock")
        self.namespaces = Namespaces()
        home = os.path.basename(self.namespaces.new())
        # `ip netns exec` and `unshare` exec without forking: proc.pid is the daemon's.
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                home,
                "unshare",
                "--mount",
                "--propagation",
                "private",
                daemon_program(plugin_dir),
                *args,
                self.socket,
            ],
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("pycni-daemon did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        workers = []
        with contextlib.suppress(OSError):
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                workers = [int(pid) for pid in f.read().split()]
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        # Its idle workers die with it (PR_SET_PDEATHSIG): wait, so that a cgroup they sat in
        # (--warm-cgroups) can be removed.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            os.path.exists(f"/proc/{pid}/task") for pid in workers
        ):
            time.sleep(0.02)
        self.namespaces.__exit__()
        subprocess.run(["rm", "-rf", self.dir], check=False)


def measure(table: list, sides: list, repetitions: int, rss_repetitions: int) -> list:
    """Run every scenario on every side, rotating which goes first; returns result rows."""
    rows = []
    labels = [side.label for side in sides]
    for sc in table:
        walls: dict = {}
        rsses: dict = {}
        for rep in range(repetitions + rss_repetitions):
            into = walls if rep < repetitions else rsses
            for side in sides[rep % len(sides) :] + sides[: rep % len(sides)]:
                side.rss = into is rsses
                for step, sample in sc.run(side):
                    into.setdefault(step, {label: [] for label in labels})[side.label].append(
                        sample
                    )
        for side in sides:
            side.rss = False
        for step, by_side in walls.items():
            row = {"scenario": sc.name, "step": step, "n": repetitions}
            for label, got in by_side.items():
                peaks = [s.maxrss_kib for s in rsses.get(step, {}).get(label, [])]
                row[label] = {
                    "wall_ms": statistics.median(s.wall for s in got) * 1000,
                    "cpu_ms": statistics.median(s.cpu for s in got) * 1000,
                    "cpu_per_exec_ms": statistics.median(s.cpu / s.execs for s in got) * 1000,
                    "execs": got[0].execs,
                    "maxrss_mib": statistics.median(peaks) / 1024 if peaks else None,
                }
            rows.append(row)
            print_row(row, labels)
    return rows


def print_header(labels: list) -> None:
    print(
        f"{'scenario':<18} {'step':<11} "
        + " ".join(f"{label + ' wall':>8}" for label in labels)
        + " "
        + " ".join(f"{label + '/' + labels[0]:>6}" for label in labels[1:])
        + " "
        + " ".join(f"{label + ' cpu/x':>8}" for label in labels)
        + " "
        + " ".join(f"{label + ' MiB':>6}" for label in labels)
    )


def print_row(row: dict, labels: list) -> None:
    def mib(value):
        return f"{value:6.1f}" if value is not None else f"{'-':>6}"

    base = row[labels[0]]["wall_ms"]
    print(
        f"{row['scenario']:<18} {row['step']:<11} "
        + " ".join(f"{row[label]['wall_ms']:8.1f}" for label in labels)
        + " "
        + " ".join(f"{row[label]['wall_ms'] / base:5.2f}x" for label in labels[1:])
        + " "
        + " ".join(f"{row[label]['cpu_per_exec_ms']:8.1f}" for label in labels)
        + " "
        + " ".join(mib(row[label]["maxrss_mib"]) for label in labels),
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="repetitions (default 20)")
    parser.add_argument("--a", default="/usr/lib/cni", help="baseline plugin dir (A)")
    parser.add_argument(
        "--b", default=os.path.join(REPO, "build", "dist", "bin"), help="plugin dir under test (B)"
    )
    parser.add_argument(
        "--rss-reps",
        type=int,
        default=3,
        help="extra repetitions through GNU time for peak RSS (default 3; 0 without /usr/bin/time)",
    )
    parser.add_argument(
        "--daemon", action="store_true", help="B's calls go through a private pycni-daemon"
    )
    parser.add_argument(
        "--both",
        action="store_true",
        help="B on its own and C = B through a private pycni-daemon, interleaved with A in one run",
    )
    parser.add_argument(
        "--daemon-args",
        default="",
        metavar="ARGS",
        help="extra pycni-daemon arguments, e.g. '--warm-cgroups' (space-separated)",
    )
    parser.add_argument(
        "--rusage-cpu",
        action="store_true",
        help="CPU time from each exec's rusage (wait4), not from a cgroup of "
        "its own (which also counts a daemon worker's)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the result rows here")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "only",
        nargs="*",
        metavar="SCENARIO",
        help="run the scenarios whose name contains one of these",
    )
    args = parser.parse_args()
    if args.list:
        for sc in SCENARIOS.values():
            print(f"{sc.name:<18} {sc.doc}")
        return 0
    if os.geteuid() != 0:
        print("bench.py needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    if args.rss_reps and not os.access(GNU_TIME, os.X_OK):
        print(f"no {GNU_TIME} (Debian package `time`): peak RSS not measured", file=sys.stderr)
        args.rss_reps = 0
    in_a, in_b = plugins_in(args.a), plugins_in(args.b)
    common = sorted((in_a & in_b) - NOT_PLUGINS)
    table = []
    for sc in SCENARIOS.values():
        if args.only and not any(o in sc.name for o in args.only):
            continue
        missing = [p for p in sc.needs if p not in common]
        if missing:
            print(f"skipping {sc.name}: {', '.join(missing)} not in both directories")
            continue
        table.append(sc)
    daemon = Daemon(args.b, tuple(args.daemon_args.split())) if args.daemon or args.both else None
    # Without the daemon, B's fast path looks for a socket that is not there (never the
    # default path, in case this machine runs a daemon).
    alone = {"PYCNI_SOCKET": os.path.join(tempfile.gettempdir(), f"pycni-none-{os.getpid()}")}
    sides = [Side("A", args.a, common=common)]
    described = [f"A = {args.a}"]
    if args.both:
        sides += [
            Side("B", args.b, alone, common=common),
            Side("C", args.b, {"PYCNI_SOCKET": daemon.socket}, common=common),
        ]
        described += [f"B = {args.b}", f"C = {args.b} via pycni-daemon"]
    else:
        sides.append(
            Side("B", args.b, {"PYCNI_SOCKET": daemon.socket} if daemon else alone, common=common)
        )
        described.append(f"B = {args.b}{' via pycni-daemon' if daemon else ''}")
    try:
        if not args.rusage_cpu:
            for side in sides:
                side.cgroup = CpuCgroup(side.label)
        print("\n".join(described))
        print(
            f"n = {args.n} per side, interleaved; medians of wall time per step (ms), of CPU "
            f"time per exec (ms, user+sys of each exec'd process), and of peak RSS per exec "
            f"(MiB, {args.rss_reps} extra runs via GNU time)\n"
        )
        print_header([side.label for side in sides])
        rows = measure(table, sides, args.n, args.rss_reps)
    finally:
        if daemon:
            daemon.stop()
        for side in sides:
            if side.cgroup:
                side.cgroup.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "sides": dict(zip([s.label for s in sides], described, strict=True)),
                    "rows": rows,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
