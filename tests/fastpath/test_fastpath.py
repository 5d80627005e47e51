"""The preloaded fast path: plugin calls served by the pycni daemon (fork-server).

Each test starts its own daemon on a private socket (never the default path), inside a test
netns and a private mount namespace, and stops it by PID. A call through the daemon must be
indistinguishable from an exec: same bytes, same exit status, run in the caller's namespaces.
"""

import contextlib
import json
import os
import resource
import runpy
import signal
import socket
import stat
import struct
import subprocess
import threading
import time

import pytest
from conftest import REPO, daemon_program, ip_json, run_plugin
from kit.daemon import LOOPBACK_CONF as CONF
from kit.daemon import blocked_client, eventually, loopback_add_env, run_daemon, via

TABLE = runpy.run_path(os.path.join(REPO, "build", "multicall.py"))
SERVED = [name for name in TABLE["PLUGINS"] if name not in TABLE["NOT_FORWARDED"]]


@pytest.fixture
def daemon(plugin_dir, start_daemon):
    if not os.path.exists(daemon_program(plugin_dir)):
        pytest.fail(f"no pycni-daemon in {plugin_dir}")
    return start_daemon(plugin_dir)


@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
def test_results_are_byte_identical_with_and_without_daemon(
    plugin_dir, daemon, make_netns, command
):
    runs = []
    for env in ({}, via(daemon)):
        netns = make_netns()
        if command != "ADD":
            run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns)
        run = run_plugin(plugin_dir, "loopback", command, CONF, netns=netns, env=env)
        runs.append((run.returncode, run.stdout.replace(netns, "NS")))
    assert runs[0] == runs[1]
    assert daemon.served() == 1


def test_errors_are_byte_identical_with_and_without_daemon(plugin_dir, daemon):
    plain = run_plugin(
        plugin_dir, "loopback", "ADD", dict(CONF, cniVersion="9.9.9"), netns="/var/run/netns/none"
    )
    fast = run_plugin(
        plugin_dir,
        "loopback",
        "ADD",
        dict(CONF, cniVersion="9.9.9"),
        netns="/var/run/netns/none",
        env=via(daemon),
    )
    assert (plain.returncode, plain.stdout) == (fast.returncode, fast.stdout)
    assert fast.returncode == 1 and daemon.served() == 1


def test_version_is_answered_without_the_daemon(plugin_dir, daemon):
    # A round trip would cost more than the answer: VERSION never goes to the daemon.
    plain = run_plugin(plugin_dir, "loopback", "VERSION")
    fast = run_plugin(plugin_dir, "loopback", "VERSION", env=via(daemon))
    assert plain.stdout == fast.stdout and daemon.served() == 0


def test_worker_runs_in_the_callers_network_namespace(plugin_dir, daemon, netns):
    # Run the client inside `netns` and name that same netns as CNI_NETNS: the worker must
    # see it as its own netns and refuse (code 8), which proves it entered the caller's netns.
    name = os.path.basename(netns)
    env = loopback_add_env(daemon, netns)
    proc = subprocess.run(
        ["ip", "netns", "exec", name, os.path.join(plugin_dir, "loopback")],
        input=b'{"cniVersion":"1.0.0","name":"n"}',
        env=env,
        capture_output=True,
    )
    assert proc.returncode == 1, proc
    assert b'"code": 8' in proc.stdout
    assert daemon.served() == 1


def raw_request(path, payload: bytes, fds=()):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    if fds:
        socket.send_fds(sock, [payload], list(fds))
    else:
        sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    reply = sock.recv(16)
    sock.close()
    return reply


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        b"\x00\x00\x00\x05hello",
        struct.pack("!I", 2) + b"[]",
        struct.pack("!I", 1 << 30),
        b"\x00\x00\x00\x10{",
    ],
)
def test_daemon_refuses_bad_requests_and_keeps_serving(plugin_dir, daemon, payload, netns):
    reply = raw_request(daemon.socket, payload)
    assert reply in (b"X", b"")
    run = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns, env=via(daemon))
    assert run.returncode == 0 and daemon.served() == 1


def test_daemon_survives_a_killed_worker(plugin_dir, daemon, netns):
    client, worker = blocked_client(plugin_dir, daemon, netns)
    os.kill(worker, signal.SIGKILL)
    out, _ = client.communicate(timeout=30)
    client.stdin.close() if client.stdin else None
    assert client.returncode == 1
    assert b'"code": 11' in out
    again = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns, env=via(daemon))
    assert again.returncode == 0, again
    assert daemon.proc.poll() is None


