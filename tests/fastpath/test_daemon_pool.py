"""The daemon's pool of pre-forked workers, and the per-phase trace of a served call.

Workers wait for calls before they arrive; each serves one call and exits. What is checked:
the pool is there and refilled, a killed idle worker is replaced, a killed server takes its idle
workers with it while a call in progress completes, callers of a dead daemon run the plugin
themselves, a new daemon takes the stale socket over, --warm-cgroups places idle workers in the
last caller's cgroup, and PYCNI_TRACE puts each call's phases in its per-call log.

Every daemon runs in a test netns and a private mount namespace on a private socket.
"""

import json
import os
import signal

import pytest
from conftest import Daemon, run_plugin
from kit.daemon import LOOPBACK_CONF as CONF
from kit.daemon import blocked_client, eventually, serves_a_new_daemon, via


def children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except FileNotFoundError:
        return []


def name_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def idle_workers(daemon) -> list:
    return [pid for pid in children(daemon.proc.pid) if name_of(pid) == "pycni-idle"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as gone (it is reaped by the kernel, as the server ignores SIGCHLD).
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def pool(plugin_dir, start_daemon):
    return start_daemon(plugin_dir, "--workers", "3")


def test_workers_wait_before_the_first_call_and_are_refilled(plugin_dir, pool, netns):
    assert eventually(lambda: len(idle_workers(pool)) == 3), children(pool.proc.pid)
    before = set(idle_workers(pool))
    for _ in range(4):
        done = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns, env=via(pool))
        assert done.returncode == 0, done
    # Each call took a worker, which exited; the server forked a new one each time.
    assert eventually(lambda: len(idle_workers(pool)) == 3)
    assert len(before & set(idle_workers(pool))) < 3
    assert pool.served() == 4


def test_a_killed_idle_worker_is_replaced(plugin_dir, pool, netns):
    assert eventually(lambda: len(idle_workers(pool)) == 3)
    victims = idle_workers(pool)[:2]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert eventually(
        lambda: len(idle_workers(pool)) == 3 and not set(victims) & set(idle_workers(pool))
    )
    done = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns, env=via(pool))
    assert done.returncode == 0 and pool.served() == 1 and pool.proc.poll() is None


def test_a_killed_server_takes_its_idle_workers_and_a_call_in_progress_completes(
    plugin_dir, pool, netns
):
    client, worker = blocked_client(plugin_dir, pool, netns)
    assert eventually(lambda: len(idle_workers(pool)) == 3)
    idle = idle_workers(pool)
    os.kill(pool.proc.pid, signal.SIGKILL)
    pool.proc.wait()
    assert eventually(lambda: not any(alive(pid) for pid in idle)), "idle workers outlived it"
    # The call being served completes: its worker no longer depends on the server.
    out, _ = client.communicate(json.dumps(CONF).encode(), timeout=30)
    assert client.returncode == 0 and json.loads(out)["ips"][0]["address"] == "127.0.0.1/8"
    # Nobody listens now: the next caller runs the plugin itself, with the same answer.
    alone = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns, env=via(pool))
    assert alone.returncode == 0 and alone.stdout == out.decode()
    assert pool.served() == 1


def test_a_new_daemon_takes_over_after_a_kill_9(plugin_dir, make_netns, tmp_path, netns):
    workdir = tmp_path / "node"
    (workdir / "run").mkdir(parents=True)
    first = Daemon(plugin_dir, workdir, make_netns)
    try:
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
    finally:
        first.stop()
    assert os.path.exists(first.socket)  # left behind by the kill
    serves_a_new_daemon(plugin_dir, workdir, make_netns, netns)


def test_warm_cgroups_place_idle_workers_where_the_last_caller_was(
    plugin_dir,
    start_daemon,
    netns,
    test_cgroup,
):
    kind, cgroup_dir, cgroup_path = test_cgroup
    daemon = start_daemon(plugin_dir, "--workers", "2", "--warm-cgroups")

    def in_the_test_cgroup():
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    try:
        client, worker = blocked_client(plugin_dir, daemon, netns, in_the_test_cgroup)
        client.communicate(json.dumps(CONF).encode(), timeout=30)
        assert client.returncode == 0

        def placed():
            idle = idle_workers(daemon)
            with open(os.path.join(cgroup_dir, "cgroup.procs")) as f:
                inside = {int(pid) for pid in f.read().split()}
            return len(idle) == 2 and set(idle) <= inside

        assert eventually(placed), idle_workers(daemon)
    finally:
        daemon.stop()  # before the cgroup is removed: idle workers die with the server
        assert eventually(lambda: not children(daemon.proc.pid))


def test_a_traced_call_logs_its_phases(plugin_dir, pool, netns, tmp_path):
    log = tmp_path / "calls.log"
    conf = dict(CONF, logFile=str(log))
    env = dict(via(pool), PYCNI_TRACE="1")
    served = run_plugin(plugin_dir, "loopback", "ADD", conf, netns=netns, env=env)
    alone = run_plugin(
        plugin_dir,
        "loopback",
        "ADD",
        conf,
        netns=netns,
        env={"PYCNI_TRACE": "1", "PYCNI_SOCKET": str(tmp_path / "none")},
    )
    untraced = run_plugin(plugin_dir, "loopback", "ADD", conf, netns=netns, env=via(pool))
    assert served.stdout == alone.stdout == untraced.stdout
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["path"] for line in lines] == ["daemon", lines[1]["path"], "daemon"]
    phases = lines[0]["phases"]
    frontdoor = "frontdoor" in phases  # the native front door stamps its start; source does not
    assert frontdoor == os.path.exists(os.path.join(plugin_dir, "_internal"))
    expected = ["accepted", "request", "admitted", "entered", "plugin", "pluginDone", "statusSent"]
    assert list(phases) == (["frontdoor"] if frontdoor else []) + expected
    assert list(phases.values()) == sorted(phases.values()) and phases[next(iter(phases))] == 0
    assert "phases" not in lines[2]
    if frontdoor:  # the exec path: front door, interpreter ready, the plugin
        assert list(lines[1]["phases"]) == ["frontdoor", "interpreter", "plugin", "pluginDone"]


def test_the_callers_umask_travels_in_the_request():
    from libcni.fastpath import client as fastpath

    header = fastpath.encode_header(2, "b", "loopback", ["x"], {"A": "1"}, 0o027)
    assert fastpath.decode_header(header) == {
        "protocol": 2,
        "build": "b",
        "name": "loopback",
        "umask": 0o027,
        "argv": ["x"],
        "env": {"A": "1"},
    }
    for bad in (b"", b"9", b"77777", b"-1"):
        assert fastpath.decode_header(b"protocol\x002\x00umask\x00" + bad + b"\x00") is None
