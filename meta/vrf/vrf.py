"""vrf: chained after a main plugin, put the container interface into a VRF device `vrfname`
inside the container netns (created on first use, with `table` or the first free one), and
remove the VRF when its last interface leaves it. Spec versions from 0.3.1, as upstream.
"""

from libcni.kernel.rules import vrf_table
from libcni.protocol import skel
from libcni.protocol.config import NetConf
from libcni.protocol.errors import CNIError, config_error, internal
from libcni.protocol.names import validate_ifname
from libcni.protocol.result import Result
from libcni.protocol.version import starting_from
from libcni.rollback import Rollback
from meta.vrf import enslave

MAX_TABLE = 2**32 - 1


class VrfConf(NetConf):
    vrfname: str = ""
    table: int = 0


def load_conf(call: skel.Call) -> VrfConf:
    conf = call.load(VrfConf)
    if conf.vrfname == "":
        raise config_error("configuration is expected to have a valid vrf name")
    try:
        validate_ifname(conf.vrfname)
    except CNIError as err:
        raise config_error(f"invalid vrfname {conf.vrfname!r}: {err.msg}") from None
    if not 0 <= conf.table <= MAX_TABLE:  # Go decodes it into a uint32
        raise config_error(
            f"table must be a routing table id from 0 to {MAX_TABLE}, got {conf.table}"
        )
    return conf


def add(call: skel.Call) -> Result:
    conf = load_conf(call)
    previous = call.prev_result()
    if previous is None:
        raise internal("missing prevResult from earlier plugin")
    try:
        with enslave.open_session(call.netns) as container, Rollback() as undo:
            vrf = enslave.find_vrf(container, conf.vrfname)
            if vrf is None:
                vrf = enslave.create_vrf(container, conf.vrfname, conf.table, undo)
            elif conf.table and vrf_table(vrf) != conf.table:
                raise internal(
                    f"VRF {conf.vrfname} already exist with different routing "
                    f"table {vrf_table(vrf)}"
                )
            link = enslave.require_link(container, call.ifname)
            enslave.enslave(container, vrf, link, undo)
    except CNIError as err:
        raise CNIError(err.code, f"cmdAdd failed: {err.msg}", err.details) from None
    return previous


def delete(call: skel.Call) -> None:
    conf = load_conf(call)
    container = enslave.existing_session(call.netns)
    if container is None:
        return  # the VRF went with its netns
    with container:
        vrf = enslave.find_vrf(container, conf.vrfname)
        if vrf is not None:
            enslave.release(container, vrf, container.link(call.ifname))


def check(call: skel.Call) -> None:
    conf = load_conf(call)
    if call.prev_result() is None:
        raise internal("missing prevResult from earlier plugin")
    with enslave.open_session(call.netns) as container:
        vrf = enslave.find_vrf(container, conf.vrfname)
        if vrf is None:
            raise internal(f"VRF {conf.vrfname} not found in {call.netns}")
        names = [link.name for link in enslave.slaves(container, vrf)]
    if call.ifname not in names:
        raise internal(f"failed to find {call.ifname} associated to vrf {conf.vrfname}")


PLUGIN = skel.Plugin(
    "vrf", add=add, delete=delete, check=check, supported_versions=starting_from("0.3.1")
)


def main() -> int:
    return skel.main(PLUGIN)


if __name__ == "__main__":
    raise SystemExit(main())
