"""host-device, run inside a test "host" netns that owns a veth `hd0` to hand to pods.

Topology per test: netns `host` (where the plugin runs) holds `hd0` (fixed MAC), a veth whose
peer `hdpeer` sits in netns `gateway` with 10.78.0.1/24. Pods are further netns.
"""

import functools
import glob
import json

import pytest
from conftest import ip_json, ns_exec
from kit import variant
from kit.pods import (
    GatewayNode,
    add_fails_after_ipam,
    add_refused_by_ipam,
    add_then_del,
    del_releases_ipam_without_netns,
    del_twice_succeeds,
    link,
    pings,
    run_in_host,
    status_and_gc_forward_to_ipam,
)
from kit.pods import link_names as names

MAC = "0a:58:00:00:00:42"
STATIC = {"type": "static", "addresses": [{"address": "10.78.0.5/24", "gateway": "10.78.0.1"}]}


@pytest.fixture
def node(make_netns):
    return GatewayNode(make_netns, "hd", "hd0", "hdpeer", "10.78.0", mac=MAC)


def conf(**extra):
    base = {"cniVersion": "1.0.0", "name": "hdnet", "type": "host-device", "device": "hd0"}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def run(plugin_dir, node, command, config, **kw):
    return run_in_host(plugin_dir, "host-device", node.host, command, config, **kw)


# -- ADD -----------------------------------------------------------------------------------


def test_add_moves_device_into_pod_under_ifname(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(), pod=pod)
    assert done.returncode == 0, done
    assert done.json == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": MAC, "sandbox": pod}],
    }
    moved = link(pod, "eth0")
    assert moved["address"] == MAC
    assert moved["ifalias"] == "hd0"
    assert "UP" in moved["flags"]
    assert link(node.host, "hd0") is None


def test_add_with_ipam_configures_and_reaches_gateway(plugin_dir, node):
    pod = node.pod()
    config = conf(ipam=STATIC, dns={"nameservers": ["10.78.0.53"]})
    done = run(plugin_dir, node, "ADD", config, pod=pod)
    assert done.returncode == 0, done
    assert done.json["ips"] == [{"interface": 0, "address": "10.78.0.5/24", "gateway": "10.78.0.1"}]
    assert done.json["dns"] == {"nameservers": ["10.78.0.53"]}
    assert pings(pod, "10.78.0.1")


def test_add_selects_device_by_hwaddr(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(device=None, hwaddr=MAC.upper()), pod=pod)
    assert done.returncode == 0, done
    assert link(pod, "eth0")["ifalias"] == "hd0"


def test_add_without_selector_is_rejected(plugin_dir, node):
    done = run(plugin_dir, node, "ADD", conf(device=None), pod=node.pod())
    assert done.returncode == 1
    assert done.json["code"] == 7
    assert done.json["msg"] == 'specify either "device", "hwaddr", "kernelpath" or "pciBusID"'


def test_add_missing_device_is_a_clear_error(plugin_dir, node):
    done = run(plugin_dir, node, "ADD", conf(device="nosuch0"), pod=node.pod())
    assert done.returncode == 1
    assert done.json["msg"] == 'failed to find host device: link "nosuch0" not found'


def test_add_unknown_hwaddr_is_a_clear_error(plugin_dir, node):
    config = conf(device=None, hwaddr="0a:58:00:00:00:99")
    done = run(plugin_dir, node, "ADD", config, pod=node.pod())
    assert done.returncode == 1
    assert done.json["msg"] == "failed to find host device: no interface has MAC 0a:58:00:00:00:99"


def test_add_selects_device_by_kernelpath(plugin_dir, node):
    # Under `ip netns exec` /sys shows the host netns' devices: hd0 sorts before lo.
    pod = node.pod()
    done = run(
        plugin_dir, node, "ADD", conf(device=None, kernelpath="/sys/devices/virtual"), pod=pod
    )
    assert done.returncode == 0, done
    assert link(pod, "eth0")["ifalias"] == "hd0"


def virtio_net_pci_address():
    for path in sorted(glob.glob("/sys/bus/pci/devices/*/virtio*/net")):
        return path.split("/")[5]
    return None


