"""vrf on this machine, whose kernel has no VRF support: config and validation, the verbs
that need no VRF (VERSION, DEL in every gone-away case, GC, STATUS), and an ADD that fails
cleanly. The kernel behaviour (enslaving, addresses, routes, DEL of the last slave) is tested
in the Debian-kernel VM: tests/vm/inside_vrf.py, run by tests/kernel/test_kernel_vm.py."""

import os

import pytest
from conftest import ip_json, ns_exec, run_plugin
from kit import variant
from kit.pods import netns_with_veth


@pytest.fixture
def pod(make_netns):
    return netns_with_veth(make_netns, "vrp", "eth0", "peer0")


def conf(pod, **extra):
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": pod}],
        "ips": [{"address": "10.9.0.5/24", "gateway": "10.9.0.1", "interface": 0}],
    }
    base = {
        "cniVersion": "1.0.0",
        "name": "vrfnet",
        "type": "vrf",
        "vrfname": "red",
        "prevResult": prev,
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def vrf(plugin_dir, command, config, pod, **kw):
    return run_plugin(plugin_dir, "vrf", command, config, netns=pod, **kw)


def links(pod):
    return sorted(e["ifname"] for e in ip_json(pod, "link", "show"))


def test_version_starts_at_0_3_1_and_0_3_0_is_refused(plugin_dir, pod):
    versions = vrf(plugin_dir, "VERSION", None, pod).json["supportedVersions"]
    assert versions == ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    done = vrf(plugin_dir, "ADD", conf(pod, cniVersion="0.3.0"), pod)
    assert done.returncode == 1 and done.json["code"] == 1, done


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"vrfname": None}, "configuration is expected to have a valid vrf name"),
        ({"vrfname": ""}, "configuration is expected to have a valid vrf name"),
        ({"vrfname": "a-name-too-long-for-linux"}, "invalid vrfname"),
        ({"vrfname": "a/b"}, "invalid vrfname"),
        ({"vrfname": 7}, '"vrfname" must be a string'),
        ({"table": -1}, "table must be a routing table id from 0"),
        ({"table": 2**32}, "table must be a routing table id from 0"),
        ({"table": "10"}, '"table" must be an integer'),
    ],
)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_bad_config_is_a_cni_error_for_every_verb(plugin_dir, pod, extra, words, command):
    done = vrf(plugin_dir, command, conf(pod, **extra), pod)
    assert done.returncode == 1 and done.json["code"] == 7 and words in done.json["msg"], done
    assert "Traceback" not in done.stderr
    assert links(pod) == ["eth0", "lo", "peer0"]


def test_add_needs_a_prev_result(plugin_dir, pod):
    done = vrf(plugin_dir, "ADD", conf(pod, prevResult=None), pod)
    assert done.returncode == 1 and done.json["msg"] == "missing prevResult from earlier plugin"
    done = vrf(plugin_dir, "CHECK", conf(pod, prevResult=None), pod)
    assert done.returncode == 1 and done.json["msg"] == "missing prevResult from earlier plugin"


@variant(os.path.isdir("/sys/module/vrf"), "this kernel has VRF support")
def test_add_without_kernel_vrf_support_fails_cleanly(plugin_dir, pod):
    done = vrf(plugin_dir, "ADD", conf(pod), pod)
    assert done.returncode == 1 and done.json["code"] == 999
    assert done.json["msg"] == "cmdAdd failed: could not add VRF red: operation not supported"
    assert "module vrf" in done.json["details"] and "Traceback" not in done.stderr
    assert links(pod) == ["eth0", "lo", "peer0"]


def test_a_link_of_another_kind_is_not_taken_for_the_vrf(plugin_dir, pod):
    ns_exec(pod, "ip", "link", "add", "red", "type", "veth", "peer", "red1")
    for command in ("ADD", "CHECK"):
        done = vrf(plugin_dir, command, conf(pod), pod)
        assert done.returncode == 1 and "Netlink red is not a VRF" in done.json["msg"], done
    assert ip_json(pod, "link", "show", "eth0")[0].get("master") is None


def test_check_without_the_vrf_fails(plugin_dir, pod):
    done = vrf(plugin_dir, "CHECK", conf(pod), pod)
    assert done.returncode == 1 and done.json["msg"].startswith("VRF red not found in ")


def test_del_is_idempotent_when_things_are_gone(plugin_dir, pod):
    for netns in (pod, pod, "/var/run/netns/no-such-vrf-pod", ""):
        for config in (conf(pod), conf(pod, prevResult=None)):
            done = vrf(plugin_dir, "DEL", config, netns)
            assert done.returncode == 0 and done.stdout == "", done
    ns_exec(pod, "ip", "link", "del", "eth0")
    assert vrf(plugin_dir, "DEL", conf(pod), pod).returncode == 0


def test_gc_and_status_succeed(plugin_dir, pod):
    for command in ("GC", "STATUS"):
        done = vrf(plugin_dir, command, conf(pod, cniVersion="1.1.0", prevResult=None), pod)
        assert done.returncode == 0 and done.stdout == "", done
