"""A node for the dhcp tests and benchmark: a netns holding a real DHCP server (Debian's dnsmasq)
and the daemons, all inside namespaces we create.

Topology: netns `node` (where the plugins and the daemons run) and netns `lan` (dnsmasq).
veth `mst0` (node, the macvlan master) to `srv0` (lan, 10.66.0.1/24: classless routes, DNS, T1
of 3 s); bridge `brd0` (node, 10.67.0.2/24) with port `brp0` to `srvb0` (lan, 10.67.0.1/24:
option 33 static routes and a router). With `ipv6=True` the same links also carry DHCPv6
(stateful IA_NA ranges in fd66::/64 and fd67::/64, DNS and a search list, Router Advertisements
with the M flag). dnsmasq gets its own pid file, lease file, log and no
config file; it never runs in the root netns. Every process here is started by us and stopped
by its PID.
"""

import contextlib
import os
import signal
import socket
import subprocess
import time

DNSMASQ = "/usr/sbin/dnsmasq"


def require_dnsmasq() -> None:
    from kit.environment import require

    require(os.path.exists(DNSMASQ), "dnsmasq is not installed (Debian dnsmasq-base)")


def read_log(path: str) -> str:
    """A log file's text so far ("" before the program made it)."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


MV_NET, BR_NET = "10.66.0", "10.67.0"
MV6_NET, BR6_NET = "fd66::", "fd67::"
DNSMASQ6_OPTIONS = [
    f"--dhcp-range=set:mv6,{MV6_NET}10,{MV6_NET}ff,64,2m",
    f"--dhcp-option=tag:mv6,option6:dns-server,[{MV6_NET}53]",
    "--dhcp-option=tag:mv6,option6:domain-search,six.example",
    f"--dhcp-range=set:br6,{BR6_NET}10,{BR6_NET}ff,64,2m",
    f"--dhcp-option=tag:br6,option6:dns-server,[{BR6_NET}53]",
    "--enable-ra",
]
DNSMASQ_OPTIONS = [
    f"--dhcp-range=set:mv,{MV_NET}.10,{MV_NET}.250,255.255.255.0,2m",
    f"--dhcp-option=tag:mv,option:router,{MV_NET}.1",
    f"--dhcp-option=tag:mv,option:dns-server,{MV_NET}.53,{MV_NET}.54",
    "--dhcp-option=tag:mv,option:domain-name,mv.example",
    "--dhcp-option=tag:mv,option:domain-search,a.example,b.example",
    f"--dhcp-option=tag:mv,option:classless-static-route,0.0.0.0/0,{MV_NET}.1,10.98.0.0/16,0.0.0.0",
    "--dhcp-option=tag:mv,option:T1,3s",
    f"--dhcp-range=set:br,{BR_NET}.10,{BR_NET}.250,255.255.255.0,2m",
    f"--dhcp-option=tag:br,option:router,{BR_NET}.1",
    f"--dhcp-option=tag:br,option:dns-server,{BR_NET}.53",
    f"--dhcp-option=tag:br,33,192.168.5.0,{BR_NET}.1",
]


def ns(name: str, *argv: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} in {name}: {proc.stderr}")
    return proc.stdout


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Node:
    def __init__(self, name: str, workdir: str, ipv6: bool = False):
        self.name = name
        self.ipv6 = ipv6
        self.path = f"/var/run/netns/{name}"
        self.workdir = workdir
        self.lease_file = os.path.join(workdir, "dnsmasq.leases")
        self.log_file = os.path.join(workdir, "dnsmasq.log")
        self.dnsmasq: subprocess.Popen | None = None
        self.lan = f"{name}l"
        for netns in (name, self.lan):
            subprocess.run(["ip", "netns", "add", netns], check=True)
        for netns, argv in (
            (name, "ip link set lo up"),
            (self.lan, "ip link set lo up"),
            (name, f"ip link add mst0 type veth peer name srv0 netns {self.lan}"),
            (name, "ip link set mst0 up"),
            (self.lan, "ip link set srv0 up"),
            (self.lan, f"ip addr add {MV_NET}.1/24 dev srv0"),
            (name, "ip link add brd0 type bridge"),
            (name, "ip link set brd0 up"),
            (name, f"ip addr add {BR_NET}.2/24 dev brd0"),
            (name, f"ip link add brp0 master brd0 type veth peer name srvb0 netns {self.lan}"),
            (name, "ip link set brp0 up"),
            (self.lan, "ip link set srvb0 up"),
            (self.lan, f"ip addr add {BR_NET}.1/24 dev srvb0"),
        ):
            ns(netns, *argv.split())
        if ipv6:
            ns(self.lan, *f"ip addr add {MV6_NET}1/64 dev srv0 nodad".split())
            ns(self.lan, *f"ip addr add {BR6_NET}1/64 dev srvb0 nodad".split())

    def start_dnsmasq(self) -> None:
        argv = [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--group=root",
            "--bind-interfaces",
            "--interface=srv0",
            "--interface=srvb0",
            "--except-interface=lo",
            "--no-ping",
            "--dhcp-authoritative",
            "--log-dhcp",
            f"--log-facility={self.log_file}",
            f"--pid-file={os.path.join(self.workdir, 'dnsmasq.pid')}",
            f"--dhcp-leasefile={self.lease_file}",
            *DNSMASQ_OPTIONS,
            *(DNSMASQ6_OPTIONS if self.ipv6 else []),
        ]
        self.dnsmasq = subprocess.Popen(["ip", "netns", "exec", self.lan, *argv])
        wait_for(lambda: f"IP range {MV_NET}" in self.log(), what="dnsmasq to start")

    def log(self) -> str:
        return read_log(self.log_file)

    def count(self, word: str, mac: str) -> int:
        return sum(1 for line in self.log().splitlines() if word in line and mac in line)

    def leases(self) -> dict:
        """dnsmasq's lease file: {ip: (mac, hostname, client-id)}."""
        try:
            with open(self.lease_file) as f:
                rows = [line.split() for line in f if line.strip()]
        except FileNotFoundError:
            return {}
        return {row[2]: (row[1], row[3], row[4]) for row in rows if len(row) >= 5}

    def close(self) -> None:
        if self.dnsmasq is not None:
            self.dnsmasq.send_signal(signal.SIGTERM)
            try:
                self.dnsmasq.wait(5)
            except subprocess.TimeoutExpired:
                self.dnsmasq.kill()
                self.dnsmasq.wait()
        for netns in (self.name, self.lan):
            subprocess.run(["ip", "netns", "del", netns], check=False, stderr=subprocess.DEVNULL)


