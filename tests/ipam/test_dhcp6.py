"""dhcp: DHCPv6 leases (stateful IA_NA) for IPv6-only and dual-stack pods, against a real dnsmasq.

The node is tests/kit/dhcpnode.py's with ipv6=True: dnsmasq serves DHCPv4 and DHCPv6 on the macvlan
master's link (fd66::/64) and the bridge's (fd67::/64). Each test starts its own daemon in the
node netns and makes pod namespaces with make_netns; everything is deleted afterwards.
"""

import functools
import json
import os
import signal

import pytest
from conftest import ip_json, ns_exec, run_plugin, unique_name
from kit import dhcpnode
from kit.dhcpnode import BR6_NET, MV6_NET, MV_NET, DaemonProcess, wait_for

from ipam.dhcp import dhcp6packet as p6
from ipam.dhcp import rpc


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with dhcpnode.dnsmasq_node(
        "dh6", str(tmp_path_factory.mktemp("dhcp6-node")), ipv6=True
    ) as found:
        yield found


@pytest.fixture
def daemon(node, source_bin, tmp_path):
    with dhcpnode.running_daemon(node, source_bin, str(tmp_path)) as started:
        yield started


@pytest.fixture
def shipped(node, frozen_bin, tmp_path):
    """The frozen executables and their daemon."""
    with dhcpnode.running_daemon(node, frozen_bin, str(tmp_path)) as started:
        yield frozen_bin, started


def mv_conf(daemon, families=("ipv6",), **ipam):
    return {
        "cniVersion": "1.1.0",
        "name": "dh6mv",
        "type": "macvlan",
        "master": "mst0",
        "ipam": {
            "type": "dhcp",
            "daemonSocketPath": daemon.socket,
            "families": list(families),
            **ipam,
        },
    }


def br_conf(daemon, families=("ipv4", "ipv6")):
    return {
        "cniVersion": "1.1.0",
        "name": "dh6br",
        "type": "bridge",
        "bridge": "brd0",
        "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket, "families": list(families)},
    }


def cni(plugin_dir, node, command, conf, pod="", **kw):
    return run_plugin(plugin_dir, conf["type"], command, conf, netns=pod, in_netns=node.path, **kw)


def ok(run):
    assert run.returncode == 0, run
    assert "Traceback" not in run.stderr, run
    return run.json if run.stdout.strip() else None


def v6_addresses(pod, ifname="eth0"):
    found = ip_json(pod, "-6", "addr", "show", "dev", ifname, "scope", "global")
    return [f"{a['local']}/{a['prefixlen']}" for e in found for a in e["addr_info"] if a]


def v6_leases(node) -> dict:
    """dnsmasq's DHCPv6 leases: {address: duid}."""
    return {ip: row[2] for ip, row in node.leases().items() if ":" in ip}


def duid_text(container_id, network, ifname="eth0"):
    duid = p6.duid_uuid(f"{container_id}/{network}/{ifname}")
    return ":".join(f"{b:02x}" for b in duid)


@pytest.mark.parametrize("build", ["source", "frozen"])
def test_ipv6_only_macvlan_lease_check_release(build, request, node, make_netns):
    if build == "frozen":
        source_bin, daemon = request.getfixturevalue("shipped")
    else:
        source_bin, daemon = (
            request.getfixturevalue("source_bin"),
            request.getfixturevalue("daemon"),
        )
    pod = make_netns("dh6p")
    conf = mv_conf(daemon)
    result = ok(cni(source_bin, node, "ADD", conf, pod, container_id="six1"))
    assert len(result["ips"]) == 1, result
    address = result["ips"][0]["address"]
    assert address.startswith(MV6_NET) and address.endswith("/128"), result
    assert address in v6_addresses(pod)
    ip = address.split("/")[0]
    assert v6_leases(node)[ip] == duid_text("six1", "dh6mv")
    conf["prevResult"] = result
    ok(cni(source_bin, node, "CHECK", conf, pod, container_id="six1"))
    del conf["prevResult"]
    ok(cni(source_bin, node, "DEL", conf, pod, container_id="six1"))
    wait_for(lambda: ip not in v6_leases(node), what="dnsmasq to drop the released lease")
    ok(cni(source_bin, node, "DEL", conf, pod, container_id="six1"))
    assert os.listdir(daemon.statedir) == []


