"""ipvlan: share a host interface's MAC, with the container's own IP addresses on top.

The ipvlan link is created directly inside the container netns on top of `master` (by default
the default-route interface, or, when chained, the single interface of the previous result).
Addresses come from IPAM, or from the previous plugin's result when no IPAM is configured.
"""

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links
from libcni.protocol import skel
from libcni.protocol.config import MTU, LinkName, NetConf, config_dns
from libcni.protocol.errors import config_error
from libcni.protocol.result import Result
from libcni.rollback import Rollback

MODES = {"l2": 0, "l3": 1, "l3s": 2}


class IpvlanConf(NetConf):
    master: LinkName = ""
    mode: str = ""
    mtu: MTU = 0
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
        created = links.create_for(call, "ipvlan", master, conf, ipvlan_mode=MODES[mode_of(conf)])
        undo.push(links.delete, call.netns, call.ifname)
        # Without IPAM, ipvlan takes the addresses of the plugin before it in the chain.
        result = ipam.allocate(call, kind, undo) if kind else previous.copy()  # type: ignore[union-attr]
        result.cni_version = call.cni_version
        result.interfaces = [created]
        result.ips = [dict(ip, interface=0) for ip in result.ips]
        links.notify_neighbours(call.netns, call.ifname)
        iface.configure(call.netns, call.ifname, result)
    result.dns = config_dns(conf)
    return result


def check(call: skel.Call) -> None:
    conf = call.load(IpvlanConf)
    mode = mode_of(conf)
    ipam.check_configured(call, conf)

    if conf.master:  # the prevResult is ours now, so only a configured master can be checked
        links.require_master(call.netns if conf.linkInContainer else None, conf.master)
    names = {number: name for name, number in MODES.items()}
    wrong_mode = f"Container IPVlan mode {{}} does not match expected value: {mode}"
    linkcheck.check_attachment(
        call,
        "ipvlan",
        settings={"IFLA_IPVLAN_MODE": (MODES[mode], lambda got: wrong_mode.format(names.get(got)))},
    )


# Upstream resolves the master again on DEL (and fails without a default route); the
# link is removed by name, so nothing about the master is needed here.
PLUGIN = ipam.link_plugin("ipvlan", IpvlanConf, add=add, check=check, master=True)
