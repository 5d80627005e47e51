"""dhcp: the IPAM plugin and its daemon against a real dnsmasq, with macvlan and bridge.

The node (tests/kit/dhcpnode.py) is one netns per module holding dnsmasq; each test starts its own
daemon there (from the launchers under test) and makes pod namespaces with make_netns.
"""

import functools
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import REPO, ip_json, ns_exec, run_plugin
from kit import dhcpnode
from kit.dhcpnode import BR_NET, MV_NET, DaemonProcess, wait_for

from ipam.dhcp import daemon as dhcp_daemon
from ipam.dhcp import options


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with dhcpnode.dnsmasq_node("dhn", str(tmp_path_factory.mktemp("dhcp-node"))) as found:
        yield found


@pytest.fixture
def daemon(node, plugin_dir, tmp_path):
    with dhcpnode.running_daemon(node, plugin_dir, str(tmp_path)) as started:
        yield started


def mv_conf(daemon, **ipam):
    return {
        "cniVersion": "1.1.0",
        "name": "dhmv",
        "type": "macvlan",
        "master": "mst0",
        "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket, **ipam},
    }


def br_conf(daemon):
    return {
        "cniVersion": "1.1.0",
        "name": "dhbr",
        "type": "bridge",
        "bridge": "brd0",
        "ipam": {"type": "dhcp", "daemonSocketPath": daemon.socket},
    }


def cni(plugin_dir, node, command, conf, pod="", plugin=None, **kw):
    return run_plugin(
        plugin_dir, plugin or conf["type"], command, conf, netns=pod, in_netns=node.path, **kw
    )


def ok(run):
    assert run.returncode == 0, run
    assert "Traceback" not in run.stderr, run
    return run.json if run.stdout.strip() else None


def failed(run, code=None):
    assert run.returncode != 0, run
    assert "Traceback" not in run.stderr, run
    if code is not None:
        assert run.json["code"] == code, run
    return run.json


def mac_of(pod, ifname="eth0"):
    return next(e["address"] for e in ip_json(pod, "link", "show") if e["ifname"] == ifname)


def pod_addresses(pod, ifname="eth0"):
    found = ip_json(pod, "-4", "addr", "show", "dev", ifname)
    return [f"{a['local']}/{a['prefixlen']}" for e in found for a in e["addr_info"]]


def client_id_text(container_id, network, ifname="eth0"):
    raw = b"\0" + f"{container_id}/{network}/{ifname}".encode()
    return ":".join(f"{b:02x}" for b in raw)


def daemon_status(daemon):
    from ipam.dhcp import rpc

    return rpc.call(daemon.socket, "status", {}, 5)["leases"]


# -- the two modes ------------------------------------------------------------------------


def test_without_daemon_argument_it_is_a_plugin(plugin_dir):
    run = run_plugin(plugin_dir, "dhcp", "VERSION", env={"CNI_COMMAND": "VERSION"})
    assert ok(run)["supportedVersions"][-1] == "1.1.0"
    about = run_plugin(plugin_dir, "dhcp", "", env={"CNI_COMMAND": None}, timeout=10)
    assert about.returncode == 0 and "CNI dhcp plugin" in about.stderr


