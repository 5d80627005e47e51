"""cnitool end to end: real processes, configs in a temp NETCONFPATH, namespaces the test owns.

The loopback tests run from the source launchers and from the frozen executables; the rest
use the source cnitool with tests/kit/recording_plugin.py to see exactly what reached plugins.
"""

import json
import os
import subprocess

import pytest
from conftest import NETNS_DIR, ip_json, unique_name
from kit import recording_plugin

from libcni.runtime.cli import container_id_for

LOOPBACK_LIST = {"cniVersion": "1.0.0", "name": "mynet", "plugins": [{"type": "loopback"}]}


def lo_is_up(netns) -> bool:
    return "UP" in ip_json(netns, "link", "show", "lo")[0]["flags"]


def cache_file(cache_dir, network, netns_path, ifname="eth0") -> str:
    return os.path.join(cache_dir, "results", f"{network}-{container_id_for(netns_path)}-{ifname}")


def test_container_id_is_upstreams_sha512_prefix_of_the_netns_path():
    # printf /var/run/netns/x | sha512sum | cut -c1-20
    assert container_id_for("/var/run/netns/x") == "cnitool-4acf487154af9777be71"


# -- loopback end to end (source and frozen) ------------------------------------------------


def test_add_check_del_with_loopback(plugin_dir, cnitool, netconf, netns):
    netconf("10-mynet.conflist", LOOPBACK_LIST)
    added = cnitool(plugin_dir, "add", "mynet", netns)
    assert added.returncode == 0, added
    assert lo_is_up(netns)
    # Not a tty: upstream cnitool's bytes (Go's 4-space indent, sorted keys, no newline).
    assert added.stdout == json.dumps(
        {
            "cniVersion": "1.0.0",
            "interfaces": [{"mac": "00:00:00:00:00:00", "name": "lo", "sandbox": netns}],
            "ips": [
                {"address": "127.0.0.1/8", "interface": 0},
                {"address": "::1/128", "interface": 0},
            ],
        },
        indent=4,
    )
    assert os.path.exists(cache_file(cnitool.cache_dir, "mynet", netns))

    checked = cnitool(plugin_dir, "check", "mynet", netns)
    assert (checked.returncode, checked.stdout) == (0, ""), checked

    deleted = cnitool(plugin_dir, "del", "mynet", netns)
    assert (deleted.returncode, deleted.stdout) == (0, ""), deleted
    assert not lo_is_up(netns)
    assert not os.path.exists(cache_file(cnitool.cache_dir, "mynet", netns))


def test_error_prints_cni_json_and_explains_the_code(plugin_dir, cnitool, netconf, netns):
    netconf("10-mynet.conflist", LOOPBACK_LIST)
    run = cnitool(plugin_dir, "add", "mynet", netns, "--ifname", "bad name")
    assert run.returncode == 1, run
    assert run.json == {
        "code": 4,
        "msg": "interface name contains / or : or whitespace characters",
    }
    assert run.stderr.splitlines()[-1] == (
        "error 4: a CNI_* environment variable is missing or invalid"
    )


# -- arguments ------------------------------------------------------------------------------


def test_bare_netns_name_means_a_name_in_var_run_netns(source_bin, cnitool, netconf, netns):
    netconf("10-mynet.conflist", LOOPBACK_LIST)
    run = cnitool(source_bin, "add", "mynet", os.path.basename(netns))
    assert run.returncode == 0, run
    assert run.json["interfaces"][0]["sandbox"] == netns
    assert os.path.exists(cache_file(cnitool.cache_dir, "mynet", netns))
    assert cnitool(source_bin, "del", "mynet", os.path.basename(netns)).returncode == 0


def test_config_file_path_in_place_of_network(source_bin, cnitool, tmp_path, netns):
    conf = tmp_path / "solo.conf"
    conf.write_text(json.dumps({"cniVersion": "0.4.0", "name": "solo", "type": "loopback"}))
    run = cnitool(source_bin, "add", str(conf), netns)
    assert run.returncode == 0, run
    assert run.json["cniVersion"] == "0.4.0"
    assert os.path.exists(cache_file(cnitool.cache_dir, "solo", netns))
    run = cnitool(source_bin, "del", "--conf", str(conf), netns)
    assert run.returncode == 0, run
    assert not lo_is_up(netns)


