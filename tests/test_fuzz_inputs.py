"""Property-based fuzzing of the image decoder (``u2seg.image_io.load_image``) and of the removal
path's pixel limit.

Real small PNG / JPEG / WebP / TIFF / GIF files are made with Pillow (and OpenCV for the
16-bit PNG and the float TIFF that only OpenCV decodes), then mutated: header bytes flipped,
the declared width / height overwritten (0, 65535×65535 …), truncated, chunks or segments
removed or duplicated. Every case must end in a decoded RGB(A) image or in ONE clear error, an
``ImageReadError`` or a ``PixelLimitError`` whose message is one line naming the input; an image
over the limit must be refused before any decoder allocates its pixels.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zlib
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from unittest import mock

import cv2  # imported here, so that the first example does not pay for it
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from u2seg import image_io, image_limits
from u2seg.errors import ImageReadError, PixelLimitError
from u2seg.image_io import load_image

REPO = Path(__file__).resolve().parents[1]
LIMIT = 1_000_000  # max_pixels for the fuzzed cases (the server's limit, scaled down)
EXAMPLES = 150     # per format family
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=2), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------- seed files

def _photo(width: int = 23, height: int = 17) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([x * 255 // width, y * 255 // height, (x + y) * 7 % 256]).astype(np.uint8)


def _pil(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _seeds() -> dict[str, list[tuple[str, bytes]]]:
    rgb = Image.fromarray(_photo())
    rgba = Image.fromarray(np.dstack([_photo(), np.linspace(0, 255, 23 * 17).reshape(17, 23).astype(np.uint8)]))
    palette = rgb.quantize(16)
    exif = Image.Exif()
    exif[0x0112] = 6
    ok16, png16 = cv2.imencode(".png", _photo().astype(np.uint16) * 257)
    okf, tiff_float = cv2.imencode(".tiff", _photo().astype(np.float32) / 255)
    assert ok16 and okf
    return {
        "png": [("rgb.png", _pil(rgb, "PNG")), ("rgba.png", _pil(rgba, "PNG")),
                ("palette.png", _pil(palette, "PNG", transparency=3)), ("rgb16.png", png16.tobytes()),
                ("exif.png", _pil(rgb, "PNG", exif=exif)), ("gray.png", _pil(rgb.convert("L"), "PNG"))],
        "jpeg": [("photo.jpg", _pil(rgb, "JPEG", quality=90)), ("progressive.jpg", _pil(rgb, "JPEG", progressive=True)),
                 ("cmyk.jpg", _pil(rgb.convert("CMYK"), "JPEG")), ("exif.jpg", _pil(rgb, "JPEG", exif=exif))],
        "webp": [("lossless.webp", _pil(rgba, "WEBP", lossless=True)), ("lossy.webp", _pil(rgb, "WEBP", quality=80)),
                 ("exif.webp", _pil(rgb, "WEBP", exif=exif, lossless=True))],
        "tiff": [("raw.tiff", _pil(rgb, "TIFF")), ("deflate.tiff", _pil(rgba, "TIFF", compression="tiff_adobe_deflate")),
                 ("packbits.tiff", _pil(rgb, "TIFF", compression="packbits")), ("float.tiff", tiff_float.tobytes())],
        "gif": [("palette.gif", _pil(palette, "GIF")), ("transparent.gif", _pil(palette, "GIF", transparency=2))],
    }


SEEDS = _seeds()


# ------------------------------------------------------------------------------- mutations

def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each chunk after the signature, as far as the lengths make sense."""
    chunks, at = [], 8
    while at + 12 <= len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        end = at + 12 + length
        if end > len(data):
            break
        chunks.append((at, end))
        at = end
    return chunks


def _riff_chunks(data: bytes) -> list[tuple[int, int]]:
    chunks, at = [], 12
    while at + 8 <= len(data):
        (length,) = struct.unpack("<I", data[at + 4:at + 8])
        end = at + 8 + length + (length & 1)
        if end > len(data):
            break
        chunks.append((at, end))
        at = end
    return chunks


