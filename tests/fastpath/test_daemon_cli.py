"""pycni-daemon's command line and socket handling, as a node operator meets them: --help and
--version, clear errors for bad arguments, a second daemon that leaves a live one's socket
alone, a stale socket taken over, and the upgrade (the installed program replaced on disk)
that makes the daemon exit while its callers run the new program.

Every daemon here runs in a test netns and a private mount namespace on a private socket.
"""

import json
import os
import shutil
import socket
import time

import pytest
from conftest import Daemon, run_plugin
from kit.daemon import LOOPBACK_CONF as CONF
from kit.daemon import run_daemon as kit_run_daemon
from kit.daemon import serves_a_new_daemon, via


def run_daemon(plugin_dir, make_netns, *args, env=None):
    """pycni-daemon with `args` in a test netns and a private mount namespace, text out."""
    return kit_run_daemon(plugin_dir, make_netns, *args, env=env, text=True)


def test_help_describes_the_daemon_and_serves_nothing(plugin_dir, make_netns, tmp_path):
    sock = tmp_path / "run" / "pycni.sock"
    proc = run_daemon(plugin_dir, make_netns, "--help", env={"PYCNI_SOCKET": str(sock)})
    assert proc.returncode == 0, proc
    assert proc.stdout.startswith("usage: pycni-daemon [--verbose] [--workers N]")
    for option in ("--verbose", "--workers", "--trace", "--version", "SOCKET"):
        assert option in proc.stdout
    assert "/run/pycni/pycni.sock" in proc.stdout
    assert not sock.parent.exists() and "serving" not in proc.stderr


def test_version(plugin_dir, make_netns):
    from libcni import PYCNI_VERSION

    proc = run_daemon(plugin_dir, make_netns, "--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"pycni-daemon {PYCNI_VERSION}\n", "")


@pytest.mark.parametrize(
    "args", [["--bogus"], ["--workers", "many"], ["--workers", "-1"], ["a.sock", "b.sock"]]
)
def test_bad_arguments_are_a_usage_error_without_traceback(plugin_dir, make_netns, tmp_path, args):
    sock = tmp_path / "run" / "pycni.sock"
    proc = run_daemon(plugin_dir, make_netns, *args, env={"PYCNI_SOCKET": str(sock)})
    assert proc.returncode == 2, proc
    assert "usage: pycni-daemon" in proc.stderr and "pycni-daemon: error:" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not sock.parent.exists()


def test_a_file_in_the_way_is_reported_and_left_alone(plugin_dir, make_netns, tmp_path):
    path = tmp_path / "pycni.sock"
    path.write_text("not a socket")
    proc = run_daemon(plugin_dir, make_netns, str(path))
    assert proc.returncode == 1, proc
    assert proc.stderr.strip() == (
        f"pycni-daemon: {path} exists and is not a socket: remove it or choose another path"
    )
    assert path.read_text() == "not a socket"


def test_a_second_daemon_leaves_a_live_socket_alone(plugin_dir, start_daemon, make_netns, netns):
    first = start_daemon(plugin_dir)
    proc = run_daemon(plugin_dir, make_netns, first.socket)
    assert proc.returncode == 1, proc
    assert f"another pycni-daemon already serves {first.socket}" in proc.stderr
    assert "Traceback" not in proc.stderr
    done = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns, env=via(first))
    assert done.returncode == 0 and first.served() == 1 and first.proc.poll() is None


def test_a_stale_socket_is_taken_over(plugin_dir, make_netns, tmp_path, netns):
    workdir = tmp_path / "stale"
    (workdir / "run").mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(workdir / "run" / "pycni.sock"))
    stale.close()  # a daemon killed with -9 leaves this: a socket file nobody listens on
    serves_a_new_daemon(plugin_dir, workdir, make_netns, netns)


@pytest.mark.frozen
def test_an_upgrade_on_disk_stops_the_daemon_and_its_caller_runs_the_new_program(
    frozen_bin, make_netns, tmp_path, netns
):
    install = tmp_path / "opt-cni-bin"
    shutil.copytree(frozen_bin, install, symlinks=True)
    # copytree copies hard links as separate files: link them again, as the build makes them.
    runtime = install / "_internal"
    os.unlink(runtime / "pycni-daemon")
    os.link(runtime / "pycni", runtime / "pycni-daemon")
    workdir = tmp_path / "node"
    (workdir / "run").mkdir(parents=True)
    daemon = Daemon(str(install), workdir, make_netns)
    env = via(daemon)
    try:
        served = run_plugin(str(install), "loopback", "ADD", CONF, netns=netns, env=env)
        assert served.returncode == 0 and daemon.served() == 1
        # A package manager installs the new program: a new file renamed over the old one.
        for name in ("pycni", "pycni-daemon"):
            shutil.copy2(runtime / "pycni", runtime / f".{name}.new")
            os.utime(runtime / f".{name}.new")
            os.replace(runtime / f".{name}.new", runtime / name)
        upgraded = run_plugin(str(install), "loopback", "ADD", CONF, netns=netns, env=env)
        assert upgraded.returncode == 0, upgraded
        assert upgraded.stdout == served.stdout  # the new program ran it, on its own
        daemon.proc.wait(15)
        log = daemon.log_path.read_text()
        assert "the installed program changed" in log, log
        assert not os.path.exists(daemon.socket)
        assert daemon.served() == 1
    finally:
        daemon.stop()
    assert json.loads(upgraded.stdout)["ips"][0]["address"] == "127.0.0.1/8"


def test_stop_removes_the_socket_it_made(plugin_dir, start_daemon):
    daemon = start_daemon(plugin_dir)
    assert os.path.exists(daemon.socket)
    daemon.stop()
    assert daemon.proc.returncode == 0
    deadline = time.monotonic() + 5
    while os.path.exists(daemon.socket) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(daemon.socket)
