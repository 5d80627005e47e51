"""bridge: plug the container into a Linux bridge on the node through a veth pair.

The bridge (default `cni0`) is created if missing; optionally it carries the subnet's gateway
address, the node forwards and masquerades for the containers, and the host port gets hairpin,
isolation, VLANs or a MAC spoof check. Without IPAM the container gets a plain L2 port.
"""

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links, macaddr, sysctl, veth
from libcni.kernel.session import Session
from libcni.netfilter import masquerade as masq
from libcni.protocol import skel
from libcni.protocol.config import MTU, Int32, LinkName, NetConf, Struct, dns_if_set
from libcni.protocol.errors import INTERNAL, CNIError, config_error
from libcni.protocol.result import Result, parse_dns
from libcni.rollback import Rollback
from plugins.bridge import host_bridge as bridging
from plugins.bridge import spoofcheck

MAX_VLAN = 4094


class VlanTrunk(Struct):
    minID: Int32 | None = None
    maxID: Int32 | None = None
    id: Int32 | None = None


class MacArgs(Struct):
    mac: str = ""


class BridgeArgs(Struct):
    cni: MacArgs = None  # type: ignore[assignment]


class RuntimeConfig(Struct):
    mac: str = ""


class BridgeConf(NetConf):
    bridge: LinkName = "cni0"
    isGateway: bool = False
    isDefaultGateway: bool = False
    forceAddress: bool = False
    ipMasq: bool = False
    ipMasqBackend: str = ""
    # Beyond upstream: destinations that keep the pod's source address (a cluster CIDR).
    ipMasqExclude: list[str] | None = None
    mtu: MTU = 0
    hairpinMode: bool = False
    promiscMode: bool = False
    vlan: Int32 = 0
    vlanTrunk: list[VlanTrunk] | None = None
    preserveDefaultVlan: bool = False
    macspoofchk: bool = False
    enabledad: bool = False
    disableContainerInterface: bool = False
    portIsolation: bool = False
    args: BridgeArgs = None  # type: ignore[assignment]
    runtimeConfig: RuntimeConfig = None  # type: ignore[assignment]


def trunk_vlans(trunk: list | None) -> list:
    """The sorted, de-duplicated VLAN ids of `vlanTrunk` (upstream's checks and texts)."""
    vids: set = set()
    for item in trunk or []:
        if item.minID is not None and item.maxID is not None:
            for key, value in (("minID", item.minID), ("maxID", item.maxID)):
                if not 0 < value <= MAX_VLAN:
                    raise config_error(f"incorrect trunk {key} parameter", "use 1-4094")
            if item.maxID < item.minID:
                raise config_error("minID is greater than maxID in trunk parameter")
            vids.update(range(item.minID, item.maxID + 1))
        elif (item.minID is None) != (item.maxID is None):
            missing = "minID" if item.minID is None else "maxID"
            raise config_error(
                f"minID and maxID should be configured simultaneously, {missing} is missing"
            )
        if item.id is not None:
            if not 0 < item.id <= MAX_VLAN:
                raise config_error("incorrect trunk id parameter", "use 1-4094")
            vids.add(item.id)
    return sorted(vids)


def load_conf(call: skel.Call) -> BridgeConf:
    return load_plan(call)[0]


def load_plan(call: skel.Call) -> tuple[BridgeConf, list, str, list]:
    """The checked config, its trunk VLAN ids, the container MAC to set ("" for any) and the
    networks `ipMasqExclude` keeps from masquerading."""
    conf = call.load(BridgeConf)
    if not 0 <= conf.vlan <= MAX_VLAN:
        raise config_error(f"invalid VLAN ID {conf.vlan} (must be between 0 and {MAX_VLAN})")
    trunk = trunk_vlans(conf.vlanTrunk)
    # MAC precedence: CNI_ARGS MAC < args.cni.mac < runtimeConfig.mac.
    mac, source = call.cni_args("MAC").get("MAC", ""), "CNI_ARGS MAC"
    if conf.args is not None and conf.args.cni is not None and conf.args.cni.mac:
        mac, source = conf.args.cni.mac, "args.cni.mac"
    if conf.runtimeConfig is not None and conf.runtimeConfig.mac:
        mac, source = conf.runtimeConfig.mac, "runtimeConfig.mac"
    container_mac = macaddr.parse_mac(mac, source) if mac else ""
    if conf.isDefaultGateway:
        conf.isGateway = True
    if conf.hairpinMode and conf.promiscMode:
        raise config_error("cannot set hairpin mode and promiscuous mode at the same time")
    if ipam.type_of(conf) and conf.disableContainerInterface:
        raise config_error("cannot use IPAM when DisableContainerInterface flag is set")
    masq_exclude = masq.parse_exclude(conf.ipMasqExclude)
    return conf, trunk, container_mac, masq_exclude


