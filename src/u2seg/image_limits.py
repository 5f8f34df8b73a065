"""Pixel limits, held from what a file's header declares, before any decoder allocates pixels.

Two limits: Pillow's decompression-bomb guard (``2 × Image.MAX_IMAGE_PIXELS``, an
:class:`~u2seg.errors.ImageReadError`, "too many pixels") always, and a caller's ``max_pixels``
when given (a :class:`~u2seg.errors.PixelLimitError`). Sizes come from Pillow's reading of the
header and from our own of the first PNG IHDR / TIFF directory (what libpng and libtiff, hence
OpenCV, use).
"""

from __future__ import annotations

import re
import struct

from PIL import Image

from .errors import ImageReadError, PixelLimitError, one_line

__all__ = [
    "PNG_MAGIC",
    "TIFF_MAGIC",
    "bomb_error",
    "check_limit",
    "declared_size",
    "png_chunks_fit",
]

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_limit(label: str, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse a declared size over ``max_pixels`` (PixelLimitError) or over Pillow's bomb guard."""
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise PixelLimitError(f"{one_line(label)}: image of {width}×{height} = {pixels:,} pixels is over the "
                              f"limit of {max_pixels:,} pixels", input_name=label)
    limit = Image.MAX_IMAGE_PIXELS
    if limit and pixels > 2 * limit:
        raise ImageReadError(f"{one_line(label)}: too many pixels ({pixels} > {2 * limit})")


def bomb_error(label: str, exc: Exception, max_pixels: int | None, data: bytes = b"") -> Exception:
    """Pillow's decompression-bomb refusal as our error (PixelLimitError under a ``max_pixels``)."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    if max_pixels is not None and match:
        pixels = int(match.group(1))
        size = declared_size(data)
        what = f"{size[0]}×{size[1]} = {pixels:,}" if size and size[0] * size[1] == pixels else f"{pixels:,}"
        return PixelLimitError(f"{one_line(label)}: image of {what} pixels is over the limit "
                               f"of {max_pixels:,} pixels", input_name=label)
    return ImageReadError(f"{one_line(label)}: {_bomb_reason(exc)}")


def _bomb_reason(exc: Exception) -> str:
    match = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", str(exc))
    if match:
        return f"too many pixels ({match.group(1)} > {match.group(2)})"
    return f"too many pixels ({one_line(str(exc))})"


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a TIFF's first directory; None when unreadable."""
    try:
        if data.startswith(PNG_MAGIC):
            if data[12:16] != b"IHDR":
                return None
            width, height = struct.unpack(">II", data[16:24])
            return width, height
        if data[:4] in TIFF_MAGIC:
            return _tiff_size(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    if big:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        (offset,) = struct.unpack(order + "Q", data[8:16])
        (count,) = struct.unpack(order + "Q", data[offset:offset + 8])
        start, entry, inline = offset + 8, 20, 12
    else:
        (offset,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[offset:offset + 2])
        start, entry, inline = offset + 2, 12, 8
    sizes: dict[int, int] = {}
    formats = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
    for i in range(min(count, 4096)):
        at = start + i * entry
        tag, kind = struct.unpack(order + "HH", data[at:at + 4])
        if tag in (256, 257) and kind in formats:
            (sizes[tag],) = struct.unpack_from(order + formats[kind], data, at + inline)
    if 256 in sizes and 257 in sizes:
        return sizes[256], sizes[257]
    return None


def png_chunks_fit(data: bytes) -> bool:
    """True when every chunk of a PNG, up to IEND, lies within the file. OpenCV's PNG reader
    allocates (and clears) a chunk's declared length before reading it: a 165-byte file whose
    chunk claims 3 GB cost 3 GB and 13 s. Such files are not handed to it."""
    at = 8
    while at + 12 <= len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        if length > 0x7FFFFFFF or at + 12 + length > len(data):
            return False
        if data[at + 4:at + 8] == b"IEND":
            return True
        at += 12 + length
    return False
