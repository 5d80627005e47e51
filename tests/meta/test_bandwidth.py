"""bandwidth chained after a veth the test sets up itself: pod netns `eth0` <-> host netns
`vethbw0` (10.77.1.2 <-> 10.77.1.1), the plugin running in the host netns."""

import os
import subprocess
import sys
import time

import pytest
from conftest import ip_json, ns_exec, run_plugin
from kit.pods import wire_pod
from kit.traffic import RATE_CLIENT as CLIENT
from kit.traffic import RATE_SERVER as SERVER

HOST_VETH = "vethbw0"


def tc_json(netns, *argv):
    import json

    out = ns_exec(netns, "tc", "-j", *argv)
    return json.loads(out) if out.strip() else []


class Veth:
    def __init__(self, make_netns):
        self.host, self.pod = make_netns("bwh"), make_netns("bwp")
        wire_pod(self.pod, self.host, HOST_VETH)
        ns_exec(self.pod, "ip", "addr", "add", "10.77.1.2/24", "dev", "eth0")
        ns_exec(self.host, "ip", "addr", "add", "10.77.1.1/24", "dev", HOST_VETH)
        for netns, name in ((self.pod, "eth0"), (self.host, HOST_VETH)):
            ns_exec(netns, "ip", "link", "set", name, "up")
            ns_exec(netns, "ip", "link", "set", "lo", "up")

    def prev(self):
        return {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": HOST_VETH}, {"name": "eth0", "sandbox": self.pod}],
            "ips": [{"address": "10.77.1.2/24", "interface": 1}],
        }

    def run(self, plugin_dir, command, config, cid="ctr1"):
        return run_plugin(
            plugin_dir,
            "bandwidth",
            command,
            config,
            netns=self.pod,
            container_id=cid,
            in_netns=self.host,
        )

    def qdiscs(self):
        found = tc_json(self.host, "qdisc", "show")
        return [
            (q["kind"], q["dev"], q.get("options", {}).get("rate"))
            for q in found
            if q["kind"] != "noqueue"
        ]

    def ifbs(self):
        return [
            link["ifname"]
            for link in ip_json(self.host, "-d", "link", "show")
            if link.get("linkinfo", {}).get("info_kind") == "ifb"
        ]


@pytest.fixture
def veth(make_netns):
    return Veth(make_netns)


def conf(veth, **limits):
    base = {"cniVersion": "1.0.0", "name": "mynet", "type": "bandwidth", "prevResult": veth.prev()}
    base.update(limits)
    return base


LIMITS = {
    "ingressRate": 8_000_000,
    "ingressBurst": 80_000,
    "egressRate": 8_000_000,
    "egressBurst": 80_000,
}


def test_ingress_and_egress_shaping_objects(plugin_dir, veth):
    config = conf(veth, **LIMITS)
    done = veth.run(plugin_dir, "ADD", config)
    assert done.returncode == 0, done
    ifb = "bwp5145007e2a84"  # upstream's name for mynet + ctr1
    assert done.json["interfaces"][-1]["name"] == ifb
    assert sorted(veth.qdiscs()) == sorted(
        [("tbf", HOST_VETH, 1_000_000), ("ingress", HOST_VETH, None), ("tbf", ifb, 1_000_000)]
    )
    tbf = [q for q in tc_json(veth.host, "qdisc", "show", "dev", ifb) if q["kind"] == "tbf"]
    assert tbf[0]["options"]["burst"] == 10_000 and tbf[0]["options"]["lat"] == 25_000
    detail = ip_json(veth.host, "-d", "link", "show", ifb)[0]
    assert detail.get("txqlen", 0) == 0 and detail["mtu"] == 1500 and "UP" in detail["flags"]
    assert "mirred" in ns_exec(veth.host, "tc", "filter", "show", "dev", HOST_VETH, "ingress")
    assert veth.run(plugin_dir, "CHECK", config).returncode == 0
    for _ in range(2):
        assert veth.run(plugin_dir, "DEL", config).returncode == 0
    assert veth.ifbs() == []


def test_runtime_config_used_only_without_top_level_limits(plugin_dir, veth):
    config = conf(
        veth,
        capabilities={"bandwidth": True},
        runtimeConfig={"bandwidth": {"egressRate": 16_000_000, "egressBurst": 160_000}},
    )
    done = veth.run(plugin_dir, "ADD", config)
    assert done.returncode == 0, done
    assert ("tbf", "bwp5145007e2a84", 2_000_000) in veth.qdiscs()
    assert not any(q[0] == "tbf" and q[1] == HOST_VETH for q in veth.qdiscs())


def test_no_limits_passes_the_result_through(plugin_dir, veth):
    done = veth.run(plugin_dir, "ADD", conf(veth))
    assert done.returncode == 0 and done.json == veth.prev() and veth.qdiscs() == []


