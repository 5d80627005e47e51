"""ipvlan: share a host interface's MAC, with the container's own IP addresses on top.

The ipvlan link is created directly inside the container netns on top of `master` (by default
the default-route interface, or, when chained, the single interface of the previous result).
Addresses come from IPAM, or from the previous plugin's result when no IPAM is configured.
"""


from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links
from libcni.protocol import skel
from libcni.protocol.config import NetConf
from libcni.protocol.errors import INTERNAL, CNIError, config_error
from libcni.protocol.result import Result, parse_dns
from libcni.rollback import Rollback

MODES = {"l2": 0, "l3": 1, "l3s": 2}


class IpvlanConf(NetConf):
    master: str = ""
    mode: str = ""
    mtu: int = 0
    linkInContainer: bool = False


def mode_of(conf: IpvlanConf) -> str:
    mode = conf.mode or "l2"
    if mode not in MODES:
        raise config_error(f'unknown ipvlan mode: "{conf.mode}"', "use one of l2, l3, l3s")
    return mode


def master_name(call: skel.Call, conf: IpvlanConf, previous: Result | None) -> str:
    """The configured master; else the chained interface; else the default-route interface."""
    if conf.master:
        return conf.master
    if previous is None:
        return links.default_route_interface(call.netns if conf.linkInContainer else None)
    if len(previous.interfaces) == 1 and previous.interfaces[0].get("name"):
        return previous.interfaces[0]["name"]
    raise config_error(
        "chained master failure. PrevResult lacks a single named interface",
        'set "master", or chain ipvlan after a plugin that reports exactly one interface',
    )


def load_conf(call: skel.Call) -> tuple[IpvlanConf, links.Link, Result | None]:
    conf = call.load(IpvlanConf)
    mode_of(conf)
    previous = call.prev_result()
    if not ipam.type_of(conf) and (previous is None or not previous.ips):
        raise config_error(
            "ipvlan needs addresses: configure ipam, or chain it after a plugin whose result "
            "has IPs"
        )
    conf.master = master_name(call, conf, previous)
    master = links.require_master(call.netns if conf.linkInContainer else None, conf.master)
    if not 0 <= conf.mtu <= master.mtu:
        raise config_error(f"invalid MTU {conf.mtu}, must be [0, master MTU({master.mtu})]")
    return conf, master, previous


def add(call: skel.Call) -> Result:
    conf, master, previous = load_conf(call)
    kind = ipam.type_of(conf)
    with Rollback() as undo:
        created = links.create_child(
            "ipvlan",
            call.netns,
            call.ifname,
            master,
            master_in_container=conf.linkInContainer,
            mtu=conf.mtu,
            ipvlan_mode=MODES[mode_of(conf)],
        )
        undo.push(links.delete, call.netns, call.ifname)
        # Without IPAM, ipvlan takes the addresses of the plugin before it in the chain.
        result = ipam.allocate(call, kind, undo) if kind else previous.copy()  # type: ignore[union-attr]
        result.cni_version = call.cni_version
        result.interfaces = [created]
        result.ips = [dict(ip, interface=0) for ip in result.ips]
        links.notify_neighbours(call.netns, call.ifname)
        iface.configure(call.netns, call.ifname, result)
    # The config's dns replaces the IPAM's, even when empty (upstream does the same).
    result.dns = parse_dns(vars(conf.dns)) if conf.dns is not None else {}
    return result


def delete(call: skel.Call) -> None:
    # Upstream resolves the master again on DEL (and fails without a default route); the
    # link is removed by name, so nothing about the master is needed here.
    conf = call.load(IpvlanConf)
    ipam.release_then(call, conf, links.delete, call.netns, call.ifname)


def check(call: skel.Call) -> None:
    conf = call.load(IpvlanConf)
    mode = mode_of(conf)
    if ipam.type_of(conf):
        ipam.check(call, ipam.type_of(conf))
    previous = call.prev_result()
    if previous is None:
        raise CNIError(INTERNAL, "Required prevResult missing")
    entry = linkcheck.container_interface(previous, call.ifname, call.netns)
    if conf.master:  # the prevResult is ours now, so only a configured master can be checked
        links.require_master(call.netns if conf.linkInContainer else None, conf.master)
    linkcheck.check_interface(call.netns, entry, "ipvlan")
    names = {number: name for name, number in MODES.items()}
    actual = names.get(links.kind_data(call.netns, call.ifname).get("IFLA_IPVLAN_MODE", -1))
    if actual != mode:
        raise CNIError(
            INTERNAL, f"Container IPVlan mode {actual} does not match expected value: {mode}"
        )
    linkcheck.check_addresses(call.netns, call.ifname, previous)
    linkcheck.check_routes(call.netns, previous.routes)


def status(call: skel.Call) -> None:
    conf = call.load(IpvlanConf)
    ipam.forward(call, conf, "STATUS")
    links.require_master_for_status(conf.master, conf.linkInContainer)


def gc(call: skel.Call) -> None:
    # Links die with their netns; only the IPAM has state to collect.
    ipam.forward(call, call.load(IpvlanConf), "GC")


PLUGIN = skel.Plugin("ipvlan", add=add, delete=delete, check=check, status=status, gc=gc)


def main() -> int:
    return skel.main(PLUGIN)


if __name__ == "__main__":
    raise SystemExit(main())
