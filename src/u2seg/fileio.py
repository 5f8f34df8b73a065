"""Files: writing them so that a reader sees the old content or the new one, never half of either,
and reading inputs that are local paths or fsspec URLs (``s3://``, ``gs://``, ``file://`` …)."""

from __future__ import annotations

import os
import re
import stat
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import U2SegError

__all__ = ["write_bytes_atomic", "is_url", "read_input", "input_signature", "url_filesystem"]

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
FSSPEC_MISSING = "inputs given as URLs need fsspec and its filesystem (e.g. pip install fsspec s3fs)"


def is_url(source: object) -> bool:
    """A URL for fsspec (``protocol://…``), as opposed to a local path."""
    return isinstance(source, str) and _URL.match(source) is not None


def url_filesystem(url: str) -> tuple[Any, str]:
    """fsspec's filesystem for ``url`` and the path within it."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise U2SegError(FSSPEC_MISSING) from None
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise U2SegError(f"{url}: {exc}") from None


def read_input(source: str | Path) -> tuple[bytes, int | None]:
    """The bytes of a local file or URL, and its modification time in ns (None if unknown)."""
    if is_url(source):
        fs, path = url_filesystem(str(source))
        return fs.cat_file(path), _mtime_ns(fs.info(path))
    path = Path(source)
    mtime = path.stat().st_mtime_ns
    return path.read_bytes(), mtime


def input_signature(source: str | Path) -> tuple[int, int | None]:
    """Size and modification time (ns, None if unknown) of a local file or URL, without reading it."""
    if is_url(source):
        fs, path = url_filesystem(str(source))
        info = fs.info(path)
        return int(info["size"]), _mtime_ns(info)
    stat_ = Path(source).stat()
    return stat_.st_size, stat_.st_mtime_ns


def _mtime_ns(info: dict[str, Any]) -> int | None:
    """fsspec's file info names the time differently per filesystem (local: mtime in seconds,
    S3: LastModified, GCS: updated, Azure: last_modified)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return int(value * 1e9)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
            except ValueError:
                continue
    return None


def check_output_folder(path: Path) -> None:
    """Refuse, before any work, an output folder that cannot be one: a file of that name, or a
    file where one of its parents should be a folder. Nothing is created here."""
    if path.exists() and not path.is_dir():
        raise U2SegError(f"{path}: exists and is not a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise U2SegError(f"{path}: {parent} is a file, not a folder")
            return


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
