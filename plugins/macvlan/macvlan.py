"""macvlan: give the container its own MAC address on a host interface (the "master").

The macvlan link is created directly inside the container netns on top of `master` (by
default the interface of the host's default route), addressed by the optional IPAM plugin.
"""

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links, macaddr
from libcni.kernel.session import Session
from libcni.protocol import skel
from libcni.protocol.config import MTU, LinkName, NetConf, Struct, Uint32, config_dns
from libcni.protocol.errors import config_error
from libcni.protocol.result import Result

# macvlan modes by config name; "source" goes beyond upstream (it needs a MAC list set later).
MODES = ("bridge", "private", "vepa", "passthru", "source")
UINT32_MAX = 2**32 - 1


class RuntimeConfig(Struct):
    mac: str = ""


class MacvlanConf(NetConf):
    master: LinkName = ""
    mode: str = ""
    mtu: MTU = 0
    mac: str = ""
    linkInContainer: bool = False
    bcqueuelen: Uint32 = 0
    runtimeConfig: RuntimeConfig = None  # type: ignore[assignment]


def mode_of(conf: MacvlanConf) -> str:
    mode = conf.mode or "bridge"
    if mode not in MODES:
        raise config_error(f'unknown macvlan mode: "{conf.mode}"', f"use one of {', '.join(MODES)}")
    return mode


def load_conf(call: skel.Call) -> MacvlanConf:
    """Decode and validate what the config alone can tell."""
    conf = call.load(MacvlanConf)
    mode_of(conf)
    if not 0 <= conf.bcqueuelen <= UINT32_MAX:
        raise config_error(f"invalid bcqueuelen {conf.bcqueuelen}: must be [0, {UINT32_MAX}]")
    return conf


def resolve_master(call: skel.Call, conf: MacvlanConf, parent_side: Session) -> links.Link:
    """The master link (in `parent_side`: the host, or the container with linkInContainer)
    and the MAC, like upstream's loadConf."""
    if not conf.master:
        conf.master = links.default_route_interface(parent_side)
    master = links.require_master(parent_side, conf.master)
    if not 0 <= conf.mtu <= master.mtu:
        raise config_error(f"invalid MTU {conf.mtu}, must be [0, master MTU({master.mtu})]")
    conf.mac = macaddr.requested_mac(call, conf)
    return master


def add(call: skel.Call) -> Result:
    conf = load_conf(call)
    extra: dict = {"macvlan_bc_queue_len": conf.bcqueuelen} if conf.bcqueuelen else {}
    result = Result(call.cni_version)
    settings = {"macvlan_mode": mode_of(conf), **extra}

    def master_of(parent_side: Session) -> links.Link:
        master = resolve_master(call, conf, parent_side)
        settings["mac"] = conf.mac  # settled with the master
        return master

    with links.child_link(call, conf, "macvlan", master_of, settings) as child:
        container, link = child.container, child.link
        result.add_interface(**links.interface_entry(link, container))
        kind = ipam.type_of(conf)
        if kind:
            allocated = ipam.allocate(call, kind, child.undo)
            iface.configure_allocation(
                container, link, result, allocated, links.announce_settings(link.name)
            )
        else:
            links.set_up(container, link)
    result.dns = config_dns(conf)
    return result


def check(call: skel.Call) -> None:
    conf = load_conf(call)
    with links.parent_session(call, conf.linkInContainer) as parent_side:
        resolve_master(call, conf, parent_side)
        ipam.check_configured(call, conf)
        mode = mode_of(conf)
        wrong_mode = f"container macvlan mode {{}} does not match expected value: {mode}"
        linkcheck.check_attachment(
            call,
            "macvlan",
            missing="required prevResult missing",
            settings={"IFLA_MACVLAN_MODE": (mode, wrong_mode.format)},
            container=links.container_side(parent_side),
        )


# Neither the master nor CNI_ARGS are needed to clean up, so neither is looked at.
PLUGIN = ipam.link_plugin("macvlan", MacvlanConf, add=add, check=check, master=True)