def _jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """Marker segments with a length, from after SOI up to SOS."""
    segments, at = [], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        segments.append((at, at + 2 + length))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        at += 2 + length
    return segments


def _segments(fmt: str, data: bytes) -> list[tuple[int, int]]:
    if fmt == "png":
        return _png_chunks(data)
    if fmt == "webp":
        return _riff_chunks(data)
    if fmt == "jpeg":
        return _jpeg_segments(data)
    return []


def _set_dims(fmt: str, data: bytes, width: int, height: int, fix_crc: bool) -> bytes:
    """Overwrite the declared width and height where the format keeps them (clamped to the field);
    a file already too damaged to find them in is returned as it is."""
    try:
        return _set_dims_in(fmt, data, width, height, fix_crc)
    except (struct.error, IndexError, ValueError):
        return data


def _set_dims_in(fmt: str, data: bytes, width: int, height: int, fix_crc: bool) -> bytes:
    out = bytearray(data)
    if fmt == "png" and out[12:16] == b"IHDR":
        out[16:24] = struct.pack(">II", width, height)
        if fix_crc:
            out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    elif fmt == "jpeg":
        for at, end in _jpeg_segments(data):
            if 0xC0 <= out[at + 1] <= 0xCF and out[at + 1] not in (0xC4, 0xC8, 0xCC) and end - at >= 9:
                out[at + 5:at + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))
    elif fmt == "gif" and len(out) >= 13:
        out[6:10] = struct.pack("<HH", min(width, 65535), min(height, 65535))
        at = 13 + (3 << ((out[10] & 7) + 1) if out[10] & 0x80 else 0)
        while at < len(out):
            if out[at] == 0x2C and at + 9 <= len(out):  # image descriptor
                out[at + 5:at + 9] = struct.pack("<HH", min(width, 65535), min(height, 65535))
                break
            if out[at] == 0x21 and at + 2 < len(out):  # extension: label, then sub-blocks
                at += 2
                while at < len(out) and out[at]:
                    at += out[at] + 1
                at += 1
                continue
            break
    elif fmt == "webp":
        for at, end in _riff_chunks(data):
            kind = bytes(out[at:at + 4])
            if kind == b"VP8X" and end - at >= 18:
                w, h = max(width, 1) - 1, max(height, 1) - 1
                out[at + 12:at + 18] = (w & 0xFFFFFF).to_bytes(3, "little") + (h & 0xFFFFFF).to_bytes(3, "little")
            elif kind == b"VP8L" and end - at >= 13:
                bits = int.from_bytes(out[at + 9:at + 13], "little")
                bits = (bits & ~0xFFFFFFF) | ((max(width, 1) - 1) & 0x3FFF) | (((max(height, 1) - 1) & 0x3FFF) << 14)
                out[at + 9:at + 13] = bits.to_bytes(4, "little")
            elif kind == b"VP8 " and end - at >= 18:
                out[at + 14:at + 18] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    elif fmt == "tiff" and out[:4] in (b"II*\x00", b"MM\x00*"):
        order = "<" if out[:2] == b"II" else ">"
        (ifd,) = struct.unpack(order + "I", out[4:8])
        if ifd + 2 <= len(out):
            (count,) = struct.unpack(order + "H", out[ifd:ifd + 2])
            for i in range(count):
                at = ifd + 2 + 12 * i
                if at + 12 > len(out):
                    break
                tag, kind = struct.unpack(order + "HH", out[at:at + 4])
                if tag in (256, 257):
                    value = width if tag == 256 else height
                    if kind == 3:
                        out[at + 8:at + 10] = struct.pack(order + "H", min(value, 65535))
                    elif kind == 4:
                        out[at + 8:at + 12] = struct.pack(order + "I", value)
    return bytes(out)


