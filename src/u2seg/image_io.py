"""Read images from whatever a user hands us.

``load_image`` accepts a path, raw bytes, a binary stream, a PIL image or a NumPy
array and always returns a fully decoded PIL image in mode ``"RGB"`` or ``"RGBA"``,
upright (EXIF orientation applied), 8 bits per channel (the bit-depth rules are in
:mod:`u2seg.image_modes`). Anything that cannot be decoded becomes an
:class:`~u2seg.errors.ImageReadError` whose message is one line: ``"<name>: <reason>"``.
Writing is :mod:`u2seg.image_encode`.

Pixel limits: an image over the limit is refused from its header, before any pixel is
decoded (whichever decoder would run): Pillow's ``2 × Image.MAX_IMAGE_PIXELS`` guard
always (an ``ImageReadError``, "too many pixels"), and ``load_image``'s ``max_pixels`` when
given (a :class:`~u2seg.errors.PixelLimitError`); see :mod:`u2seg.image_limits`. A file
whose size cannot be read from its header is never handed to OpenCV.

Colour profiles: an embedded ICC profile for RGB data is kept on the decoded image as
``info["icc_profile"]`` (the very bytes of the file) and ``encode_image`` embeds it in the
PNG / WebP it writes, so photo tools show the same colours. Profiles of another colour
space (CMYK, grey, Lab: the pixels were converted to RGB without them) are dropped.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, PixelLimitError, one_line
from .image_limits import PNG_MAGIC, TIFF_MAGIC, bomb_error, check_limit, declared_size, png_chunks_fit
from .image_modes import array_to_image, from_array, is_16bit_colour, to_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "carry_icc_profile",
    "icc_colour_space",
    "load_image",
    "upright",
]

#: Lower-case suffixes (with the dot) treated as images when scanning folders.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp"}
)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray]

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
            check_limit(label, int(source.shape[1]), int(source.shape[0]), max_pixels)
        return from_array(source, label)
    label, data, from_path = _read_source(source, name)
    if not data:
        raise ImageReadError(f"{one_line(label)}: {'empty file' if from_path else 'empty input'}")
    return _decode(data, label, max_pixels)


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
            raise ImageReadError(f"{one_line(label)}: no such file") from None
        except IsADirectoryError:
            raise ImageReadError(f"{one_line(label)}: is a directory, not an image file") from None
        except PermissionError:
            # Windows reports a directory as PermissionError.
            reason = "is a directory, not an image file" if os.path.isdir(path) else "permission denied"
            raise ImageReadError(f"{one_line(label)}: {reason}") from None
        except OSError as exc:
            reason = one_line(exc.strerror or str(exc))
            raise ImageReadError(f"{one_line(label)}: cannot read file ({reason})") from exc
    read = getattr(source, "read", None)
    if callable(read):
        stream_name = getattr(source, "name", None)  # sys.stdin.buffer.name == "<stdin>"
        label = name or (stream_name if isinstance(stream_name, str) else "<stream>")
        try:
            data = read()
        except OSError as exc:
            raise ImageReadError(f"{one_line(label)}: cannot read stream ({one_line(str(exc))})") from exc
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
        check_limit(label, im.width, im.height, max_pixels)  # the header only: nothing decoded yet
        if is_16bit_colour(im):
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
        raise bomb_error(label, exc, max_pixels, data) from None
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
            raise ImageReadError(f"{one_line(label)}: {_pillow_reason(exc)}") from exc
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
    return _keep_profile(to_rgb(upright(im), label), profile)


def _check_opencv_size(label: str, data: bytes, im: Image.Image | None, max_pixels: int | None) -> bool:
    """Hold a file about to go to OpenCV to the limits, by every size its header declares: Pillow's
    reading and our own of the first PNG IHDR / TIFF directory (what libpng and libtiff use; a file
    with two IHDR chunks shows Pillow the second). False when no size can be read at all."""
    sizes = [im.size] if im is not None else []
    declared = declared_size(data)
    if declared is not None:
        sizes.append(declared)
    for width, height in sizes:
        check_limit(label, width, height, max_pixels)
    return bool(sizes)


def _from_pil(image: Image.Image, label: str, max_pixels: int | None = None) -> Image.Image:
    """Normalise a caller's PIL image; the caller's object is never modified or returned."""
    check_limit(label, image.width, image.height, max_pixels)  # before a lazily opened one decodes
    try:
        image.load()  # a lazily opened image may still fail to decode
    except Image.DecompressionBombError as exc:
        raise bomb_error(label, exc, max_pixels) from None
    except Exception as exc:
        raise ImageReadError(f"{one_line(label)}: {_pillow_reason(exc)}") from exc
    turned = upright(image)
    if turned is image:
        turned = image.copy()
    return _keep_profile(to_rgb(turned, label), _info_profile(image))


# --------------------------------------------------------------------------- profiles and orientation


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


def upright(im: Image.Image) -> Image.Image:
    """Apply EXIF orientation; a broken EXIF block must not reject decodable pixels. An upright
    image comes back as it is (``exif_transpose`` would copy it: ~7 ms for a 1.5 MP photo)."""
    if _exif_orientation(im) == 1:
        return im
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


def _opencv_may_help(data: bytes, exc: Exception) -> bool:
    """OpenCV is tried only where Pillow has known gaps: TIFF variants (float RGB,
    unusual layouts), and PNGs Pillow could not even identify. A PNG that Pillow
    identified but failed to decode is corrupt; OpenCV would only add stderr noise."""
    if data[:4] in TIFF_MAGIC:
        return True
    return data.startswith(PNG_MAGIC) and isinstance(exc, UnidentifiedImageError)


def _cv2_decode(data: bytes) -> np.ndarray | None:
    """Decode with OpenCV (imported lazily: only this fallback needs it); None if it can't, or
    if the file is a PNG whose chunk lengths do not fit in it (see ``png_chunks_fit``)."""
    if data.startswith(PNG_MAGIC) and not png_chunks_fit(data):
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
        raise ImageReadError(f"{one_line(label)}: too many pixels ({n_pixels} > {2 * limit})")
    image = array_to_image(pixels, label, unit_floats=False)
    fix = _ORIENTATION_FIX.get(orientation)
    return image.transpose(fix) if fix is not None else image


def _pillow_reason(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (cannot identify image file)"
    # Pillow messages may embed reprs such as "<_io.BytesIO object at 0x...>".
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc)).strip() or type(exc).__name__
    if isinstance(exc, EOFError) or "truncated" in text:
        return f"truncated image ({one_line(text)})"
    return f"cannot decode image ({one_line(text)})"
