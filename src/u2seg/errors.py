"""Exceptions that u2seg raises on purpose: each carries a message meant for the user."""

from __future__ import annotations


class U2SegError(Exception):
    """Base class: the message is one line a user can act on."""


class WeightsError(U2SegError):
    """Weights could not be found, fetched, verified or converted."""


class WeightsUnavailableError(WeightsError):
    """Weights are not cached and could not be fetched (offline, or the source failed)."""


class ChecksumError(WeightsError):
    """A file's sha256 does not match the expected value; the file is never used."""


class FetchError(WeightsError):
    """A download from a source failed (network, HTTP status, pip)."""


class ImageReadError(U2SegError):
    """An input could not be decoded as an image (corrupt, empty, unsupported)."""


class PixelLimitError(U2SegError, ValueError):
    """An image over a pixel limit (``width × height``). Where the file's header tells the size,
    the image is refused before a single pixel is decoded. ``input_name`` is the label the
    message starts with, when it names the input (``load_image``'s ``max_pixels``)."""

    def __init__(self, message: str, *, input_name: str | None = None) -> None:
        super().__init__(message)
        self.input_name = input_name


def one_line(text: str) -> str:
    """Keep error messages on one line: newlines (in odd file names or library messages) are escaped."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def collapse_whitespace(text: object) -> str:
    """A library's message on one line: every run of whitespace (newlines included) becomes one space."""
    return " ".join(str(text).split())


def os_error_line(exc: OSError) -> str:
    """What the filesystem refused, on one line: ``notes.txt/x.png: Not a directory``."""
    if exc.strerror and exc.filename is not None:
        return one_line(f"{exc.filename}: {exc.strerror}")
    return collapse_whitespace(exc) or type(exc).__name__
