"""Writing files so that a reader sees the old content or the new one, never half of either."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["write_bytes_atomic"]


def write_bytes_atomic(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either the old or the new content.

    Writes a temporary file next to ``path`` (same filesystem, so ``os.replace`` is an
    atomic rename), fsyncs it, then replaces ``path``. On any failure the temporary
    file is removed and an existing ``path`` keeps its bytes. The new file gets the
    permissions of the file it replaces, or the usual ``0o666 & ~umask`` for a new one
    (a bare temporary file would be 0o600). Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _permissions_for(path)
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp", delete=False)
    try:
        with tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())  # data on disk before the rename makes it visible
            if hasattr(os, "fchmod"):
                os.fchmod(tmp.fileno(), mode)
        os.replace(tmp.name, path)
    except BaseException:
        try:
            os.unlink(tmp.name)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _permissions_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_current_umask()


def _current_umask() -> int:
    # /proc avoids os.umask()'s set-and-restore, which races with other threads.
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); best effort, where directories can be opened."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
