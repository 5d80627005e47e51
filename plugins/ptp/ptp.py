"""ptp: a veth pair routed through the node, no bridge: pure layer 3.

The container end gets the IPAM address and reaches everything, its own subnet included, via
the gateway address that sits as a /32 (/128) on the host end; the node routes back through a
host route per container address, and optionally masquerades.
"""

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links, sysctl, veth
from libcni.kernel.session import Session
from libcni.netfilter import masquerade as masq
from libcni.protocol import skel
from libcni.protocol.config import MTU, NetConf, dns_if_set
from libcni.protocol.errors import INTERNAL, CNIError, config_error
from libcni.protocol.result import Result, ip_version, parse_dns
from libcni.rollback import Rollback
from plugins.ptp import routing as p2p


class PtpConf(NetConf):
    ipMasq: bool = False
    ipMasqBackend: str = ""
    mtu: MTU = 0


def load_conf(call: skel.Call) -> PtpConf:
    conf = call.load(PtpConf)
    if not ipam.type_of(conf):
        raise config_error(
            'ptp needs an IPAM plugin: "ipam": {"type": ...} is missing',
            "use host-local or static to give the container its address",
        )
    return conf


def add(call: skel.Call) -> Result:
    conf = load_conf(call)
    kind = ipam.type_of(conf)
    backend = masq.choose_backend(conf.ipMasqBackend) if conf.ipMasq else ""
    with Session() as host, Session(call.netns) as container, Rollback() as undo:
        allocated = ipam.allocate(call, kind, undo)
        missing = [ip["address"] for ip in allocated.ips if not ip.get("gateway")]
        if missing:
            raise CNIError(
                INTERNAL,
                f"ptp needs a gateway for every address; IPAM gave none for {', '.join(missing)}",
                'set "gateway" in the IPAM config',
            )
        for version in sorted({ip_version(ip["address"]) for ip in allocated.ips}):
            sysctl.enable_forwarding(version)
        host_veth, container_veth = veth.create(host, container, call.ifname, mtu=conf.mtu)
        undo.push(container.delete_link, container_veth)
        result = Result(call.cni_version, routes=allocated.routes, dns=allocated.dns)
        result.add_interface(host_veth.name, host_veth.mac)
        result.add_interface(**links.interface_entry(container_veth, container))
        result.ips = [dict(ip, interface=1) for ip in allocated.ips]
        iface.configure(container, container_veth, result)
        p2p.route_container(container, container_veth, result.ips)
        p2p.route_host(host, host_veth, result.ips)
        if conf.ipMasq:
            masq.setup_undoably(undo, backend, conf.name, call, result)
    dns = dns_if_set(conf)
    if dns is not None:
        result.dns = parse_dns(dns)
    return result


def delete(call: skel.Call) -> None:
    conf = call.load(PtpConf)
    ipam.release_then(call, conf, _remove_veth_and_rules, conf, call)


def _remove_veth_and_rules(conf: PtpConf, call: skel.Call) -> None:
    addresses = None
    container = Session.existing(call.netns)
    if container is not None:
        with container:
            addresses = veth.delete_collecting_addresses(container, call.ifname)
    if conf.ipMasq:
        masq.teardown_for_del(conf.name, call, addresses)


def check(call: skel.Call) -> None:
    conf = load_conf(call)
    ipam.check(call, ipam.type_of(conf))
    # ptp deletes the connected route on purpose: the subnet is reached via the gateway.
    linkcheck.check_attachment(
        call, "veth", missing="ptp: Required prevResult missing", connected_route=False
    )


def gc(call: skel.Call) -> None:
    conf = call.load(PtpConf)
    masq.gc(conf.name, call.valid_attachments())
    ipam.forward(call, conf, "GC")


PLUGIN = skel.Plugin(
    "ptp", add=add, delete=delete, check=check, status=ipam.forwarding(PtpConf, "STATUS"), gc=gc
)
