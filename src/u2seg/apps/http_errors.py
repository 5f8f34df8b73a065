"""The service's one error type, and the helpers its messages use."""

from __future__ import annotations

from collections.abc import Mapping

# The service's messages name what failed on one line (the library's helper, under the name used here).
from ..errors import collapse_whitespace as one_line

__all__ = ["ApiError", "human_bytes", "one_line"]


class ApiError(Exception):
    """An error answered as ``{"detail": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
