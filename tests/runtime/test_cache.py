"""The runtime's result cache: upstream's file layout, permissions, legacy files, safety."""

import base64
import json
import os
import stat

import pytest

from libcni.protocol.errors import CNIError
from libcni.runtime import cache
from libcni.runtime.netlist import RuntimeConf

RESULT_100 = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
    "ips": [{"interface": 0, "address": "10.1.0.2/24", "gateway": "10.1.0.1"}],
}


def rt(container_id="ctr1", ifname="eth0", **extra) -> RuntimeConf:
    return RuntimeConf(container_id=container_id, ifname=ifname, **extra)


def results_dir(cache_dir) -> str:
    return os.path.join(str(cache_dir), "results")


def test_cache_file_has_upstreams_byte_layout(tmp_path):
    attachment = rt(
        netns="/var/run/netns/x",
        args=[("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")],
        capability_args={
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 2.0, "note": "a<b"},
        },
    )
    path = cache.write(str(tmp_path), "net", attachment, b'{"name":"net"}', RESULT_100)
    assert path == os.path.join(results_dir(tmp_path), "net-ctr1-eth0")
    with open(path, "rb") as f:
        data = f.read()
    assert data == (
        b'{"kind":"cniCacheV1","containerId":"ctr1","config":"eyJuYW1lIjoibmV0In0=",'
        b'"ifName":"eth0","networkName":"net","netns":"/var/run/netns/x",'
        b'"cniArgs":[["IgnoreUnknown","1"],["K8S_POD_NAME","p"]],'
        b'"capabilityArgs":{"bandwidth":{"ingressRate":2,"note":"a\\u003cb"},'
        b'"portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"}]},'
        b'"result":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0",'
        b'"sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.1.0.2/24",'
        b'"gateway":"10.1.0.1","interface":0}]}}'
    )


def test_empty_optional_fields_are_left_out(tmp_path):
    data = cache.encode("net", rt(), b"{}", RESULT_100)
    assert list(json.loads(data)) == [
        "kind",
        "containerId",
        "config",
        "ifName",
        "networkName",
        "result",
    ]


def test_cache_directory_is_0700_and_file_0600(tmp_path):
    path = cache.write(str(tmp_path / "state"), "net", rt(), b"{}", RESULT_100)
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(os.path.dirname(path)) == ["net-ctr1-eth0"]  # no temporary left over


def test_cached_result_is_converted_to_the_list_version(tmp_path):
    cache.write(str(tmp_path), "net", rt(), b"{}", RESULT_100)
    assert cache.read_result(str(tmp_path), "net", "0.4.0", rt())["ips"] == [
        {"version": "4", "interface": 0, "address": "10.1.0.2/24", "gateway": "10.1.0.1"}
    ]


def test_legacy_bare_result_is_still_read(tmp_path):
    os.makedirs(results_dir(tmp_path))
    legacy = {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.2.0.5/16"}]}
    with open(os.path.join(results_dir(tmp_path), "net-ctr1-eth0"), "w") as f:
        json.dump(legacy, f)
    result = cache.read_result(str(tmp_path), "net", "1.0.0", rt())
    assert result == {"cniVersion": "1.0.0", "ips": [{"address": "10.2.0.5/16"}]}


def test_legacy_result_without_version_is_read_as_0_1_0(tmp_path):
    os.makedirs(results_dir(tmp_path))
    with open(os.path.join(results_dir(tmp_path), "net-ctr1-eth0"), "w") as f:
        json.dump({"ip4": {"ip": "10.3.0.9/24"}}, f)
    result = cache.read_result(str(tmp_path), "net", "1.0.0", rt())
    assert result["ips"] == [{"address": "10.3.0.9/24"}]


def test_nothing_cached_reads_as_none(tmp_path):
    assert cache.read_result(str(tmp_path), "net", "1.0.0", rt()) is None
    assert cache.read_config(str(tmp_path), "net", rt()) is None


def test_unconvertible_cached_result_is_an_error(tmp_path):
    no_ips = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]}
    cache.write(str(tmp_path), "net", rt(), b"{}", no_ips)
    with pytest.raises(CNIError) as caught:
        cache.read_result(str(tmp_path), "net", "0.2.0", rt())
    assert caught.value.msg == (
        'failed to convert cached result to config version "0.2.0": '
        "cannot convert: no valid IP addresses"
    )


def test_cached_config_and_arguments_round_trip(tmp_path):
    attachment = rt(netns="/n", args=[("A", "1")], capability_args={"mac": "aa"})
    cache.write(str(tmp_path), "net", attachment, b'{"name":"net"}', RESULT_100)
    cached = cache.read_config(str(tmp_path), "net", rt())
    assert (cached.config, cached.cni_args, cached.capability_args, cached.netns) == (
        b'{"name":"net"}',
        [("A", "1")],
        {"mac": "aa"},
        "/n",
    )


@pytest.mark.parametrize(
    "network, container_id, ifname",
    [
        ("net", "../../etc", "eth0"),
        ("net", "a/b", "eth0"),
        ("net", "ctr1", "../x"),
        ("net", "ctr1", ".."),
        ("../net", "ctr1", "eth0"),
        ("net", "", "eth0"),
    ],
)
def test_names_that_could_leave_the_cache_directory_are_refused(
    tmp_path, network, container_id, ifname
):
    with pytest.raises(CNIError):
        cache.write(str(tmp_path / "c"), network, rt(container_id, ifname), b"{}", RESULT_100)
    assert not os.path.exists(tmp_path / "c")


def test_remove_forgets_the_attachment(tmp_path):
    path = cache.write(str(tmp_path), "net", rt(), b"{}", RESULT_100)
    cache.remove(str(tmp_path), "net", rt())
    assert not os.path.exists(path)
    cache.remove(str(tmp_path), "net", rt())  # already gone: no error


def test_attachments_lists_cache_v1_entries_sorted_by_file_name(tmp_path):
    cache.write(str(tmp_path), "net", rt("c2", netns="/n2"), b"{}", RESULT_100)
    cache.write(str(tmp_path), "net", rt("c1"), b'{"a":1}', RESULT_100)
    cache.write(str(tmp_path), "other", rt("c1", "net1"), b"{}", RESULT_100)
    with open(os.path.join(results_dir(tmp_path), "net-c3-eth0"), "w") as f:
        json.dump(RESULT_100, f)  # legacy: skipped
    with open(os.path.join(results_dir(tmp_path), "junk"), "w") as f:
        f.write("not json")
    found = cache.attachments(str(tmp_path))
    assert [(a.network, a.container_id, a.ifname) for a in found] == [
        ("net", "c1", "eth0"),
        ("net", "c2", "eth0"),
        ("other", "c1", "net1"),
    ]
    assert found[0].config == b'{"a":1}'
    assert found[1].netns == "/n2"


def test_attachments_of_one_container(tmp_path):
    cache.write(str(tmp_path), "net", rt("c1"), b"{}", RESULT_100)
    cache.write(str(tmp_path), "net", rt("c10"), b"{}", RESULT_100)
    found = cache.attachments(str(tmp_path), "c1")
    assert [a.container_id for a in found] == ["c1"]


def test_config_is_standard_base64(tmp_path):
    raw = bytes(range(256))
    data = json.loads(cache.encode("net", rt(), raw, None))
    assert base64.b64decode(data["config"]) == raw
    assert "result" not in data
