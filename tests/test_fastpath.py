"""The preloaded fast path: plugin calls served by the pycni daemon (fork-server).

Each test starts its own daemon on a private socket (never the default path), inside a test
netns and a private mount namespace, and stops it by PID. A call through the daemon must be
indistinguishable from an exec: same bytes, same exit status, run in the caller's namespaces.
"""

import os
import signal
import socket
import stat
import struct
import subprocess
import time

import pytest
from conftest import daemon_program, run_plugin

CONF = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}


@pytest.fixture
def daemon(plugin_dir, start_daemon):
    if not os.path.exists(daemon_program(plugin_dir)):
        pytest.fail(f"no pycni-daemon in {plugin_dir}")
    return start_daemon(plugin_dir)


def via(daemon):
    return {"PYCNI_SOCKET": daemon.socket}


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
    env = {
        "PATH": os.environ["PATH"],
        "PYCNI_SOCKET": daemon.socket,
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": netns,
        "CNI_IFNAME": "lo",
        "CNI_PATH": "/x",
    }
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
    env = {
        "PATH": os.environ["PATH"],
        "PYCNI_SOCKET": daemon.socket,
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": netns,
        "CNI_IFNAME": "lo",
        "CNI_PATH": "/x",
    }
    # stdin stays open, so the worker blocks reading it until we kill it.
    client = subprocess.Popen(
        [os.path.join(plugin_dir, "loopback")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + 30
    while daemon.served() < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker = int(daemon.log_path.read_text().split(": worker ")[1].split(":")[0])
    os.kill(worker, signal.SIGKILL)
    out, _ = client.communicate(timeout=30)
    client.stdin.close() if client.stdin else None
    assert client.returncode == 1
    assert b'"code": 11' in out
    again = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns, env=via(daemon))
    assert again.returncode == 0, again
    assert daemon.proc.poll() is None


def test_stale_build_is_refused_and_daemon_exits(plugin_dir, daemon, netns):
    from libcni.fastpath import client as fastpath

    header = fastpath.encode_header(fastpath.PROTOCOL, "some-other-build", "loopback", [], {})
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(6)]
    try:
        reply = raw_request(daemon.socket, struct.pack("!I", len(header)) + header, fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert reply == b"X"
    daemon.proc.wait(10)
    # With the daemon gone the executable runs the plugin itself.
    run = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns, env=via(daemon))
    assert run.returncode == 0 and run.json["interfaces"][0]["name"] == "lo"


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
