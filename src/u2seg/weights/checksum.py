"""Checksums of weight files: every fetch checks one before a file is moved into place."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["expected_sha256", "sha256_file"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of the file at ``path``, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def expected_sha256(value: str, what: str) -> str:
    """``value`` as a lower-case sha256; a malformed one is a caller's bug (``ValueError``)."""
    sha = value.strip().lower()
    if not _HEX64.fullmatch(sha):
        # A caller bug, not a user-facing failure: the registry entry itself is wrong.
        raise ValueError(f"{what} must be 64 hex characters, got {value!r}")
    return sha
