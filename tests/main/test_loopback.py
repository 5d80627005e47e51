"""loopback, run the way a runtime runs it (source launchers and frozen), against a real netns."""

import json
import os

import pytest
from conftest import ip_json, ns_exec, run_plugin

CONF = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}


def lo_state(netns):
    link = ip_json(netns, "link", "show", "lo")[0]
    return "UP" in link["flags"]


def conf(**extra):
    return dict(CONF, **extra)


def test_add_sets_lo_up_and_reports_its_addresses(plugin_dir, netns):
    assert not lo_state(netns)
    run = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns, ifname="lo")
    assert run.returncode == 0, run
    assert lo_state(netns)
    assert run.json == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": netns}],
        "ips": [{"interface": 0, "address": "127.0.0.1/8"}, {"interface": 0, "address": "::1/128"}],
    }


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_add_result_in_family_b(plugin_dir, netns, version):
    run = run_plugin(plugin_dir, "loopback", "ADD", conf(cniVersion=version), netns=netns)
    assert run.returncode == 0, run
    assert run.json["ips"] == [
        {"version": "4", "interface": 0, "address": "127.0.0.1/8"},
        {"version": "6", "interface": 0, "address": "::1/128"},
    ]
    assert run.json["dns"] == {}


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_add_result_in_family_a(plugin_dir, netns, version):
    run = run_plugin(plugin_dir, "loopback", "ADD", conf(cniVersion=version), netns=netns)
    assert run.returncode == 0, run
    assert run.json == {
        "cniVersion": version,
        "ip4": {"ip": "127.0.0.1/8"},
        "ip6": {"ip": "::1/128"},
        "dns": {},
    }


def test_add_passes_prev_result_through(plugin_dir, netns):
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"interface": 0, "address": "10.4.0.2/24", "gateway": "10.4.0.1"}],
    }
    run = run_plugin(plugin_dir, "loopback", "ADD", conf(prevResult=prev), netns=netns)
    assert run.returncode == 0, run
    assert run.json == prev
    assert lo_state(netns)


def test_add_refuses_non_loopback_address_on_lo(plugin_dir, netns):
    ns_exec(netns, "ip", "addr", "add", "192.0.2.7/32", "dev", "lo")
    run = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns)
    assert run.returncode == 1
    assert run.json["msg"] == 'loopback interface found with non-loopback address "192.0.2.7/32"'


def test_add_into_missing_netns_fails_clearly(plugin_dir, tmp_path):
    run = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=str(tmp_path / "gone"))
    assert run.returncode == 1
    assert "failed to open netns" in run.json["msg"]


def test_add_into_a_path_that_is_not_a_netns(plugin_dir, tmp_path):
    regular = tmp_path / "file"
    regular.write_text("")
    run = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=str(regular))
    assert run.returncode == 1
    assert run.json["msg"] == f'"{regular}" is not a network namespace'


def test_del_sets_lo_down(plugin_dir, netns):
    assert run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns).returncode == 0
    run = run_plugin(plugin_dir, "loopback", "DEL", CONF, netns=netns)
    assert (run.returncode, run.stdout) == (0, "")
    assert not lo_state(netns)


def test_del_twice_succeeds(plugin_dir, netns):
    for _ in range(2):
        run = run_plugin(plugin_dir, "loopback", "DEL", CONF, netns=netns)
        assert (run.returncode, run.stdout) == (0, ""), run


def test_del_with_missing_netns_succeeds(plugin_dir, make_netns):
    path = make_netns()
    os.system(f"ip netns del {os.path.basename(path)}")
    run = run_plugin(plugin_dir, "loopback", "DEL", CONF, netns=path)
    assert (run.returncode, run.stdout) == (0, ""), run


def test_del_with_empty_netns_succeeds(plugin_dir):
    run = run_plugin(plugin_dir, "loopback", "DEL", CONF, netns="")
    assert (run.returncode, run.stdout) == (0, ""), run


def test_check_passes_when_up_and_fails_when_down(plugin_dir, netns):
    run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns)
    ok = run_plugin(plugin_dir, "loopback", "CHECK", CONF, netns=netns)
    assert (ok.returncode, ok.stdout) == (0, "")
    ns_exec(netns, "ip", "link", "set", "lo", "down")
    bad = run_plugin(plugin_dir, "loopback", "CHECK", CONF, netns=netns)
    assert bad.returncode == 1
    assert bad.json["msg"] == "loopback interface is down"


def test_version_output(plugin_dir):
    run = run_plugin(
        plugin_dir,
        "loopback",
        "VERSION",
        stdin=b'{"cniVersion":"1.1.0"}',
        env={
            "CNI_CONTAINERID": None,
            "CNI_NETNS": "dummy",
            "CNI_IFNAME": "dummy",
            "CNI_PATH": "dummy",
        },
    )
    assert run.returncode == 0
    assert run.stdout == (
        '{"cniVersion":"1.1.0","supportedVersions":'
        '["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n'
    )


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_succeed_for_1_1_0(plugin_dir, command):
    run = run_plugin(plugin_dir, "loopback", command, conf(cniVersion="1.1.0"))
    assert (run.returncode, run.stdout) == (0, "")


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_refused_before_1_1_0(plugin_dir, command):
    run = run_plugin(plugin_dir, "loopback", command, CONF)
    assert run.returncode == 1
    assert run.json == {
        "code": 1,
        "msg": f"config version does not allow {command}",
        "details": f"{command} needs cniVersion 1.1.0 or newer",
    }


def test_missing_env_gives_code_4(plugin_dir):
    run = run_plugin(
        plugin_dir,
        "loopback",
        "ADD",
        CONF,
        env={"CNI_CONTAINERID": None, "CNI_NETNS": None, "CNI_IFNAME": None, "CNI_PATH": None},
    )
    assert run.returncode == 1
    assert run.stdout == (
        '{\n    "code": 4,\n    "msg": "required env variables '
        '[CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"\n}'
    )


def test_path_tricks_in_container_id_are_refused(plugin_dir, netns):
    run = run_plugin(
        plugin_dir, "loopback", "ADD", CONF, netns=netns, container_id="../../etc/passwd"
    )
    assert run.returncode == 1
    assert run.json["code"] == 4
    assert not lo_state(netns)


def test_broken_json_is_code_6(plugin_dir, netns):
    run = run_plugin(plugin_dir, "loopback", "ADD", stdin=b'{"name": ', netns=netns)
    assert run.returncode == 1 and run.json["code"] == 6


def test_about_text_without_command(plugin_dir):
    run = run_plugin(plugin_dir, "loopback", "", env={"CNI_COMMAND": None})
    assert run.returncode == 0 and run.stdout == ""
    assert run.stderr.startswith("CNI loopback plugin pycni v")


def test_logs_never_reach_stdout_on_success(plugin_dir, netns):
    run = run_plugin(plugin_dir, "loopback", "ADD", CONF, netns=netns)
    assert run.returncode == 0, run
    # stdout is exactly one JSON document (json.loads refuses anything around it): the result.
    assert json.loads(run.stdout)["interfaces"] == [
        {"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": netns}
    ]
