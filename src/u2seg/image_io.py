"""Read images from whatever a user hands us; write results atomically.

``load_image`` accepts a path, raw bytes, a binary stream, a PIL image or a NumPy
array and always returns a fully decoded PIL image in mode ``"RGB"`` or ``"RGBA"``,
upright (EXIF orientation applied), 8 bits per channel. Anything that cannot be
decoded becomes an :class:`~u2seg.errors.ImageReadError` whose message is one line:
``"<name>: <reason>"``.

``save_image`` / ``write_bytes_atomic`` write through a temporary file in the target
folder and ``os.replace`` it into place, so readers never see a half-written file and
a failed write never clobbers an existing one.

Bit-depth rules (the same whichever decoder produced the pixels):

* 16-bit samples (``I;16*`` modes, 16-bit RGB/RGBA, ``uint16`` arrays) map to 8 bits
  by ``round(v / 257)``, which sends 0 -> 0 and 65535 -> 255 exactly.
* Pillow mode ``"I"`` (32-bit signed) is treated as 16-bit data clipped to 0..65535:
  in practice it holds promoted 16-bit files (older Pillow opened 16-bit PNGs as
  ``"I"``); scaling by the full 32-bit range would turn every real image black.
* Float pixels decoded from a file (mode ``"F"``, float TIFFs read by OpenCV) have no
  agreed range: if the largest finite value is <= 1 they are read as 0..1, otherwise
  as 0..255; either way clipped and rounded. Float *NumPy arrays* passed by a caller
  are always read as 0..1 (the documented contract), so a value like 1.0001 from
  resampling is clipped, not taken as a hint that the whole array is 0..255.
* NaN becomes 0.

Pixel limits: an image over the limit is refused from its header, before any pixel is
decoded (whichever decoder would run): Pillow's ``2 × Image.MAX_IMAGE_PIXELS`` guard
always (an ``ImageReadError``, "too many pixels"), and ``load_image``'s ``max_pixels`` when
given (a :class:`~u2seg.errors.PixelLimitError`). A file whose size cannot be read from its
header is never handed to OpenCV.

Colour profiles: an embedded ICC profile for RGB data is kept on the decoded image as
``info["icc_profile"]`` (the very bytes of the file) and ``encode_image`` embeds it in the
PNG / WebP it writes, so photo tools show the same colours. Profiles of another colour
space (CMYK, grey, Lab: the pixels were converted to RGB without them) are dropped.
"""

from __future__ import annotations

import io
import os
import re
import struct
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, PixelLimitError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "carry_icc_profile",
    "icc_colour_space",
    "load_image",
]

#: Lower-case suffixes (with the dot) treated as images when scanning folders.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp"}
)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray]

# Modes whose pixels carry an alpha channel (premultiplied "La"/"RGBa" included).
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
# 16-bit (and promoted 32-bit) grayscale: Pillow's own convert("L") clips these at 255
# instead of scaling, so they go through NumPy.
_WIDE_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# --------------------------------------------------------------------------- loading