def add(call: skel.Call) -> Result:
    conf, trunk, container_mac, masq_exclude = load_plan(call)
    kind = ipam.type_of(conf)
    backend = masq.choose_backend(conf.ipMasqBackend) if conf.ipMasq else ""
    filtering = bool(conf.vlan or conf.vlanTrunk is not None)
    # Unlike upstream, a failed ADD also removes the veth it made, and the bridge if it made it.
    with Session() as host, Session(call.netns) as container, Rollback() as undo:
        bridge = bridging.ensure_bridge(
            host,
            conf.bridge,
            mtu=conf.mtu,
            promisc=conf.promiscMode,
            vlan_filtering=filtering,
            undo=undo,
        )
        host_veth, container_veth = veth.create(
            host, container, call.ifname, mtu=conf.mtu, mac=container_mac
        )
        undo.push(container.delete_link, container_veth)
        result = Result(call.cni_version)
        result.add_interface(bridge.name, bridge.mac)
        result.add_interface(host_veth.name, host_veth.mac)
        result.add_interface(**links.interface_entry(container_veth, container))
        bridging.attach_port(
            host,
            bridge,
            host_veth,
            hairpin=conf.hairpinMode,
            isolated=conf.portIsolation,
            vlan=conf.vlan,
            trunk=trunk,
            preserve_default_vlan=conf.preserveDefaultVlan,
        )
        if conf.macspoofchk:
            spoofcheck.setup(host_veth.name, container_veth.mac, call.container_id, call.ifname)
            undo.push(spoofcheck.teardown, call.container_id, call.ifname)
        if kind:
            allocated = ipam.allocate(call, kind, undo)
            result.ips, result.routes, result.dns = allocated.ips, allocated.routes, allocated.dns
            gateways = bridging.plan_gateways(result, conf.isGateway, conf.isDefaultGateway)
            iface.configure(
                container, container_veth, result, container_sysctls(call.ifname, conf.enabledad)
            )
            if conf.isGateway:
                serve_gateways(host, bridge, conf, gateways, result)
            if conf.ipMasq:
                masq.setup_undoably(undo, backend, conf.name, call, result, masq_exclude)
        elif not conf.disableContainerInterface:
            links.set_up(container, container_veth)
        if not conf.disableContainerInterface:
            bridging.wait_port_up(host, host_veth)
        result.interfaces[1]["mac"] = host.refresh(host_veth).mac
        result.interfaces[0]["mac"] = host.refresh(bridge).mac
    dns = dns_if_set(conf)
    if dns is not None:
        result.dns = parse_dns(dns)
    return result


def container_sysctls(ifname: str, enable_dad: bool) -> list:
    """IPv6 DAD off unless asked for (it delays pod start), gratuitous ARP on."""
    wanted = [("ipv6", "accept_dad", "1" if enable_dad else "0"), ("ipv4", "arp_notify", "1")]
    if enable_dad:
        wanted.insert(0, ("ipv6", "enhanced_dad", "1"))
    return [(sysctl.iface_key(family, ifname, key), value) for family, key, value in wanted]


def serve_gateways(
    host: Session, bridge: links.Link, conf: BridgeConf, gateways: dict, result: Result
) -> None:
    """Gateway addresses on the bridge (or on its `<bridge>.<vlan>` port), forwarding on."""
    for version in (4, 6):
        for gateway, prefixlen in gateways[version]:
            device = bridge
            if conf.vlan:
                device = bridging.ensure_vlan_gateway(
                    host, bridge, conf.vlan, conf.preserveDefaultVlan
                )
                if all(i["name"] != device.name for i in result.interfaces):
                    result.add_interface(device.name, device.mac)
            bridging.ensure_address(host, device, gateway, prefixlen, conf.forceAddress)
        if gateways[version]:
            sysctl.enable_forwarding(version)


def delete(call: skel.Call) -> None:
    conf = load_conf(call)
    addresses = None
    container = Session.existing(call.netns)
    if container is not None:
        with container:
            addresses = veth.delete_collecting_addresses(container, call.ifname)
    ipam.release_then(call, conf, _remove_host_rules, conf, call, addresses)


def _remove_host_rules(conf: BridgeConf, call: skel.Call, addresses) -> None:
    if conf.macspoofchk:
        try:
            spoofcheck.teardown(call.container_id, call.ifname)
        except CNIError as err:
            call.log(f"spoofcheck teardown: {err}")
    if ipam.type_of(conf) and conf.ipMasq:
        masq.teardown_for_del(conf.name, call, addresses)


def check(call: skel.Call) -> None:
    conf = load_conf(call)
    kind = ipam.type_of(conf)
    ipam.check_configured(call, conf)  # upstream calls IPAM CHECK even for L2-only and fails

    def bridge_and_port(previous, link) -> None:
        with Session() as host:
            bridge = bridging.check_bridge(host, previous, conf.bridge, conf.promiscMode)
            bridging.check_host_port(host, previous, bridge, link)

    linkcheck.check_attachment(call, "veth", extra=bridge_and_port, addresses=bool(kind))


def status(call: skel.Call) -> None:
    ipam.forward(call, load_conf(call), "STATUS")


def gc(call: skel.Call) -> None:
    conf = load_conf(call)
    valid = call.valid_attachments()  # malformed: code 7, before anything is deleted
    try:
        masq.gc(conf.name, valid)
    except CNIError as err:
        raise CNIError(INTERNAL, f"GC of masquerade rules failed: {err}") from None
    ipam.forward(call, conf, "GC")


PLUGIN = skel.Plugin("bridge", add=add, delete=delete, check=check, status=status, gc=gc)