def macvlan_in(node, pod, name="eth0", master="mst0"):
    """A macvlan link in `pod` for calling the IPAM plugin by itself (its result unfiltered)."""
    temporary = unique_name("mv")[:15]
    ns_exec(node.path, "ip", "link", "add", "link", master, "name", temporary, "type", "macvlan")
    ns_exec(node.path, "ip", "link", "set", temporary, "netns", os.path.basename(pod))
    ns_exec(pod, "ip", "link", "set", temporary, "name", name)


def ipam_conf(daemon, families=("ipv4", "ipv6"), **ipam):
    conf = mv_conf(daemon, families, **ipam)
    conf["type"] = "dhcp"
    return conf


def stored_records(daemon) -> list:
    records = []
    for name in sorted(os.listdir(daemon.statedir)):
        with open(os.path.join(daemon.statedir, name)) as f:
            records.append(json.load(f))
    return records


def test_dual_stack_ipam_result_and_lease_file(source_bin, node, daemon, make_netns):
    pod = make_netns("dh6p")
    macvlan_in(node, pod)
    conf = ipam_conf(daemon)
    result = ok(cni(source_bin, node, "ADD", conf, pod, container_id="dual1"))
    v4, v6 = (entry["address"] for entry in result["ips"])
    assert v4.startswith(f"{MV_NET}.") and v4.endswith("/24")
    assert v6.startswith(MV6_NET) and v6.endswith("/128")
    assert result["routes"][0] == {"dst": "0.0.0.0/0", "gw": f"{MV_NET}.1"}
    assert result["dns"] == {
        "nameservers": [f"{MV_NET}.53", f"{MV_NET}.54", f"{MV6_NET}53"],
        "domain": "mv.example",
        "search": ["a.example", "b.example", "six.example"],
    }
    (record,) = stored_records(daemon)
    assert record["families"] == ["ipv4", "ipv6"]
    assert record["lease6"]["address"] == v6.split("/")[0] and record["lease"]["ack"]
    conf["prevResult"] = result
    ok(cni(source_bin, node, "CHECK", conf, pod, container_id="dual1"))
    conf["prevResult"] = dict(result, ips=result["ips"][:1])  # the runtime lost one
    assert cni(source_bin, node, "CHECK", conf, pod, container_id="dual1").returncode == 1
    del conf["prevResult"]
    ok(cni(source_bin, node, "DEL", conf, pod, container_id="dual1"))
    ips = {v4.split("/")[0], v6.split("/")[0]}
    wait_for(lambda: not ips & set(node.leases()), what="both releases")
    assert stored_records(daemon) == []


def test_bridge_dual_stack_four_message_exchange(source_bin, node, daemon, make_netns):
    """Without Rapid Commit: Solicit, Advertise, Request, Reply, over the bridge."""
    pod = make_netns("dh6p")
    conf = br_conf(daemon)
    conf["ipam"]["rapidCommit"] = False
    result = ok(cni(source_bin, node, "ADD", conf, pod, container_id="br6"))
    v6 = result["ips"][1]["address"]
    assert v6.startswith(BR6_NET) and v6 in v6_addresses(pod)
    duid = duid_text("br6", "dh6br")
    for word in ("DHCPSOLICIT", "DHCPADVERTISE", "DHCPREQUEST", "DHCPREPLY"):
        assert node.count(word, duid) == 1, (word, node.log()[-3000:])
    ok(cni(source_bin, node, "DEL", conf, pod, container_id="br6"))


