"""Delegated IPAM as main plugins use it: allocate, undo on failure, release, check, status, gc."""

from libcni.delegation.invoke import delegate
from libcni.protocol.errors import INTERNAL, CNIError


def type_of(conf) -> str:
    """The configured IPAM plugin name, "" when the config has no (or an empty) `ipam`."""
    section = getattr(conf, "ipam", None)
    return section.type if section is not None else ""


def forwarding(conf_type, command: str, then=None):
    """The STATUS or GC verb of a main plugin whose only node state is its IPAM's (its links
    die with their netns): load the config as `conf_type`, forward `command` to the IPAM,
    then run `then(conf)` if given (a plugin's own STATUS check)."""

    def verb(call) -> None:
        conf = call.load(conf_type)
        forward(call, conf, command)
        if then is not None:
            then(conf)

    return verb


def forward(call, conf, command: str) -> None:
    """STATUS or GC of a main plugin: the configured IPAM (if any) holds the state to report."""
    kind = type_of(conf)
    if kind:
        delegate(call, kind, command)


def add(call, ipam_type: str):
    """IPAM ADD; a result without addresses is an error, as upstream."""
    result = delegate(call, ipam_type, "ADD")
    if not result.ips:
        raise CNIError(INTERNAL, "IPAM plugin returned missing IP config")
    return result


def delete(call, ipam_type: str) -> None:
    delegate(call, ipam_type, "DEL")


def check(call, ipam_type: str) -> None:
    delegate(call, ipam_type, "CHECK")


def check_configured(call, conf) -> None:
    """CHECK of the configured IPAM, if the config has one."""
    kind = type_of(conf)
    if kind:
        check(call, kind)


def allocate(call, ipam_type: str, undo):
    """IPAM ADD inside an ADD's Rollback: the release is pushed as soon as addresses are held."""
    result = add(call, ipam_type)
    undo.push(_release_after_failure, call, ipam_type)
    return result


def _release_after_failure(call, ipam_type: str) -> None:
    try:
        delete(call, ipam_type)
    except CNIError as err:
        call.log(f"rollback: releasing the IPAM allocation failed too: {err}")


def link_plugin(name: str, conf_type, *, add, check, delete=None, master: bool = False):
    """The skel.Plugin of a main plugin that owns one container link and whose only node state
    is its IPAM's (the link dies with its netns): DEL releases and deletes the link (unless
    the plugin brings its own `delete`), STATUS and GC go to the IPAM; with `master`, STATUS
    also requires the configured host master to exist."""
    from libcni.kernel import links
    from libcni.protocol import skel

    then = links.require_configured_master if master else None
    return skel.Plugin(
        name,
        add=add,
        check=check,
        delete=delete or releasing_link(conf_type),
        status=forwarding(conf_type, "STATUS", then=then),
        gc=forwarding(conf_type, "GC"),
    )


def releasing_link(conf_type):
    """The DEL of a main plugin that owns one container link: release the IPAM allocation,
    delete CNI_IFNAME in CNI_NETNS (even when the release failed: the link must go either way),
    then report the release's error. Nothing but the config's `ipam` is needed for that."""

    def delete(call) -> None:
        release_then(call, call.load(conf_type), delete_container_link, call)

    return delete


def delete_container_link(call) -> None:
    """Remove CNI_IFNAME from CNI_NETNS through one session; a gone netns or link is fine."""
    from libcni.kernel import links
    from libcni.kernel.session import Session

    container = Session.existing(call.netns)
    if container is not None:
        with container:
            links.delete(container, call.ifname)


def release_then(call, conf, cleanup, *args) -> None:
    """A main plugin's DEL: release the IPAM allocation (if any), run `cleanup(*args)` even when
    the release failed (the link must go either way), then report the release's error."""
    kind = type_of(conf)
    failure = None
    if kind:
        try:
            delete(call, kind)
        except CNIError as err:
            failure = err
    cleanup(*args)
    if failure is not None:
        raise failure
