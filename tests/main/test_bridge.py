"""bridge, run the way a runtime runs it, inside a test "host" netns (see l3node.Node)."""

import concurrent.futures
import os
import subprocess
import sys

import pytest
from conftest import ip_json, ns_exec
from kit.l3node import EXTERNAL, EXTERNAL_HOST_SIDE, Node, addresses, link, pings, shape, with_prev

SUBNET = "10.44.0"


@pytest.fixture
def node(make_netns, tmp_path):
    return Node(make_netns, tmp_path, "bridge")


def conf(node, *, ipam=True, **extra):
    base = {"cniVersion": "1.0.0", "name": "brnet", "type": "bridge", "bridge": "br44"}
    if ipam:
        base["ipam"] = node.host_local(f"{SUBNET}.0/24", routes=[{"dst": "0.0.0.0/0"}])
    base.update(extra)
    return base


def bridge_link(node, name="br44"):
    return link(node.host, name)


# -- ADD -----------------------------------------------------------------------------------


def test_add_result_lists_bridge_host_veth_and_container(plugin_dir, node):
    pod = node.pod()
    result = node.add(plugin_dir, conf(node, isGateway=True), pod)
    host_veth = node.host_veths()[0]
    assert result == {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "br44", "mac": bridge_link(node)["address"]},
            {"name": host_veth, "mac": link(node.host, host_veth)["address"]},
            {"name": "eth0", "mac": link(pod)["address"], "sandbox": pod},
        ],
        "ips": [{"interface": 2, "address": f"{SUBNET}.2/24", "gateway": f"{SUBNET}.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    assert host_veth.startswith("veth") and len(host_veth) == 12
    assert link(node.host, host_veth)["master"] == "br44"
    assert addresses(node.host, "br44") == [f"{SUBNET}.1/24"]
    assert addresses(pod) == [f"{SUBNET}.2/24"]
    assert ns_exec(node.host, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"
    assert ns_exec(pod, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify").strip() == "1"
    assert ns_exec(pod, "cat", "/proc/sys/net/ipv6/conf/eth0/accept_dad").strip() == "0"


def test_pods_reach_the_gateway_and_each_other(plugin_dir, node):
    pods = [node.pod(), node.pod()]
    for number, pod in enumerate(pods):
        node.add(plugin_dir, conf(node, isGateway=True), pod, cid=f"c{number}")
    assert pings(pods[0], f"{SUBNET}.1")
    assert pings(pods[0], f"{SUBNET}.3")
    assert pings(pods[1], f"{SUBNET}.2")


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_ipmasq_lets_pods_reach_an_external_netns(plugin_dir, node, backend):
    pod = node.pod()
    config = conf(node, isGateway=True, ipMasq=True, ipMasqBackend=backend)
    node.add(plugin_dir, config, pod)
    assert pings(pod, EXTERNAL)
    assert "CNI-" in node.nat_rules() if backend == "iptables" else "masquerade" in node.nat_rules()
    done = node.run(plugin_dir, "DEL", config, pod=pod)
    assert done.returncode == 0, done
    assert node.nat_rules() == ""


def test_without_ipmasq_the_external_netns_is_unreachable(plugin_dir, node):
    pod = node.pod()
    node.add(plugin_dir, conf(node, isGateway=True), pod)
    assert pings(pod, f"{SUBNET}.1")
    assert not pings(pod, EXTERNAL)


def test_ipmasq_rules_are_upstreams(plugin_dir, node):
    pod = node.pod()
    node.add(plugin_dir, conf(node, isGateway=True, ipMasq=True), pod, cid="ctr1")
    comment = '"name: \\"brnet\\" id: \\"ctr1\\""'
    chain = "CNI-" + __import__("hashlib").sha512(b"brnetctr1").hexdigest()[:24]
    assert node.nat_rules().splitlines() == [
        f":{chain} - [0:0]",
        f"-A POSTROUTING -s {SUBNET}.2/32 -m comment --comment {comment} -j {chain}",
        f"-A {chain} -d {SUBNET}.0/24 -m comment --comment {comment} -j ACCEPT",
        f"-A {chain} ! -d 224.0.0.0/4 -m comment --comment {comment} -j MASQUERADE",
    ]


PEER_LISTENER = (
    "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 9000)); s.listen(4); print('ready', flush=True)\n"
    "while True:\n c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()"
)
PEER_CLIENT = (
    "import socket, sys\nc = socket.create_connection((sys.argv[1], 9000), timeout=3)\n"
    "print(c.recv(100).decode())"
)


def source_seen_by_external(node, pod) -> str:
    """The source address a TCP listener in the external netns sees for a pod's connection."""
    listener = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            os.path.basename(node.external),
            sys.executable,
            "-c",
            PEER_LISTENER,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout.readline().strip() == "ready"
        return ns_exec(pod, sys.executable, "-c", PEER_CLIENT, EXTERNAL, check=False).strip()
    finally:
        listener.kill()
        listener.wait()


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
@pytest.mark.parametrize("excluded", [True, False])
def test_ipmasq_exclude_keeps_the_pod_source_towards_those_destinations(
    plugin_dir, node, backend, excluded
):
    # The external netns routes the pod subnet back through the node, like a cluster peer.
    ns_exec(node.external, "ip", "route", "add", f"{SUBNET}.0/24", "via", EXTERNAL_HOST_SIDE)
    pod = node.pod()
    cluster = "192.168.200.0/24" if excluded else "10.244.0.0/16"
    config = conf(
        node,
        isGateway=True,
        ipMasq=True,
        ipMasqBackend=backend,
        ipMasqExclude=[cluster, "fd00:244::/48"],
    )
    node.add(plugin_dir, config, pod)
    seen = source_seen_by_external(node, pod)
    assert seen == (f"{SUBNET}.2" if excluded else EXTERNAL_HOST_SIDE)
    assert node.run(plugin_dir, "DEL", config, pod=pod).returncode == 0
    assert node.nat_rules() == ""


def test_ipmasq_exclude_rules_sit_before_the_masquerade(plugin_dir, node):
    pod = node.pod()
    config = conf(node, isGateway=True, ipMasq=True, ipMasqExclude=["10.244.7.1/16"])
    node.add(plugin_dir, config, pod, cid="ctr1")
    comment = '"name: \\"brnet\\" id: \\"ctr1\\""'
    chain = "CNI-" + __import__("hashlib").sha512(b"brnetctr1").hexdigest()[:24]
    assert node.nat_rules().splitlines() == [
        f":{chain} - [0:0]",
        f"-A POSTROUTING -s {SUBNET}.2/32 -m comment --comment {comment} -j {chain}",
        f"-A {chain} -d {SUBNET}.0/24 -m comment --comment {comment} -j ACCEPT",
        f"-A {chain} -d 10.244.0.0/16 -m comment --comment {comment} -j ACCEPT",
        f"-A {chain} ! -d 224.0.0.0/4 -m comment --comment {comment} -j MASQUERADE",
    ]


def test_dual_stack(plugin_dir, node):
    pod = node.pod()
    ipam = node.host_local(f"{SUBNET}.0/24", "fd44::/64")
    result = node.add(plugin_dir, conf(node, ipam=False, isGateway=True) | {"ipam": ipam}, pod)
    assert [ip["address"] for ip in result["ips"]] == [f"{SUBNET}.2/24", "fd44::2/64"]
    assert addresses(node.host, "br44", "-6") == ["fd44::1/64"]
    assert addresses(pod, family="-6") == ["fd44::2/64"]
    assert ns_exec(node.host, "cat", "/proc/sys/net/ipv6/conf/all/forwarding").strip() == "1"
    assert pings(pod, "fd44::1", attempts=5)


def test_is_default_gateway_adds_default_routes(plugin_dir, node):
    pod = node.pod()
    ipam = node.host_local(f"{SUBNET}.0/24")
    result = node.add(plugin_dir, conf(node, isDefaultGateway=True) | {"ipam": ipam}, pod)
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": f"{SUBNET}.1"}]
    assert ip_json(pod, "route", "show", "default")[0]["gateway"] == f"{SUBNET}.1"


def test_l2_only_without_ipam(plugin_dir, node):
    pod = node.pod()
    result = node.add(plugin_dir, conf(node, ipam=False), pod)
    assert "ips" not in result and len(result["interfaces"]) == 3
    assert "UP" in link(pod)["flags"]
    assert addresses(pod) == []
    check = node.run(plugin_dir, "CHECK", with_prev(conf(node, ipam=False), result), pod=pod)
    assert check.returncode == 0, check  # upstream fails CHECK for an L2-only bridge


def test_mtu_hairpin_isolation_and_promisc(plugin_dir, node):
    pod = node.pod()
    config = conf(node, mtu=1400, hairpinMode=True, portIsolation=True)
    node.add(plugin_dir, config, pod)
    port = ip_json(node.host, "-d", "link", "show", node.host_veths()[0])[0]
    assert port["mtu"] == 1400 and link(pod)["mtu"] == 1400 and bridge_link(node)["mtu"] == 1400
    info = port["linkinfo"]["info_slave_data"]
    assert info["hairpin"] is True and info["isolated"] is True
    pod2 = node.pod()
    config2 = conf(node, promiscMode=True)
    node.add(plugin_dir, config2, pod2, cid="ctr2")
    assert "PROMISC" in bridge_link(node)["flags"]


def test_mac_from_cni_args_and_runtime_config(plugin_dir, node):
    pod = node.pod()
    node.add(plugin_dir, conf(node), pod, args="IgnoreUnknown=1;MAC=0a:58:0a:2c:00:09")
    assert link(pod)["address"] == "0a:58:0a:2c:00:09"
    pod2 = node.pod()
    config = conf(node, runtimeConfig={"mac": "0a:58:0a:2c:00:0a"})
    node.add(plugin_dir, config, pod2, cid="ctr2", args="IgnoreUnknown=1;MAC=0a:58:0a:2c:00:0b")
    assert link(pod2)["address"] == "0a:58:0a:2c:00:0a"


def test_macspoofchk_installs_and_removes_bridge_rules(plugin_dir, node):
    pod = node.pod()
    config = conf(node, macspoofchk=True)
    node.add(plugin_dir, config, pod)
    mac = link(pod)["address"]
    rules = ns_exec(node.host, "nft", "list", "table", "bridge", "nat")
    assert "cni-br-iface-ctr1-eth0-mac" in rules and f"ether saddr {mac} return" in rules
    assert 'comment "macspoofchk-ctr1-eth0"' in rules
    assert node.run(plugin_dir, "DEL", config, pod=pod).returncode == 0
    rules = ns_exec(node.host, "nft", "list", "table", "bridge", "nat")
    assert "cni-br-iface" not in rules and "macspoofchk" not in rules


def test_disable_container_interface_leaves_it_down(plugin_dir, node):
    pod = node.pod()
    node.add(plugin_dir, conf(node, ipam=False, disableContainerInterface=True), pod)
    assert "UP" not in link(pod)["flags"]


def test_existing_address_conflict_needs_force_address(plugin_dir, node):
    ns_exec(node.host, "ip", "link", "add", "br44", "type", "bridge")
    ns_exec(node.host, "ip", "addr", "add", "10.99.0.1/16", "dev", "br44")
    pod = node.pod()
    config = conf(node, isGateway=True)
    done = node.run(plugin_dir, "ADD", config, pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == f'"br44" already has an IP address different from {SUBNET}.1/24'
    assert "forceAddress" in done.json["details"]
    # Nothing is left half-configured: no veth, no reservation.
    assert node.host_veths() == [] and link(pod) is None
    assert node.reservations("brnet") == []
    node.add(plugin_dir, conf(node, isGateway=True, forceAddress=True), pod)
    assert addresses(node.host, "br44") == [f"{SUBNET}.1/24"]


def test_existing_non_bridge_is_refused(plugin_dir, node):
    ns_exec(node.host, "ip", "link", "add", "br44", "type", "veth", "peer", "br44p")
    done = node.run(plugin_dir, "ADD", conf(node), pod=node.pod())
    assert done.returncode == 1
    assert done.json["msg"] == '"br44" already exists but is not a bridge'
    assert node.reservations("brnet") == []


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"hairpinMode": True, "promiscMode": True}, "cannot set hairpin mode and promiscuous"),
        ({"vlan": 4095}, "invalid VLAN ID 4095 (must be between 0 and 4094)"),
        ({"vlanTrunk": [{"minID": 5}]}, "minID and maxID should be configured simultaneously"),
        ({"vlanTrunk": [{"id": 0}]}, "incorrect trunk id parameter"),
        ({"ipMasq": True, "ipMasqBackend": "pf"}, 'unknown ipmasq backend "pf"'),
        (
            {"ipMasq": True, "ipMasqExclude": ["10.244.0.0/33"]},
            'invalid CIDR "10.244.0.0/33" in ipMasqExclude',
        ),
        ({"mtu": "1500"}, '"mtu" must be an integer'),
    ],
)
def test_bad_config_is_refused_before_any_change(plugin_dir, node, extra, message):
    pod = node.pod()
    done = node.run(plugin_dir, "ADD", conf(node, **extra), pod=pod)
    assert done.returncode == 1, done
    assert message in done.json["msg"]
    assert bridge_link(node) is None and link(pod) is None


def test_disable_container_interface_with_ipam_is_refused(plugin_dir, node):
    done = node.run(plugin_dir, "ADD", conf(node, disableContainerInterface=True), pod=node.pod())
    assert done.json["msg"] == "cannot use IPAM when DisableContainerInterface flag is set"


# -- DEL -----------------------------------------------------------------------------------


def test_del_leaves_no_veth_rule_or_reservation_and_is_idempotent(plugin_dir, node):
    pod = node.pod()
    config = conf(node, isGateway=True, ipMasq=True)
    result = node.add(plugin_dir, config, pod)
    assert node.reservations("brnet") == [f"{SUBNET}.2"]
    for _ in range(2):
        done = node.run(plugin_dir, "DEL", with_prev(config, result), pod=pod)
        assert done.returncode == 0, done
    assert node.host_veths() == [] and link(pod) is None
    assert node.nat_rules() == "" and node.reservations("brnet") == []
    assert bridge_link(node) is not None  # the bridge itself stays, as upstream


def test_del_with_netns_gone_still_releases_and_removes_rules(plugin_dir, node):
    pod = node.pod()
    config = conf(node, isGateway=True, ipMasq=True)
    result = node.add(plugin_dir, config, pod)
    subprocess.run(["ip", "netns", "del", os.path.basename(pod)], check=True)
    done = node.run(plugin_dir, "DEL", with_prev(config, result), pod=pod)
    assert done.returncode == 0, done
    assert node.nat_rules() == "" and node.reservations("brnet") == []
    done = node.run(plugin_dir, "DEL", config, pod="")
    assert done.returncode == 0, done


def test_del_after_rules_were_flushed_succeeds(plugin_dir, node):
    pod = node.pod()
    config = conf(node, isGateway=True, ipMasq=True)
    node.add(plugin_dir, config, pod)
    ns_exec(node.host, "iptables", "-t", "nat", "-F")
    ns_exec(node.host, "iptables", "-t", "nat", "-X")
    done = node.run(plugin_dir, "DEL", config, pod=pod)
    assert done.returncode == 0, done
    assert node.reservations("brnet") == []


# -- CHECK ---------------------------------------------------------------------------------


def test_check_passes_then_fails_when_the_address_is_gone(plugin_dir, node):
    pod = node.pod()
    config = conf(node, isGateway=True)
    result = node.add(plugin_dir, config, pod)
    done = node.run(plugin_dir, "CHECK", with_prev(config, result), pod=pod)
    assert done.returncode == 0, done
    ns_exec(pod, "ip", "addr", "flush", "dev", "eth0")
    done = node.run(plugin_dir, "CHECK", with_prev(config, result), pod=pod)
    assert done.returncode == 1
    assert done.json["msg"] == f"Failed to match addr {SUBNET}.2/24 on interface eth0"


def test_check_without_prev_result(plugin_dir, node):
    pod = node.pod()
    node.add(plugin_dir, conf(node), pod)
    done = node.run(plugin_dir, "CHECK", conf(node), pod=pod)
    assert done.json["msg"] == "Required prevResult missing"


def test_check_notices_a_host_veth_taken_off_the_bridge(plugin_dir, node):
    pod = node.pod()
    config = conf(node, isGateway=True)  # a gateway address pins the bridge MAC
    result = node.add(plugin_dir, config, pod)
    ns_exec(node.host, "ip", "link", "set", node.host_veths()[0], "nomaster")
    done = node.run(plugin_dir, "CHECK", with_prev(config, result), pod=pod)
    assert done.returncode == 1 and "is not a port of bridge br44" in done.json["msg"]


# -- GC and STATUS -------------------------------------------------------------------------


def test_gc_removes_masquerade_and_reservations_of_stale_attachments(plugin_dir, node):
    pods = [node.pod(), node.pod()]
    config = conf(node, isGateway=True, ipMasq=True)
    for number, pod in enumerate(pods):
        node.add(plugin_dir, config, pod, cid=f"c{number}")
    gc_conf = dict(
        config, **{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}
    )
    done = node.run(plugin_dir, "GC", gc_conf | {"cniVersion": "1.1.0"})
    assert done.returncode == 0, done
    rules = node.nat_rules()
    assert f"{SUBNET}.2/32" not in rules and f"{SUBNET}.3/32" in rules
    assert node.reservations("brnet") == [f"{SUBNET}.3"]


def test_status_forwards_to_ipam(plugin_dir, node):
    config = conf(node) | {"cniVersion": "1.1.0"}
    config["ipam"]["ranges"] = [[{"subnet": f"{SUBNET}.0/30"}]]
    pod = node.pod()
    assert node.run(plugin_dir, "STATUS", config).returncode == 0
    node.add(plugin_dir, config, pod)  # a /30 has one free address
    done = node.run(plugin_dir, "STATUS", config)
    assert done.returncode == 1 and done.json["code"] == 50


# -- concurrency ---------------------------------------------------------------------------


def test_fifty_parallel_adds_on_a_new_bridge(frozen_bin, node):
    pods = [node.pod() for _ in range(50)]
    config = conf(node, isGateway=True)

    def add(number):
        return node.run(frozen_bin, "ADD", config, pod=pods[number], cid=f"p{number}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        runs = list(pool.map(add, range(50)))
    assert all(r.returncode == 0 for r in runs), [r for r in runs if r.returncode][:2]
    given = [r.json["ips"][0]["address"] for r in runs]
    assert len(set(given)) == 50
    for address in given:
        assert pings(node.host, address.split("/")[0]), address


# -- differential: Debian's Go bridge ------------------------------------------------------


def test_same_result_shape_and_rules_as_go(plugin_dir, go_bin, node):
    config = conf(node, isGateway=True, ipMasq=True)
    ours = node.add(plugin_dir, config, node.pod(), cid="ours")
    go_pod = node.pod()
    theirs = node.add(go_bin, config, go_pod, cid="theirs")
    theirs_shape = shape(theirs)
    theirs_shape["ips"][0]["address"] = shape(ours)["ips"][0]["address"]
    assert shape(ours) == {k: v for k, v in theirs_shape.items() if v != {}}
    rules = node.nat_rules()
    assert rules.count("MASQUERADE") == 2 and rules.count("-A POSTROUTING") == 2


@pytest.mark.parametrize("adder, deleter", [("go", "ours"), ("ours", "go")])
def test_add_by_one_del_by_the_other_leaves_nothing(plugin_dir, go_bin, node, adder, deleter):
    dirs = {"go": go_bin, "ours": plugin_dir}
    pod = node.pod()
    config = conf(node, isGateway=True, ipMasq=True)
    result = node.add(dirs[adder], config, pod)
    done = node.run(dirs[deleter], "DEL", with_prev(config, result), pod=pod)
    assert done.returncode == 0, done
    assert node.host_veths() == [] and node.nat_rules() == ""
    assert node.reservations("brnet") == []


def test_enabledad_turns_ipv6_dad_on_in_the_pod(plugin_dir, node):
    pod = node.pod()
    node.add(plugin_dir, conf(node, enabledad=True), pod)
    assert ns_exec(pod, "cat", "/proc/sys/net/ipv6/conf/eth0/accept_dad").strip() == "1"
    assert ns_exec(pod, "cat", "/proc/sys/net/ipv6/conf/eth0/enhanced_dad").strip() == "1"


def test_config_dns_replaces_the_ipam_dns(plugin_dir, node):
    pod = node.pod()
    dns = {"nameservers": ["10.44.0.53"], "search": ["cluster.local"], "options": ["ndots:5"]}
    result = node.add(plugin_dir, conf(node, dns=dns), pod)
    assert result["dns"] == dns


def test_mac_from_args_cni_beats_cni_args(plugin_dir, node):
    pod = node.pod()
    config = conf(node, args={"cni": {"mac": "0a:58:0a:2c:00:0c"}})
    node.add(plugin_dir, config, pod, args="IgnoreUnknown=1;MAC=0a:58:0a:2c:00:0d")
    assert link(pod)["address"] == "0a:58:0a:2c:00:0c"