DIMENSION = st.one_of(st.sampled_from([0, 1, 2, 255, 1024, 16383, 16384, 40000, 60000, 65535, 2**24, 2**31 - 1]),
                      st.integers(0, 70000))


@st.composite
def mutations(draw, fmt: str):
    name, data = draw(st.sampled_from(SEEDS[fmt]))
    ops = draw(st.lists(st.sampled_from(["flip", "dims", "truncate", "drop", "duplicate", "splice"]),
                        min_size=1, max_size=3))
    for op in ops:
        if not data:
            break
        if op == "flip":  # mostly in the header, sometimes anywhere
            span = draw(st.sampled_from([min(len(data), 64), len(data)]))
            for _ in range(draw(st.integers(1, 4))):
                at = draw(st.integers(0, span - 1))
                data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
        elif op == "dims":
            data = _set_dims(fmt, data, draw(DIMENSION), draw(DIMENSION), draw(st.booleans()))
        elif op == "truncate":
            data = data[:draw(st.integers(0, len(data) - 1))]
        elif op in ("drop", "duplicate"):
            segments = _segments(fmt, data)
            if segments:
                start, end = draw(st.sampled_from(segments))
                data = data[:start] + data[end:] if op == "drop" else data[:end] + data[start:end] + data[end:]
        else:  # a copy of some bytes inserted elsewhere (for formats without chunks too)
            a = draw(st.integers(0, len(data) - 1))
            b = draw(st.integers(a, min(len(data), a + 64)))
            at = draw(st.integers(0, len(data)))
            data = data[:at] + data[a:b] + data[at:]
    return name, data


# ------------------------------------------------------------------------------- the property

@contextmanager
def decode_spy():
    """Record the size of every image a decoder starts to decode (Pillow allocates the pixels in
    load_prepare; OpenCV's result is as large as what it allocated)."""
    sizes: list[int] = []
    prepare = ImageFile.ImageFile.load_prepare
    cv2_decode = image_io._cv2_decode

    def spy_prepare(self):
        sizes.append(self.size[0] * self.size[1])
        return prepare(self)

    def spy_cv2(data):
        declared = image_limits.declared_size(data)  # OpenCV allocates this much before decoding a row
        if declared is not None:
            sizes.append(declared[0] * declared[1])
        pixels = cv2_decode(data)
        if pixels is not None:
            sizes.append(int(pixels.shape[0]) * int(pixels.shape[1]))
        return pixels

    with mock.patch.object(ImageFile.ImageFile, "load_prepare", spy_prepare), \
            mock.patch.object(image_io, "_cv2_decode", spy_cv2), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning, EXIF warnings …
        yield sizes


def assert_clear(exc: BaseException, name: str) -> None:
    message = str(exc)
    assert "\n" not in message and "\r" not in message, repr(message)
    assert message.startswith(f"{name}: "), repr(message)
    assert len(message) < 400, repr(message)


def check_case(name: str, data: bytes, *, max_pixels: int | None, limit: int) -> str:
    """Decode one (mutated) file; return how it ended: 'ok', 'limit' or 'error'."""
    label = f"fuzz-{name}"
    with decode_spy() as sizes:
        try:
            image = load_image(data, name=label, max_pixels=max_pixels)
        except PixelLimitError as exc:
            assert max_pixels is not None, "PixelLimitError without a max_pixels"
            assert_clear(exc, label)
            outcome = "limit"
        except ImageReadError as exc:
            assert_clear(exc, label)
            outcome = "error"
        else:
            assert image.mode in ("RGB", "RGBA")
            assert 0 < image.width * image.height <= limit
            image.tobytes()  # really decoded
            outcome = "ok"
    assert all(size <= limit for size in sizes), f"decoded {max(sizes)} pixels, over the limit of {limit}"
    return outcome


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_seed_files_decode(fmt):
    for name, data in SEEDS[fmt]:
        assert check_case(name, data, max_pixels=LIMIT, limit=LIMIT) == "ok", name