class DaemonProcess:
    """`<bin>/dhcp daemon` inside the node netns, on a socket and state dir of our own."""

    def __init__(self, node: Node, executable: str, workdir: str, *extra: str):
        self.node = node
        self.executable = executable
        self.socket = os.path.join(workdir, "dhcp.sock")
        self.pidfile = os.path.join(workdir, "dhcp.pid")
        self.statedir = os.path.join(workdir, "state")
        self.log_file = os.path.join(workdir, "daemon.log")
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list:
        return [
            self.executable,
            "daemon",
            "-socketpath",
            self.socket,
            "-pidfile",
            self.pidfile,
            "-statedir",
            self.statedir,
            *self.extra,
        ]

    def start(self, **popen) -> "DaemonProcess":
        log = open(self.log_file, "a")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.node.name, *self.argv()],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            **popen,
        )
        log.close()
        # Generous: a daemon from source imports pyroute2's DHCP client first, which takes
        # seconds on a loaded 2-core machine.
        wait_for(
            lambda: os.path.exists(self.pidfile) and self.listening(),
            timeout=45.0,
            what="the dhcp daemon to listen",
        )
        return self

    def listening(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(self.socket)
            except OSError:
                return False
        return True

    def log(self) -> str:
        return read_log(self.log_file)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        if sig == signal.SIGKILL:  # a killed daemon leaves both behind, as upstream's would
            for path in (self.pidfile,):
                if os.path.exists(path):
                    os.unlink(path)
        return code


@contextlib.contextmanager
def dnsmasq_node(prefix: str, workdir: str, ipv6: bool = False):
    """A Node with dnsmasq serving, closed afterwards (needs dnsmasq: `require`)."""
    from kit.netns import unique_name

    require_dnsmasq()
    node = Node(unique_name(prefix), workdir, ipv6=ipv6)
    try:
        node.start_dnsmasq()
        yield node
    finally:
        node.close()


@contextlib.contextmanager
def running_daemon(node: Node, plugin_dir: str, workdir: str):
    """`plugin_dir`'s dhcp daemon listening in `node`, killed afterwards (SIGKILL: nothing it
    would do on a clean stop is left to hide a test's mistake)."""
    started = DaemonProcess(node, os.path.join(plugin_dir, "dhcp"), workdir).start()
    try:
        yield started
    finally:
        started.stop(signal.SIGKILL)


def many_pods_at_once(run, conf: dict, make_netns, tag: str, leased, count: int = 20) -> None:
    """ADD `conf` for `count` pods (netns named from `tag`) at the same time, as a runtime
    starting many pods does, through `run(command, conf, netns, container_id=...)`: each pod
    gets an address of its own that the server's leases (`leased()`) hold; then DEL for all at
    once, until the server holds none of them."""
    from concurrent.futures import ThreadPoolExecutor

    pods = [(f"{tag}{i}", make_netns(tag)) for i in range(count)]

    def all_at_once(command):
        with ThreadPoolExecutor(count) as pool:
            runs = list(pool.map(lambda p: run(command, conf, p[1], container_id=p[0]), pods))
        for done in runs:
            assert done.returncode == 0 and "Traceback" not in done.stderr, done
        return runs

    ips = {done.json["ips"][0]["address"].split("/")[0] for done in all_at_once("ADD")}
    assert len(ips) == count and ips <= set(leased())
    all_at_once("DEL")
    wait_for(lambda: not ips & set(leased()), what=f"{count} releases")