def test_no_limits_and_no_prev_result_is_an_error_not_a_crash(plugin_dir, veth):
    config = conf(veth)
    del config["prevResult"]
    done = veth.run(plugin_dir, "ADD", config)
    assert done.returncode == 1 and done.json["msg"] == "must be called as chained plugin"


@pytest.mark.parametrize(
    "limits, message",
    [
        ({"ingressRate": 1000}, "if rate is set, burst must also be set"),
        ({"egressBurst": 1000}, "if burst is set, rate must also be set"),
        ({"ingressRate": 1000, "ingressBurst": 8 * 2**32}, "burst cannot be more than 4GB"),
        ({"ingressRate": -1, "ingressBurst": 1}, "must not be negative"),
    ],
)
def test_bad_limits(plugin_dir, veth, limits, message):
    done = veth.run(plugin_dir, "ADD", conf(veth, **limits))
    assert done.returncode == 1 and done.json["code"] == 7 and message in done.json["msg"]
    assert veth.qdiscs() == [] and veth.ifbs() == []


def test_non_veth_interface_is_refused_cleanly(plugin_dir, veth):
    ns_exec(veth.pod, "ip", "link", "add", "eth1", "link", "eth0", "type", "macvlan")
    config = conf(veth, **LIMITS)
    done = run_plugin(
        plugin_dir, "bandwidth", "ADD", config, netns=veth.pod, ifname="eth1", in_netns=veth.host
    )
    assert done.returncode == 1 and "has no veth peer" in done.json["msg"]
    assert veth.qdiscs() == [] and veth.ifbs() == []


def test_gc_removes_ifbs_of_stale_containers(plugin_dir, veth):
    config = conf(veth, **LIMITS)
    assert veth.run(plugin_dir, "ADD", config).returncode == 0
    gc = {
        "cniVersion": "1.1.0",
        "name": "mynet",
        "type": "bandwidth",
        "cni.dev/valid-attachments": [{"containerID": "other", "ifname": "eth0"}],
    }
    keep = dict(gc, **{"cni.dev/valid-attachments": [{"containerID": "ctr1", "ifname": "eth0"}]})
    assert veth.run(plugin_dir, "GC", keep).returncode == 0
    assert veth.ifbs() == ["bwp5145007e2a84"]
    assert veth.run(plugin_dir, "GC", gc).returncode == 0
    assert veth.ifbs() == []


@pytest.mark.parametrize("adder, deleter", [("go", "ours"), ("ours", "go")])
def test_same_qdiscs_as_go_and_cross_check(plugin_dir, go_bin, veth, adder, deleter):
    dirs = {"go": go_bin, "ours": plugin_dir}
    config = conf(veth, **LIMITS)
    seen = {}
    for name in ("go", "ours"):
        assert veth.run(dirs[name], "ADD", config).returncode == 0
        seen[name] = sorted(veth.qdiscs())
        assert veth.run(dirs[name], "DEL", config).returncode == 0
        ns_exec(veth.host, "tc", "qdisc", "del", "dev", HOST_VETH, "root")
        ns_exec(veth.host, "tc", "qdisc", "del", "dev", HOST_VETH, "ingress")
    assert seen["go"] == seen["ours"]
    assert veth.run(dirs[adder], "ADD", config).returncode == 0
    other = "ours" if adder == "go" else "go"
    assert veth.run(dirs[other], "CHECK", config).returncode == 0
    assert veth.run(dirs[deleter], "DEL", config).returncode == 0
    assert veth.ifbs() == []


def measure(veth, direction: str, seconds: float = 2.0) -> float:
    """TCP goodput in bit/s: "ingress" = host -> pod, "egress" = pod -> host."""
    server_ns, client_ns, listen = (
        (veth.host, veth.pod, "10.77.1.1")
        if direction == "ingress"
        else (veth.pod, veth.host, "10.77.1.2")
    )
    # The server sends for ingress (host -> pod); for egress the pod's client sends.
    mode = "send" if direction == "ingress" else "recv"
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            os.path.basename(server_ns),
            sys.executable,
            "-c",
            SERVER,
            listen,
            mode,
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == "ready"
        target = listen
        out = ns_exec(
            client_ns,
            sys.executable,
            "-c",
            CLIENT,
            target,
            "recv" if mode == "send" else "send",
            str(seconds),
        )
        return float(out.strip())
    finally:
        server.kill()
        server.wait()


def test_measured_throughput_follows_the_limits(frozen_bin, veth):
    # Ingress limits what reaches the pod: a host -> pod stream. Egress: pod -> host.
    rate = 8_000_000
    config = conf(
        veth, ingressRate=rate, ingressBurst=200_000, egressRate=rate, egressBurst=200_000
    )
    assert veth.run(frozen_bin, "ADD", config).returncode == 0
    time.sleep(0.2)
    for direction in ("ingress", "egress"):
        measured = measure(veth, direction)
        assert 0.3 * rate <= measured <= 1.35 * rate, (direction, measured)
