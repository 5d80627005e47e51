"""host-device: hand an existing host interface to the container, and give it back on DEL.

The device is picked by name, MAC, sysfs path, PCI address or the runtime's deviceID, moved
into the container under CNI_IFNAME (its host name kept in the link alias) and, on DEL, moved
back under its old name. Devices bound to a userspace (DPDK) driver are not moved at all.
"""

import glob
import os

from libcni.delegation import ipam
from libcni.kernel import iface, linkcheck, links, macaddr
from libcni.kernel.session import Session
from libcni.protocol import skel
from libcni.protocol.config import LinkName, NetConf, Path, Struct, config_dns
from libcni.protocol.errors import INTERNAL, CNIError, config_error
from libcni.protocol.result import Result
from libcni.rollback import Rollback
from plugins.host_device import move

SYS_BUS_PCI = "/sys/bus/pci/devices"
SYS_BUS_AUXILIARY = "/sys/bus/auxiliary/devices"
# Drivers that hand a NIC to userspace (DPDK): there is no netdev to move.
USERSPACE_DRIVERS = ("vfio-pci", "uio_pci_generic", "igb_uio")


class RuntimeConfig(Struct):
    deviceID: Path = ""


class HostDeviceConf(NetConf):
    device: LinkName = ""
    hwaddr: str = ""
    kernelpath: Path = ""
    pciBusID: Path = ""
    runtimeConfig: RuntimeConfig = None  # type: ignore[assignment]


class Selection:
    """Which device the config means: the decoded config plus what deviceID resolved to."""

    def __init__(self, conf: HostDeviceConf, auxiliary: str, dpdk: bool):
        self.conf = conf
        self.auxiliary = auxiliary
        self.dpdk = dpdk


def load_conf(call: skel.Call, lenient: bool = False) -> Selection:
    """Decode; resolve runtimeConfig.deviceID; detect DPDK. `lenient` (DEL) never fails on sysfs."""
    conf = call.load(HostDeviceConf)
    auxiliary = ""
    device_id = conf.runtimeConfig.deviceID if conf.runtimeConfig is not None else ""
    if device_id:
        if os.path.exists(os.path.join(SYS_BUS_PCI, device_id)):
            conf.pciBusID = device_id
        elif os.path.exists(os.path.join(SYS_BUS_AUXILIARY, device_id)):
            conf.pciBusID, auxiliary = "", device_id
        elif not lenient:
            raise CNIError(
                INTERNAL,
                f"runtime config DeviceID {device_id} not found or unsupported",
                f"neither {SYS_BUS_PCI}/{device_id} nor {SYS_BUS_AUXILIARY}/{device_id} exists",
            )
    if not (conf.device or conf.hwaddr or conf.kernelpath or conf.pciBusID or auxiliary):
        if not lenient:
            raise config_error('specify either "device", "hwaddr", "kernelpath" or "pciBusID"')
    dpdk = False
    if conf.pciBusID:
        try:
            dpdk = has_userspace_driver(conf.pciBusID)
        except OSError as err:
            if not lenient:
                raise CNIError(INTERNAL, f"error with host device: {err}") from None
    return Selection(conf, auxiliary, dpdk)


def has_userspace_driver(pci_address: str) -> bool:
    driver = os.path.realpath(os.path.join(SYS_BUS_PCI, pci_address, "driver"), strict=True)
    return os.path.basename(driver) in USERSPACE_DRIVERS


def first_netdev(directory: str) -> str:
    try:
        names = sorted(os.listdir(directory))
    except OSError as err:
        raise CNIError(
            INTERNAL, f'failed to read directory {directory}: "{err.strerror}"'
        ) from None
    if not names:
        raise CNIError(INTERNAL, f"failed to find network device in path {directory}")
    return names[0]


def host_device_name(selection: Selection, host: Session) -> str:
    """The host-side name of the chosen device, in upstream's order of precedence."""
    conf = selection.conf
    if conf.device:
        return conf.device
    if conf.hwaddr:
        mac = macaddr.parse_mac(conf.hwaddr, 'config "hwaddr"')
        found = links.find_by_mac(host, mac)
        if found is None:
            raise CNIError(INTERNAL, f"failed to find host device: no interface has MAC {mac}")
        return found.name
    if conf.kernelpath:
        if not os.path.isabs(conf.kernelpath) or not conf.kernelpath.startswith("/sys/devices/"):
            raise config_error(
                f'kernel device path "{conf.kernelpath}" must be absolute '
                "and begin with /sys/devices/"
            )
        return first_netdev(os.path.join(conf.kernelpath, "net"))
    if conf.pciBusID:
        directory = os.path.join(SYS_BUS_PCI, conf.pciBusID, "net")
        if not os.path.lexists(directory):
            matches = sorted(glob.glob(os.path.join(SYS_BUS_PCI, conf.pciBusID, "virtio*", "net")))
            if not matches:
                raise CNIError(INTERNAL, f"no net directory under pci device {conf.pciBusID}")
            directory = matches[0]
        return first_netdev(directory)
    return first_netdev(os.path.join(SYS_BUS_AUXILIARY, selection.auxiliary, "net"))


def add(call: skel.Call) -> Result:
    selection = load_conf(call)
    conf = selection.conf
    result = Result(call.cni_version)
    kind = ipam.type_of(conf)
    with Session() as host:
        device = None
        if not selection.dpdk:  # a DPDK device has no netdev: nothing moves
            name = host_device_name(selection, host)
            device = host.require(
                name,
                f'failed to find host device: link "{name}" not found',
                "is it already in use by another container?",
            )
        # The netns must exist even if nothing moves.
        with Session(call.netns) as container, Rollback() as undo:
            if device is None:
                result.add_interface(call.ifname, sandbox=call.netns)
            else:
                move.move_in(host, container, device, call.ifname)
                result.add_interface(**links.interface_entry(device, container))
                undo.push(move.move_out, host, container, device, conf.device)
            if not kind:
                return result
            allocated = ipam.allocate(call, kind, undo)
            result.ips = [dict(ip, interface=0) for ip in allocated.ips]
            result.routes = allocated.routes
            if device is not None:
                iface.configure(container, device, result)
    result.dns = config_dns(conf)
    return result


def delete(call: skel.Call) -> None:
    # Upstream skips the IPAM release when CNI_NETNS is empty and fails when the device is
    # gone; here the addresses are always released and a missing device is already clean.
    selection = load_conf(call, lenient=True)
    ipam.release_then(call, selection.conf, _move_back, call, selection)


def _move_back(call: skel.Call, selection: Selection) -> None:
    if selection.dpdk:
        return
    container = Session.existing(call.netns)
    if container is None:
        return
    with container:
        link = container.link(call.ifname)
        if link is not None:
            with Session() as host:
                move.move_out(host, container, link, selection.conf.device)


def check(call: skel.Call) -> None:
    selection = load_conf(call)
    ipam.check_configured(call, selection.conf)
    # A DPDK device is not a netdev in the container: only the prevResult can be required.
    linkcheck.check_attachment(call, None, container_link=not selection.dpdk)


PLUGIN = ipam.link_plugin("host-device", HostDeviceConf, add=add, check=check, delete=delete)
