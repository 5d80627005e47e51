"""The session's private mounts (tests/kit/mountns.py): default state paths are the test's (#24)."""

import os
import subprocess

import conftest
from conftest import run_plugin
from kit import require


def machine_sees(path: str) -> bool:
    mounts = conftest._private_mounts
    probe = mounts._in_machine_ns("test", "-e", path)
    return probe.returncode == 0


def test_a_plugin_with_default_paths_writes_only_the_sessions_tmpfs(plugin_dir):
    require(conftest._private_mounts is not None, "the session runs without private mounts")
    conf = {
        "cniVersion": "1.0.0",
        "name": "kitdefaults",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.96.0.0/24"}]]},
    }
    env = {"netns": "/var/run/netns/none", "container_id": "kitctr"}
    done = run_plugin(plugin_dir, "host-local", "ADD", conf, **env)
    assert done.returncode == 0, done
    address = done.json["ips"][0]["address"].split("/")[0]
    reservation = f"/var/lib/cni/networks/kitdefaults/{address}"
    try:
        assert os.path.exists(reservation)  # in the session's view
        assert not machine_sees(reservation)  # not on the machine
    finally:
        assert run_plugin(plugin_dir, "host-local", "DEL", conf, **env).returncode == 0


def test_the_paths_are_tmpfs_mounts():
    require(conftest._private_mounts is not None, "the session runs without private mounts")
    listing = subprocess.run(
        ["findmnt", "-n", "--list", "-o", "TARGET,FSTYPE"], capture_output=True, text=True
    ).stdout
    mounted = {tuple(line.split()) for line in listing.splitlines()}
    for path in ("/var/lib/cni", "/run/cni", "/etc/cni"):
        assert (path, "tmpfs") in mounted, path
