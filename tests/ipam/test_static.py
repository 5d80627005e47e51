"""static IPAM: addresses from config, CNI_ARGS, args and runtimeConfig; CHECK; DEL no-op."""

import json

import pytest
from conftest import run_plugin

BASE = {
    "cniVersion": "1.0.0",
    "name": "st",
    "ipam": {
        "type": "static",
        "addresses": [
            {"address": "10.5.0.7/24", "gateway": "10.5.0.1"},
            {"address": "fd00:5::7/64"},
        ],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.5.0.1"], "search": ["example"]},
    },
}


def conf(**top):
    c = json.loads(json.dumps(BASE))
    c.update(top)
    return c


def add(plugin_dir, c, **kw):
    return run_plugin(plugin_dir, "static", "ADD", c, netns="/x", **kw)


def test_add_returns_configured_addresses_routes_dns(plugin_dir):
    run = add(plugin_dir, conf())
    assert run.returncode == 0, run
    assert run.json == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.5.0.7/24", "gateway": "10.5.0.1"}, {"address": "fd00:5::7/64"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.5.0.1"], "search": ["example"]},
    }


def test_cni_args_ip_and_gateway_are_appended(plugin_dir):
    run = add(plugin_dir, conf(), args="IgnoreUnknown=1;IP=10.6.0.3/24;GATEWAY=10.6.0.1")
    assert run.json["ips"][-1] == {"address": "10.6.0.3/24", "gateway": "10.6.0.1"}
    assert len(run.json["ips"]) == 3


def test_args_cni_ips_replace_config(plugin_dir):
    run = add(plugin_dir, conf(args={"cni": {"ips": ["10.7.0.2/24"]}}))
    assert run.json["ips"] == [{"address": "10.7.0.2/24"}]


def test_runtime_config_ips_win(plugin_dir):
    c = conf(args={"cni": {"ips": ["10.7.0.2/24"]}}, runtimeConfig={"ips": ["10.8.0.2/24"]})
    assert add(plugin_dir, c).json["ips"] == [{"address": "10.8.0.2/24"}]


def test_runtime_ips_need_cidr(plugin_dir):
    run = add(plugin_dir, conf(runtimeConfig={"ips": ["10.8.0.2"]}))
    assert run.returncode == 1
    assert run.json["msg"] == "an entry in the 'ips' field is NOT in CIDR notation, got: '10.8.0.2'"


def test_one_address_per_family_before_0_3_0(plugin_dir):
    c = conf(cniVersion="0.2.0")
    c["ipam"]["addresses"].append({"address": "10.9.0.1/24"})
    assert "does not support more than 1 address per family" in add(plugin_dir, c).json["msg"]


def test_family_a_result(plugin_dir):
    c = conf(cniVersion="0.2.0")
    run = add(plugin_dir, c)
    assert run.json["ip4"] == {
        "ip": "10.5.0.7/24",
        "gateway": "10.5.0.1",
        "routes": [{"dst": "0.0.0.0/0"}],
    }


def test_del_is_a_noop_that_succeeds(plugin_dir):
    for _ in range(2):
        run = run_plugin(plugin_dir, "static", "DEL", conf())
        assert (run.returncode, run.stdout) == (0, "")


def test_check_against_prev_result(plugin_dir):
    good = conf(prevResult=add(plugin_dir, conf()).json)
    run = run_plugin(plugin_dir, "static", "CHECK", good, netns="/x")
    assert (run.returncode, run.stdout) == (0, "")
    bad_prev = add(plugin_dir, conf()).json
    bad_prev["ips"][0]["gateway"] = "10.5.0.254"
    run = run_plugin(plugin_dir, "static", "CHECK", conf(prevResult=bad_prev), netns="/x")
    assert run.returncode == 1
    assert run.json["msg"] == "static: Failed to match addr 10.5.0.7/24 on interface eth0"


def test_check_needs_prev_result(plugin_dir):
    run = run_plugin(plugin_dir, "static", "CHECK", conf(), netns="/x")
    assert run.returncode == 1 and "prevResult" in run.json["msg"]


@pytest.mark.oracle
@pytest.mark.parametrize("args", ["", "IgnoreUnknown=1;IP=10.6.0.3/24;GATEWAY=10.6.0.1"])
def test_same_result_as_go(go_bin, source_bin, args):
    go = add(go_bin, conf(), args=args)
    ours = add(source_bin, conf(), args=args)
    assert go.returncode == ours.returncode == 0
    assert ours.json == go.json
