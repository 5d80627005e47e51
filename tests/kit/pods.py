"""A plugin's host and its pods: the "host" netns a plugin runs in (holding the master links)
and the pods it attaches (further namespaces), for the main plugins' tests."""

import os

from kit.netns import ip_json, ns_exec
from kit.plugins import GO_BIN, run_plugin


def link_names(netns: str) -> list:
    """The sorted names of every link in `netns`."""
    return sorted(entry["ifname"] for entry in ip_json(netns, "link", "show"))


def netns_with_veth(make_netns, prefix: str, name: str = "mst0", peer: str = "mst1") -> str:
    """A new netns holding the veth pair `name` (up) and `peer`: a host's master link for
    ipvlan/vlan, or a pod's eth0 for the chained plugins."""
    netns = make_netns(prefix)
    ns_exec(netns, "ip", "link", "add", name, "type", "veth", "peer", peer)
    ns_exec(netns, "ip", "link", "set", name, "up")
    return netns


def run_in_host(plugin_dir, plugin, host, command, config, *, pod="", extra_path="", **kw):
    """Run `plugin` inside `host` for `pod`; CNI_PATH is the plugin directory, then `extra_path`
    (a stand-in IPAM), then Debian's Go plugins (for the IPAM plugins of a Go run)."""
    cni_path = ":".join(p for p in (plugin_dir, extra_path, GO_BIN) if p)
    return run_plugin(
        plugin_dir, plugin, command, config, netns=pod, cni_path=cni_path, in_netns=host, **kw
    )


def wire_pod(pod: str, host: str, host_end: str, pod_end: str = "eth0") -> None:
    """A veth from `pod` (`pod_end`, up) to `host` (`host_end`, left down): the link a main
    plugin would have made, for a chained plugin's test to play with."""
    ns_exec(
        pod,
        "ip",
        "link",
        "add",
        pod_end,
        "type",
        "veth",
        "peer",
        host_end,
        "netns",
        os.path.basename(host),
    )
    ns_exec(pod, "ip", "link", "set", pod_end, "up")


def pings(netns: str, address: str, attempts: int = 1) -> bool:
    """One ping answered, trying up to `attempts` times (a new IPv6 address on the host side
    stays tentative for DAD for about a second)."""
    for _ in range(attempts):
        out = ns_exec(netns, "busybox", "ping", "-c", "1", "-W", "2", address, check=False)
        if " 0% packet loss" in out:
            return True
    return False


def link(netns: str, name: str = "eth0"):
    return next((e for e in ip_json(netns, "-d", "link", "show") if e["ifname"] == name), None)


def addresses(netns: str, name: str = "eth0", family: str = "-4") -> list:
    found = ip_json(netns, family, "addr", "show", "dev", name)
    return [
        f"{a['local']}/{a['prefixlen']}"
        for entry in found
        for a in entry["addr_info"]
        if a.get("scope") != "link"
    ]


class GatewayNode:
    """A host netns (where the plugin runs) holding a veth `device`, whose peer `peer` sits in
    a gateway netns with `<subnet>.1/24`; pods are further netns. With `routed` the host's end
    is up with `<subnet>.254/24` and a default route via the gateway (a macvlan master); without,
    it is left down and unaddressed (a device to hand to a pod). Netns names start with `tag`."""

    def __init__(self, make_netns, tag, device, peer, subnet, *, mac=None, routed=False):
        self.tag = tag
        self.make_netns = make_netns
        self.host = make_netns(f"{tag}h")
        self.gateway = make_netns(f"{tag}g")
        address = ["address", mac] if mac else []
        gw = os.path.basename(self.gateway)
        veth = ["type", "veth", "peer", peer, "netns", gw]
        ns_exec(self.host, "ip", "link", "add", device, *address, *veth)
        if routed:
            ns_exec(self.host, "ip", "link", "set", device, "up")
        ns_exec(self.gateway, "ip", "link", "set", peer, "up")
        ns_exec(self.gateway, "ip", "link", "set", "lo", "up")
        ns_exec(self.gateway, "ip", "addr", "add", f"{subnet}.1/24", "dev", peer)
        if routed:
            ns_exec(self.host, "ip", "addr", "add", f"{subnet}.254/24", "dev", device)
            ns_exec(self.host, "ip", "route", "add", "default", "via", f"{subnet}.1")

    def pod(self):
        return self.make_netns(f"{self.tag}p")


# The DEL contract every interface plugin keeps, checked the same way for each: `run` is the
# module's runner for one node, run(command, config, pod=..., **keywords).


def del_twice_succeeds(run, pod: str, config: dict) -> None:
    """ADD, then DEL twice: both DELs succeed (a runtime retries a DEL it is unsure of)."""
    assert run("ADD", config, pod=pod).returncode == 0
    assert run("DEL", config, pod=pod).returncode == 0
    again = run("DEL", config, pod=pod)
    assert again.returncode == 0, again


def del_releases_ipam_without_netns(run, config: dict, fake_ipam, pod: str = "") -> None:
    """DEL with CNI_NETNS empty or naming a netns that is gone: it succeeds and still releases
    the IPAM address (`config` uses `fake_ipam`)."""
    done = run("DEL", config, pod=pod, **fake_ipam.answering())
    assert done.returncode == 0, done
    assert fake_ipam.calls() == ["DEL"]


def add_then_del(run, pod: str, config: dict, fake_ipam):
    """ADD then DEL of `config` (using `fake_ipam`) in `pod`: both succeed and the IPAM saw
    ADD then DEL. Returns the DEL's run for the plugin's own checks."""
    kw = dict(pod=pod, **fake_ipam.answering())
    assert run("ADD", config, **kw).returncode == 0
    done = run("DEL", config, **kw)
    assert done.returncode == 0, done
    assert fake_ipam.calls() == ["ADD", "DEL"]
    return done


def status_and_gc_forward_to_ipam(run, config: dict, fake_ipam) -> None:
    """STATUS and GC (spec 1.1) succeed and reach the IPAM plugin, in that order."""
    kw = fake_ipam.answering()
    assert run("STATUS", config, **kw).returncode == 0
    assert run("GC", config, **kw).returncode == 0
    assert fake_ipam.calls() == ["STATUS", "GC"]


def add_refused_by_ipam(run, pod: str, config: dict, fake_ipam):
    """ADD whose IPAM (`fake_ipam`) refuses: the plugin fails with the IPAM's code 11. Returns
    the run for the plugin's own checks (what it undid)."""
    done = run("ADD", config, pod=pod, **fake_ipam.refusing("ADD"))
    assert done.returncode == 1, done
    assert done.json["code"] == 11, done
    return done


def add_fails_after_ipam(run, pod: str, config: dict, fake_ipam):
    """ADD whose IPAM answers a route no link can reach: configuring fails and the plugin
    releases the address (the IPAM saw ADD then DEL). Returns the run."""
    from kit.plugins import UNREACHABLE_ROUTE_RESULT

    done = run("ADD", config, pod=pod, **fake_ipam.answering(UNREACHABLE_ROUTE_RESULT))
    assert done.returncode == 1, done
    assert fake_ipam.calls() == ["ADD", "DEL"]
    return done