def test_daemon_flag_errors(plugin_dir):
    proc = subprocess.run(
        [os.path.join(plugin_dir, "dhcp"), "daemon", "-bogus"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2 and "flag provided but not defined: -bogus" in proc.stderr
    # The explicit argument wins over CNI_COMMAND=VERSION (the multicall shortcut skips it).
    proc = subprocess.run(
        [os.path.join(plugin_dir, "dhcp"), "daemon", "-bogus"],
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert dhcp_daemon.parse_flags(["-timeout=1m30s", "--broadcast", "-resendmax", "500ms"]) == {
        **dhcp_daemon.parse_flags([]),
        "timeout": 90.0,
        "broadcast": True,
        "resendmax": 0.5,
    }


def test_sigterm_removes_socket_and_pidfile(daemon):
    assert os.path.exists(daemon.socket) and os.path.exists(daemon.pidfile)
    assert daemon.stop(signal.SIGTERM) == 0
    assert not os.path.exists(daemon.socket) and not os.path.exists(daemon.pidfile)


def test_socket_activation(node, source_bin, tmp_path):
    path = str(tmp_path / "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    fd = listener.fileno()
    started = DaemonProcess(node, os.path.join(source_bin, "dhcp"), str(tmp_path))
    started.socket = path
    started.argv = lambda: [
        "sh",
        "-c",
        'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"',  # type: ignore
        started.executable,
        "daemon",
        "-pidfile",
        started.pidfile,
        "-statedir",
        started.statedir,
    ]
    try:
        started.start(pass_fds=(fd, 3), preexec_fn=lambda: os.dup2(fd, 3))
        listener.close()
        assert daemon_status(started) == 0
        assert "listening on" in started.log()
    finally:
        started.stop(signal.SIGKILL)


# -- leases with macvlan and bridge -------------------------------------------------------


def test_macvlan_lease_check_release(plugin_dir, node, daemon, make_netns):
    pod = make_netns("dhp")
    conf = mv_conf(daemon)
    result = ok(cni(plugin_dir, node, "ADD", conf, pod, container_id="mv1"))
    address = result["ips"][0]["address"]
    assert address.startswith(f"{MV_NET}.") and address.endswith("/24")
    assert result["ips"][0]["gateway"] == f"{MV_NET}.1"
    assert result["routes"] == [
        {"dst": "0.0.0.0/0", "gw": f"{MV_NET}.1"},
        {"dst": "10.98.0.0/16", "gw": "0.0.0.0", "scope": 253},
    ]
    assert pod_addresses(pod) == [address]
    ip = address.split("/")[0]
    assert node.leases()[ip][2] == client_id_text("mv1", "dhmv")
    assert node.count("DHCPDISCOVER", mac_of(pod)) == 1  # the first DISCOVER was answered
    conf["prevResult"] = result
    ok(cni(plugin_dir, node, "CHECK", conf, pod, container_id="mv1"))
    del conf["prevResult"]
    mac = mac_of(pod)
    ok(cni(plugin_dir, node, "DEL", conf, pod, container_id="mv1"))
    wait_for(lambda: ip not in node.leases(), what="dnsmasq to drop the released lease")
    assert node.count("DHCPRELEASE", mac) == 1
    ok(cni(plugin_dir, node, "DEL", conf, pod, container_id="mv1"))
    failed(run_plugin(plugin_dir, "dhcp", "CHECK", conf, netns=pod, container_id="mv1"))


def test_ipam_result_has_dns_priority_and_provided_hostname(plugin_dir, node, daemon, make_netns):
    pod = make_netns("dhp")
    ns_exec(node.path, "ip", "link", "add", "link", "mst0", "name", "mvx0", "type", "macvlan")
    ns_exec(node.path, "ip", "link", "set", "mvx0", "netns", os.path.basename(pod))
    ns_exec(pod, "ip", "link", "set", "mvx0", "name", "eth0")
    conf = mv_conf(daemon, priority=7, provide=[{"option": "host-name", "fromArg": "K8S_POD_NAME"}])
    result = ok(
        cni(
            plugin_dir,
            node,
            "ADD",
            conf,
            pod,
            plugin="dhcp",
            container_id="dns1",
            args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=web-1",
        )
    )
    assert result["dns"] == {
        "nameservers": [f"{MV_NET}.53", f"{MV_NET}.54"],
        "domain": "mv.example",
        "search": ["a.example", "b.example"],
    }
    assert {r["priority"] for r in result["routes"]} == {7}
    ip = result["ips"][0]["address"].split("/")[0]
    assert node.leases()[ip][1] == "web-1"
    assert ip_json(pod, "link", "show", "eth0")[0]["operstate"] == "UP"  # the daemon raised it
    ok(cni(plugin_dir, node, "DEL", conf, pod, plugin="dhcp", container_id="dns1"))
    wait_for(lambda: ip not in node.leases(), what="the release")


def test_long_container_ids_get_their_own_leases(plugin_dir, node, daemon, make_netns):
    """#24: IDs far beyond option 61's 254 bytes, equal in their first 300 characters: two
    leases, two lease files of a fixed-length name, and DEL succeeds (twice)."""
    conf = mv_conf(daemon)
    pods = [(("L" * 300) + end, make_netns("dhp")) for end in ("1", "2")]
    ips = set()
    for container_id, pod in pods:
        result = ok(cni(plugin_dir, node, "ADD", conf, pod, container_id=container_id))
        ips.add(result["ips"][0]["address"].split("/")[0])
    assert len(ips) == 2 and ips <= set(node.leases())
    files = os.listdir(daemon.statedir)
    assert len(files) == 2 and all(len(name) == 45 for name in files), files
    for container_id, pod in pods:
        ok(cni(plugin_dir, node, "DEL", conf, pod, container_id=container_id))
        ok(cni(plugin_dir, node, "DEL", conf, pod, container_id=container_id))
    wait_for(lambda: not ips & set(node.leases()), what="both releases")
    assert os.listdir(daemon.statedir) == []


def test_bridge_lease_with_static_routes(plugin_dir, node, daemon, make_netns):
    pod = make_netns("dhp")
    conf = br_conf(daemon)
    result = ok(cni(plugin_dir, node, "ADD", conf, pod, container_id="br1"))
    address = result["ips"][0]["address"]
    assert address.startswith(f"{BR_NET}.") and result["ips"][0]["gateway"] == f"{BR_NET}.1"
    assert result["routes"] == [
        {"dst": "192.168.5.0/24", "gw": f"{BR_NET}.1"},
        {"dst": "0.0.0.0/0", "gw": f"{BR_NET}.1"},
    ]
    assert pod_addresses(pod) == [address]
    out = ns_exec(pod, "busybox", "ping", "-c", "1", "-W", "2", f"{BR_NET}.1", check=False)
    assert " 0% packet loss" in out
    ok(cni(plugin_dir, node, "DEL", conf, pod, container_id="br1"))
    ok(cni(plugin_dir, node, "DEL", conf, pod, container_id="br1"))
    wait_for(lambda: address.split("/")[0] not in node.leases(), what="the release")
    assert "from the host (its interface is gone)" in daemon.log()  # bridge deleted the veth


def test_renew_at_t1_is_persisted(plugin_dir, node, daemon, make_netns):
    pod = make_netns("dhp")
    ok(cni(plugin_dir, node, "ADD", mv_conf(daemon), pod, container_id="rn1"))
    mac = mac_of(pod)
    (stored,) = os.listdir(daemon.statedir)
    path = os.path.join(daemon.statedir, stored)
    assert os.stat(path).st_mode & 0o777 == 0o600
    first = json.load(open(path))["lease"]["obtained"]
    wait_for(lambda: node.count("DHCPACK", mac) >= 2, timeout=8, what="a renewal at T1 (3 s)")
    wait_for(lambda: json.load(open(path))["lease"]["obtained"] > first, what="the new ACK")
    assert node.count("DHCPDISCOVER", mac) == 1


def test_daemon_down_del_succeeds_status_is_50(plugin_dir, node, daemon, make_netns):
    pod = make_netns("dhp")
    conf = mv_conf(daemon)
    ok(cni(plugin_dir, node, "ADD", conf, pod, container_id="dn1"))
    ok(run_plugin(plugin_dir, "dhcp", "STATUS", conf))
    daemon.stop(signal.SIGKILL)
    status = failed(run_plugin(plugin_dir, "dhcp", "STATUS", conf), 50)
    assert "DHCP daemon not reachable" in status["msg"] and daemon.socket in status["msg"]
    assert "dhcp daemon" in status["details"]
    ok(cni(plugin_dir, node, "DEL", conf, pod, container_id="dn1"))
    add = failed(cni(plugin_dir, node, "ADD", conf, make_netns("dhp"), container_id="dn2"))
    assert "error dialing DHCP daemon" in add["msg"]
    gc_conf = dict(conf, **{"cni.dev/valid-attachments": []})
    failed(run_plugin(plugin_dir, "dhcp", "GC", gc_conf), 11)


def test_gc_releases_only_stale_attachments(plugin_dir, node, daemon, make_netns):
    conf = mv_conf(daemon)
    pods = {cid: make_netns("dhp") for cid in ("gc1", "gc2")}
    ips = {
        cid: ok(cni(plugin_dir, node, "ADD", conf, pod, container_id=cid))["ips"][0]["address"]
        for cid, pod in pods.items()
    }
    for bad in (
        {},
        {"cni.dev/valid-attachments": "gc1"},
        {"cni.dev/valid-attachments": [{"containerID": "gc1"}]},
    ):
        failed(run_plugin(plugin_dir, "dhcp", "GC", dict(conf, **bad)), 7)
    assert daemon_status(daemon) == 2
    valid = [{"containerID": "gc1", "ifname": "eth0"}]
    ok(run_plugin(plugin_dir, "dhcp", "GC", dict(conf, **{"cni.dev/valid-attachments": valid})))
    wait_for(lambda: ips["gc2"].split("/")[0] not in node.leases(), what="the GC release")
    assert ips["gc1"].split("/")[0] in node.leases()
    ok(run_plugin(plugin_dir, "dhcp", "CHECK", conf, netns=pods["gc1"], container_id="gc1"))
    failed(run_plugin(plugin_dir, "dhcp", "CHECK", conf, netns=pods["gc2"], container_id="gc2"))


# -- restarts and bad input -------------------------------------------------------------------


def test_sigkill_restart_resumes_and_renews(plugin_dir, node, daemon, make_netns):
    pod = make_netns("dhp")
    conf = mv_conf(daemon)
    address = ok(cni(plugin_dir, node, "ADD", conf, pod, container_id="rs1"))["ips"][0]["address"]
    mac = mac_of(pod)
    acks = node.count("DHCPACK", mac)
    daemon.stop(signal.SIGKILL)
    assert os.path.exists(daemon.socket)  # stale: the next daemon must cope
    daemon.start()
    wait_for(lambda: node.count("DHCPACK", mac) > acks, what="the resumed lease's renewal")
    assert node.count("DHCPDISCOVER", mac) == 1
    assert pod_addresses(pod) == [address]
    ok(run_plugin(plugin_dir, "dhcp", "CHECK", conf, netns=pod, container_id="rs1"))
    ok(cni(plugin_dir, node, "DEL", conf, pod, container_id="rs1"))
    wait_for(lambda: address.split("/")[0] not in node.leases(), what="the release")


def test_expired_stored_lease_sets_link_down(node, source_bin, tmp_path, make_netns):
    started = DaemonProcess(node, os.path.join(source_bin, "dhcp"), str(tmp_path)).start()
    try:
        pod = make_netns("dhp")
        ok(cni(source_bin, node, "ADD", mv_conf(started), pod, container_id="ex1"))
        started.stop(signal.SIGKILL)
        (name,) = os.listdir(started.statedir)
        path = os.path.join(started.statedir, name)
        record = json.load(open(path))
        record["lease"]["obtained"] -= 3600
        with open(path, "w") as f:
            json.dump(record, f)
        started.start()
        wait_for(
            lambda: ip_json(pod, "link", "show", "eth0")[0]["operstate"] == "DOWN",
            what="the link to go down",
        )
        wait_for(lambda: not os.listdir(started.statedir), what="the lease file to go")
    finally:
        started.stop(signal.SIGKILL)


def test_bad_requests_and_vanished_netns_leave_the_daemon_up(
    node, source_bin, tmp_path, make_netns
):
    started = DaemonProcess(node, os.path.join(source_bin, "dhcp"), str(tmp_path)).start()
    try:
        for garbage in (
            b"\xff\xfe\n",
            b"[1]\n",
            b'{"protocol": 1, "method": "nope"}\n',
            b'{"protocol": 1, "method": "allocate", "params": {"netns": 5}}\n',
            b'{"protocol": 1, "method": "gc", "params": {"valid": 3}}\n',
        ):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(started.socket)
                s.sendall(garbage)
                s.shutdown(socket.SHUT_WR)
                reply = json.loads(s.makefile("rb").readline())
                assert "error" in reply, garbage
        conf = mv_conf(started)
        missing = failed(
            cni(
                source_bin, node, "ADD", conf, "/var/run/netns/no-such-dhcp-pod", container_id="vn0"
            )
        )
        assert "no-such-dhcp-pod" in missing["msg"]
        failed(
            cni(
                source_bin,
                node,
                "ADD",
                dict(conf, ipam=dict(conf["ipam"], priority="x")),
                make_netns("dhp"),
                container_id="vn0",
            ),
            7,
        )
        pod = make_netns("dhp")
        ok(cni(source_bin, node, "ADD", conf, pod, container_id="vn1"))
        assert daemon_status(started) == 1
        subprocess.run(["ip", "netns", "del", os.path.basename(pod)], check=True)
        wait_for(lambda: daemon_status(started) == 0, what="the daemon to drop the lease")
        ok(cni(source_bin, node, "ADD", conf, make_netns("dhp"), container_id="vn2"))
        assert started.proc is not None and started.proc.poll() is None
    finally:
        started.stop(signal.SIGKILL)


def test_link_bounce_reopens_the_client(node, source_bin, tmp_path, make_netns):
    started = DaemonProcess(node, os.path.join(source_bin, "dhcp"), str(tmp_path)).start()
    try:
        pod = make_netns("dhp")
        conf = mv_conf(started)
        ok(cni(source_bin, node, "ADD", conf, pod, container_id="lb1"))
        mac = mac_of(pod)
        ns_exec(pod, "ip", "link", "set", "eth0", "down")
        ns_exec(pod, "ip", "link", "set", "eth0", "up")
        wait_for(lambda: "reopening it" in started.log(), what="the client to be reopened")
        acks = node.count("DHCPACK", mac)
        wait_for(lambda: node.count("DHCPACK", mac) > acks, what="a renewal on the new socket")
        ok(run_plugin(source_bin, "dhcp", "CHECK", conf, netns=pod, container_id="lb1"))
        assert node.count("DHCPDISCOVER", mac) == 1
    finally:
        started.stop(signal.SIGKILL)


def test_no_server_gives_up_after_resendtimeout(node, source_bin, tmp_path, make_netns):
    started = DaemonProcess(
        node,
        os.path.join(source_bin, "dhcp"),
        str(tmp_path),
        "-resendtimeout",
        "3s",
        "-resendmax",
        "1s",
    ).start()
    try:
        pod = make_netns("dhp")
        ns_exec(
            node.path,
            "ip",
            "link",
            "add",
            "silent0",
            "type",
            "veth",
            "peer",
            "eth0",
            "netns",
            os.path.basename(pod),
        )
        ns_exec(node.path, "ip", "link", "set", "silent0", "up")
        run = cni(
            source_bin,
            node,
            "ADD",
            mv_conf(started),
            pod,
            plugin="dhcp",
            container_id="gu1",
            timeout=30,
        )
        assert "after 3s: no answer from a DHCP server" in failed(run)["msg"]
        assert daemon_status(started) == 0
    finally:
        ns_exec(node.path, "ip", "link", "del", "silent0", check=False)
        started.stop(signal.SIGKILL)


def test_hostprefix_applies_to_socket_and_netns(node, source_bin, tmp_path, make_netns):
    prefix = tmp_path / "host"
    (prefix / "var" / "run").mkdir(parents=True)
    os.symlink("/var/run/netns", prefix / "var" / "run" / "netns")
    started = DaemonProcess(node, os.path.join(source_bin, "dhcp"), str(tmp_path))
    started.argv = lambda: [
        started.executable,
        "daemon",
        "-hostprefix",
        str(prefix),  # type: ignore
        "-socketpath",
        "/dhcp.sock",
        "-pidfile",
        started.pidfile,
        "-statedir",
        started.statedir,
    ]
    started.socket = str(prefix / "dhcp.sock")
    try:
        started.start()
        pod = make_netns("dhp")
        conf = mv_conf(started)
        ok(cni(source_bin, node, "ADD", conf, pod, container_id="hp1"))
        ok(cni(source_bin, node, "DEL", conf, pod, container_id="hp1"))
    finally:
        started.stop(signal.SIGKILL)


@pytest.fixture
def shipped(node, frozen_bin, tmp_path):
    """The frozen executables and their daemon: for the tests too heavy to run twice."""
    started = DaemonProcess(node, os.path.join(frozen_bin, "dhcp"), str(tmp_path)).start()
    try:
        yield frozen_bin, started
    finally:
        started.stop(signal.SIGKILL)


def test_same_attachment_in_a_new_netns_starts_over(node, source_bin, tmp_path, make_netns):
    started = DaemonProcess(node, os.path.join(source_bin, "dhcp"), str(tmp_path)).start()
    try:
        conf = mv_conf(started)
        first, second = make_netns("dhp"), make_netns("dhp")
        ok(cni(source_bin, node, "ADD", conf, first, container_id="re1"))
        ns_exec(first, "ip", "link", "del", "eth0")  # the runtime lost the old sandbox
        ok(cni(source_bin, node, "ADD", conf, second, container_id="re1"))
        ok(run_plugin(source_bin, "dhcp", "CHECK", conf, netns=second, container_id="re1"))
        assert daemon_status(started) == 1
    finally:
        started.stop(signal.SIGKILL)


def test_twenty_containers_at_once(shipped, node, make_netns):
    plugin_dir, daemon = shipped
    run = functools.partial(cni, plugin_dir, node)
    dhcpnode.many_pods_at_once(run, mv_conf(daemon), make_netns, "dhm", node.leases)
    assert daemon_status(daemon) == 0


# -- against upstream's Go dhcp ---------------------------------------------------------------


def test_same_client_id_and_result_shape_as_go(node, source_bin, go_bin, tmp_path, make_netns):
    go = DaemonProcess(node, os.path.join(go_bin, "dhcp"), str(tmp_path / "go"))
    os.makedirs(str(tmp_path / "go"))
    go.argv = lambda: [
        go.executable,
        "daemon",
        "-socketpath",
        go.socket,  # type: ignore
        "-pidfile",
        go.pidfile,
    ]
    ours = DaemonProcess(node, os.path.join(source_bin, "dhcp"), str(tmp_path)).start()
    try:
        go.start()
        results = {}
        for side, started, bin_dir in (("go", go, go_bin), ("ours", ours, source_bin)):
            pod = make_netns("dhp")
            conf = mv_conf(started, request=[{"option": "121"}])  # Go asks only for 1 and 3
            conf["cniVersion"] = "1.0.0"
            result = ok(cni(bin_dir, node, "ADD", conf, pod, container_id=f"df-{side}"))
            ip = result["ips"][0]["address"].split("/")[0]
            assert node.leases()[ip][2] == client_id_text(f"df-{side}", "dhmv")
            results[side] = result
            ok(cni(bin_dir, node, "DEL", conf, pod, container_id=f"df-{side}"))
            wait_for(lambda ip=ip: ip not in node.leases(), what=f"{side}'s release")
        for result in results.values():
            result.pop("dns", None)
            for route in result["routes"]:
                route.pop("scope", None)  # Debian's Go plugins predate route scopes
            result["interfaces"][0].pop("mac")
            result["interfaces"][0].pop("sandbox")
            result["ips"][0]["address"] = "x/" + result["ips"][0]["address"].split("/")[1]
        assert results["go"] == results["ours"]
    finally:
        go.stop(signal.SIGKILL)
        ours.stop(signal.SIGKILL)


# -- option parsing (no kernel) ---------------------------------------------------------------


def test_option_codecs():
    assert options.classless_routes([0, 10, 66, 0, 1, 16, 10, 98, 0, 0, 0, 0, 24, 1]) == [
        ("0.0.0.0/0", "10.66.0.1"),
        ("10.98.0.0/16", "0.0.0.0"),
    ]  # truncated entry dropped
    assert options.static_routes([192, 168, 5, 0, 10, 0, 0, 1, 10, 1, 0, 0, 10, 0, 0, 2]) == [
        ("192.168.5.0/24", "10.0.0.1"),
        ("10.0.0.0/8", "10.0.0.2"),
    ]
    wire = [1, 97, 7, 101, 120, 97, 109, 112, 108, 101, 0, 1, 98, 192, 2]
    assert options.domain_list(wire) == ["a.example", "b.example"]
    assert options.client_id("c" * 247, "n", "eth0") == "c" * 247 + "/n/eth0"  # upstream's
    long_a, long_b = (options.client_id("c" * 300 + end, "n", "eth0") for end in "ab")
    assert long_a != long_b and len(long_a) == len(long_b) == 254
    assert long_a.startswith("c" * 237 + "~") and long_a == options.client_id(
        "c" * 300 + "a", "n", "eth0"
    )
    with pytest.raises(Exception, match='Can not parse option "bogus"'):
        options.parse_option_name("bogus")
    assert options.parse_option_name("vendor-class-identifier") == 60


def test_resend_schedule_follows_upstream():
    from ipam.dhcp.client import backoff

    delays = backoff(10.0)
    quick = [next(delays) for _ in range(4)]
    assert all(1.0 <= d <= 3.0 for d in quick)
    later = [next(delays) for _ in range(5)]
    assert 3.0 <= later[0] <= 5.0 and 7.0 <= later[1] <= 9.0 and all(d <= 11.0 for d in later)


def test_option_lists_from_config():
    from ipam.dhcp.dhcp import IPAMConf, ProvideOption, RequestOption

    ipam = IPAMConf(request=[RequestOption(option="12", skipDefault=True)])
    assert options.requested(ipam) == [12]
    assert options.requested(IPAMConf())[:2] == [1, 3]
    ipam = IPAMConf(
        provide=[
            ProvideOption(option="host-name", value="a"),
            ProvideOption(option="77", fromArg="K"),
        ]
    )
    assert options.provided(ipam, "K=v=w;X") == {"12": b"a".hex(), "77": b"v=w".hex()}
    with pytest.raises(Exception, match="value too long"):
        options.provided(IPAMConf(provide=[ProvideOption(option="12", value="x" * 256)]), "")


def test_plugin_side_never_imports_pyroute2():
    probe = (
        "import sys; sys.path[:0] = [sys.argv[1]]; import ipam.dhcp.dhcp; "
        "print(sorted(m for m in sys.modules if m.startswith(('pyroute2', 'asyncio'))))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe, REPO], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_bad_config_is_a_cni_error(plugin_dir):
    conf = {
        "cniVersion": "1.1.0",
        "name": "n",
        "ipam": {
            "type": "dhcp",
            "request": [{"option": "no-such-option"}],
            "daemonSocketPath": "/nonexistent",
        },
    }
    run = run_plugin(plugin_dir, "dhcp", "ADD", conf, netns="/var/run/netns/x")
    assert failed(run, 7)["msg"] == 'Can not parse option "no-such-option"'
