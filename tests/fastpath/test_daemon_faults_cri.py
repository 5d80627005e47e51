"""Faults on the served path under containerd's CRI: while 20 pods are created at once (and then
torn down at once) through pycni-daemon, kill -9 the server, an idle pre-forked worker or a
worker serving a call, or upgrade the installed program under the running daemon. Each pod
either comes up or fails (and containerd cleans it with DEL); once all are removed nothing is
left on the node (veth, ifb, qdisc, netfilter rule, host-local reservation, result cache
entry), and calls made while no daemon listens are run by the plugins themselves (the per-call
log says `frozen`).

One containerd node (tests/cri/node.py) for the whole module, on a copy of the frozen build
that the upgrade case may replace; the daemon runs in the node's own mount namespace on the
default socket there (the node's private /run), as on a real node.
"""

import calendar
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import NetnsFactory
from kit import require
from kit.cri.node import LAN_PREFIX, CriNode, Lan, build_pod_image, kubernetes_conflist

PODS = 20
SUBNET = "10.244.230"
BANDWIDTH = {"kubernetes.io/ingress-bandwidth": "1M", "kubernetes.io/egress-bandwidth": "1M"}


class NodeDaemon:
    """pycni-daemon inside the node (nsenter into its mount, net and PID namespaces)."""

    def __init__(self, node: CriNode, install: str, log_path: str):
        self.node, self.install, self.log_path = node, install, log_path
        self.launcher: subprocess.Popen | None = None
        self.pid = 0

    def start(self) -> None:
        program = os.path.join(self.install, "_internal", "pycni-daemon")
        started = self.log().count("]: serving ") if os.path.exists(self.log_path) else 0
        with open(self.log_path, "a") as log:
            self.launcher = subprocess.Popen(
                ["nsenter", "-t", str(self.node.init_pid), "-m", "-n", "-p", "--"]
                + [program, "--verbose", "--workers", "4"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ["PATH"]},
            )
        self.pid = CriNode._child_of(self.launcher.pid)
        deadline = time.monotonic() + 60
        while self.log().count("]: serving ") == started:  # (its own PID namespace's pid)
            assert self.launcher.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def workers(self, name: str) -> list:
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                pids = f.read().split()
        except FileNotFoundError:
            return []
        found = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == name:
                        found.append(int(pid))
            except FileNotFoundError:
                pass
        return found

    def worker_pids_in_the_node(self) -> set:
        """Every worker's PID as the node's PID namespace (and its call log) numbers it."""
        found = set()
        for pid in self.workers("pycni-idle") + self.workers("pycni-call"):
            try:
                with open(f"/proc/{pid}/status") as f:
                    found |= {int(line.split()[-1]) for line in f if line.startswith("NSpid:")}
            except FileNotFoundError:
                pass
        return found

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.launcher.wait(10)

    def stop(self) -> None:
        if self.launcher is not None and self.launcher.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.launcher.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.launcher.wait()


@pytest.fixture(scope="module")
def cri_node(frozen_bin, tmp_path_factory):
    require(
        shutil.which("containerd") is not None and shutil.which("runc") is not None,
        "containerd and runc are not installed (Debian packages containerd, runc)",
    )
    work = tmp_path_factory.mktemp("daemon-faults")
    install = str(work / "bin")
    shutil.copytree(frozen_bin, install, symlinks=True)
    runtime = os.path.join(install, "_internal")
    os.unlink(os.path.join(runtime, "pycni-daemon"))  # a hard link in the build
    os.link(os.path.join(runtime, "pycni"), os.path.join(runtime, "pycni-daemon"))
    namespaces = NetnsFactory()
    node = None
    try:
        image = build_pod_image(str(work / "pod.tar"), str(work))
        node = CriNode(namespaces, install, Lan(namespaces), f"{LAN_PREFIX}.1", image)
        node.install = install
        node.call_log = str(work / "calls.log")
        conflist = kubernetes_conflist(node, "1.0.0", SUBNET)
        for plugin in conflist["plugins"]:
            plugin["logFile"] = node.call_log
        node.set_conflist(conflist)
        node.daemon = NodeDaemon(node, install, str(work / "daemon.log"))
        try:
            node.remove_pod(node.run_pod("probe", host_network=True))
        except Exception as err:
            require(False, f"this machine cannot run containers under containerd/runc: {err}")
        yield node
    finally:
        if node is not None:
            if hasattr(node, "daemon"):
                node.daemon.stop()
            node.close()
        namespaces.cleanup()


def calls_started_after(node, began: float) -> list:
    """Per-call log lines of calls that started after `began` (time.time() seconds)."""
    found = []
    with open(node.call_log) as f:
        for line in f:
            entry = json.loads(line)
            ended = calendar.timegm(time.strptime(entry["time"][:19], "%Y-%m-%dT%H:%M:%S"))
            ended += int(entry["time"][20:23]) / 1000
            if ended - entry["durationMs"] / 1000 > began:
                found.append(entry)
    return found


