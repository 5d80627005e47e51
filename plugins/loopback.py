"""loopback: bring `lo` up in the container's netns (CNI_IFNAME is ignored, as upstream does)."""

import ipaddress

from libcni import netlink, netns, skel
from libcni.errors import INTERNAL, CNIError
from libcni.result import Result

LOOPBACK = "lo"


def _lo_index(ipr) -> int:
    index = netlink.link_index(ipr, LOOPBACK)
    if index is None:
        raise CNIError(INTERNAL, "failed to find the loopback interface in the netns")
    return index


def add(call: skel.Call) -> Result:
    call.load()
    with netlink.session(call.netns) as ipr:
        index = _lo_index(ipr)
        netlink.set_link_state(ipr, index, up=True)
        addresses = netlink.link_addresses(ipr, index)
    for address in addresses:
        if not ipaddress.ip_interface(address).ip.is_loopback:
            raise CNIError(
                INTERNAL, f'loopback interface found with non-loopback address "{address}"'
            )
    previous = call.prev_result()
    if previous is not None:
        return previous
    result = Result(call.cni_version)
    result.add_interface(LOOPBACK, mac="00:00:00:00:00:00", sandbox=call.netns)
    # Like upstream: the first IPv4 and the first IPv6 address of lo.
    for version in (4, 6):
        first = next((a for a in addresses if ipaddress.ip_interface(a).version == version), None)
        if first:
            result.add_ip(first, interface=0)
    return result


def delete(call: skel.Call) -> None:
    call.load()
    if not netns.exists(call.netns):
        return  # nothing left to clean up
    try:
        with netlink.session(call.netns) as ipr:
            netlink.set_link_state(ipr, _lo_index(ipr), up=False)
    except netns.NetnsMissing:
        return


def check(call: skel.Call) -> None:
    call.load()
    with netlink.session(call.netns) as ipr:
        if not netlink.link_is_up(ipr, _lo_index(ipr)):
            raise CNIError(INTERNAL, "loopback interface is down")


PLUGIN = skel.Plugin("loopback", add=add, delete=delete, check=check)


def main() -> int:
    return skel.main(PLUGIN)


if __name__ == "__main__":
    raise SystemExit(main())