def test_runtime_inputs_from_the_environment_reach_the_plugin(
    source_bin, fake_dir, cnitool, netconf, fake_log
):
    netconf(
        "net.conflist",
        {
            "cniVersion": "1.0.0",
            "name": "net",
            "plugins": [{"type": "a", "capabilities": {"portMappings": True}}],
        },
    )
    env = {
        "FAKE_LOG": fake_log,
        "CAP_ARGS": '{"portMappings": [{"hostPort": 80}], "bandwidth": {}}',
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p",
        "CNI_IFNAME": "net7",
    }
    run = cnitool(source_bin, "add", "net", "/var/run/netns/x", cni_path=fake_dir, env=env)
    assert run.returncode == 0, run
    (call,) = recording_plugin.read_log(fake_log)
    assert call["conf"]["runtimeConfig"] == {"portMappings": [{"hostPort": 80}]}
    assert call["env"]["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=p"
    assert call["env"]["CNI_IFNAME"] == "net7"
    assert call["env"]["CNI_CONTAINERID"] == "cnitool-4acf487154af9777be71"
    assert call["env"]["CNI_NETNS"] == "/var/run/netns/x"


def test_flags_override_the_environment(source_bin, fake_dir, cnitool, netconf, fake_log):
    netconf(
        "net.conflist",
        {
            "cniVersion": "1.0.0",
            "name": "net",
            "plugins": [{"type": "a", "capabilities": {"mac": True}}],
        },
    )
    env = {"FAKE_LOG": fake_log, "CAP_ARGS": '{"mac": "env"}', "CNI_IFNAME": "net7"}
    run = cnitool(
        source_bin,
        "add",
        "net",
        "/var/run/netns/x",
        "--capability-args",
        '{"mac": "flag"}',
        "--ifname",
        "net9",
        "--container-id",
        "ctr9",
        cni_path=fake_dir,
        env=env,
    )
    assert run.returncode == 0, run
    (call,) = recording_plugin.read_log(fake_log)
    assert call["conf"]["runtimeConfig"] == {"mac": "flag"}
    assert (call["env"]["CNI_IFNAME"], call["env"]["CNI_CONTAINERID"]) == ("net9", "ctr9")


def test_bad_cni_args_are_explained(source_bin, fake_dir, cnitool, netconf):
    netconf("net.conflist", {"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "a"}]})
    run = cnitool(source_bin, "add", "net", "x", cni_path=fake_dir, env={"CNI_ARGS": "A=1;B"})
    assert run.returncode == 1, run
    assert run.json["msg"] == 'invalid CNI_ARGS pair "B"'


def test_plugin_error_keeps_its_code_and_names_the_plugin(source_bin, fake_dir, cnitool, netconf):
    netconf("net.conflist", {"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "a"}]})
    run = cnitool(source_bin, "add", "net", "x", cni_path=fake_dir, env={"FAKE_FAIL": "a:ADD"})
    assert run.returncode == 1, run
    assert run.json == {"code": 11, "msg": 'plugin type="a" failed (add): a refuses ADD'}
    assert "error 11: a transient condition; the runtime should retry later" in run.stderr
    assert "a: failing ADD on request" in run.stderr  # the plugin's own stderr is passed on


def test_unknown_network_lists_what_exists(source_bin, cnitool, netconf):
    netconf("10-mynet.conflist", LOOPBACK_LIST)
    run = cnitool(source_bin, "add", "other", "x")
    assert run.returncode == 1
    assert run.json["details"] == 'networks found: "mynet" (10-mynet.conflist)'


# -- throwaway namespaces -------------------------------------------------------------------


@pytest.fixture
def netns_name():
    """A netns name no one uses yet; removed after the test if something left it behind."""
    name = unique_name("ctool")
    yield name
    if os.path.exists(os.path.join(NETNS_DIR, name)):
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_netns_create_on_add_and_removal_on_del(source_bin, cnitool, netconf, netns_name):
    netconf("10-mynet.conflist", LOOPBACK_LIST)
    path = os.path.join(NETNS_DIR, netns_name)
    added = cnitool(source_bin, "add", "mynet", netns_name, "--netns-create")
    assert added.returncode == 0, added
    assert lo_is_up(path)
    assert f"created network namespace {path}" in added.stderr
    deleted = cnitool(source_bin, "del", "mynet", netns_name, "--netns-create")
    assert deleted.returncode == 0, deleted
    assert not os.path.exists(path)


def test_netns_create_refuses_an_existing_namespace(source_bin, cnitool, netconf, netns):
    netconf("10-mynet.conflist", LOOPBACK_LIST)
    run = cnitool(source_bin, "add", "mynet", os.path.basename(netns), "--netns-create")
    assert run.returncode == 1, run
    assert run.json["msg"] == f"network namespace {netns} already exists"
    assert os.path.exists(netns)


def test_failed_add_in_a_created_namespace_is_undone(
    source_bin, fake_dir, cnitool, netconf, fake_log, netns_name
):
    netconf(
        "net.conflist",
        {"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "a"}, {"type": "b"}]},
    )
    env = {"FAKE_LOG": fake_log, "FAKE_FAIL": "b:ADD"}
    run = cnitool(
        source_bin, "add", "net", netns_name, "--netns-create", cni_path=fake_dir, env=env
    )
    assert run.returncode == 1, run
    assert not os.path.exists(os.path.join(NETNS_DIR, netns_name))
    commands = [(c["plugin"], c["env"]["CNI_COMMAND"]) for c in recording_plugin.read_log(fake_log)]
    assert commands == [("a", "ADD"), ("b", "ADD"), ("b", "DEL"), ("a", "DEL")]


# -- gc, status, version --------------------------------------------------------------------


def test_gc_keeps_valid_attachments_and_deletes_the_rest(source_bin, fake_dir, cnitool, netconf):
    netconf("net.conflist", {"cniVersion": "1.1.0", "name": "net", "plugins": [{"type": "a"}]})
    for container_id in ("c1", "c2"):
        run = cnitool(
            source_bin, "add", "net", "x", "--container-id", container_id, cni_path=fake_dir
        )
        assert run.returncode == 0, run
    run = cnitool(source_bin, "gc", "net", "--valid", "c1/eth0", cni_path=fake_dir)
    assert run.returncode == 0, run
    assert "deleted stale attachment c2 eth0" in run.stderr
    assert sorted(os.listdir(os.path.join(cnitool.cache_dir, "results"))) == ["net-c1-eth0"]


def test_status_success_and_failure(source_bin, fake_dir, cnitool, netconf):
    netconf("net.conflist", {"cniVersion": "1.1.0", "name": "net", "plugins": [{"type": "a"}]})
    ok = cnitool(source_bin, "status", "net", cni_path=fake_dir)
    assert (ok.returncode, ok.stdout) == (0, ""), ok
    env = {"FAKE_FAIL": "a:STATUS", "FAKE_FAIL_CODE": "50"}
    failed = cnitool(source_bin, "status", "net", cni_path=fake_dir, env=env)
    assert failed.returncode == 1, failed
    assert failed.json["code"] == 50
    assert "error 50: the plugin cannot serve requests (STATUS)" in failed.stderr


def test_version_of_a_network_reports_each_plugin(source_bin, fake_dir, cnitool, netconf):
    netconf("net.conflist", {"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "a"}]})
    run = cnitool(source_bin, "version", "net", cni_path=fake_dir, env={"FAKE_VERSIONS": "0.4.0"})
    assert run.returncode == 1, run
    assert run.json["plugins"] == [
        {"type": "a", "path": os.path.join(fake_dir, "a"), "supportedVersions": ["0.4.0"]}
    ]
    assert 'plugin a does not support config version "1.0.0"' in run.stderr


def test_version_without_a_network_is_cnitools_own(source_bin, cnitool):
    run = cnitool(source_bin, "version")
    assert run.returncode == 0, run
    assert run.json["supportedVersions"][-1] == run.json["cniVersion"] == "1.1.0"


# -- usage and output -----------------------------------------------------------------------


def test_no_arguments_prints_usage(source_bin):
    proc = subprocess.run([os.path.join(source_bin, "cnitool")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: cnitool [options] {add|check|del|gc|status|version}")


def test_add_without_netns_is_a_usage_error(source_bin, cnitool):
    run = cnitool(source_bin, "add", "mynet")
    assert run.returncode == 2
    assert "add needs a NETNS" in run.stderr


def test_pretty_output_is_indented_for_people(source_bin, cnitool, netconf, netns):
    netconf("10-mynet.conflist", LOOPBACK_LIST)
    run = cnitool(source_bin, "add", "mynet", netns, "--pretty")
    assert run.returncode == 0, run
    assert run.stdout.startswith('{\n  "cniVersion": "1.0.0",\n')
    assert run.stdout.endswith("}\n")
    assert cnitool(source_bin, "del", "mynet", netns).returncode == 0