@pytest.mark.parametrize("fmt", sorted(SEEDS))
@FUZZ
@given(data=st.data())
def test_mutated_files_end_in_an_image_or_one_clear_error(fmt, data):
    name, blob = data.draw(mutations(fmt))
    if data.draw(st.booleans(), label="max_pixels"):
        check_case(name, blob, max_pixels=LIMIT, limit=LIMIT)
    else:  # Pillow's own guard (2 × MAX_IMAGE_PIXELS), which load_image holds OpenCV to as well
        with mock.patch.object(Image, "MAX_IMAGE_PIXELS", LIMIT // 2):
            check_case(name, blob, max_pixels=None, limit=LIMIT)


# ------------------------------------------------------------------------------- absurd sizes

ABSURD = [(65535, 65535), (60000, 60000), (0, 0), (0, 17), (40000, 1)]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "gif", "webp", "tiff"])
@pytest.mark.parametrize("width, height", ABSURD)
def test_absurd_declared_size_is_refused_from_the_header(fmt, width, height):
    """With the real default limits: nothing over them is decoded, every seed ends in one clear
    line, and quickly (no decoder walks 4 billion pixels)."""
    for name, seed in SEEDS[fmt]:
        for fix_crc in (True, False):
            data = _set_dims(fmt, seed, width, height, fix_crc)
            started = time.perf_counter()
            outcome = check_case(name, data, max_pixels=None, limit=2 * Image.MAX_IMAGE_PIXELS)
            assert time.perf_counter() - started < 2.0
            if width * height > 2 * Image.MAX_IMAGE_PIXELS and fmt != "webp":  # WebP's fields are 14 bits
                assert outcome == "error"
            outcome = check_case(name, data, max_pixels=LIMIT, limit=LIMIT)
            if width * height > LIMIT and data != seed:
                assert outcome in ("limit", "error")


def test_pixel_limit_error_names_the_input_once_through_the_engine():
    """RemovalJob's limit reaches the decoder: refused from the header, one line, the name once."""
    from u2seg.infer.engine import Item, _Flight, _load, error_line
    from u2seg.infer.removal import RemovalJob

    data = _set_dims("png", SEEDS["png"][0][1], 60000, 60000, True)
    job = RemovalJob(max_pixels=LIMIT)
    flight = _Flight(0, Item(data, "big.png"), job, lambda result: None)
    with decode_spy() as sizes, pytest.raises(PixelLimitError) as excinfo:
        _load(None, flight)  # the predictor is never reached
    assert sizes == []
    line = error_line(flight.item, excinfo.value)
    assert line == "big.png: image of 60000×60000 = 3,600,000,000 pixels is over the limit of 1,000,000 pixels"


# ------------------------------------------------------------------------------- memory

