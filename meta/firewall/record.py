"""Per-attachment records of the firewall's iptables and firewalld rules.

Those rules are upstream's and carry only an address (`-s 10.1.0.2/32 -j ACCEPT`, a firewalld
zone source), so nothing in the kernel says which network, container and interface they belong
to; changing them would break a Go plugin's DEL of our rules. So ADD writes down, per
(network, container ID, ifname), the addresses it opened and the backend (and zone) it used:
`<dataDir>/<network>/<containerID>_<ifname>.json`, under /run by default so the records go
with the rules on a reboot. A network or file name longer than one path component allows (the
spec sets no length limit on either) is cut and digest-suffixed (statefile.fitted_name), so
any legal attachment has a record and DEL finds it. DEL finds its addresses there when the
prevResult and the netns are gone; GC removes what records of attachments no longer valid name.
"""

import errno
import json
import os

from libcni.statefile import fitted_name

DEFAULT_DIR = "/run/cni/firewall"
SUFFIX = ".json"


def path(data_dir: str, network: str, container_id: str, ifname: str) -> str:
    return os.path.join(data_dir, _folder(network), fitted_name(f"{container_id}_{ifname}", SUFFIX))


def _folder(network: str) -> str:
    return fitted_name(network)


def save(data_dir: str, network: str, container_id: str, ifname: str, record: dict) -> None:
    """Write the record (OSError when it cannot be, also for a dataDir holding a NUL)."""
    if "\0" in data_dir:
        raise OSError(errno.EINVAL, "the dataDir holds a NUL byte")
    record = dict(record, containerID=container_id, ifname=ifname)
    target = path(data_dir, network, container_id, ifname)
    folder, name = os.path.split(target)
    temporary = os.path.join(folder, fitted_name(name, f".tmp{os.getpid()}"))
    for _ in range(5):  # a concurrent DEL may remove the emptied folder under us
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            break
        except FileNotFoundError:
            continue
    else:
        raise FileNotFoundError(temporary)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(temporary, target)


def _read(file_path: str) -> dict | None:
    try:
        with open(file_path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def load(data_dir: str, network: str, container_id: str, ifname: str) -> dict | None:
    return _read(path(data_dir, network, container_id, ifname))


def remove(data_dir: str, network: str, container_id: str, ifname: str) -> None:
    target = path(data_dir, network, container_id, ifname)
    _remove_temporaries(target)
    try:
        os.remove(target)
    except (OSError, ValueError):  # missing, or a dataDir no record could be written under
        return
    try:
        os.rmdir(os.path.dirname(target))  # the network's last record: no empty folder left
    except OSError:
        pass


def _remove_temporaries(target: str) -> None:
    """The half-written records of `target` that an ADD killed mid-write left (save's
    `<name>.tmp<pid>`, fitted like the name): a record never outlives its attachment."""
    folder, name = os.path.split(target)
    try:
        entries = os.listdir(folder)
    except (OSError, ValueError):
        return
    for entry in entries:
        mark = entry.rfind(".tmp")
        if mark > 0 and entry[mark + 4 :].isdigit() and entry == fitted_name(name, entry[mark:]):
            try:
                os.remove(os.path.join(folder, entry))
            except OSError:
                pass


def all_of(data_dir: str, network: str) -> dict:
    """{(containerID, ifname): record} of every attachment of `network` with a record (the
    record names its attachment: both names may hold the `_` of the file name)."""
    folder = os.path.join(data_dir, _folder(network))
    try:
        names = os.listdir(folder)
    except (OSError, ValueError):
        return {}
    found = {}
    for name in names:
        record = _read(os.path.join(folder, name)) if name.endswith(SUFFIX) else None
        if record is not None:
            found[(str(record.get("containerID")), str(record.get("ifname")))] = record
    return found


def addresses_of(record: dict | None) -> list:
    if not record or not isinstance(record.get("addresses"), list):
        return []
    return [a for a in record["addresses"] if isinstance(a, str)]
