"""Which netfilter backend a node uses by default, probed once per boot and network namespace.

Upstream decides on every bridge/ptp/portmap ADD by running `iptables -S` (and `nft --check`
when that fails): an extra exec per call for an answer that only changes when the kernel or the
node's iptables package does. Here the answer is cached in a small file under /run (a tmpfs, so
a reboot empties it), one per network namespace, checked against:
- the boot id (/proc/sys/kernel/random/boot_id): modules loaded, kernel replaced;
- the netns inode: tests and nodes use separate namespaces, a netns without iptables tables
  answers differently;
- the iptables binary found on PATH and its mtime: a node that installs, removes or switches its
  iptables variant probes again.
Anything unreadable or not matching means "probe again"; the file is written atomically (a
temporary name renamed over it) so a concurrent reader sees the old answer or the new one.
`PYCNI_NETFILTER_CACHE` names another directory (tests), "" turns the cache off.
"""

import os

from libcni.netfilter import batch as netfilter

CACHE_ENV = "PYCNI_NETFILTER_CACHE"
DEFAULT_DIR = "/run/pycni"
FILE_PREFIX = "netfilter-backend."
ANSWERS = ("iptables", "nftables")


def default_backend() -> str:
    """Upstream's choice: iptables unless iptables does not work here and nftables does."""
    key = cache_key()
    path = cache_path(key)
    if path:
        cached = _read(path, key)
        if cached:
            return cached
    answer = probe()
    if path:
        _write(path, key, answer)
    return answer


def probe() -> str:
    if not netfilter.iptables_works() and netfilter.nft_works():
        return "nftables"
    return "iptables"


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV, DEFAULT_DIR)


def cache_key() -> dict:
    """What the answer depends on, as strings ({} when any of it cannot be read)."""
    import shutil

    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        netns = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return {}
    binary = shutil.which("iptables", path=netfilter.tool_path()) or ""
    stamp = ""
    if binary:
        try:
            real = os.path.realpath(binary)
            stamp = f"{real}:{os.stat(real).st_mtime_ns}"
        except OSError:
            return {}
    return {"boot": boot, "netns": str(netns), "iptables": stamp or "-"}


def cache_path(key: dict) -> str:
    directory = cache_dir()
    if not key or not directory:
        return ""
    return os.path.join(directory, FILE_PREFIX + key["netns"])


def _line(key: dict, answer: str) -> str:
    return f"{key['boot']} {key['netns']} {key['iptables']} {answer}\n"


def _read(path: str, key: dict) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            text = os.read(fd, 4096).decode()
        finally:
            os.close(fd)
    except (OSError, UnicodeDecodeError):
        return ""
    answer = text.rsplit(" ", 1)[-1].strip()
    if answer in ANSWERS and text == _line(key, answer):
        return answer
    return ""


def _write(path: str, key: dict, answer: str) -> None:
    """Best effort: a read-only or missing /run only costs the next call a probe."""
    directory = os.path.dirname(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, _line(key, answer).encode())
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
