"""loopback: bring `lo` up in the container's netns (CNI_IFNAME is ignored, as upstream does).

It runs for every pod, so it talks rtnetlink through one kernel session (standard library only)
instead of pyroute2, whose import alone costs more than everything else this plugin does.
"""

from libcni.kernel.session import Session
from libcni.protocol import skel
from libcni.protocol.errors import INTERNAL, CNIError
from libcni.protocol.result import Result

LOOPBACK = "lo"


def _lo(container: Session):
    return container.require(LOOPBACK, "failed to find the loopback interface in the netns")


def _is_loopback(address: str) -> bool:
    ip = address.split("/")[0]
    return ip.startswith("127.") or ip == "::1"


def add(call: skel.Call) -> Result:
    call.load()
    with Session(call.netns) as container:
        link = _lo(container)
        container.set_link(link, "failed to set the loopback interface up", up=True)
        addresses = container.addresses(link)
    for address in addresses:
        if not _is_loopback(address):
            raise CNIError(
                INTERNAL, f'loopback interface found with non-loopback address "{address}"'
            )
    previous = call.prev_result()
    if previous is not None:
        return previous
    result = Result(call.cni_version)
    result.add_interface(LOOPBACK, mac="00:00:00:00:00:00", sandbox=call.netns)
    # Like upstream: the first IPv4 and the first IPv6 address of lo.
    for is_v6 in (False, True):
        first = next((a for a in addresses if (":" in a) == is_v6), None)
        if first:
            result.add_ip(first, interface=0)
    return result


def delete(call: skel.Call) -> None:
    call.load()
    container = Session.existing(call.netns)
    if container is None:
        return  # the netns is gone: nothing left to clean up
    with container:
        link = _lo(container)
        container.set_link(link, "failed to set the loopback interface down", up=False)


def check(call: skel.Call) -> None:
    call.load()
    with Session(call.netns) as container:
        if not _lo(container).up:
            raise CNIError(INTERNAL, "loopback interface is down")


PLUGIN = skel.Plugin("loopback", add=add, delete=delete, check=check)
