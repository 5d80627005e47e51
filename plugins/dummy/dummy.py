"""dummy: a dummy interface in the container, carrying the addresses the IPAM plugin gives.

Useful for a stable address that no traffic path depends on. The link is created directly
in the container netns under CNI_IFNAME; IPAM is required. Needs the kernel's dummy module.
"""

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links
from libcni.kernel.session import Session
from libcni.protocol import skel
from libcni.protocol.config import NetConf
from libcni.protocol.errors import INTERNAL, CNIError, config_error
from libcni.protocol.result import Result
from libcni.rollback import Rollback


def ipam_type(conf: NetConf) -> str:
    kind = ipam.type_of(conf)
    if not kind:
        raise config_error(
            "dummy interface requires an IPAM configuration",
            'add an "ipam" section, e.g. {"type": "static", "addresses": [...]}',
        )
    return kind


def add(call: skel.Call) -> Result:
    kind = ipam_type(call.load())
    with Session(call.netns) as container, Rollback() as undo:
        link = links.create_in(container, call.ifname, "dummy")
        undo.push(container.delete_link, link)
        result = ipam.allocate(call, kind, undo)
        result.cni_version = call.cni_version
        result.interfaces = [links.interface_entry(link, container)]
        result.ips = [dict(ip, interface=0) for ip in result.ips]
        iface.configure(container, link, result)
    return result  # routes and dns as the IPAM returned them (upstream ignores config dns)


def check(call: skel.Call) -> None:
    ipam.check(call, ipam_type(call.load()))

    def is_up(previous, link) -> None:
        if not link.up:
            raise CNIError(INTERNAL, f"Interface {call.ifname} is down")

    # Upstream's dummy CHECK compares addresses but not routes.
    linkcheck.check_attachment(
        call, "dummy", missing="dummy: Required prevResult missing", extra=is_up, routes=False
    )


PLUGIN = ipam.link_plugin("dummy", NetConf, add=add, check=check)
