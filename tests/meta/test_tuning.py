"""tuning chained after a veth "main plugin" the test plays itself: a pod netns whose eth0 is
one end of a veth pair, the other end in a test "host" netns."""

import json
import os

import pytest
from conftest import ip_json, ns_exec, run_plugin
from kit.pods import wire_pod


@pytest.fixture
def pod(make_netns):
    host, pod = make_netns("tuh"), make_netns("tup")
    wire_pod(pod, host, "vethtu0")
    return pod


def prev(pod):
    mac = ip_json(pod, "link", "show", "eth0")[0]["address"]
    return {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": mac, "sandbox": pod}],
        "ips": [{"address": "10.88.0.2/24", "interface": 0}],
    }


def conf(pod, tmp_path, **extra):
    base = {
        "cniVersion": "1.0.0",
        "name": "tunet",
        "type": "tuning",
        "dataDir": str(tmp_path / "tuning"),
        "prevResult": prev(pod),
    }
    base.update(extra)
    return base


def tuning(plugin_dir, command, config, pod, **kw):
    return run_plugin(plugin_dir, "tuning", command, config, netns=pod, **kw)


def link(pod):
    return ip_json(pod, "-d", "link", "show", "eth0")[0]


def sysctl(pod, key):
    return ns_exec(pod, "cat", "/proc/sys/" + key.replace(".", "/")).strip()