def load_image(source: ImageSource, *, name: str | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode ``source`` into an upright, fully loaded ``"RGB"`` or ``"RGBA"`` image.

    ``source`` may be a path (``str`` / ``os.PathLike``), the encoded file as
    ``bytes``, a binary file object, a PIL image, or a NumPy array (HxW, HxWx1, HxWx3
    or HxWx4 in RGB(A) channel order; ``uint8``, ``uint16``, ``bool`` or float in
    [0, 1]). ``bytes`` are always file *contents*, never a path.

    The result is ``"RGBA"`` only when the input has transparency: an alpha channel
    (RGBA, LA, PA) or a ``transparency`` entry (palette / colour-key images).
    Multi-frame files yield their first frame. ``name`` replaces the label used in
    error messages (default: the path, ``"<bytes>"``, the stream's name, ...).

    ``max_pixels`` refuses images of more pixels (width × height); for encoded input
    the size comes from the header, so nothing is decoded (or allocated) for them.

    An embedded ICC profile of RGB data is kept as ``info["icc_profile"]`` (the module
    docstring says which are dropped).

    Raises:
        ImageReadError: empty, missing, unreadable, undecodable, truncated or too
            large (Pillow's ``MAX_IMAGE_PIXELS`` guard) input.
        PixelLimitError: more than ``max_pixels`` pixels (one line, naming the input).
        TypeError: ``source`` is of a type this function does not read.
    """
    if isinstance(source, Image.Image):
        return _from_pil(source, name or "<image>", max_pixels)
    if isinstance(source, np.ndarray):
        label = name or "<array>"
        if source.ndim >= 2:
            _check_limit(label, int(source.shape[1]), int(source.shape[0]), max_pixels)
        return _from_array(source, label)
    label, data, from_path = _read_source(source, name)
    if not data:
        raise ImageReadError(f"{_one_line(label)}: {'empty file' if from_path else 'empty input'}")
    return _decode(data, label, max_pixels)


def _check_limit(label: str, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse a declared size over ``max_pixels`` (PixelLimitError) or over Pillow's bomb guard."""
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise PixelLimitError(f"{_one_line(label)}: image of {width}×{height} = {pixels:,} pixels is over the "
                              f"limit of {max_pixels:,} pixels", input_name=label)
    limit = Image.MAX_IMAGE_PIXELS
    if limit and pixels > 2 * limit:
        raise ImageReadError(f"{_one_line(label)}: too many pixels ({pixels} > {2 * limit})")


def _read_source(source: object, name: str | None) -> tuple[str, bytes, bool]:
    """Return (label, encoded bytes, came-from-a-path) for path / bytes / stream sources."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return name or "<bytes>", bytes(source), False
    if isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(os.fspath(source))
        label = name or path
        try:
            # Whole file into memory: one code path for every decoder (the OpenCV
            # fallback needs a buffer anyway) and the file is closed at once.
            return label, Path(path).read_bytes(), True
        except FileNotFoundError:
            raise ImageReadError(f"{_one_line(label)}: no such file") from None
        except IsADirectoryError:
            raise ImageReadError(f"{_one_line(label)}: is a directory, not an image file") from None
        except PermissionError:
            # Windows reports a directory as PermissionError.
            reason = "is a directory, not an image file" if os.path.isdir(path) else "permission denied"
            raise ImageReadError(f"{_one_line(label)}: {reason}") from None
        except OSError as exc:
            reason = _one_line(exc.strerror or str(exc))
            raise ImageReadError(f"{_one_line(label)}: cannot read file ({reason})") from exc
    read = getattr(source, "read", None)
    if callable(read):
        stream_name = getattr(source, "name", None)  # sys.stdin.buffer.name == "<stdin>"
        label = name or (stream_name if isinstance(stream_name, str) else "<stream>")
        try:
            data = read()
        except OSError as exc:
            raise ImageReadError(f"{_one_line(label)}: cannot read stream ({_one_line(str(exc))})") from exc
        if isinstance(data, str):
            raise TypeError(f"{label}: stream is in text mode; open it in binary mode ('rb')")
        return label, bytes(data or b""), False
    raise TypeError(
        f"load_image() cannot read a {type(source).__name__}; pass a path, bytes, "
        "a binary file object, a PIL image or a NumPy array"
    )


def _decode(data: bytes, label: str, max_pixels: int | None = None) -> Image.Image:
    """Decode encoded bytes with Pillow, using OpenCV where Pillow is lossy or unable.
    The declared size is checked against the limits before either decoder runs."""
    cv_pixels: np.ndarray | None = None
    orientation = 1
    im: Image.Image | None = None
    try:
        im = Image.open(io.BytesIO(data))
        _check_limit(label, im.width, im.height, max_pixels)  # the header only: nothing decoded yet
        if _is_16bit_colour(im):
            # Pillow reduces 16-bit colour to 8 bits by dropping the low byte
            # (truncation); decode with OpenCV instead so colour gets the same
            # round(v / 257) as 16-bit grayscale. OpenCV's IMREAD_UNCHANGED ignores
            # EXIF orientation, so take it from the header Pillow already parsed.
            _check_opencv_size(label, data, im, max_pixels)
            cv_pixels = _cv2_decode(data)
            orientation = _exif_orientation(im)
        if cv_pixels is None:
            im.load()  # decode now, inside the try, so lazy decoding errors surface here
    except Image.DecompressionBombError as exc:
        raise _bomb_error(label, exc, max_pixels, data) from None
    except (ImageReadError, PixelLimitError):
        raise
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...) on bad input
        cv_pixels = None
        # OpenCV allocates the whole image before decoding a row: it only gets files whose
        # header declares an acceptable size (Pillow's, when it read that far, else our own
        # reading of the PNG / TIFF header).
        if _opencv_may_help(data, exc) and _check_opencv_size(label, data, im, max_pixels):
            cv_pixels = _cv2_decode(data)
        if cv_pixels is None:
            raise ImageReadError(f"{_one_line(label)}: {_pillow_reason(exc)}") from exc
        # OpenCV's IMREAD_UNCHANGED ignores EXIF orientation. Use Pillow's reading of
        # the header when it got that far; when it could not even identify the file
        # the orientation stays unknown. Accepted: such files (float / exotic TIFFs)
        # come from scientific tools, not cameras.
        if im is not None:
            orientation = _exif_orientation(im)
    profile = _info_profile(im) if im is not None else None
    if cv_pixels is not None:
        return _keep_profile(_from_decoded_array(cv_pixels, label, orientation), profile)
    assert im is not None
    return _keep_profile(_to_rgb(_upright(im), label), profile)


def _check_opencv_size(label: str, data: bytes, im: Image.Image | None, max_pixels: int | None) -> bool:
    """Hold a file about to go to OpenCV to the limits, by every size its header declares: Pillow's
    reading and our own of the first PNG IHDR / TIFF directory (what libpng and libtiff use; a file
    with two IHDR chunks shows Pillow the second). False when no size can be read at all."""
    sizes = [im.size] if im is not None else []
    declared = _declared_size(data)
    if declared is not None:
        sizes.append(declared)
    for width, height in sizes:
        _check_limit(label, width, height, max_pixels)
    return bool(sizes)


def _bomb_error(label: str, exc: Exception, max_pixels: int | None, data: bytes = b"") -> Exception:
    """Pillow's decompression-bomb refusal as our error (PixelLimitError under a ``max_pixels``)."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    if max_pixels is not None and match:
        pixels = int(match.group(1))
        size = _declared_size(data)
        what = f"{size[0]}×{size[1]} = {pixels:,}" if size and size[0] * size[1] == pixels else f"{pixels:,}"
        return PixelLimitError(f"{_one_line(label)}: image of {what} pixels is over the limit "
                               f"of {max_pixels:,} pixels", input_name=label)
    return ImageReadError(f"{_one_line(label)}: {_bomb_reason(exc)}")


def _from_pil(image: Image.Image, label: str, max_pixels: int | None = None) -> Image.Image:
    """Normalise a caller's PIL image; the caller's object is never modified or returned."""
    _check_limit(label, image.width, image.height, max_pixels)  # before a lazily opened one decodes
    try:
        image.load()  # a lazily opened image may still fail to decode
    except Image.DecompressionBombError as exc:
        raise _bomb_error(label, exc, max_pixels) from None
    except Exception as exc:
        raise ImageReadError(f"{_one_line(label)}: {_pillow_reason(exc)}") from exc
    upright = _upright(image)
    if upright is image:
        upright = image.copy()
    return _keep_profile(_to_rgb(upright, label), _info_profile(image))


# --------------------------------------------------------------------------- headers and profiles


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a TIFF's first directory; None when unreadable."""
    try:
        if data.startswith(_PNG_MAGIC):
            if data[12:16] != b"IHDR":
                return None
            width, height = struct.unpack(">II", data[16:24])
            return width, height
        if data[:4] in _TIFF_MAGIC:
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


def icc_colour_space(profile: object) -> bytes | None:
    """The data colour space of an ICC profile (``b"RGB "``, ``b"GRAY"``, ``b"CMYK"`` ...), None if it is not one."""
    if not isinstance(profile, (bytes, bytearray)) or len(profile) < 128 or profile[36:40] != b"acsp":
        return None
    return bytes(profile[16:20])


def _info_profile(im: Image.Image) -> bytes | None:
    profile = im.info.get("icc_profile")
    return bytes(profile) if icc_colour_space(profile) is not None else None


def _keep_profile(image: Image.Image, profile: bytes | None) -> Image.Image:
    """Keep ``profile`` on a decoded RGB(A) image when it describes RGB data; drop any other."""
    image.info.pop("icc_profile", None)
    if profile is not None and icc_colour_space(profile) == b"RGB " and image.mode in ("RGB", "RGBA"):
        image.info["icc_profile"] = profile
    return image


def carry_icc_profile(source: Image.Image, output: Image.Image) -> Image.Image:
    """Give ``output`` (a cutout or composite made from ``source``'s pixels) ``source``'s RGB ICC
    profile, so the encoders embed it; returns ``output``. Masks (mode ``"L"``) get none: an RGB
    profile on a greyscale image is invalid, and a mask's values are alpha, not colours."""
    profile = _info_profile(source)
    if profile is not None and icc_colour_space(profile) == b"RGB " and output.mode in ("RGB", "RGBA"):
        output.info["icc_profile"] = profile
    return output


def _upright(im: Image.Image) -> Image.Image:
    """Apply EXIF orientation; a broken EXIF block must not reject decodable pixels."""
    try:
        fixed = ImageOps.exif_transpose(im)
    except Exception:
        return im
    return fixed if fixed is not None else im


def _exif_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1


def _has_transparency(im: Image.Image) -> bool:
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return True
    # Palette whose entries carry alpha (e.g. some WebP/GIF derived images).
    palette = getattr(im, "palette", None)
    return im.mode == "P" and palette is not None and getattr(palette, "mode", "") == "RGBA"


def _to_rgb(im: Image.Image, label: str) -> Image.Image:
    """Convert any Pillow mode to "RGB", or "RGBA" when the image has transparency."""
    mode = im.mode
    if mode in _WIDE_GRAY_MODES:
        values = np.asarray(im)
        gray = _uint16_to_uint8(np.clip(values, 0, 65535))
        key = im.info.get("transparency")
        if isinstance(key, int):  # 16-bit PNG colour key (tRNS) -> real alpha
            alpha = np.where(values == key, 0, 255).astype(np.uint8)
            return Image.fromarray(np.dstack([gray, gray, gray, alpha]))
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        gray = _float_to_uint8(np.asarray(im), assume_unit=None)
        return Image.fromarray(gray).convert("RGB")
    if mode == "La":
        # Premultiplied luminance+alpha: Pillow cannot convert it to RGBA (and its
        # La -> LA drops the alpha), so un-premultiply here.
        lum_alpha = np.asarray(im).astype(np.float32)
        lum, alpha = lum_alpha[..., 0], lum_alpha[..., 1]
        safe = np.maximum(alpha, 1.0)
        gray = np.where(alpha > 0, np.minimum(np.rint(lum * 255.0 / safe), 255.0), 0.0).astype(np.uint8)
        return Image.fromarray(np.dstack([gray, gray, gray, alpha.astype(np.uint8)]))
    target = "RGBA" if _has_transparency(im) else "RGB"
    if mode == target:
        return im
    try:
        # Covers 1, L, P, PA, LA, RGBa, RGBX, CMYK, YCbCr, HSV, LAB; the transparency
        # entry of 1/L/P/RGB images becomes alpha here.
        return im.convert(target)
    except (ValueError, OSError) as exc:
        raise ImageReadError(f"{_one_line(label)}: unsupported image mode {mode} ({_one_line(str(exc))})") from exc


def _is_16bit_colour(im: Image.Image) -> bool:
    """True when Pillow will unpack 16-bit-per-channel RGB(A) data (raw modes "RGB;16B" ...)."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return False
    args = im.tile[0][3]
    rawmode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
    return isinstance(rawmode, str) and ";16" in rawmode


def _opencv_may_help(data: bytes, exc: Exception) -> bool:
    """OpenCV is tried only where Pillow has known gaps: TIFF variants (float RGB,
    unusual layouts), and PNGs Pillow could not even identify. A PNG that Pillow
    identified but failed to decode is corrupt; OpenCV would only add stderr noise."""
    if data[:4] in _TIFF_MAGIC:
        return True
    return data.startswith(_PNG_MAGIC) and isinstance(exc, UnidentifiedImageError)


def _png_chunks_fit(data: bytes) -> bool:
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


def _cv2_decode(data: bytes) -> np.ndarray | None:
    """Decode with OpenCV (imported lazily: only this fallback needs it); None if it can't, or
    if the file is a PNG whose chunk lengths do not fit in it (see ``_png_chunks_fit``)."""
    if data.startswith(_PNG_MAGIC) and not _png_chunks_fit(data):
        return None
    try:
        import cv2
    except ImportError:
        return None
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    previous = None
    try:
        if log is not None:  # OpenCV logs its own decode failures to stderr; we report ours
            previous = log.getLogLevel()
            log.setLogLevel(log.LOG_LEVEL_SILENT)
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except Exception:
        return None
    finally:
        if log is not None and previous is not None:
            log.setLogLevel(previous)
    if pixels is None or pixels.size == 0:
        return None
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        pixels = pixels[..., [2, 1, 0, 3][: pixels.shape[2]]]  # BGR(A) -> RGB(A)
    return pixels


def _from_decoded_array(pixels: np.ndarray, label: str, orientation: int) -> Image.Image:
    """Turn an OpenCV-decoded array into an RGB(A) image, applying the EXIF orientation."""
    # OpenCV has its own pixel cap; hold it to Pillow's limit too so the documented
    # guard means the same thing whichever decoder ran.
    limit = Image.MAX_IMAGE_PIXELS
    n_pixels = int(pixels.shape[0]) * int(pixels.shape[1])
    if limit and n_pixels > 2 * limit:
        raise ImageReadError(f"{_one_line(label)}: too many pixels ({n_pixels} > {2 * limit})")
    image = _array_to_image(pixels, label, unit_floats=False)
    fix = _ORIENTATION_FIX.get(orientation)
    return image.transpose(fix) if fix is not None else image


def _from_array(array: np.ndarray, label: str) -> Image.Image:
    return _array_to_image(array, label, unit_floats=True)


def _array_to_image(array: np.ndarray, label: str, *, unit_floats: bool) -> Image.Image:
    if array.size == 0:
        raise ImageReadError(f"{_one_line(label)}: empty array (shape {array.shape})")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageReadError(
            f"{_one_line(label)}: unsupported array shape {array.shape}; expected HxW, HxWx3 or HxWx4"
        )
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        u8 = array.astype(np.uint8) * 255
    elif kind == "u" and size == 1:
        u8 = array
    elif kind == "u" and size == 2:
        u8 = _uint16_to_uint8(array)
    elif kind == "f":
        u8 = _float_to_uint8(array, assume_unit=True if unit_floats else None)
    else:
        raise ImageReadError(
            f"{_one_line(label)}: unsupported pixel type {array.dtype}; expected uint8, uint16, bool or float"
        )
    image = Image.fromarray(np.ascontiguousarray(u8, dtype=np.uint8))
    return image.convert("RGB") if image.mode == "L" else image


def _uint16_to_uint8(values: np.ndarray) -> np.ndarray:
    # (v + 128) // 257 == round(v / 257) for integers: 0 -> 0, 65535 -> 255, and
    # v * 257 round-trips exactly.
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _float_to_uint8(values: np.ndarray, *, assume_unit: bool | None) -> np.ndarray:
    """Floats to uint8: 0..1 if assume_unit, 0..255 if False, decided by the data if None."""
    values = np.asarray(values, dtype=np.float32)
    values = np.where(np.isnan(values), np.float32(0), values)
    if assume_unit is None:
        finite = values[np.isfinite(values)]
        assume_unit = finite.size == 0 or float(finite.max()) <= 1.0
    if assume_unit:
        values = np.clip(values, 0.0, 1.0) * np.float32(255)
    return np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)


def _bomb_reason(exc: Exception) -> str:
    match = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", str(exc))
    if match:
        return f"too many pixels ({match.group(1)} > {match.group(2)})"
    return f"too many pixels ({_one_line(str(exc))})"


def _pillow_reason(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (cannot identify image file)"
    # Pillow messages may embed reprs such as "<_io.BytesIO object at 0x...>".
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc)).strip() or type(exc).__name__
    if isinstance(exc, EOFError) or "truncated" in text:
        return f"truncated image ({_one_line(text)})"
    return f"cannot decode image ({_one_line(text)})"


def _one_line(text: str) -> str:
    """Keep error messages on one line: newlines (in odd file names or library messages) are escaped."""
    return text.replace("\r", "\\r").replace("\n", "\\n")
