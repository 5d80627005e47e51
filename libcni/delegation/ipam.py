"""Delegated IPAM as main plugins use it: allocate, undo on failure, release, check, status, gc."""

from libcni.delegation.invoke import delegate
from libcni.protocol.errors import INTERNAL, CNIError


def type_of(conf) -> str:
    """The configured IPAM plugin name, "" when the config has no (or an empty) `ipam`."""
    section = getattr(conf, "ipam", None)
    return section.type if section is not None else ""


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
