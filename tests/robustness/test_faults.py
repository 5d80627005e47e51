"""Faults (issue #16): kill -9 at random points of a Kubernetes-like ADD, then DEL as a runtime
would, must leave nothing behind; 200 parallel ADDs must never hand out an address twice. Both
with plain execs of the frozen executables and through a private pycni daemon.

The list is test_k8s_chain's (bridge + host-local, portmap, bandwidth, tuning, firewall), run by
libcni's list functions inside a test "host" netns. Each seed kills the runtime process and every
plugin it started (their process group, whose leader is the process this test started) at a
random moment of the ADD, then runs the list's DEL for that container. Budgets are bounded
(FAULT_BUDGET seconds of kill seeds per variant); FAULT_SEED picks the moments.
"""

import json
import os
import random
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ip_json, run_plugin
from kit.k8snode import SUBNET, Cluster, caps, driver_argv

BUDGET = float(os.environ.get("FAULT_BUDGET", "15"))
SEED = int(os.environ.get("FAULT_SEED", "16"))
PARALLEL = 200


@pytest.fixture
def cluster(make_netns, tmp_path):
    return Cluster(make_netns, tmp_path)


@pytest.fixture
def daemon(frozen_bin, start_daemon):
    return start_daemon(frozen_bin)


def start(cluster, plugin_dir, verb, cid, pod, env):
    argv = driver_argv(
        cluster.node.host, plugin_dir, cluster.list_path, cluster.cache, verb, cid, pod, caps()
    )
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the runtime and the plugins it runs
    )


def run(cluster, plugin_dir, verb, cid, pod, env):
    proc = start(cluster, plugin_dir, verb, cid, pod, env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (verb, cid, out, err[-3000:])
    return json.loads(out) if verb == "add" else None


def kill_group(proc) -> None:
    """SIGKILL to the group led by the process we started (ip netns exec became python)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def leftovers(cluster, cid: str, pod: str) -> list:
    found = cluster.leftovers(cid, f"{SUBNET}.")
    found += [e["ifname"] for e in ip_json(pod, "link", "show") if e["ifname"] != "lo"]
    return found


def serving_workers(daemon) -> list:
    """The daemon's workers serving a call (the pool's idle ones are named pycni-idle)."""
    busy = []
    for task in os.listdir(f"/proc/{daemon.proc.pid}/task"):
        with open(f"/proc/{daemon.proc.pid}/task/{task}/children") as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/comm") as comm:
                        if comm.read().strip() != "pycni-idle":
                            busy.append(int(pid))
                except FileNotFoundError:
                    pass
    return busy


def wait_idle(daemon) -> None:
    """DEL once no worker serves a call (a killed client's worker is killed with it, but only
    once the kernel signals the hang-up)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not serving_workers(daemon):
            return
        time.sleep(0.05)
    raise AssertionError("daemon workers still running after 60 s")


def kill_campaign(cluster, plugin_dir, env, daemon=None) -> int:
    node = cluster.node
    rng = random.Random(SEED)
    began = time.monotonic()
    pod = node.pod()
    run(cluster, plugin_dir, "add", "calib", pod, env)
    took = time.monotonic() - began
    run(cluster, plugin_dir, "del", "calib", pod, env)
    assert leftovers(cluster, "calib", pod) == []
    deadline = time.monotonic() + BUDGET
    seeds = partial = 0
    while seeds < 3 or time.monotonic() < deadline:
        cid, pod = f"kill{seeds}", node.pod()
        proc = start(cluster, plugin_dir, "add", cid, pod, env)
        time.sleep(rng.uniform(0.0, took * 1.1))
        kill_group(proc)
        if daemon is not None:
            wait_idle(daemon)
        partial += bool(leftovers(cluster, cid, pod))  # the kill interrupted a started ADD
        run(cluster, plugin_dir, "del", cid, pod, env)
        left = leftovers(cluster, cid, pod)
        assert left == [], (seeds, left)
        seeds += 1
    print(f"{seeds} kill seeds, {partial} of them left a partial ADD for DEL to clean up")
    assert partial > 0, "no kill landed inside an ADD: the moments are wrong"
    return seeds


def test_kill_9_at_random_points_of_add_then_del_leaves_nothing(frozen_bin, cluster):
    assert kill_campaign(cluster, frozen_bin, dict(os.environ)) >= 3


def test_kill_9_through_the_daemon_then_del_leaves_nothing(frozen_bin, cluster, daemon):
    env = dict(os.environ, PYCNI_SOCKET=daemon.socket)
    assert kill_campaign(cluster, frozen_bin, env, daemon) >= 3
    assert daemon.served() > 0


def parallel_adds(plugin_dir, tmp_path, env) -> list:
    conf = {
        "cniVersion": "1.0.0",
        "name": "par",
        "type": "host-local",
        "ipam": {
            "type": "host-local",
            "dataDir": str(tmp_path / "ipam"),
            "ranges": [[{"subnet": "10.96.0.0/23"}]],
        },
    }

    def one(i):
        done = run_plugin(
            plugin_dir,
            "host-local",
            "ADD",
            conf,
            container_id=f"p{i}",
            netns="/var/run/netns/none",
            env=env,
        )
        assert done.returncode == 0, done
        return done.json["ips"][0]["address"]

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return list(pool.map(one, range(PARALLEL)))


def test_200_parallel_adds_never_share_an_address(frozen_bin, tmp_path):
    addresses = parallel_adds(frozen_bin, tmp_path, {})
    assert len(addresses) == PARALLEL and len(set(addresses)) == PARALLEL


def test_200_parallel_adds_through_the_daemon_never_share_an_address(frozen_bin, tmp_path, daemon):
    addresses = parallel_adds(frozen_bin, tmp_path, {"PYCNI_SOCKET": daemon.socket})
    assert len(addresses) == PARALLEL and len(set(addresses)) == PARALLEL
    assert daemon.served() >= PARALLEL
