"""Leases on disk, so that a restarted daemon renews what it held instead of forgetting it
(upstream keeps leases in memory only). One JSON file per attachment, named by a hash of its
key (so any legal container ID, network and interface name fits), written atomically (temporary
file, fsync, rename), mode 0600 in a 0700 directory. The file holds the attachment and its
leases: `lease` (DHCPv4, as before: an IPv4-only file is byte for byte what it always was) and
`lease6` (DHCPv6); each family's worker saves and drops its own part.
"""

import hashlib
import json
import logging
import os
import threading

DEFAULT_DIR = "/var/lib/cni/dhcp"
VERSION = 1
LOG = logging.getLogger("dhcp.store")


class LeaseStore:
    def __init__(self, directory: str = DEFAULT_DIR):
        self.directory = directory
        self._lock = threading.Lock()  # the two families' workers share a file

    def _path(self, key: str) -> str:
        name = hashlib.sha256(key.encode()).hexdigest()[:40]
        return os.path.join(self.directory, f"{name}.json")

    def _read(self, path: str) -> dict | None:
        try:
            with open(path, "rb") as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def save(self, record: dict) -> None:
        """Write `record`, keeping the other family's lease already in the file."""
        path = self._path(record["key"])
        with self._lock:
            existing = self._read(path)
            if existing is not None and existing.get("key") == record["key"]:
                record = {**existing, **record}
            self._write(path, record)

    def drop(self, key: str, part: str) -> None:
        """Remove one family's lease (`lease` or `lease6`); the file goes with the last one."""
        path = self._path(key)
        with self._lock:
            existing = self._read(path)
            if existing is None or existing.get("key") != key:
                return
            existing.pop(part, None)
            if "lease" in existing or "lease6" in existing:
                self._write(path, existing)
            else:
                os.unlink(path)

    def _write(self, path: str, record: dict) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        data = json.dumps(dict(record, version=VERSION), indent=1).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)

    def remove(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def load_all(self) -> list:
        """Every readable record; a damaged file is logged and left for a person to look at."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        records = []
        for name in names:
            path = os.path.join(self.directory, name)
            if name.endswith(".tmp"):
                os.unlink(path)  # a write the previous daemon did not finish
                continue
            if not name.endswith(".json"):
                continue
            try:
                with open(path, "rb") as f:
                    record = json.load(f)
                if record.get("version") != VERSION or not isinstance(record.get("key"), str):
                    raise ValueError(f"not a version {VERSION} lease record")
            except (OSError, ValueError, AttributeError) as err:
                LOG.warning("ignoring lease file %s: %s", path, err)
                continue
            records.append(record)
        return records
