"""dummy on this machine: config validation, DEL/STATUS behaviour, and a clear error when the
kernel has no dummy module. Creating dummy links is exercised in the VM
(tests/kernel/test_kernel_vm.py)."""

import os
import subprocess

from conftest import GO_BIN, run_plugin
from kit import variant
from kit.pods import link_names as names


def kernel_has_dummy() -> bool:
    name = f"pyprobe{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        made = subprocess.run(
            ["ip", "-n", name, "link", "add", "d0", "type", "dummy"], capture_output=True
        )
        return made.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def conf(**extra):
    base = {"cniVersion": "1.0.0", "name": "dmnet", "type": "dummy"}
    base.update(extra)
    return base


def run(plugin_dir, command, config, *, pod="", extra_path="", **kw):
    cni_path = ":".join(p for p in (plugin_dir, extra_path, GO_BIN) if p)
    return run_plugin(plugin_dir, "dummy", command, config, netns=pod, cni_path=cni_path, **kw)


def test_ipam_is_required(plugin_dir, netns):
    done = run(plugin_dir, "ADD", conf(), pod=netns)
    assert done.returncode == 1
    assert done.json["msg"] == "dummy interface requires an IPAM configuration"
    assert names(netns) == ["lo"]


@variant(kernel_has_dummy(), "this kernel has the dummy module")
def test_kernel_without_dummy_is_a_clear_error(plugin_dir, netns, fake_ipam):
    config = conf(ipam={"type": fake_ipam.name})
    done = run(plugin_dir, "ADD", config, pod=netns, **fake_ipam.answering())
    assert done.returncode == 1
    assert done.json["msg"] == "failed to create dummy: operation not supported"
    assert "dummy module" in done.json["details"]
    assert fake_ipam.calls() == []


def test_del_is_idempotent_and_releases_ipam(plugin_dir, netns, fake_ipam, tmp_path):
    config = conf(ipam={"type": fake_ipam.name})
    kw = fake_ipam.answering()
    for pod in (netns, str(tmp_path / "gone"), ""):
        done = run(plugin_dir, "DEL", config, pod=pod, **kw)
        assert done.returncode == 0, (pod, done)
    assert fake_ipam.calls() == ["DEL"] * 3


def test_check_requires_prev_result(plugin_dir, netns, fake_ipam):
    config = conf(ipam={"type": fake_ipam.name})
    done = run(plugin_dir, "CHECK", config, pod=netns, **fake_ipam.answering())
    assert done.returncode == 1
    assert done.json["msg"] == "dummy: Required prevResult missing"


def test_status_and_gc_forward_to_ipam(plugin_dir, fake_ipam):
    config = conf(cniVersion="1.1.0", ipam={"type": fake_ipam.name})
    kw = fake_ipam.answering()
    assert run(plugin_dir, "STATUS", config, **kw).returncode == 0
    assert run(plugin_dir, "GC", config, **kw).returncode == 0
    assert fake_ipam.calls() == ["STATUS", "GC"]
