"""vlan: an 802.1Q sub-interface of a host interface (the "master"), inside the container.

The vlan link is created directly inside the container netns on top of `master` with the
configured VLAN id, and addressed by the (required) IPAM plugin. Needs the kernel's 8021q.
"""

import errno

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links
from libcni.kernel.session import Session
from libcni.protocol import skel
from libcni.protocol.config import MTU, Int32, LinkName, NetConf, config_dns
from libcni.protocol.errors import INTERNAL, CNIError, config_error
from libcni.protocol.result import Result

MAX_VLAN_ID = 4094


class VlanConf(NetConf):
    master: LinkName = ""
    vlanId: Int32 = 0
    mtu: MTU = 0
    linkInContainer: bool = False


def validate(conf: VlanConf) -> None:
    """What can be judged from the config alone."""
    if not conf.master:
        raise config_error(
            '"master" field is required. It specifies the host interface name to create '
            "the VLAN for"
        )
    if not 0 <= conf.vlanId <= MAX_VLAN_ID:
        # Upstream checks the same range but its message says "4095 inclusive".
        raise config_error(
            f"invalid VLAN ID {conf.vlanId} (must be between 0 and {MAX_VLAN_ID} inclusive)"
        )
    if not ipam.type_of(conf):
        raise config_error(
            "vlan interface requires an IPAM configuration",
            'add an "ipam" section, e.g. {"type": "host-local", ...}',
        )


def resolve_master(conf: VlanConf, parent_side: Session) -> links.Link:
    """The master (host netns, or the container's with linkInContainer), MTU-checked."""
    master = links.require_master(parent_side, conf.master)
    if not 0 <= conf.mtu <= master.mtu:
        raise config_error(f"invalid MTU {conf.mtu}, must be [0, master MTU({master.mtu})]")
    return master


def add(call: skel.Call) -> Result:
    conf = call.load(VlanConf)
    validate(conf)
    in_use = (
        f"VLAN id {conf.vlanId} is already in use on {conf.master}: the kernel allows one vlan "
        "link per (master, id), so two containers cannot share it"
    )
    result = Result(call.cni_version)
    settings = {"vlan_id": conf.vlanId, "explain": {errno.EEXIST: in_use}}
    master_of = lambda parent_side: resolve_master(conf, parent_side)  # noqa: E731
    with links.child_link(call, conf, "vlan", master_of, settings) as child:
        container, link = child.container, child.link
        try:
            allocated = ipam.allocate(call, ipam.type_of(conf), child.undo)
        except CNIError as err:
            raise CNIError(
                err.code, f"failed to execute IPAM delegate: {err.msg}", err.details
            ) from None
        result.interfaces = [links.interface_entry(link, container)]
        result.ips = [dict(ip, interface=0) for ip in allocated.ips]
        result.routes = allocated.routes
        iface.configure(container, link, result)
    result.dns = config_dns(conf)
    return result


def check(call: skel.Call) -> None:
    conf = call.load(VlanConf)
    validate(conf)
    with links.parent_session(call, conf.linkInContainer) as parent_side:
        resolve_master(conf, parent_side)
        ipam.check_configured(call, conf)

        def same_mtu(previous, link) -> None:
            if conf.mtu and conf.mtu != link.mtu:
                raise CNIError(
                    INTERNAL,
                    f"container vlan {call.ifname} has MTU {link.mtu}, config wants {conf.mtu}",
                )

        wrong_id = f"container vlan {call.ifname} has VLAN id {{}}, config wants {conf.vlanId}"
        linkcheck.check_attachment(
            call,
            "vlan",
            missing="vlan: Required prevResult missing",
            settings={"IFLA_VLAN_ID": (conf.vlanId, wrong_id.format)},
            extra=same_mtu,
            container=links.container_side(parent_side),
        )


# Unlike upstream, DEL does not insist that the master still exists: a container must be
# removable after its parent interface went away.
PLUGIN = ipam.link_plugin("vlan", VlanConf, add=add, check=check, master=True)
