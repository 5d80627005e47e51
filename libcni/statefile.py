"""State files (host-local's reservations, tuning's backups): opened without following symlinks.

A plugin runs as root and writes under directories other tools may write to as well; a symlink
planted as `last_reserved_ip.0` or `<id>-<ifname>.json` must not make it overwrite (or read)
the symlink's target. Every open here is O_NOFOLLOW, and what was opened must be a regular file;
anything else, and any other OS error, is a CNIError naming the file.
"""

import os
import stat

from libcni.protocol.errors import INTERNAL, CNIError

# What upstream's code calls a too-long name: one path component over NAME_MAX bytes.
NAME_MAX = 255
# Where a name too long for one component is cut: the kept start, this mark, the digest.
_FITTED_MARK = "~"
_DIGEST_HEX = 32


def fitted_name(stem: str, suffix: str = "") -> str:
    """`stem + suffix` as one path component: unchanged (upstream's name) when it fits in
    NAME_MAX bytes, else the stem's start, `~`, 32 hex digits of sha256(stem) and the suffix,
    exactly NAME_MAX bytes. The spec sets no length limit on container IDs or network names,
    so a plugin that names files after them must not fail with "File name too long"; the
    same input always gives the same name, so DEL finds what ADD wrote. The digest covers the
    whole stem, so two long stems differing only past the cut get different files."""
    whole = stem + suffix
    if len(whole.encode(errors="surrogateescape")) <= NAME_MAX:
        return whole
    import hashlib

    digest = hashlib.sha256(stem.encode(errors="surrogateescape")).hexdigest()[:_DIGEST_HEX]
    tail = _FITTED_MARK + digest + suffix
    room = NAME_MAX - len(tail.encode(errors="surrogateescape"))
    start = stem.encode(errors="surrogateescape")[: max(room, 0)]
    return start.decode(errors="ignore") + tail


def is_fitted(name: str) -> bool:
    """Whether `name` may be fitted_name's digest form (whose parts are not all in the name)."""
    mark = name.rfind(_FITTED_MARK)
    digest = name[mark + 1 : mark + 1 + _DIGEST_HEX]
    return mark >= 0 and len(digest) == _DIGEST_HEX and all(c in "0123456789abcdef" for c in digest)


def _refuse(path: str, why: str) -> CNIError:
    return CNIError(INTERNAL, f"state file {path}: {why}")


def ensure_dir(path: str, mode: int) -> None:
    """`path` and its parents as directories (mode for new ones); an error if one is a file."""
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
    except FileExistsError:
        raise CNIError(INTERNAL, f"state directory {path} exists and is not a directory") from None
    except (OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or str(err)
        raise CNIError(INTERNAL, f"cannot create state directory {path}: {why}") from None


def open_file(path: str, flags: int, mode: int = 0o600) -> int:
    """os.open with O_NOFOLLOW|O_CLOEXEC; the fd of a regular file, or a CNIError. A missing
    file raises FileNotFoundError (and an existing one FileExistsError under O_EXCL) as is."""
    if len(os.path.basename(path).encode(errors="surrogateescape")) > NAME_MAX:
        raise _refuse(path, f"file name longer than {NAME_MAX} bytes")
    try:
        # O_NONBLOCK: a FIFO planted under the name must not hang the plugin in open().
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except (FileNotFoundError, FileExistsError):
        raise
    except OSError as err:
        if err.errno == 40:  # ELOOP: the name is a symlink
            raise _refuse(path, "is a symbolic link; refusing to follow it") from None
        raise _refuse(path, err.strerror or str(err)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refuse(path, "is not a regular file")
    return fd


def read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        fd = open_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read().decode(errors="replace")


def write_text(path: str, text: str, mode: int = 0o600) -> None:
    """Create or truncate `path` (never through a symlink) and write `text`."""
    fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(text.encode())
