"""Container IDs and network names longer than a file name may be (#24).

The spec sets no length limit on either; every plugin that names files after them (firewall's
records, tuning's backups, host-local's network folder, the runtime's result cache) must ADD
and DEL such an attachment, and DEL must leave nothing behind — also DEL without an ADD.
"""

import os

import pytest
from conftest import ip_json, ns_exec, run_plugin
from kit.pods import wire_pod

LONG_ID = "c" * 300
LONG_NETWORK = "n" * 300


def files_under(folder) -> list:
    found = []
    for root, _dirs, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, name), folder) for name in names]
    return sorted(found)


def assert_ok(done):
    assert done.returncode == 0, done
    assert "Traceback" not in done.stderr, done


# -- firewall ---------------------------------------------------------------------------


def firewall_conf(data_dir, network: str) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": network,
        "type": "firewall",
        "backend": "iptables",
        "dataDir": str(data_dir),
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/none"}],
            "ips": [{"address": "10.93.0.2/24", "interface": 0}],
        },
    }


@pytest.mark.parametrize("network", ["fwlong", LONG_NETWORK])
def test_firewall_add_and_del_with_a_300_character_id(plugin_dir, make_netns, tmp_path, network):
    host, pod = make_netns("lih"), make_netns("lip")
    data_dir = tmp_path / "firewall"
    conf = firewall_conf(data_dir, network)
    run = {"container_id": LONG_ID, "netns": pod, "in_netns": host}
    assert_ok(run_plugin(plugin_dir, "firewall", "ADD", conf, **run))
    assert "10.93.0.2" in ns_exec(host, "iptables-save", "-t", "filter")
    (record,) = files_under(data_dir)  # ADD wrote its record, under a name that fits
    assert all(len(part) <= 255 for part in record.split("/"))
    assert_ok(run_plugin(plugin_dir, "firewall", "DEL", conf, **run))
    assert "10.93.0.2" not in ns_exec(host, "iptables-save", "-t", "filter")
    assert files_under(data_dir) == []


def test_firewall_del_alone_with_a_300_character_id(plugin_dir, make_netns, tmp_path):
    host = make_netns("lih")
    conf = firewall_conf(tmp_path / "firewall", LONG_NETWORK)
    done = run_plugin(plugin_dir, "firewall", "DEL", conf, container_id=LONG_ID, in_netns=host)
    assert_ok(done)
    assert files_under(tmp_path / "firewall") == []


# -- tuning -----------------------------------------------------------------------------


@pytest.fixture
def veth_pod(make_netns):
    """A pod netns whose eth0 is a veth end (the other end in a host netns)."""
    host, pod = make_netns("lih"), make_netns("lip")
    wire_pod(pod, host, "vethli0")
    return pod


def tuning_conf(pod, data_dir) -> dict:
    mac = ip_json(pod, "link", "show", "eth0")[0]["address"]
    return {
        "cniVersion": "1.0.0",
        "name": "tulong",
        "type": "tuning",
        "mtu": 1400,
        "dataDir": str(data_dir),
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": mac, "sandbox": pod}],
            "ips": [{"address": "10.88.0.2/24", "interface": 0}],
        },
    }


def test_tuning_add_and_del_with_a_300_character_id(plugin_dir, veth_pod, tmp_path):
    data_dir = tmp_path / "tuning"
    conf = tuning_conf(veth_pod, data_dir)
    mtu_before = ip_json(veth_pod, "link", "show", "eth0")[0]["mtu"]
    done = run_plugin(plugin_dir, "tuning", "ADD", conf, netns=veth_pod, container_id=LONG_ID)
    assert_ok(done)
    assert ip_json(veth_pod, "link", "show", "eth0")[0]["mtu"] == 1400
    (backup,) = files_under(data_dir)
    assert len(backup) <= 255 and backup.endswith(".json")
    done = run_plugin(plugin_dir, "tuning", "DEL", conf, netns=veth_pod, container_id=LONG_ID)
    assert_ok(done)
    assert ip_json(veth_pod, "link", "show", "eth0")[0]["mtu"] == mtu_before  # restored
    assert files_under(data_dir) == []


