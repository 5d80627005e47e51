"""Validation of the names CNI passes around: container IDs, network names, interface names.

Written without `re`-heavy helpers on purpose; these run on every call.
"""

from libcni.protocol.errors import (
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    UNKNOWN_CONTAINER,
    CNIError,
)

_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_REST = _FIRST | frozenset("_.-")

MAX_IFNAME_LEN = 15


def is_valid_name(name: str) -> bool:
    """`^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$`, the spec's rule for IDs and network names."""
    return bool(name) and name[0] in _FIRST and all(c in _REST for c in name)


def validate_container_id(container_id: str) -> None:
    if container_id == "":
        raise CNIError(UNKNOWN_CONTAINER, "missing containerID")
    if not is_valid_name(container_id):
        raise CNIError(INVALID_ENVIRONMENT, "invalid characters in containerID", container_id)


def validate_network_name(name: str) -> None:
    if name == "":
        raise CNIError(INVALID_NETWORK_CONFIG, "missing network name")
    if not is_valid_name(name):
        raise CNIError(INVALID_NETWORK_CONFIG, "invalid characters found in network name", name)


def validate_ifname(ifname: str) -> None:
    if len(ifname) == 0:
        raise CNIError(INVALID_ENVIRONMENT, "interface name is empty")
    if len(ifname.encode()) > MAX_IFNAME_LEN:
        raise CNIError(
            INVALID_ENVIRONMENT,
            "interface name is too long",
            f"interface name should be less than {MAX_IFNAME_LEN + 1} characters",
        )
    if ifname in (".", ".."):
        raise CNIError(INVALID_ENVIRONMENT, "interface name is . or ..")
    if any(c in "/:" or c.isspace() for c in ifname):
        raise CNIError(
            INVALID_ENVIRONMENT, "interface name contains / or : or whitespace characters"
        )


# -- names derived from hashes (upstream's utils.FormatChainName and friends) --------------


def sha512_hex(text: str) -> str:
    import hashlib

    return hashlib.sha512(text.encode()).hexdigest()


def hashed_name(prefix: str, network: str, container_id: str, length: int = 28) -> str:
    """`prefix` + sha512(network + containerID), cut to `length` (iptables chains: 28,
    bandwidth's ifb: 15). Network and ID are concatenated with no separator, as upstream."""
    return (prefix + sha512_hex(network + container_id))[:length]