def churn(node, fault) -> dict:
    """20 pods at once with `fault()` injected while they are being created, then all removed at
    once; returns sandbox id -> IP of the pods that came up."""
    with ThreadPoolExecutor(PODS) as pool:

        def one(number):
            try:
                sandbox = node.run_pod(f"churn-{number}", annotations=BANDWIDTH, wait_serving=False)
            except Exception:  # failed: containerd ran DEL for it
                return None
            return sandbox

        pending = [pool.submit(one, n) for n in range(PODS)]
        fault()
        pods = [p.result() for p in pending]
    came_up = {sandbox: node.pod_ip(sandbox) for sandbox in pods if sandbox is not None}
    for sandbox, ip in came_up.items():
        assert ip.startswith(f"{SUBNET}."), (sandbox, ip)
    # Every pod containerd lists is one that came up (a failed RunPodSandbox leaves none).
    assert {p["id"] for p in node.client.list_pod_sandbox()} == set(came_up)
    with ThreadPoolExecutor(PODS) as pool:
        list(pool.map(node.client.stop_pod_sandbox, came_up))
        list(pool.map(node.client.remove_pod_sandbox, came_up))
    assert_nothing_left(node)
    return came_up


def node_leftovers(node) -> list:
    found = []
    for tool in (["iptables-save"], ["nft", "list", "ruleset"]):
        found += [
            f"{tool[0]}: {line}"
            for line in node.sh(*tool, check=False).stdout.splitlines()
            if f"{SUBNET}." in line and "/24" not in line  # the bridge's own masquerade stays
        ]
    links = json.loads(node.sh("ip", "-j", "link", "show").stdout)
    found += [f"link {x['ifname']}" for x in links if x["ifname"].startswith(("veth", "bwp"))]
    found += [
        f"qdisc {q}" for q in node.sh("tc", "qdisc", "show").stdout.splitlines() if "tbf" in q
    ]
    reservations = node.sh(
        "sh", "-c", f"ls -A {node.host_local_dir}/* 2>/dev/null", check=False
    ).stdout.split()
    found += [f"reservation {r}" for r in reservations if r.startswith(f"{SUBNET}.")]
    cache = node.sh("sh", "-c", "ls -A /var/lib/cni/results 2>/dev/null", check=False).stdout
    found += [f"cache {entry}" for entry in cache.split()]
    return found


def assert_nothing_left(node, timeout: float = 10) -> None:
    # The kernel destroys a pod's netns (and its veth) asynchronously: allow it a moment.
    deadline = time.monotonic() + timeout
    while (left := node_leftovers(node)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], "\n".join(left)


def when_serving(node, count: int = 3, timeout: float = 60) -> None:
    """Wait until the daemon has taken `count` more calls."""
    start = node.daemon.log().count(": worker ")
    deadline = time.monotonic() + timeout
    while node.daemon.log().count(": worker ") < start + count:
        assert time.monotonic() < deadline, "the daemon served no calls"
        time.sleep(0.01)


@pytest.fixture
def daemon(cri_node):
    cri_node.daemon.start()
    yield cri_node.daemon
    cri_node.daemon.stop()


def test_kill_9_of_the_server_during_churn(cri_node, daemon):
    killed_at = []
    workers: set = set()

    def fault():
        when_serving(cri_node)
        workers.update(daemon.worker_pids_in_the_node())
        daemon.kill()
        killed_at.append(time.time())

    churn(cri_node, fault)
    # The calls in progress completed in their workers; every later one ran on its own.
    after = calls_started_after(cri_node, killed_at[0])
    served = [e for e in after if e["path"] == "daemon"]
    assert {e["pid"] for e in served} <= workers, served
    assert any(e["path"] == "frozen" for e in after)


def test_kill_9_of_an_idle_worker_during_churn(cri_node, daemon):
    def fault():
        when_serving(cri_node)
        idle = daemon.workers("pycni-idle")
        assert idle, "no idle worker"
        os.kill(idle[0], signal.SIGKILL)

    churn(cri_node, fault)
    assert daemon.launcher.poll() is None


def test_kill_9_of_a_serving_worker_during_churn(cri_node, daemon):
    killed = []

    def fault():
        deadline = time.monotonic() + 60
        while not (busy := daemon.workers("pycni-call")):
            assert time.monotonic() < deadline, "no worker ever served a call"
            time.sleep(0.002)
        os.kill(busy[0], signal.SIGKILL)
        killed.append(busy[0])

    churn(cri_node, fault)
    assert daemon.launcher.poll() is None


def test_an_upgrade_during_churn_restarts_the_daemon(cri_node, daemon):
    runtime = os.path.join(cri_node.install, "_internal")

    def fault():
        when_serving(cri_node)
        # The package manager puts the new program in place (new file, renamed over the old).
        for name in ("pycni", "pycni-daemon"):
            shutil.copy2(os.path.join(runtime, "pycni"), os.path.join(runtime, f".{name}.new"))
            os.utime(os.path.join(runtime, f".{name}.new"))
            os.replace(os.path.join(runtime, f".{name}.new"), os.path.join(runtime, name))

    churn(cri_node, fault)
    daemon.launcher.wait(30)  # the first caller of the new program made it exit
    assert "the installed program changed" in daemon.log()
    # systemd's socket would start the new one on the next call: here we do.
    daemon.start()
    came_up = churn(cri_node, lambda: None)
    assert came_up and daemon.launcher.poll() is None
