"""tap: a persistent tap device in the container netns, for a VM or userspace stack to open.

The tap is created inside the container netns (optionally owned by a uid/gid, multi-queue, a
port of a bridge that already exists there) and addressed by the optional IPAM plugin.
"""

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links, macaddr
from libcni.kernel.session import Session
from libcni.protocol import skel
from libcni.protocol.config import ID, MTU, LinkName, NetConf, Struct, config_dns
from libcni.protocol.errors import config_error
from libcni.protocol.result import Result
from libcni.rollback import Rollback
from plugins.tap import tapdev

UINT32_MAX = 2**32 - 1


class RuntimeConfig(Struct):
    mac: str = ""


class TapConf(NetConf):
    multiQueue: bool = False
    mtu: MTU = 0
    mac: str = ""
    owner: ID | None = None
    group: ID | None = None
    selinuxContext: str = ""
    bridge: LinkName = ""
    runtimeConfig: RuntimeConfig = None  # type: ignore[assignment]


def load_conf(call: skel.Call) -> TapConf:
    conf = call.load(TapConf)
    for key in ("owner", "group"):
        value = getattr(conf, key)
        if value is not None and not 0 <= value <= UINT32_MAX:
            raise config_error(f"invalid {key} {value}: must be a uid/gid in [0, {UINT32_MAX}]")
    if conf.mtu < 0:
        raise config_error(f"invalid MTU {conf.mtu}: must not be negative")
    conf.mac = macaddr.requested_mac(call, conf)
    return conf


def add(call: skel.Call) -> Result:
    conf = load_conf(call)
    result = Result(call.cni_version)
    kind = ipam.type_of(conf)
    with Session(call.netns) as container, Rollback() as undo:
        # Gratuitous ARP on (upstream's tap does not set ndisc_notify).
        announce = links.announce_settings(call.ifname, ipv6=False) if kind else []
        link = tapdev.create_tap(
            container,
            call.ifname,
            mtu=conf.mtu,
            mac=conf.mac,
            multi_queue=conf.multiQueue,
            owner=conf.owner,
            group=conf.group,
            selinux_context=conf.selinuxContext,
            bridge=conf.bridge,
            settings=announce,
        )
        undo.push(container.delete_link, link)
        result.add_interface(**links.interface_entry(link, container))
        if kind:
            allocated = ipam.allocate(call, kind, undo)
            iface.configure_allocation(container, link, result, allocated)
    result.dns = config_dns(conf)
    return result


def check(call: skel.Call) -> None:
    conf = load_conf(call)
    ipam.check_configured(call, conf)
    linkcheck.check_attachment(call, "tun")


PLUGIN = ipam.link_plugin("tap", TapConf, add=add, check=check)