@variant(virtio_net_pci_address() is None, "no virtio-net PCI device")
@pytest.mark.parametrize("how", ["pciBusID", "deviceID"])
def test_pci_selection_looks_under_virtio_net_of_this_netns(plugin_dir, node, how):
    # The NIC's netdev lives in the machine's netns, so the test host's sysfs view of its
    # net directory is empty: the lookup path is exercised and nothing is moved.
    address = virtio_net_pci_address()
    config = conf(device=None)
    if how == "pciBusID":
        config["pciBusID"] = address
    else:
        config["runtimeConfig"] = {"deviceID": address}
    done = run(plugin_dir, node, "ADD", config, pod=node.pod())
    assert done.returncode == 1
    assert done.json["msg"].startswith("failed to find network device in path")
    assert f"/sys/bus/pci/devices/{address}/virtio" in done.json["msg"]


def test_add_relative_kernelpath_is_rejected(plugin_dir, node):
    done = run(plugin_dir, node, "ADD", conf(device=None, kernelpath="devices/x"), pod=node.pod())
    assert done.returncode == 1
    assert "must be absolute and begin with /sys/devices/" in done.json["msg"]


def test_add_unknown_device_id_is_rejected(plugin_dir, node):
    config = conf(device=None, runtimeConfig={"deviceID": "0000:ff:1f.7"})
    done = run(plugin_dir, node, "ADD", config, pod=node.pod())
    assert done.returncode == 1
    assert done.json["msg"] == "runtime config DeviceID 0000:ff:1f.7 not found or unsupported"


def test_name_clash_in_pod_rolls_back_to_host(plugin_dir, node):
    ns_exec(node.host, "ip", "link", "set", "hd0", "up")
    pod = node.pod()
    ns_exec(pod, "ip", "link", "add", "eth0", "type", "veth", "peer", "other0")
    done = run(plugin_dir, node, "ADD", conf(), pod=pod)
    assert done.returncode == 1
    assert "eth0" in done.json["msg"]
    back = link(node.host, "hd0")
    assert back is not None and "UP" in back["flags"]
    assert "ifalias" not in back
    assert names(pod) == ["eth0", "lo", "other0"]


def test_ipam_failure_moves_device_back(plugin_dir, node, fake_ipam):
    pod = node.pod()
    config = conf(ipam={"type": fake_ipam.name})
    add_refused_by_ipam(functools.partial(run, plugin_dir, node), pod, config, fake_ipam)
    assert link(node.host, "hd0") is not None
    assert names(pod) == ["lo"]


def test_configure_failure_releases_ipam_and_moves_device_back(plugin_dir, node, fake_ipam):
    pod = node.pod()
    config = conf(ipam={"type": fake_ipam.name})
    add_fails_after_ipam(functools.partial(run, plugin_dir, node), pod, config, fake_ipam)
    assert link(node.host, "hd0") is not None
    assert names(pod) == ["lo"]


# -- DEL -----------------------------------------------------------------------------------


def test_del_moves_device_back_down_and_without_alias(plugin_dir, node, fake_ipam):
    pod = node.pod()
    config = conf(ipam={"type": fake_ipam.name})
    add_then_del(functools.partial(run, plugin_dir, node), pod, config, fake_ipam)
    back = link(node.host, "hd0")
    assert back["address"] == MAC
    assert "UP" not in back["flags"]
    assert "ifalias" not in back
    assert names(pod) == ["lo"]


def test_del_twice_succeeds(plugin_dir, node):
    del_twice_succeeds(functools.partial(run, plugin_dir, node), node.pod(), conf())


def test_del_with_empty_netns_still_releases_ipam(plugin_dir, node, fake_ipam):
    config = conf(ipam={"type": fake_ipam.name})
    del_releases_ipam_without_netns(functools.partial(run, plugin_dir, node), config, fake_ipam)


def test_del_with_missing_netns_still_releases_ipam(plugin_dir, node, fake_ipam, tmp_path):
    config = conf(ipam={"type": fake_ipam.name})
    gone = str(tmp_path / "gone")
    del_releases_ipam_without_netns(
        functools.partial(run, plugin_dir, node), config, fake_ipam, gone
    )


def test_del_without_alias_falls_back_to_configured_device(plugin_dir, node):
    pod = node.pod()
    assert run(plugin_dir, node, "ADD", conf(), pod=pod).returncode == 0
    ns_exec(pod, "ip", "link", "set", "eth0", "alias", "")
    done = run(plugin_dir, node, "DEL", conf(), pod=pod)
    assert done.returncode == 0, done
    assert link(node.host, "hd0") is not None