def test_renew_at_t1(source_bin, node, daemon, make_netns):
    """dnsmasq's shortest lease (2 min) gives T1 = 60 s: the daemon renews then, same address."""
    pod = make_netns("dh6p")
    conf = mv_conf(daemon)
    ip = ok(cni(source_bin, node, "ADD", conf, pod, container_id="ren6"))["ips"][0]["address"]
    duid = duid_text("ren6", "dh6mv")
    wait_for(lambda: node.count("DHCPRENEW", duid) >= 1, timeout=75, what="a Renew at T1")
    wait_for(lambda: "renewed" in daemon.log(), timeout=10, what="the renewal")
    assert stored_records(daemon)[0]["lease6"]["address"] == ip.split("/")[0]
    assert node.count("DHCPSOLICIT", duid) == 1
    ok(cni(source_bin, node, "DEL", conf, pod, container_id="ren6"))


def test_sigkill_restart_keeps_the_lease_without_solicit(source_bin, node, daemon, make_netns):
    pod = make_netns("dh6p")
    conf = mv_conf(daemon)
    result = ok(cni(source_bin, node, "ADD", conf, pod, container_id="kill6"))
    duid = duid_text("kill6", "dh6mv")
    daemon.stop(signal.SIGKILL)
    daemon.start()
    wait_for(lambda: "resumed DHCPv6 lease" in daemon.log(), what="the resumed lease")
    assert node.count("DHCPSOLICIT", duid) == 1 and node.count("DHCPREQUEST", duid) == 1
    conf["prevResult"] = result
    ok(cni(source_bin, node, "CHECK", conf, pod, container_id="kill6"))
    del conf["prevResult"]
    ok(cni(source_bin, node, "DEL", conf, pod, container_id="kill6"))
    ip = result["ips"][0]["address"].split("/")[0]
    wait_for(lambda: ip not in v6_leases(node), what="the release")


def test_twenty_pods_at_once(shipped, node, make_netns):
    source_bin, daemon = shipped
    run = functools.partial(cni, source_bin, node)
    dhcpnode.many_pods_at_once(run, mv_conf(daemon), make_netns, "dh6m", lambda: v6_leases(node))
    assert rpc.call(daemon.socket, "status", {}, 5) == {"leases": 0}