def test_sysctls_are_written_inside_the_pod(plugin_dir, pod, tmp_path):
    config = conf(
        pod, tmp_path, sysctl={"net.core.somaxconn": "512", "net.ipv4.conf.IFNAME.arp_filter": "1"}
    )
    done = tuning(plugin_dir, "ADD", config, pod)
    assert done.returncode == 0, done
    assert done.json == config["prevResult"]
    assert sysctl(pod, "net.core.somaxconn") == "512"
    assert sysctl(pod, "net.ipv4.conf.eth0.arp_filter") == "1"
    assert tuning(plugin_dir, "CHECK", config, pod).returncode == 0
    ns_exec(pod, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/conf/eth0/arp_filter")
    done = tuning(plugin_dir, "CHECK", config, pod)
    assert done.returncode == 1 and "arp_filter is 1, current value is 0" in done.json["msg"]


def test_link_attributes_are_set_backed_up_and_restored(plugin_dir, pod, tmp_path):
    before = link(pod)
    config = conf(
        pod, tmp_path, mac="0a:58:0a:58:00:09", mtu=1400, promisc=True, allmulti=True, txQLen=123
    )
    done = tuning(plugin_dir, "ADD", config, pod)
    assert done.returncode == 0, done
    assert done.json["interfaces"][0]["mac"] == "0a:58:0a:58:00:09"
    after = link(pod)
    assert after["address"] == "0a:58:0a:58:00:09" and after["mtu"] == 1400
    assert after["txqlen"] == 123 and "PROMISC" in after["flags"] and "ALLMULTI" in after["flags"]
    backup = tmp_path / "tuning" / "ctr1_eth0.json"
    saved = json.loads(backup.read_text())
    # Upstream's keys in its order, then whose backup it is (for GC; Go's decoder ignores it).
    assert list(saved) == ["mac", "promisc", "mtu", "allmulti", "txQLen", "owner"]
    assert saved["owner"] == {
        "network": conf(pod, tmp_path)["name"],
        "containerID": "ctr1",
        "ifname": "eth0",
    }
    assert saved["mac"] == before["address"] and saved["mtu"] == before["mtu"]
    assert backup.read_text().startswith('{\n "mac"')  # one-space indent, as upstream
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    assert tuning(plugin_dir, "CHECK", config, pod).returncode == 0
    for _ in range(2):
        done = tuning(plugin_dir, "DEL", config, pod)
        assert done.returncode == 0, done
    restored = link(pod)
    assert restored["address"] == before["address"] and restored["mtu"] == before["mtu"]
    assert restored["txqlen"] == before["txqlen"] and "PROMISC" not in restored["flags"]
    assert not backup.exists()


def test_mac_precedence_args_cni_wins(plugin_dir, pod, tmp_path):
    config = conf(
        pod,
        tmp_path,
        mac="0a:58:00:00:00:01",
        runtimeConfig={"mac": "0a:58:00:00:00:02"},
        args={"cni": {"mac": "0a:58:00:00:00:03"}},
    )
    done = tuning(plugin_dir, "ADD", config, pod, args="IgnoreUnknown=1;MAC=0a:58:00:00:00:04")
    assert done.returncode == 0, done
    assert link(pod)["address"] == "0a:58:00:00:00:03"


def test_args_cni_sysctl_without_top_level_sysctl(plugin_dir, pod, tmp_path):
    config = conf(pod, tmp_path, args={"cni": {"sysctl": {"net.core.somaxconn": "600"}}})
    done = tuning(plugin_dir, "ADD", config, pod)  # upstream panics here
    assert done.returncode == 0, done
    assert sysctl(pod, "net.core.somaxconn") == "600"


@pytest.mark.parametrize("key", ["kernel.hostname", "../kernel/hostname", "IFNAME"])
def test_non_net_sysctls_are_refused(plugin_dir, pod, tmp_path, key):
    done = tuning(plugin_dir, "ADD", conf(pod, tmp_path, sysctl={key: "x"}), pod)
    assert done.returncode == 1 and done.json["code"] == 7
    assert "invalid net sysctl key" in done.json["msg"]


def test_dots_cannot_climb_out_of_net(plugin_dir, pod, tmp_path):
    # Dots are separators, so ".." never survives: the key stays under /proc/sys/net.
    hostname = ns_exec(pod, "cat", "/proc/sys/kernel/hostname")
    done = tuning(
        plugin_dir, "ADD", conf(pod, tmp_path, sysctl={"net/../../kernel/hostname": "x"}), pod
    )
    assert done.returncode == 1
    assert ns_exec(pod, "cat", "/proc/sys/kernel/hostname") == hostname


def test_duplicated_sysctl_keys_are_refused(plugin_dir, pod, tmp_path):
    text = json.dumps(conf(pod, tmp_path, sysctl={"A": "1"})).replace(
        '"sysctl": {"A": "1"}', '"sysctl": {"net.core.somaxconn": "1", "net.core.somaxconn": "2"}'
    )
    done = tuning(plugin_dir, "ADD", None, pod, stdin=text.encode())
    assert done.returncode == 1 and done.json["msg"] == "duplicated sysctl keys are not allowed"


def test_prev_result_is_required(plugin_dir, pod, tmp_path):
    config = conf(pod, tmp_path)
    del config["prevResult"]
    done = tuning(plugin_dir, "ADD", config, pod)
    assert done.returncode == 1 and done.json["msg"] == "Required prevResult missing"


def test_del_when_the_netns_is_gone_succeeds(plugin_dir, pod, tmp_path):
    config = conf(pod, tmp_path, mtu=1300)
    assert tuning(plugin_dir, "ADD", config, pod).returncode == 0
    done = tuning(plugin_dir, "DEL", config, "/var/run/netns/no-such-pod")
    assert done.returncode == 0, done


@pytest.mark.parametrize("adder, deleter", [("go", "ours"), ("ours", "go")])
def test_backup_interop_with_go(plugin_dir, go_bin, pod, tmp_path, adder, deleter):
    dirs = {"go": go_bin, "ours": plugin_dir}
    before = link(pod)
    config = conf(pod, tmp_path, mac="0a:58:0a:58:00:07", mtu=1280)
    assert tuning(dirs[adder], "ADD", config, pod).returncode == 0
    assert tuning(dirs["ours" if adder == "go" else "go"], "CHECK", config, pod).returncode == 0
    assert tuning(dirs[deleter], "DEL", config, pod).returncode == 0
    after = link(pod)
    assert after["address"] == before["address"] and after["mtu"] == before["mtu"]
    assert not (tmp_path / "tuning" / "ctr1_eth0.json").exists()


def test_a_symlink_planted_as_the_backup_is_not_followed(plugin_dir, pod, tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    os.makedirs(tmp_path / "tuning")
    os.symlink(target, tmp_path / "tuning" / "ctr1_eth0.json")
    done = tuning(plugin_dir, "ADD", conf(pod, tmp_path, mtu=1400), pod)
    assert done.returncode == 1 and "symbolic link" in done.json["msg"], done
    assert target.read_text() == "keep me"


def test_a_data_dir_that_is_a_file_is_a_clean_error(plugin_dir, pod, tmp_path):
    (tmp_path / "file").write_text("")
    done = tuning(
        plugin_dir, "ADD", conf(pod, tmp_path, mtu=1400, dataDir=str(tmp_path / "file")), pod
    )
    assert done.returncode == 1 and "not a directory" in done.json["msg"], done