def test_tuning_del_alone_with_a_300_character_id(plugin_dir, veth_pod, tmp_path):
    conf = tuning_conf(veth_pod, tmp_path / "tuning")
    done = run_plugin(plugin_dir, "tuning", "DEL", conf, netns=veth_pod, container_id=LONG_ID)
    assert_ok(done)
    assert files_under(tmp_path / "tuning") == []


# -- host-local -------------------------------------------------------------------------

# host-local names reservations by address and keeps its lock and last-reserved files (as
# upstream does); the ID is the reservation's content.
KEPT_BY_HOST_LOCAL = ("lock", "last_reserved_ip.0")


def host_local_conf(data_dir, network: str) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": network,
        "ipam": {
            "type": "host-local",
            "dataDir": str(data_dir),
            "ranges": [[{"subnet": "10.94.0.0/24"}]],
        },
    }


@pytest.mark.parametrize("network", ["hllong", LONG_NETWORK])
def test_host_local_add_and_del_with_a_300_character_id(plugin_dir, tmp_path, network):
    data_dir = tmp_path / "ipam"
    conf = host_local_conf(data_dir, network)
    done = run_plugin(
        plugin_dir, "host-local", "ADD", conf, container_id=LONG_ID, netns="/var/run/netns/none"
    )
    assert_ok(done)
    assert done.json["ips"][0]["address"] == "10.94.0.2/24"
    (folder,) = os.listdir(data_dir)
    assert len(folder) <= 255
    with open(data_dir / folder / "10.94.0.2") as f:
        assert f.read().split() == [LONG_ID, "eth0"]
    assert_ok(
        run_plugin(
            plugin_dir, "host-local", "DEL", conf, container_id=LONG_ID, netns="/var/run/netns/none"
        )
    )
    left = [os.path.basename(name) for name in files_under(data_dir)]
    assert sorted(left) == sorted(KEPT_BY_HOST_LOCAL)


def test_host_local_del_alone_with_a_300_character_id(plugin_dir, tmp_path):
    conf = host_local_conf(tmp_path / "ipam", LONG_NETWORK)
    assert_ok(
        run_plugin(
            plugin_dir, "host-local", "DEL", conf, container_id=LONG_ID, netns="/var/run/netns/none"
        )
    )
    left = [os.path.basename(name) for name in files_under(tmp_path / "ipam")]
    assert set(left) <= {"lock"}


# -- the runtime's result cache ---------------------------------------------------------


def test_result_cache_with_a_300_character_id_and_network(tmp_path):
    from libcni.runtime import cache
    from libcni.runtime.netlist import RuntimeConf

    rt = RuntimeConf(container_id=LONG_ID, netns="/var/run/netns/x", ifname="eth0")
    result = {"cniVersion": "1.0.0", "ips": [{"address": "10.95.0.2/24"}]}
    path = cache.write(str(tmp_path), LONG_NETWORK, rt, b'{"name":"n"}', result)
    assert len(os.path.basename(path)) <= 255
    assert cache.read_result(str(tmp_path), LONG_NETWORK, "1.0.0", rt)["ips"] == result["ips"]
    (found,) = cache.attachments(str(tmp_path), LONG_ID)
    assert (found.container_id, found.network) == (LONG_ID, LONG_NETWORK)
    assert cache.attachments(str(tmp_path), "c" * 299) == []
    cache.remove(str(tmp_path), LONG_NETWORK, rt)
    assert files_under(tmp_path) == []
    cache.remove(str(tmp_path), LONG_NETWORK, rt)  # DEL alone: nothing to remove, no error


def test_short_names_keep_upstreams_file_names(tmp_path):
    from libcni.statefile import fitted_name

    assert fitted_name("ctr1_eth0", ".json") == "ctr1_eth0.json"
    long_name = fitted_name(LONG_ID + "_eth0", ".json")
    assert len(long_name) == 255 and long_name.endswith(".json")
    assert long_name == fitted_name(LONG_ID + "_eth0", ".json")  # stable: DEL finds it
    assert long_name != fitted_name(LONG_ID + "_eth1", ".json")  # the digest sees the tail