def test_no_link_local_is_a_clear_error_and_leaves_nothing(source_bin, node, daemon, make_netns):
    pod = make_netns("dh6p")
    macvlan_in(node, pod)
    ns_exec(pod, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1")
    run = cni(source_bin, node, "ADD", ipam_conf(daemon), pod, container_id="noll")
    assert run.returncode == 1 and "Traceback" not in run.stderr, run
    assert "no usable link-local address on eth0" in run.json["msg"], run
    assert "disable_ipv6" in run.json["details"]
    # The IPv4 lease it got first is given back, and nothing stays on disk.
    wait_for(lambda: rpc.call(daemon.socket, "status", {}, 5) == {"leases": 0}, what="no leases")
    assert stored_records(daemon) == []
    client_id = ":".join(f"{b:02x}" for b in b"\0noll/dh6mv/eth0")
    wait_for(
        lambda: client_id not in [row[2] for row in node.leases().values()],
        what="the IPv4 release",
    )
    assert node.count("DHCPRELEASE", "") >= 1


def test_no_server_is_a_clear_error(node, source_bin, tmp_path, make_netns):
    ns_exec(node.path, "ip", "link", "add", "lonely0", "type", "veth", "peer", "lonely1")
    ns_exec(node.path, "ip", "link", "set", "lonely0", "up")
    ns_exec(node.path, "ip", "link", "set", "lonely1", "up")
    started = DaemonProcess(
        node, os.path.join(source_bin, "dhcp"), str(tmp_path), "-resendtimeout", "3s"
    ).start()
    try:
        pod = make_netns("dh6p")
        conf = mv_conf(started)
        conf["master"] = "lonely0"
        run = cni(source_bin, node, "ADD", conf, pod, container_id="lone")
        assert run.returncode == 1 and "Traceback" not in run.stderr, run
        assert "no server answered the Solicit within 3s" in run.json["msg"], run
        assert ip_json(pod, "link", "show") and not [
            e for e in ip_json(pod, "link", "show") if e["ifname"] == "eth0"
        ]  # macvlan took its link back
        assert rpc.call(started.socket, "status", {}, 5) == {"leases": 0}
        assert not os.path.isdir(started.statedir) or os.listdir(started.statedir) == []
    finally:
        started.stop(signal.SIGKILL)
        ns_exec(node.path, "ip", "link", "del", "lonely0", check=False)


def fake_daemon(path: str, answers: int) -> tuple:
    """A unix socket answering `answers` requests with one canned IPv4 result; the requests
    it got are in the returned list."""
    import socket
    import threading

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    got: list = []

    def serve():
        for _ in range(answers):
            conn, _ = listener.accept()
            with conn:
                got.append(json.loads(rpc._read_line(conn)))
                result = {"ips": [{"address": "10.9.9.9/24"}], "routes": [], "dns": {}}
                conn.sendall(rpc.encode({"result": result}))
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return got, thread


def test_config_without_the_key_is_todays_request_and_record(source_bin, netns, tmp_path):
    from ipam.dhcp.lease import Attachment
    from ipam.dhcp.store import LeaseStore

    path = str(tmp_path / "fake.sock")
    got, thread = fake_daemon(path, 2)
    conf = {"cniVersion": "1.1.0", "name": "n", "ipam": {"type": "dhcp", "daemonSocketPath": path}}
    conf["type"] = "dhcp"
    ok(run_plugin(source_bin, "dhcp", "ADD", conf, netns=netns))
    conf["ipam"]["families"] = ["ipv4"]
    ok(run_plugin(source_bin, "dhcp", "ADD", conf, netns=netns))
    thread.join(10)
    today = {"containerID", "network", "ifname", "netns", "request", "provide", "priority"}
    assert set(got[0]["params"]) == today
    assert set(got[1]["params"]) == today | {"families"}
    # A stored IPv4-only lease is written byte for byte as before the DHCPv6 work.
    att = Attachment(
        key="c/n/eth0", containerID="c", network="n", ifname="eth0", netns="/x", priority=0
    )
    record = dict(att.record(), lease={"ack": {"op": 2}, "obtained": 1.5})
    assert list(att.record()) == list(Attachment.FIELDS)
    store = LeaseStore(str(tmp_path / "state"))
    store.save(record)
    store.save(record)  # a renewal over an existing file
    (name,) = os.listdir(store.directory)
    with open(os.path.join(store.directory, name), "rb") as f:
        assert f.read() == json.dumps(dict(record, version=1), indent=1).encode()


def test_bad_families_is_a_config_error(source_bin, netns, tmp_path):
    conf = ipam_conf(type("D", (), {"socket": str(tmp_path / "none.sock")}), ("ipv6", "ipx"))
    run = run_plugin(source_bin, "dhcp", "ADD", conf, netns=netns)
    assert run.returncode == 1 and run.json["code"] == 7, run
    assert "families" in run.json["msg"]


def test_each_lease_thread_uses_one_kernel_session(node, make_netns, tmp_path):
    """#21: a lease (either family) opens its netns and one rtnetlink socket once, and looks
    its interface up by name once, however long it runs (here: bound, watched, released)."""
    import time

    from ipam.dhcp.lease import Attachment, LeaseWorker, Settings
    from ipam.dhcp.lease6 import Lease6Worker
    from ipam.dhcp.store import LeaseStore
    from libcni.kernel.session import Session

    pod = make_netns("dh6p")
    macvlan_in(node, pod)
    att = Attachment(
        key="ses/dh6mv/eth0",
        containerID="ses",
        network="dh6mv",
        ifname="eth0",
        netns=pod,
        families=["ipv4", "ipv6"],
    )
    store = LeaseStore(str(tmp_path / "state"))
    events: list = []
    Session.audit = lambda *event: events.append(event)
    try:
        for kind in (LeaseWorker, Lease6Worker):
            worker = kind(att, Settings(resend_timeout=30.0), store, lambda w: None)
            worker.start()
            assert worker.wait(40)["ips"]
            time.sleep(2.5)  # the watch loop looks at the link a few times
            worker.stop(release=True)
            assert worker.finished.is_set()
    finally:
        Session.audit = None
    assert events == [("open", pod), ("lookup", pod, "eth0")] * 2


def test_gc_releases_stale_dual_stack_attachments(source_bin, node, daemon, make_netns):
    conf = mv_conf(daemon, ("ipv4", "ipv6"))
    pods = {cid: make_netns("dh6p") for cid in ("gc61", "gc62")}
    ips = {}
    for cid, pod in pods.items():
        result = ok(cni(source_bin, node, "ADD", conf, pod, container_id=cid))
        ips[cid] = {entry["address"].split("/")[0] for entry in result["ips"]}
    assert rpc.call(daemon.socket, "status", {}, 5) == {"leases": 4}
    valid = [{"containerID": "gc61", "ifname": "eth0"}]
    gc = dict(conf, type="dhcp", **{"cni.dev/valid-attachments": valid})
    ok(run_plugin(source_bin, "dhcp", "GC", gc))
    wait_for(lambda: not ips["gc62"] & set(node.leases()), what="the GC releases")
    assert ips["gc61"] <= set(node.leases())
    assert rpc.call(daemon.socket, "status", {}, 5) == {"leases": 2}
    for cid, pod in pods.items():
        ok(cni(source_bin, node, "DEL", conf, pod, container_id=cid))


def test_expired_stored_lease_removes_the_address(source_bin, node, daemon, make_netns):
    pod = make_netns("dh6p")
    conf = mv_conf(daemon)
    address = ok(cni(source_bin, node, "ADD", conf, pod, container_id="exp6"))["ips"][0]["address"]
    assert address in v6_addresses(pod)
    daemon.stop(signal.SIGKILL)
    (name,) = os.listdir(daemon.statedir)
    path = os.path.join(daemon.statedir, name)
    with open(path) as f:
        record = json.load(f)
    record["lease6"]["obtained"] -= 3600  # the daemon was down longer than the lease
    with open(path, "w") as f:
        json.dump(record, f)
    daemon.start()
    wait_for(lambda: address not in v6_addresses(pod), what="the expired address to go")
    assert "expired; removing it from eth0" in daemon.log()
    wait_for(lambda: os.listdir(daemon.statedir) == [], what="the lease file to go")
    failed = cni(source_bin, node, "CHECK", dict(conf, type="dhcp"), pod, container_id="exp6")
    assert failed.returncode == 1 and "no DHCPv6 lease held" in failed.json["msg"], failed
    ok(cni(source_bin, node, "DEL", conf, pod, container_id="exp6"))


def test_a_refusal_names_the_status():
    from ipam.dhcp.lease import Attachment, Settings
    from ipam.dhcp.lease6 import Lease6Worker

    att = Attachment(key="c/n/eth0", containerID="c", network="n", ifname="eth0", netns="/x")
    worker = Lease6Worker(att, Settings(), None, lambda w: None)
    refusal = p6.IANA(1, 0, 0, [], (p6.NO_ADDRS_AVAIL, "pool full")).encode()
    status = bytes.fromhex("000d000b0002") + b"pool full"
    advertise = p6.Message(p6.ADVERTISE, 1, [(p6.IA_NA, refusal[:12] + status)])
    err = worker._declined(advertise, "Solicit")
    assert err.msg == "DHCPv6 server declined the Solicit for c/n/eth0: NoAddrsAvail (pool full)"
    reply = p6.Message(p6.REPLY, 1, [(p6.STATUS_CODE, bytes.fromhex("0001") + b"busy")])
    assert worker._declined(reply, "Request").msg.endswith(": UnspecFail (busy)")
