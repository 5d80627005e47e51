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