BOMB = textwrap.dedent("""
    import resource, struct, sys, zlib
    from u2seg.errors import ImageReadError, PixelLimitError
    from u2seg.image_io import load_image
    import cv2  # loaded before measuring

    def chunk(kind, body, crc=None):
        crc = zlib.crc32(kind + body) if crc is None else crc
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    side = int(sys.argv[1])
    row = bytes(side + 1)                       # filter byte + a row of zeros
    block = row * max(1, (1 << 22) // len(row))
    rows_per_block = len(block) // len(row)
    z = zlib.compressobj(9)
    first = z.compress(block) + z.flush(zlib.Z_FULL_FLUSH)
    again = z.compress(block) + z.flush(zlib.Z_FULL_FLUSH)   # the same bytes for every later block
    blocks = side // rows_per_block
    rest = z.compress(row * (side - blocks * rows_per_block)) + z.flush(zlib.Z_FULL_FLUSH)
    adler = (((len(row) * side) % 65521) << 16) | 1             # adler32 of all-zero data
    stream = first + again * (blocks - 1) + rest + b"\\x03\\x00" + struct.pack(">I", adler)
    # A real bomb: a few hundred KB declaring side x side pixels, with a broken ancillary chunk
    # so that Pillow cannot identify it and the OpenCV fallback is tried.
    png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
           + chunk(b"tEXt", b"a\\x00b", crc=0) + chunk(b"IDAT", stream) + chunk(b"IEND", b""))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for max_pixels in (None, 36_000_000):
        try:
            load_image(png, name="bomb.png", max_pixels=max_pixels)
            print("decoded")
        except (ImageReadError, PixelLimitError) as exc:
            print(type(exc).__name__, exc)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print("grew_kib", grown, "file_kib", len(png) // 1024)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB is Linux's")
def test_a_real_bomb_is_refused_before_any_pixel_is_allocated():
    """A 20000×20000 PNG bomb (~390 KB of zeros) that only OpenCV would read: before the fix it
    was decoded (+~700 MB, seconds) and refused afterwards; now refused from its header."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", BOMB, "20000"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ImageReadError bomb.png: too many pixels (400000000 > 178956970)"
    assert lines[1] == ("PixelLimitError bomb.png: image of 20000×20000 = 400,000,000 pixels is over the "
                        "limit of 36,000,000 pixels")
    grown_kib = int(lines[2].split()[1])
    assert grown_kib < 50 * 1024, f"decoding grew the process by {grown_kib // 1024} MiB"
    assert time.perf_counter() - started < 60


# ------------------------------------------------------------------------------- found by fuzzing

# 165 bytes: a PNG (Pillow cannot identify it) whose IDAT chunk length was mutated to 3.1 GB.
# OpenCV 5's PNG reader allocated and cleared that length before reading it: +3 GB and 13 s.
CHUNK_BOMB = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000017000070110806000000367337bdba00006c49444154789cbdd2"
    "bb0ac0300840d12b141c52c8ffff6d9716fa20c618d321e820e72e1180825250b9cde6be3b6eae7da36a0505"
    "54cec76b86770b9f0e79f1502882bb43b3b81956c43fa155b880f20b9efabf2d3c2dd4c3a74223f870288abb"
    "42197833948d3f422b713900f83a0eaec2ff74cc0000000049454e44ae426082"
)


def test_a_chunk_length_past_the_end_never_reaches_opencv():
    assert len(CHUNK_BOMB) == 165
    started = time.perf_counter()
    with decode_spy(), mock.patch.object(cv2, "imdecode", return_value=None) as imdecode, \
            pytest.raises(ImageReadError) as excinfo:
        load_image(CHUNK_BOMB, name="chunk.png")
    assert not imdecode.called
    assert_clear(excinfo.value, "chunk.png")
    assert time.perf_counter() - started < 1.0
    # A well-formed PNG that Pillow rejects (a broken ancillary chunk) still gets OpenCV's help.
    good = SEEDS["png"][0][1]
    text = struct.pack(">I", 3) + b"tEXt" + b"a\0b" + b"\0\0\0\0"  # wrong CRC
    assert load_image(good[:33] + text + good[33:], name="crc.png").size == (23, 17)


def test_a_second_ihdr_cannot_smuggle_a_larger_size_past_the_limit():
    """Pillow takes the last IHDR before IDAT, libpng the first: both are held to the limit."""
    _, png16 = SEEDS["png"][3]
    assert png16[12:16] == b"IHDR"
    big = _set_dims("png", png16, 255, 16383, True)  # 4.2 MP in the first IHDR
    data = big[:33] + png16[8:33] + big[33:]          # then the real 23×17 one
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (23, 17)
    with decode_spy() as sizes, pytest.raises(PixelLimitError) as excinfo:
        load_image(data, name="two.png", max_pixels=LIMIT)
    assert sizes == [] and "255×16383" in str(excinfo.value)
