"""dummy: a dummy interface in the container, carrying the addresses the IPAM plugin gives.

Useful for a stable address that no traffic path depends on. The link is created directly
in the container netns under CNI_IFNAME; IPAM is required. Needs the kernel's dummy module.
"""

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links
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
    with Rollback() as undo:
        created = links.create_in(call.netns, call.ifname, "dummy")
        undo.push(links.delete, call.netns, call.ifname)
        result = ipam.allocate(call, kind, undo)
        result.cni_version = call.cni_version
        result.interfaces = [created]
        result.ips = [dict(ip, interface=0) for ip in result.ips]
        iface.configure(call.netns, call.ifname, result)
    return result  # routes and dns as the IPAM returned them (upstream ignores config dns)


def delete(call: skel.Call) -> None:
    conf = call.load()
    ipam.release_then(call, conf, links.delete, call.netns, call.ifname)


def check(call: skel.Call) -> None:
    kind = ipam_type(call.load())
    ipam.check(call, kind)
    previous = call.prev_result()
    if previous is None:
        raise CNIError(INTERNAL, "dummy: Required prevResult missing")
    entry = linkcheck.container_interface(previous, call.ifname, call.netns)
    link = linkcheck.check_interface(call.netns, entry, "dummy")
    if not link.up:
        raise CNIError(INTERNAL, f"Interface {call.ifname} is down")
    linkcheck.check_addresses(call.netns, call.ifname, previous)


def status(call: skel.Call) -> None:
    ipam.forward(call, call.load(), "STATUS")


def gc(call: skel.Call) -> None:
    # Links die with their netns; only the IPAM has state to collect.
    ipam.forward(call, call.load(), "GC")


PLUGIN = skel.Plugin("dummy", add=add, delete=delete, check=check, status=status, gc=gc)


def main() -> int:
    return skel.main(PLUGIN)


if __name__ == "__main__":
    raise SystemExit(main())
