"""ipvlan: share a host interface's MAC, with the container's own IP addresses on top.

The ipvlan link is created directly inside the container netns on top of `master` (by default
the default-route interface, or, when chained, the single interface of the previous result).
Addresses come from IPAM, or from the previous plugin's result when no IPAM is configured.
"""

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links
from libcni.kernel.session import Session
from libcni.protocol import skel
from libcni.protocol.config import MTU, LinkName, NetConf, config_dns
from libcni.protocol.errors import config_error
from libcni.protocol.result import Result

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


def master_name(
    call: skel.Call, conf: IpvlanConf, previous: Result | None, parent_side: Session
) -> str:
    """The configured master; else the chained interface; else the default-route interface."""
    if conf.master:
        return conf.master
    if previous is None:
        return links.default_route_interface(parent_side)
    if len(previous.interfaces) == 1 and previous.interfaces[0].get("name"):
        return previous.interfaces[0]["name"]
    raise config_error(
        "chained master failure. PrevResult lacks a single named interface",
        'set "master", or chain ipvlan after a plugin that reports exactly one interface',
    )


def load_conf(call: skel.Call) -> tuple[IpvlanConf, Result | None]:
    conf = call.load(IpvlanConf)
    mode_of(conf)
    previous = call.prev_result()
    if not ipam.type_of(conf) and (previous is None or not previous.ips):
        raise config_error(
            "ipvlan needs addresses: configure ipam, or chain it after a plugin whose result "
            "has IPs"
        )
    return conf, previous


def resolve_master(
    call: skel.Call, conf: IpvlanConf, previous: Result | None, parent_side: Session
) -> links.Link:
    conf.master = master_name(call, conf, previous, parent_side)
    master = links.require_master(parent_side, conf.master)
    if not 0 <= conf.mtu <= master.mtu:
        raise config_error(f"invalid MTU {conf.mtu}, must be [0, master MTU({master.mtu})]")
    return master


def add(call: skel.Call) -> Result:
    conf, previous = load_conf(call)
    kind = ipam.type_of(conf)
    master_of = lambda parent_side: resolve_master(call, conf, previous, parent_side)  # noqa: E731
    mode = MODES[mode_of(conf)]
    with links.child_link(call, conf, "ipvlan", master_of, {"ipvlan_mode": mode}) as child:
        container, link = child.container, child.link
        # Without IPAM, ipvlan takes the addresses of the plugin before it in the chain.
        result = ipam.allocate(call, kind, child.undo) if kind else previous.copy()  # type: ignore[union-attr]
        result.cni_version = call.cni_version
        result.interfaces = [links.interface_entry(link, container)]
        result.ips = [dict(ip, interface=0) for ip in result.ips]
        iface.configure(container, link, result, links.announce_settings(link.name))
    result.dns = config_dns(conf)
    return result


def check(call: skel.Call) -> None:
    conf = call.load(IpvlanConf)
    mode = mode_of(conf)
    ipam.check_configured(call, conf)

    with links.parent_session(call, conf.linkInContainer) as parent_side:
        if conf.master:  # the prevResult is ours now, so only a configured master can be checked
            links.require_master(parent_side, conf.master)
        names = {number: name for name, number in MODES.items()}
        wrong_mode = f"Container IPVlan mode {{}} does not match expected value: {mode}"
        linkcheck.check_attachment(
            call,
            "ipvlan",
            settings={
                "IFLA_IPVLAN_MODE": (MODES[mode], lambda got: wrong_mode.format(names.get(got)))
            },
            container=links.container_side(parent_side),
        )


# Upstream resolves the master again on DEL (and fails without a default route); the
# link is removed by name, so nothing about the master is needed here.
PLUGIN = ipam.link_plugin("ipvlan", IpvlanConf, add=add, check=check, master=True)
