"""Leases on disk, so that a restarted daemon renews what it held instead of forgetting it
(upstream keeps leases in memory only). One JSON file per lease, named by a hash of its key,
written atomically (temporary file, fsync, rename), mode 0600 in a 0700 directory.
"""

import hashlib
import json
import logging
import os

DEFAULT_DIR = "/var/lib/cni/dhcp"
VERSION = 1
LOG = logging.getLogger("dhcp.store")


class LeaseStore:
    def __init__(self, directory: str = DEFAULT_DIR):
        self.directory = directory

    def _path(self, key: str) -> str:
        name = hashlib.sha256(key.encode()).hexdigest()[:40]
        return os.path.join(self.directory, f"{name}.json")

    def save(self, record: dict) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = self._path(record["key"])
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
