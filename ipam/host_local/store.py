"""host-local's on-disk reservation store, byte-compatible with upstream's.

    <dataDir>/<network>/<ip>                   "<containerID>\\r\\n<ifname>" (no newline), mode 0600
    <dataDir>/<network>/last_reserved_ip.<N>   the last address reserved for range set N
    <dataDir>/<network>/lock                   empty; flock(LOCK_EX) serialises every writer

A node can switch between upstream's binary and ours with pods running: both read and write
exactly these files under the same lock.
"""

import fcntl
import ipaddress
import os

from libcni import statefile
from libcni.protocol.errors import INTERNAL, INVALID_NETWORK_CONFIG, CNIError

LINE_BREAK = "\r\n"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LOCK_NAME = "lock"


def _ip_of(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class Store:
    def __init__(self, data_dir: str, network: str):
        if not network or "/" in network or network in (".", ".."):
            raise CNIError(
                INVALID_NETWORK_CONFIG,
                f'invalid network name "{network}" for a host-local data directory',
            )
        # One folder per network; a name too long for a file name is cut and digest-suffixed.
        self.dir = os.path.join(data_dir, statefile.fitted_name(network))
        self._lock_fd = -1  # the open lock file while the store is entered

    # -- locking -------------------------------------------------------------------------

    def __enter__(self):
        statefile.ensure_dir(self.dir, 0o755)
        try:
            self._lock_fd = statefile.open_file(
                os.path.join(self.dir, LOCK_NAME), os.O_RDONLY | os.O_CREAT, 0o750
            )
        except OSError as err:
            raise CNIError(
                INTERNAL, f"host-local: cannot open the store in {self.dir}: {err.strerror}"
            ) from None
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
        self._lock_fd = -1

    # -- reading -------------------------------------------------------------------------

    def _path(self, ip) -> str:
        return os.path.join(self.dir, str(ip))

    def _last_reserved_path(self, range_index: int) -> str:
        return os.path.join(self.dir, f"{LAST_RESERVED_PREFIX}{range_index}")

    def last_reserved(self, range_index: int):
        try:
            text = statefile.read_text(self._last_reserved_path(range_index))
        except CNIError:
            return None  # not a regular file: ignored here, refused when written
        return _ip_of(text.strip()) if text is not None else None

    def reservations(self) -> dict:
        """{ip: (container_id, ifname or None)} for every address file (None: legacy id-only)."""
        found: dict = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return found
        for name in names:
            ip = _ip_of(name)
            if ip is None:
                continue
            try:
                content = statefile.read_text(os.path.join(self.dir, name))
            except (CNIError, OSError):
                content = None
            if content is None:
                continue
            content = content.strip()
            if LINE_BREAK in content:
                container_id, ifname = content.split(LINE_BREAK, 1)
                found[ip] = (container_id.strip(), ifname.strip())
            else:
                found[ip] = (content, None)
        return found

    def find(self, container_id: str, ifname: str) -> list:
        """Addresses held by (container_id, ifname); legacy id-only files when none match."""
        held = self.reservations()
        exact = [ip for ip, owner in held.items() if owner == (container_id, ifname)]
        if exact:
            return exact
        return [ip for ip, owner in held.items() if owner == (container_id, None)]

    # -- writing -------------------------------------------------------------------------

    def reserve(self, ip, container_id: str, ifname: str, range_index: int) -> bool:
        """Claim `ip` (exclusive create); False when someone holds it already."""
        path = self._path(ip)
        try:
            fd = statefile.open_file(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, f"{container_id.strip()}{LINE_BREAK}{ifname}".encode())
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        try:
            statefile.write_text(self._last_reserved_path(range_index), str(ip))
        except CNIError:
            os.unlink(path)
            raise
        return True

    def release(self, ip) -> None:
        try:
            os.unlink(self._path(ip))
        except FileNotFoundError:
            pass

    def release_owner(self, container_id: str, ifname: str) -> list:
        """Remove every reservation of (container_id, ifname), or its legacy id-only files."""
        released = self.find(container_id, ifname)
        for ip in released:
            self.release(ip)
        return released
