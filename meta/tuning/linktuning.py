"""tuning's kernel work: net sysctls inside the container, link attributes, and the backup file
DEL restores them from (upstream's path and JSON layout, so either side's DEL restores what the
other saved).
"""

import contextlib
import json
import os

from libcni.kernel import sysctl
from libcni.kernel.rtnl import IFF_ALLMULTI, IFF_PROMISC, Link
from libcni.kernel.session import Session
from libcni.protocol.errors import INTERNAL, INVALID_NETWORK_CONFIG, CNIError

ALLOWLIST = "/etc/cni/tuning/allowlist.conf"
# What the backup holds, in upstream's field order (Go's struct order).
BACKUP_KEYS = ("mac", "promisc", "mtu", "allmulti", "txQLen")


def sysctl_path(key: str, ifname: str) -> str:
    """/proc/sys path of a net sysctl: dots become slashes, the first IFNAME becomes the
    container's interface; anything that resolves outside /proc/sys/net is refused."""
    relative = key.replace(".", "/").replace("IFNAME", ifname, 1)
    path = os.path.normpath(os.path.join("/proc/sys", relative))
    if not path.startswith("/proc/sys/net/"):
        raise CNIError(
            INVALID_NETWORK_CONFIG,
            f'invalid net sysctl key: "{relative}"',
            "tuning only writes network sysctls (net.*) of the container",
        )
    return path


def check_allowlist(keys, allowlist_path: str = ALLOWLIST) -> None:
    """With an allow-list file, every key must match one of its (unanchored) patterns."""
    import re

    try:
        with open(allowlist_path) as f:
            patterns = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return
    for key in keys:
        if not any(re.search(pattern, key) for pattern in patterns):
            raise CNIError(
                INVALID_NETWORK_CONFIG,
                f"Sysctl {key} is not allowed. Only the following sysctls are allowed: "
                f"[{' '.join(patterns)}]",
                f"the node's {allowlist_path} decides which sysctls pods may set",
            )


def write_sysctls(container: Session, ifname: str, values: dict) -> None:
    paths = {key: sysctl_path(key, ifname) for key in values}
    if not paths:
        return
    with container.inside():
        for key, value in values.items():
            try:
                sysctl.write(paths[key][len("/proc/sys/") :], value)
            except OSError as err:
                raise CNIError(
                    INTERNAL, f"failed to set sysctl {key} to {value!r}: {err.strerror}"
                ) from None


def read_sysctls(container: Session, ifname: str, keys) -> dict:
    paths = {key: sysctl_path(key, ifname) for key in keys}
    if not paths:
        return {}
    with container.inside():
        return {key: _read(path) for key, path in paths.items()}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().rstrip("\n")


# -- link attributes and their backup ------------------------------------------------------


def container_link(container: Session, ifname: str) -> Link:
    return container.require(ifname, f"Cannot find container link {ifname}")


def current(link: Link) -> dict:
    """mac, promisc, mtu, allmulti, txQLen of the container link."""
    return {
        "mac": link.mac,
        "promisc": bool(link.flags & IFF_PROMISC),
        "mtu": link.mtu,
        "allmulti": bool(link.flags & IFF_ALLMULTI),
        "txQLen": link.txqlen,
    }


# BACKUP_KEYS -> the set_link keyword that changes it.
_SETTINGS = {
    "mac": "mac",
    "promisc": "promisc",
    "mtu": "mtu",
    "allmulti": "allmulti",
    "txQLen": "txqlen",
}


def apply(container: Session, link: Link, wanted: dict) -> None:
    """Set the given attributes in upstream's order: mac, promisc, mtu, allmulti, txQLen."""
    for key in BACKUP_KEYS:
        if key in wanted:
            value = wanted[key]
            failure = f"failed to set {key} of {link.name} to {value}"
            container.set_link(link, failure, **{_SETTINGS[key]: value})


def backup_path(data_dir: str, container_id: str, ifname: str) -> str:
    """Upstream's `<containerID>_<ifname>.json`; cut and digest-suffixed when longer than a
    file name may be (the spec sets no length limit on container IDs)."""
    from libcni.statefile import fitted_name

    return os.path.join(data_dir, fitted_name(f"{container_id}_{ifname}", ".json"))


def save_backup(path: str, values: dict, owner: dict | None = None) -> None:
    """The values about to be changed, as upstream writes them (one-space indent, 0600), and
    whose they are (see `owner`). The directory is 0700 (upstream creates it 0600, which only
    root can enter). No symlink is followed and only a regular file is written."""
    from libcni import statefile

    statefile.ensure_dir(os.path.dirname(path), 0o700)
    ordered: dict = {key: values[key] for key in BACKUP_KEYS if key in values}
    if owner is not None:
        ordered[OWNER_KEY] = owner
    statefile.write_text(path, json.dumps(ordered, indent=1))


def load_backup(path: str) -> dict | None:
    """The saved values; None when there is no backup, {} when it is not a JSON object."""
    from libcni import statefile

    text = statefile.read_text(path)  # no symlinks, regular files only
    if text is None:
        return None
    try:
        saved = json.loads(text)
    except ValueError:
        return {}
    return saved if isinstance(saved, dict) else {}


def restore(container: Session, ifname: str, saved: dict) -> None:
    """Put the saved values back on the link, if it is still there (DEL)."""
    link = container.link(ifname)
    if link is None:
        return
    # Upstream's restore order; an MTU of 0 and an empty MAC mean "was not saved".
    for key in ("mtu", "mac", "promisc", "allmulti", "txQLen"):
        value = saved.get(key)
        if value is not None and not (key in ("mtu", "mac") and not value):
            apply(container, link, {key: value})


def remove_backup(path: str) -> None:
    _remove(path)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


# -- which attachment a backup belongs to (for GC) ----------------------------------------
#
# A backup's name holds the container ID and ifname (both may contain the `_` that joins them)
# but not the network, and one dataDir serves every network on the node. Beyond upstream, the
# backup also says whose it is, under a key upstream's decoder ignores (so either side's DEL
# still restores and removes it), and GC of one network removes the backups of its stale
# attachments only. Backups without it (made by the Go plugin) are left to their DEL.

OWNER_KEY = "owner"


def owner(network: str, container_id: str, ifname: str) -> dict:
    return {"network": network, "containerID": container_id, "ifname": ifname}


def collect(data_dir: str, network: str, valid: list) -> None:
    """Remove this network's backups of attachments not in `valid` [(containerID, ifname)]."""
    try:
        names = os.listdir(data_dir)
    except OSError:
        return
    keep = {(cid, ifname) for cid, ifname in valid}
    for name in names:
        path = os.path.join(data_dir, name)
        if not name.endswith(".json") or not os.path.isfile(path):
            continue
        try:
            with open(path) as f:
                who = json.load(f).get(OWNER_KEY)
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(who, dict) or who.get("network") != network:
            continue
        if (who.get("containerID"), who.get("ifname")) not in keep:
            _remove(path)