def test_del_without_alias_or_device_is_a_clear_error(plugin_dir, node):
    pod = node.pod()
    ns_exec(pod, "ip", "link", "add", "eth0", "type", "veth", "peer", "other0")
    done = run(plugin_dir, node, "DEL", conf(device=None, hwaddr=MAC), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == 'failed to find original ifname for "eth0" (alias is not set)'


def test_del_when_host_name_is_taken_keeps_device_in_pod(plugin_dir, node):
    pod = node.pod()
    assert run(plugin_dir, node, "ADD", conf(), pod=pod).returncode == 0
    ns_exec(node.host, "ip", "link", "add", "hd0", "type", "veth", "peer", "squatter")
    done = run(plugin_dir, node, "DEL", conf(), pod=pod)
    assert done.returncode == 1
    assert "hd0" in done.json["msg"]
    assert link(pod, "eth0")["ifalias"] == "hd0"


# -- CHECK, STATUS, GC ---------------------------------------------------------------------


def test_check_passes_after_add(plugin_dir, node):
    pod = node.pod()
    config = conf(ipam=STATIC)
    done = run(plugin_dir, node, "ADD", config, pod=pod)
    assert done.returncode == 0, done
    checked = run(plugin_dir, node, "CHECK", dict(config, prevResult=done.json), pod=pod)
    assert checked.returncode == 0, checked


def test_check_requires_prev_result(plugin_dir, node):
    pod = node.pod()
    assert run(plugin_dir, node, "ADD", conf(), pod=pod).returncode == 0
    done = run(plugin_dir, node, "CHECK", conf(), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == "Required prevResult missing"


def test_check_fails_on_other_mac(plugin_dir, node):
    pod = node.pod()
    done = run(plugin_dir, node, "ADD", conf(), pod=pod)
    prev = json.loads(done.stdout.replace(MAC, "0a:58:00:00:00:07"))
    checked = run(plugin_dir, node, "CHECK", conf(prevResult=prev), pod=pod)
    assert checked.returncode == 1
    assert checked.json["msg"] == (
        f"Interface eth0 Mac 0a:58:00:00:00:07 doesn't match container Mac: {MAC}"
    )


def test_status_and_gc_forward_to_ipam(plugin_dir, node, fake_ipam):
    config = conf(cniVersion="1.1.0", ipam={"type": fake_ipam.name})
    status_and_gc_forward_to_ipam(functools.partial(run, plugin_dir, node), config, fake_ipam)


# -- differential and migration: Debian's Go host-device 1.1.1 -----------------------------


def pod_view(pod):
    moved = link(pod, "eth0")
    found = ip_json(pod, "-4", "addr", "show", "dev", "eth0")
    addrs = [a for entry in found for a in entry["addr_info"]]
    return {
        "address": moved["address"],
        "alias": moved.get("ifalias"),
        "up": "UP" in moved["flags"],
        "ips": [f"{a['local']}/{a['prefixlen']}" for a in addrs],
        "routes": ip_json(pod, "route", "show"),
    }


def host_view(node):
    back = link(node.host, "hd0")
    return back and {"address": back["address"], "up": "UP" in back["flags"]}


@pytest.mark.oracle
@pytest.mark.parametrize("extra", [{}, {"ipam": STATIC}], ids=["l2", "static"])
def test_same_result_and_kernel_state_as_go(source_bin, go_bin, node, extra):
    views = {}
    for name, directory in (("go", go_bin), ("ours", source_bin)):
        pod = node.pod()
        config = conf(**extra)
        done = run(directory, node, "ADD", config, pod=pod)
        assert done.returncode == 0, (name, done)
        result = json.loads(done.stdout.replace(pod, "<netns>"))
        if result.get("dns") == {}:
            del result["dns"]  # Go 1.1.1 prints an empty dns for 1.0.0; upstream since 1.2 not
        in_pod = pod_view(pod)
        check = run(directory, node, "CHECK", dict(config, prevResult=done.json), pod=pod)
        deleted = run(directory, node, "DEL", config, pod=pod)
        views[name] = (result, in_pod, check.returncode, deleted.returncode, host_view(node))
    assert views["ours"] == views["go"]


@pytest.mark.oracle
@pytest.mark.parametrize("adder, deleter", [("go", "ours"), ("ours", "go")])
def test_del_restores_a_device_the_other_implementation_moved_in(
    source_bin, go_bin, node, adder, deleter
):
    """A node upgraded (or rolled back) between a pod's ADD and its DEL."""
    programs = {"go": go_bin, "ours": source_bin}
    pod = node.pod()
    assert run(programs[adder], node, "ADD", conf(), pod=pod).returncode == 0
    done = run(programs[deleter], node, "DEL", conf(), pod=pod)
    assert done.returncode == 0, done
    assert host_view(node) == {"address": MAC, "up": False}
