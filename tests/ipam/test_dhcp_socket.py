"""dhcp: our daemon's socket is ours (/run/pycni/dhcp.sock), not Debian's cni-dhcp.socket path,
and a plugin and a daemon that speak different protocols say so instead of failing obscurely.

Every daemon here runs in a netns and a private mount namespace of its own (tmpfs on /run), on
a socket under the test's tmp dir unless the test is about the default path.
"""

import configparser
import contextlib
import json
import os
import subprocess
import time

import pytest
from conftest import REPO, run_plugin

from ipam.dhcp import rpc

GO_DHCP = "/usr/lib/cni/dhcp"
SYSTEMD = os.path.join(REPO, "build", "systemd")


def conf(socket_path: str | None) -> dict:
    ipam = {"type": "dhcp"}
    if socket_path is not None:
        ipam["daemonSocketPath"] = socket_path
    return {"cniVersion": "1.1.0", "name": "dhsock", "type": "macvlan", "ipam": ipam}


def isolated(argv: list) -> subprocess.Popen:
    """`argv` in a new netns and private mount namespace with a tmpfs on /run."""
    script = 'mount -t tmpfs pycni-test /run && exec "$@"'
    return subprocess.Popen(
        ["unshare", "-n", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_socket(path: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 45
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no daemon socket {path}: {proc.stderr and proc.stderr.read()}")
        time.sleep(0.05)


@contextlib.contextmanager
def listening(path: str, argv: list):
    """A daemon (`argv`, isolated) listening on `path`, killed afterwards."""
    proc = isolated(argv)
    try:
        wait_socket(path, proc)
        yield path
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def go_daemon(tmp_path, go_bin):
    path = str(tmp_path / "go-dhcp.sock")
    with listening(path, [os.path.join(go_bin, "dhcp"), "daemon", "-socketpath", path]):
        yield path


@pytest.fixture
def our_daemon(tmp_path, source_bin):
    path = str(tmp_path / "dhcp.sock")
    argv = [os.path.join(source_bin, "dhcp"), "daemon", "-socketpath", path]
    with listening(path, [*argv, "-statedir", str(tmp_path / "state")]):
        yield path


def test_units_use_our_own_names_and_socket():
    names = sorted(n for n in os.listdir(SYSTEMD) if "dhcp" in n)
    assert names == ["pycni-dhcp.service", "pycni-dhcp.socket"]
    unit = configparser.ConfigParser(strict=False)
    unit.read(os.path.join(SYSTEMD, "pycni-dhcp.socket"))
    assert unit["Socket"]["ListenStream"] == rpc.DEFAULT_SOCKET == "/run/pycni/dhcp.sock"
    for name in names:
        with open(os.path.join(SYSTEMD, name)) as f:
            text = f.read()
        # Debian's cni-dhcp.{socket,service} and /run/cni/dhcp.sock are left alone.
        assert "/run/cni/dhcp.sock" not in text.replace("# ", "").split("[Unit]", 1)[1]
        assert "cni-dhcp." not in text.replace("pycni-dhcp.", "").split("[Unit]", 1)[1]


def test_our_plugin_against_gos_daemon_names_socket_and_fix(plugin_dir, go_daemon, netns):
    add = run_plugin(plugin_dir, "dhcp", "ADD", conf(go_daemon), netns=netns)
    assert add.returncode == 1 and "Traceback" not in add.stderr, add
    error = add.json
    assert error["code"] == 999
    assert go_daemon in error["msg"] and "not pycni's dhcp daemon" in error["msg"]
    assert "upstream's Go dhcp daemon" in error["msg"]
    assert "pycni-dhcp.socket" in error["details"] and "daemonSocketPath" in error["details"]
    check = run_plugin(
        plugin_dir,
        "dhcp",
        "CHECK",
        dict(conf(go_daemon), prevResult={"cniVersion": "1.1.0", "ips": []}),
        netns=netns,
    )
    assert check.returncode == 1 and go_daemon in check.json["msg"], check
    status = run_plugin(plugin_dir, "dhcp", "STATUS", conf(go_daemon))
    assert status.returncode == 1 and status.json["code"] == 50, status
    assert go_daemon in status.json["msg"]
    # None of our leases can be held there: DEL succeeds, as with no daemon at all.
    delete = run_plugin(plugin_dir, "dhcp", "DEL", conf(go_daemon), netns=netns)
    assert delete.returncode == 0 and delete.stdout == "", delete


def test_a_json_rpc_answer_is_foreign_too(tmp_path):
    import socket
    import threading

    path = str(tmp_path / "jsonrpc.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def answer():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b'{"id":null,"result":null,"error":"rpc: service/method ill-formed"}\n')
        conn.close()

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        with pytest.raises(rpc.ForeignDaemon) as err:
            rpc.call(path, "status", {}, 5)
    finally:
        thread.join()
        listener.close()
    assert path in err.value.msg and "ill-formed" in err.value.msg


def test_gos_plugin_against_our_daemon_is_told_who_answers(go_bin, our_daemon, netns):
    add = run_plugin(go_bin, "dhcp", "ADD", dict(conf(our_daemon), cniVersion="1.0.0"), netns=netns)
    assert add.returncode != 0, add
    assert "pycni's dhcp daemon" in json.loads(add.stdout)["msg"], add
    # Our daemon keeps serving our plugin afterwards.
    assert rpc.call(our_daemon, "status", {}, 5) == {"leases": 0}


def test_default_socket_is_run_pycni(plugin_dir, tmp_path):
    """Without daemonSocketPath the plugin dials /run/pycni/dhcp.sock, where a daemon started
    without -socketpath listens (both in one private mount namespace)."""
    dhcp = os.path.join(plugin_dir, "dhcp")
    (tmp_path / "conf.json").write_text(json.dumps(conf(None)))
    script = f"""
        mount -t tmpfs pycni-test /run
        {dhcp} daemon -statedir {tmp_path}/state 2>{tmp_path}/daemon.log &
        daemon=$!
        for i in $(seq 450); do [ -S /run/pycni/dhcp.sock ] && break; sleep 0.1; done
        CNI_COMMAND=STATUS CNI_PATH={plugin_dir} {dhcp} <{tmp_path}/conf.json
        echo "rc=$?"
        kill -9 $daemon
    """
    proc = subprocess.run(
        ["unshare", "-n", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.stdout.strip().endswith("rc=0"), (proc, (tmp_path / "daemon.log").read_text())
