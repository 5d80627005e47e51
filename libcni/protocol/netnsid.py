"""Whether a CNI_NETNS path names the netns the plugin runs in: part of checking the
environment, so the skeleton asks it here and never reaches into the kernel helpers.
Two nsfs paths name the same namespace when they have the same device and inode."""

import os

CURRENT_NETNS = "/proc/thread-self/ns/net"


def _identity(path: str) -> tuple:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def is_current_netns(path: str) -> bool:
    """True when `path` names the netns this thread is in. A missing path is not."""
    try:
        return _identity(path) == _identity(CURRENT_NETNS)
    except OSError:
        return False
