"""host-local: allocation, the on-disk store (shared with upstream's binary), GC and STATUS."""

import json
import os
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import run_plugin

NET = "hlnet"


def conf(data_dir, version="1.1.0", **ipam):
    ipam.setdefault("ranges", [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/120"}]])
    return {
        "cniVersion": version,
        "name": NET,
        "ipam": {"type": "host-local", "dataDir": str(data_dir), **ipam},
    }


def add(plugin_dir, c, container_id="ctr1", ifname="eth0", **kw):
    return run_plugin(
        plugin_dir,
        "host-local",
        "ADD",
        c,
        container_id=container_id,
        ifname=ifname,
        netns="/var/run/netns/none",
        **kw,
    )


def files(data_dir):
    path = os.path.join(str(data_dir), NET)
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def content(data_dir, name):
    with open(os.path.join(str(data_dir), NET, name), "rb") as f:
        return f.read()


def addresses(run):
    assert run.returncode == 0, run
    return [ip["address"] for ip in run.json["ips"]]


def test_dual_stack_add_result_and_files(plugin_dir, tmp_path):
    run = add(plugin_dir, conf(tmp_path))
    assert run.json == {
        "cniVersion": "1.1.0",
        "ips": [
            {"address": "10.77.0.2/24", "gateway": "10.77.0.1"},
            {"address": "fd00:77::2/120", "gateway": "fd00:77::1"},
        ],
    }
    assert files(tmp_path) == [
        "10.77.0.2",
        "fd00:77::2",
        "last_reserved_ip.0",
        "last_reserved_ip.1",
        "lock",
    ]
    assert content(tmp_path, "10.77.0.2") == b"ctr1\r\neth0"
    assert content(tmp_path, "last_reserved_ip.1") == b"fd00:77::2"
    mode = os.stat(os.path.join(str(tmp_path), NET, "10.77.0.2")).st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_round_robin_skips_gateway_and_wraps(plugin_dir, tmp_path):
    c = conf(tmp_path, ranges=[[{"subnet": "10.8.0.0/29", "gateway": "10.8.0.3"}]])
    got = [addresses(add(plugin_dir, c, container_id=f"c{i}"))[0] for i in range(4)]
    assert got == ["10.8.0.1/29", "10.8.0.2/29", "10.8.0.4/29", "10.8.0.5/29"]
    run_plugin(plugin_dir, "host-local", "DEL", c, container_id="c1")
    got = [addresses(add(plugin_dir, c, container_id=f"d{i}"))[0] for i in range(2)]
    assert got == ["10.8.0.6/29", "10.8.0.2/29"]  # continues after the last, then wraps


def test_exhaustion_error(plugin_dir, tmp_path):
    c = conf(tmp_path, ranges=[[{"subnet": "10.9.0.0/30"}]])
    assert addresses(add(plugin_dir, c, container_id="a")) == ["10.9.0.2/30"]
    run = add(plugin_dir, c, container_id="b")
    assert run.returncode == 1
    assert run.json["msg"] == (
        "failed to allocate for range 0: no IP addresses available in range set: 10.9.0.1-10.9.0.2"
    )


def test_duplicate_allocation_refused(plugin_dir, tmp_path):
    add(plugin_dir, conf(tmp_path))
    run = add(plugin_dir, conf(tmp_path))
    assert run.returncode == 1
    assert (
        "10.77.0.2 has been allocated to ctr1, duplicate allocation is not allowed"
        in run.json["msg"]
    )


def test_requested_ip_from_cni_args(plugin_dir, tmp_path):
    run = add(
        plugin_dir,
        conf(tmp_path, ranges=[[{"subnet": "10.77.0.0/24"}]]),
        args="IgnoreUnknown=1;IP=10.77.0.50",
    )
    assert addresses(run) == ["10.77.0.50/24"]


def test_requested_ips_from_args_and_runtime_config_twice(plugin_dir, tmp_path):
    c = conf(tmp_path)
    c["runtimeConfig"] = {"ips": ["10.77.0.9/24", "10.77.0.9/24"]}
    c["args"] = {"cni": {"ips": ["fd00:77::9"]}}
    assert addresses(add(plugin_dir, c)) == ["10.77.0.9/24", "fd00:77::9/120"]


def test_requested_gateway_refused(plugin_dir, tmp_path):
    run = add(plugin_dir, conf(tmp_path), args="IP=10.77.0.1")
    assert run.returncode == 1 and "requested ip 10.77.0.1 is subnet's gateway" in run.json["msg"]


def test_requested_taken_refused(plugin_dir, tmp_path):
    add(plugin_dir, conf(tmp_path), args="IP=10.77.0.5")
    run = add(plugin_dir, conf(tmp_path), container_id="other", args="IP=10.77.0.5")
    assert run.returncode == 1
    assert "requested IP address 10.77.0.5 is not available in range set" in run.json["msg"]


def test_leftover_requested_ip_fails_and_rolls_back(plugin_dir, tmp_path):
    c = conf(tmp_path, ranges=[[{"subnet": "10.77.0.0/24"}]])
    c["runtimeConfig"] = {"ips": ["10.77.0.5", "192.168.9.9"]}
    run = add(plugin_dir, c)
    assert run.returncode == 1
    assert run.json["msg"] == "failed to allocate all requested IPs: 192.168.9.9"
    assert [f for f in files(tmp_path) if f[0].isdigit()] == []


def test_ip_ranges_capability_is_prepended(plugin_dir, tmp_path):
    c = conf(tmp_path, ranges=[[{"subnet": "10.77.0.0/24"}]])
    c["runtimeConfig"] = {"ipRanges": [[{"subnet": "10.99.0.0/24"}]]}
    assert addresses(add(plugin_dir, c)) == ["10.99.0.2/24", "10.77.0.2/24"]


def test_legacy_top_level_subnet(plugin_dir, tmp_path):
    c = conf(
        tmp_path, ranges=[], subnet="10.66.0.0/24", rangeStart="10.66.0.100", gateway="10.66.0.254"
    )
    assert add(plugin_dir, c).json["ips"] == [
        {"address": "10.66.0.100/24", "gateway": "10.66.0.254"}
    ]


def test_routes_and_resolv_conf(plugin_dir, tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "# comment\nnameserver 10.0.0.53\nsearch a.example b.example\n"
        "domain example\noptions ndots:2\n"
    )
    c = conf(tmp_path, routes=[{"dst": "0.0.0.0/0"}], resolvConf=str(resolv))
    run = add(plugin_dir, c)
    assert run.json["routes"] == [{"dst": "0.0.0.0/0"}]
    assert run.json["dns"] == {
        "nameservers": ["10.0.0.53"],
        "search": ["a.example", "b.example"],
        "domain": "example",
        "options": ["ndots:2"],
    }


@pytest.mark.parametrize(
    "ranges,msg",
    [
        (
            [[{"subnet": "10.0.0.1/24"}]],
            "Network has host bits set. For a subnet mask of length 24 "
            "the network address is 10.0.0.0",
        ),
        ([[{"subnet": "10.0.0.0/31"}]], "Network 10.0.0.0/31 too small to allocate from"),
        ([[{"subnet": "fd00::/127"}]], "Network fd00::/127 too small to allocate from"),
        (
            [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]],
            "subnets 10.0.0.0/24 and 10.0.0.0/25 overlap",
        ),
        (
            [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.128/25"}]],
            "range set 0 overlaps with 1",
        ),
        ([[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]], "mixed address families"),
        ([[]], "empty range set"),
        ([], "no IP ranges specified"),
        (
            [[{"subnet": "10.0.0.0/24", "rangeStart": "10.1.0.1"}]],
            "RangeStart 10.1.0.1 not in network 10.0.0.0/24",
        ),
    ],
)
def test_invalid_configs(plugin_dir, tmp_path, ranges, msg):
    run = add(plugin_dir, conf(tmp_path, ranges=ranges))
    assert run.returncode == 1
    assert run.json["code"] == 7 and run.json["msg"] == msg


def test_missing_ipam_key(plugin_dir):
    run = add(plugin_dir, {"cniVersion": "1.0.0", "name": NET})
    assert run.json["msg"] == "IPAM config missing 'ipam' key"


def test_one_address_per_family_before_0_3_0(plugin_dir, tmp_path):
    c = conf(
        tmp_path, version="0.2.0", ranges=[[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]
    )
    run = add(plugin_dir, c)
    assert run.json["msg"] == "CNI version 0.2.0 does not support more than 1 address per family"


def test_del_releases_only_that_attachment_and_is_idempotent(plugin_dir, tmp_path):
    add(plugin_dir, conf(tmp_path), ifname="eth0")
    add(plugin_dir, conf(tmp_path), ifname="eth1")
    for _ in range(2):
        run = run_plugin(plugin_dir, "host-local", "DEL", conf(tmp_path), ifname="eth0")
        assert (run.returncode, run.stdout) == (0, "")
    held = [f for f in files(tmp_path) if f[0].isdigit() or ":" in f]
    assert held == ["10.77.0.3", "fd00:77::3"]
    assert content(tmp_path, "10.77.0.3") == b"ctr1\r\neth1"


def test_del_of_unknown_container_succeeds(plugin_dir, tmp_path):
    run = run_plugin(plugin_dir, "host-local", "DEL", conf(tmp_path), container_id="nobody")
    assert (run.returncode, run.stdout) == (0, "")


def test_legacy_id_only_file_released(plugin_dir, tmp_path):
    os.makedirs(tmp_path / NET)
    (tmp_path / NET / "10.77.0.40").write_text("ctr1")
    run = run_plugin(plugin_dir, "host-local", "DEL", conf(tmp_path))
    assert run.returncode == 0 and "10.77.0.40" not in files(tmp_path)


def test_check(plugin_dir, tmp_path):
    add(plugin_dir, conf(tmp_path))
    ok = run_plugin(plugin_dir, "host-local", "CHECK", conf(tmp_path), netns="/x")
    assert (ok.returncode, ok.stdout) == (0, "")
    missing = run_plugin(
        plugin_dir, "host-local", "CHECK", conf(tmp_path), netns="/x", container_id="other"
    )
    assert missing.json["msg"] == "host-local: Failed to find address added by container other"


def gc_conf(data_dir, valid):
    c = conf(data_dir)
    c["cni.dev/valid-attachments"] = [{"containerID": cid, "ifname": ifn} for cid, ifn in valid]
    return c


def test_gc_removes_invalid_attachments_only(plugin_dir, tmp_path):
    add(plugin_dir, conf(tmp_path), container_id="keep")
    add(plugin_dir, conf(tmp_path), container_id="drop")
    (tmp_path / NET / "10.77.0.100").write_text("keep")  # legacy file of a valid id
    (tmp_path / NET / "10.77.0.101").write_text("gone")  # legacy file of an unknown id
    run = run_plugin(plugin_dir, "host-local", "GC", gc_conf(tmp_path, [("keep", "eth0")]))
    assert (run.returncode, run.stdout) == (0, "")
    assert files(tmp_path) == [
        "10.77.0.100",
        "10.77.0.2",
        "fd00:77::2",
        "last_reserved_ip.0",
        "last_reserved_ip.1",
        "lock",
    ]


@pytest.mark.parametrize(
    "attachments",
    ["keep", {"containerID": "keep", "ifname": "eth0"}, None, [None], [{"containerID": 1}]],
    ids=["string", "object", "missing", "null-entry", "int-id"],
)
def test_gc_with_malformed_attachments_deletes_nothing(plugin_dir, tmp_path, attachments):
    add(plugin_dir, conf(tmp_path), container_id="keep")
    before = files(tmp_path)
    c = conf(tmp_path)
    if attachments is not None:
        c["cni.dev/valid-attachments"] = attachments
    run = run_plugin(plugin_dir, "host-local", "GC", c)
    assert run.returncode == 1 and run.json["code"] == 7, run
    assert "valid-attachments" in run.json["msg"]
    assert files(tmp_path) == before


def test_a_symlink_planted_as_last_reserved_ip_is_not_followed(plugin_dir, tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    os.makedirs(tmp_path / NET)
    os.symlink(target, tmp_path / NET / "last_reserved_ip.0")
    done = add(plugin_dir, conf(tmp_path))
    assert done.returncode == 1 and "symbolic link" in done.json["msg"], done
    assert target.read_text() == "keep me"
    assert [f for f in files(tmp_path) if f[0].isdigit()] == []  # the reservation was undone


def test_a_reservation_that_is_not_a_regular_file_is_skipped(plugin_dir, tmp_path):
    os.makedirs(tmp_path / NET / "10.77.0.9")
    os.symlink("/etc/hostname", tmp_path / NET / "10.77.0.8")
    c = conf(tmp_path)
    c["cni.dev/valid-attachments"] = []
    run = run_plugin(plugin_dir, "host-local", "GC", c)
    assert run.returncode == 0, run
    assert os.path.isfile("/etc/hostname")


def test_gc_refused_before_1_1_0(plugin_dir, tmp_path):
    run = run_plugin(plugin_dir, "host-local", "GC", conf(tmp_path, version="1.0.0"))
    assert run.json["code"] == 1 and run.json["msg"] == "config version does not allow GC"


def test_status_50_when_a_range_set_is_full(plugin_dir, tmp_path):
    c = conf(tmp_path, ranges=[[{"subnet": "10.9.0.0/30"}]])
    ok = run_plugin(plugin_dir, "host-local", "STATUS", c)
    assert (ok.returncode, ok.stdout) == (0, "")
    add(plugin_dir, c)
    full = run_plugin(plugin_dir, "host-local", "STATUS", c)
    assert full.returncode == 1 and full.json["code"] == 50


def test_status_refused_before_1_1_0(plugin_dir, tmp_path):
    run = run_plugin(plugin_dir, "host-local", "STATUS", conf(tmp_path, version="1.0.0"))
    assert run.json["msg"] == "config version does not allow STATUS"


# -- interop with Debian's Go host-local (1.1.1 speaks up to 1.0.0) --------------------------


@pytest.mark.oracle
def test_go_then_ours_continue_round_robin_and_release(go_bin, source_bin, tmp_path):
    c = conf(tmp_path, version="1.0.0")
    go = [addresses(add(go_bin, c, container_id=f"go{i}"))[0] for i in range(2)]
    ours = [addresses(add(source_bin, c, container_id=f"py{i}"))[0] for i in range(2)]
    assert go + ours == ["10.77.0.2/24", "10.77.0.3/24", "10.77.0.4/24", "10.77.0.5/24"]
    assert content(tmp_path, "10.77.0.2") == b"go0\r\neth0" == content(tmp_path, "10.77.0.2")
    assert run_plugin(source_bin, "host-local", "DEL", c, container_id="go0").returncode == 0
    assert "10.77.0.2" not in files(tmp_path) and "fd00:77::2" not in files(tmp_path)


@pytest.mark.oracle
def test_ours_then_go_continue_and_go_releases_ours(go_bin, source_bin, tmp_path):
    c = conf(tmp_path, version="1.0.0")
    ours = addresses(add(source_bin, c, container_id="py0"))
    go = addresses(add(go_bin, c, container_id="go0"))
    assert ours == ["10.77.0.2/24", "fd00:77::2/120"]
    assert go == ["10.77.0.3/24", "fd00:77::3/120"]
    assert run_plugin(go_bin, "host-local", "DEL", c, container_id="py0").returncode == 0
    assert (
        run_plugin(go_bin, "host-local", "CHECK", c, netns="/x", container_id="go0").returncode == 0
    )
    assert (
        run_plugin(source_bin, "host-local", "CHECK", c, netns="/x", container_id="go0").returncode
        == 0
    )
    assert [f for f in files(tmp_path) if f[0].isdigit() or ":" in f] == ["10.77.0.3", "fd00:77::3"]


@pytest.mark.oracle
def test_same_files_byte_for_byte_as_go(go_bin, source_bin, tmp_path):
    trees = {}
    for label, plugin_dir in (("go", go_bin), ("ours", source_bin)):
        data = tmp_path / label
        c = conf(data, version="1.0.0")
        for i in range(3):
            add(plugin_dir, c, container_id=f"c{i}")
        trees[label] = {name: content(data, name) for name in files(data)}
    assert trees["ours"] == trees["go"]


# -- concurrency --------------------------------------------------------------------------


def test_100_parallel_adds_then_dels(source_bin, tmp_path):
    c = conf(tmp_path, ranges=[[{"subnet": "10.55.0.0/26"}]])  # .1-.62, minus the gateway: 61
    with ThreadPoolExecutor(max_workers=25) as pool:
        runs = list(pool.map(lambda i: add(source_bin, c, container_id=f"p{i}"), range(100)))
    got = [r.json["ips"][0]["address"] for r in runs if r.returncode == 0]
    failed = [r for r in runs if r.returncode != 0]
    assert len(got) == len(set(got)) == 61
    assert all("no IP addresses available" in r.json["msg"] for r in failed)
    with ThreadPoolExecutor(max_workers=25) as pool:
        dels = list(
            pool.map(
                lambda i: run_plugin(source_bin, "host-local", "DEL", c, container_id=f"p{i}"),
                range(100),
            )
        )
    assert all(d.returncode == 0 for d in dels)
    assert files(tmp_path) == ["last_reserved_ip.0", "lock"]


def test_store_files_are_plain_for_other_tools(source_bin, tmp_path):
    add(source_bin, conf(tmp_path))
    out = subprocess.run(["cat", str(tmp_path / NET / "10.77.0.2")], capture_output=True)
    assert out.stdout == b"ctr1\r\neth0"
    assert json.loads(json.dumps(files(tmp_path)))
