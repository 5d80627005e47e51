"""Reading and writing sysctls of the network namespace the calling thread is in.

/proc/sys/net resolves against the opening thread's netns, so call these inside
`netns.entered(...)` to reach a container's or a test host's settings.
"""

import os

from libcni.protocol.errors import INTERNAL, CNIError


def _path(key: str) -> str:
    # "net.ipv6.conf.eth0.disable_ipv6" -> /proc/sys/net/ipv6/conf/eth0/disable_ipv6.
    # Interface names may contain dots, so callers with such names pass a slash form instead.
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def read(key: str) -> str:
    with open(_path(key)) as f:
        return f.read().strip()


def write(key: str, value: str) -> None:
    fd = os.open(_path(key), os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def ensure(key: str, value: str) -> bool:
    """Write only when different (some keys are read-only in some netns). True if changed."""
    if read(key) == value:
        return False
    write(key, value)
    return True


def iface_key(family: str, ifname: str, name: str) -> str:
    """The path-form key of a per-interface setting, safe for names with dots."""
    return f"net/{family}/conf/{ifname}/{name}"


def enable_forwarding(version: int) -> None:
    """The node must route for its containers: ip_forward / IPv6 forwarding (only if off)."""
    key = "net/ipv4/ip_forward" if version == 4 else "net/ipv6/conf/all/forwarding"
    try:
        ensure(key, "1")
    except OSError as err:
        raise CNIError(INTERNAL, f"failed to enable forwarding: {err.strerror}") from None