def test_a_caller_of_another_build_is_refused_and_the_daemon_keeps_serving(
    plugin_dir, daemon, netns
):
    # Another install on the node (a tarball beside the package): its caller runs the plugin
    # itself; the daemon's own program did not change, so it goes on serving its own callers.
    from libcni.fastpath import client as fastpath

    header = fastpath.encode_header(fastpath.PROTOCOL, "some-other-build", "loopback", [], {})
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(6)]
    try:
        reply = raw_request(daemon.socket, struct.pack("!I", len(header)) + header, fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert reply == b"X"
    assert "another install" in daemon.log_path.read_text()
    run = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns, env=via(daemon))
    assert run.returncode == 0 and run.json["interfaces"][0]["name"] == "lo"
    assert daemon.served() == 1 and daemon.proc.poll() is None


def test_socket_is_root_only(daemon):
    assert stat.S_IMODE(os.stat(os.path.dirname(daemon.socket)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600


def test_no_daemon_means_in_process(plugin_dir, tmp_path, netns):
    stale = tmp_path / "stale.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(stale))
    listener.close()  # a socket file nobody listens on
    run = run_plugin(
        plugin_dir, "loopback", "ADD", CONF, netns=netns, env={"PYCNI_SOCKET": str(stale)}
    )
    assert run.returncode == 0 and run.json["ips"][0]["address"] == "127.0.0.1/8"


# --- the daemon on a node: socket activation, run as a plugin -------------------------------


@pytest.mark.frozen
def test_systemd_units_start_the_daemon_of_the_install_on_the_clients_socket(frozen_bin):
    from libcni.fastpath import client as fastpath

    units = os.path.join(REPO, "build", "systemd")
    socket_unit = open(os.path.join(units, "pycni.socket")).read().splitlines()
    service_unit = open(os.path.join(units, "pycni.service")).read().splitlines()
    assert f"ListenStream={fastpath.DEFAULT_SOCKET}" in socket_unit
    assert "SocketMode=0600" in socket_unit and "DirectoryMode=0700" in socket_unit
    (exec_start,) = [
        line.split("=", 1)[1] for line in service_unit if line.startswith("ExecStart=")
    ]
    # The install is unpacked into /opt/cni/bin: the daemon is in its runtime folder.
    assert exec_start.startswith("/opt/cni/bin/")
    installed = os.path.join(frozen_bin, exec_start.removeprefix("/opt/cni/bin/"))
    assert os.path.samefile(installed, daemon_program(frozen_bin))
    assert "Requires=pycni.socket" in service_unit
    # ...and the build ships the units with it.
    for unit in ("pycni.socket", "pycni.service"):
        shipped = os.path.join(frozen_bin, "_internal", "systemd", unit)
        assert open(shipped).read() == open(os.path.join(units, unit)).read()


def test_socket_activated_daemon_serves_and_leaves_the_socket_to_systemd(
    plugin_dir, start_daemon, tmp_path, netns
):
    path = str(tmp_path / "activation" / "pycni.sock")
    os.makedirs(os.path.dirname(path), mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(16)
        daemon = start_daemon(plugin_dir, listener=listener)
        done = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns, env=via(daemon))
        assert done.returncode == 0 and done.json["ips"][0]["address"] == "127.0.0.1/8"
        assert daemon.served() == 1
        assert f"serving {len(SERVED)} programs on {path}" in daemon.log_path.read_text()
        daemon.stop()
        assert stat.S_ISSOCK(os.stat(path).st_mode)  # systemd's to remove, not the daemon's
    finally:
        listener.close()


def run_daemon_as_plugin(plugin_dir, make_netns, tmp_path, command, *args):
    """pycni-daemon as a runtime would run a plugin (inside a test netns and a private mount
    namespace, pointed at a private socket, in case it started serving after all)."""
    path = tmp_path / "would-serve" / "pycni.sock"
    env = {"CNI_COMMAND": command, "PYCNI_SOCKET": str(path)}
    proc = run_daemon(plugin_dir, make_netns, *args, env=env, input=json.dumps(CONF).encode())
    assert not path.parent.exists(), "pycni-daemon made its socket"
    assert b"serving" not in proc.stderr
    return proc


def test_daemon_run_as_a_plugin_answers_version_and_never_serves(plugin_dir, make_netns, tmp_path):
    proc = run_daemon_as_plugin(plugin_dir, make_netns, tmp_path, "VERSION")
    assert proc.returncode == 0, proc
    # Like a plugin that takes every spec version (loopback).
    loopback = run_plugin(plugin_dir, "loopback", "VERSION")
    assert proc.stdout.decode() == loopback.stdout


@pytest.mark.parametrize("command", ["ADD", "DEL", ""])
def test_daemon_run_as_a_plugin_reports_it_is_none(plugin_dir, make_netns, tmp_path, command):
    # Also when given a socket to serve: with CNI_COMMAND set it never serves.
    serve_here = str(tmp_path / "would-serve" / "pycni.sock")
    proc = run_daemon_as_plugin(plugin_dir, make_netns, tmp_path, command, serve_here)
    assert proc.returncode == 1, proc
    error = json.loads(proc.stdout)
    assert error["code"] == 7 and error["msg"] == "pycni-daemon is not a CNI plugin"


# --- a worker is the caller's plugin process ----------------------------------------------------


def test_worker_takes_on_the_callers_umask_limits_nice_value_and_cgroup(
    plugin_dir, daemon, netns, test_cgroup
):
    kind, cgroup_dir, cgroup_path = test_cgroup

    def as_a_runtime_would():
        os.umask(0o027)
        os.setpriority(os.PRIO_PROCESS, 0, 7)  # the server runs at a higher priority
        resource.setrlimit(resource.RLIMIT_NOFILE, (123, 456))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    client, worker = blocked_client(plugin_dir, daemon, netns, as_a_runtime_would)
    try:

        def status_line(name):
            with open(f"/proc/{worker}/status") as f:
                return next(line.split()[1] for line in f if line.startswith(name))

        # Set by the worker just before the plugin runs, the umask last.
        assert eventually(lambda: status_line("Umask:") == "0027"), status_line("Umask:")
        assert resource.prlimit(worker, resource.RLIMIT_NOFILE) == (123, 456)
        assert os.getpriority(os.PRIO_PROCESS, worker) == 7
        assert os.getpriority(os.PRIO_PROCESS, daemon.proc.pid) == -10
        assert resource.prlimit(worker, resource.RLIMIT_CORE) == (0, 0)
        with open(f"/proc/{worker}/cgroup") as f:
            lines = f.read().splitlines()
        wanted = "0::" if kind == "cgroup2" else ":pids:"
        (line,) = [line for line in lines if wanted in line]
        assert line.endswith(f"{wanted}{cgroup_path}"), lines
        out, _ = client.communicate(json.dumps(CONF).encode(), timeout=30)
        assert client.returncode == 0 and json.loads(out)["ips"][0]["address"] == "127.0.0.1/8"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


def test_a_worker_dies_with_its_caller(plugin_dir, daemon, netns):
    client, worker = blocked_client(plugin_dir, daemon, netns)
    client.kill()  # a runtime's timeout: SIGKILL of the plugin it started
    client.wait()

    def gone():
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return True
        return False

    assert eventually(gone), f"worker {worker} outlived its caller"
    # The config arrives now: nobody must act on it.
    with contextlib.suppress(BrokenPipeError):
        client.stdin.write(json.dumps(CONF).encode())
        client.stdin.close()
    time.sleep(0.5)
    (lo,) = ip_json(netns, "link", "show", "lo")
    assert "UP" not in lo["flags"], lo
    assert daemon.proc.poll() is None


def test_callers_do_not_queue_behind_a_slow_one(plugin_dir, daemon, make_netns):
    # A client that trickles its request a byte at a time holds its own worker only: 50 calls
    # made meanwhile, all at once, are served while it is still sending (a server reading
    # requests itself would serve none of them before it gave up on the slow one; its worker
    # gives up after the daemon's REQUEST_DEADLINE).
    stop = threading.Event()
    trickle = {"hung_up": None}

    def slow_client():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(daemon.socket)
        sock.sendall(struct.pack("!I", 4096))
        try:
            while not stop.wait(0.3):
                sock.sendall(b"x")
        except OSError:
            pass
        trickle["hung_up"] = None if stop.is_set() else time.monotonic()
        sock.close()

    pods = [make_netns() for _ in range(50)]
    slow = threading.Thread(target=slow_client)
    slow.start()
    results: dict = {}
    ended: list = []
    try:
        time.sleep(0.5)  # the slow client's worker is reading by now

        def call(number):
            results[number] = run_plugin(
                plugin_dir,
                "loopback",
                "ADD",
                CONF,
                netns=pods[number],
                ifname="lo",
                env=via(daemon),
                timeout=60,
            )
            ended.append(time.monotonic())

        callers = [threading.Thread(target=call, args=(n,)) for n in range(50)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join()
    finally:
        stop.set()
        slow.join()
    assert sorted(results) == list(range(50))
    assert all(r.returncode == 0 for r in results.values()), results
    assert daemon.served() == 50
    assert trickle["hung_up"] is None or trickle["hung_up"] > min(ended)
