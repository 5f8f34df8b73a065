"""Tests for u2seg.image_io on real images (scikit-image's bundled samples)."""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from u2seg.errors import ImageReadError, U2SegError
from u2seg import image_io
from u2seg.image_encode import OUTPUT_FORMATS, encode_image, save_image, write_bytes_atomic
from u2seg.image_io import IMAGE_EXTENSIONS, load_image

skdata = pytest.importorskip("skimage.data")


# ---------------------------------------------------------------- fixtures / helpers


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()  # 512x512x3 uint8


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return skdata.coffee()  # 400x600x3 uint8: not square, so W/H mix-ups show


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return skdata.camera()  # 512x512 uint8 grayscale


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def alpha_ramp(height: int, width: int) -> np.ndarray:
    """Alpha with fully transparent, partial and opaque regions."""
    ramp = np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))
    ramp[: height // 4] = 0
    ramp[-height // 4 :] = 255
    return ramp


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- constants


def test_constants():
    assert OUTPUT_FORMATS == ("png", "webp")
    assert isinstance(IMAGE_EXTENSIONS, frozenset)
    assert {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"} <= IMAGE_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)


# ---------------------------------------------------------------- file formats


@pytest.mark.parametrize(
    ("suffix", "params", "lossless"),
    [
        (".png", {}, True),
        (".bmp", {}, True),
        (".tiff", {}, True),
        (".tif", {"compression": "tiff_lzw"}, True),
        (".webp", {"lossless": True}, True),
        (".webp", {"quality": 90}, False),
        (".jpg", {"quality": 92}, False),
    ],
)
def test_format_round_trip(tmp_path, coffee, suffix, params, lossless):
    path = tmp_path / f"coffee{suffix}"
    Image.fromarray(coffee).save(path, **params)
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.size == (600, 400)
    if lossless:
        assert np.array_equal(np.asarray(image), coffee)
    else:
        assert mean_diff(np.asarray(image), coffee) < 3.0


def test_str_path_and_result_is_loaded(tmp_path, astronaut):
    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    image = load_image(str(path))
    path.unlink()  # fully decoded: nothing left to read lazily from the file
    assert np.array_equal(np.asarray(image), astronaut)


# ---------------------------------------------------------------- pixel modes


def test_grayscale_l(tmp_path, camera):
    path = tmp_path / "camera.png"
    Image.fromarray(camera).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (512, 512)
    rgb = np.asarray(image)
    for channel in range(3):
        assert np.array_equal(rgb[..., channel], camera)


def test_bilevel_1(tmp_path, camera):
    path = tmp_path / "bilevel.png"
    Image.fromarray(camera > 128).save(path)
    assert Image.open(path).mode == "1"
    image = load_image(path)
    assert image.mode == "RGB"
    expected = np.where(camera > 128, 255, 0).astype(np.uint8)
    assert np.array_equal(np.asarray(image)[..., 0], expected)


def test_palette_without_transparency(tmp_path, astronaut):
    palette_image = Image.fromarray(astronaut).quantize(64)
    path = tmp_path / "palette.png"
    palette_image.save(path)
    image = load_image(path)
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.asarray(palette_image.convert("RGB")))


def test_palette_with_transparency_becomes_rgba(tmp_path, astronaut):
    palette_image = Image.fromarray(astronaut).quantize(64)
    indices = np.asarray(palette_image)
    transparent = int(indices[0, 0])
    path = tmp_path / "palette_t.png"
    palette_image.save(path, transparency=transparent)
    image = load_image(path)
    assert image.mode == "RGBA"
    rgba = np.asarray(image)
    assert np.array_equal(rgba[..., 3], np.where(indices == transparent, 0, 255))
    visible = indices != transparent
    assert np.array_equal(rgba[..., :3][visible], np.asarray(palette_image.convert("RGB"))[visible])


def test_la_keeps_alpha(tmp_path, camera):
    alpha = alpha_ramp(*camera.shape)
    path = tmp_path / "la.png"
    Image.merge("LA", [Image.fromarray(camera), Image.fromarray(alpha)]).save(path)
    assert Image.open(path).mode == "LA"
    image = load_image(path)
    assert image.mode == "RGBA"
    rgba = np.asarray(image)
    assert np.array_equal(rgba[..., 3], alpha)
    assert np.array_equal(rgba[..., 0], camera) and np.array_equal(rgba[..., 2], camera)


def test_rgba_exact(tmp_path, astronaut):
    rgba = np.dstack([astronaut, alpha_ramp(512, 512)])
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    image = load_image(path)
    assert image.mode == "RGBA"
    assert np.array_equal(np.asarray(image), rgba)


def test_rgb_colour_key_transparency_becomes_alpha(tmp_path, astronaut):
    key = tuple(int(v) for v in astronaut[0, 0])
    path = tmp_path / "key.png"
    Image.fromarray(astronaut).save(path, transparency=key)
    image = load_image(path)
    assert image.mode == "RGBA"
    alpha = np.asarray(image)[..., 3]
    assert np.array_equal(alpha == 0, np.all(astronaut == key, axis=-1))


def test_cmyk_jpeg(tmp_path, astronaut):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(astronaut).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (512, 512)
    assert mean_diff(np.asarray(image), astronaut) < 4.0


def test_16bit_grayscale_png(tmp_path, camera):
    path = tmp_path / "gray16.png"
    Image.fromarray(camera.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode.startswith("I;16")
    image = load_image(path)
    assert image.mode == "RGB"
    assert max_diff(np.asarray(image)[..., 1], camera) <= 1


def test_16bit_grayscale_rounds_not_truncates(camera):
    # 257*v - 100 truncates (>> 8) to v - 1 but rounds to v.
    values = np.clip(camera.astype(np.int32) * 257 - 100, 0, 65535).astype(np.uint16)
    image = load_image(png_bytes(Image.fromarray(values)))
    assert np.array_equal(np.asarray(image)[..., 0], camera)


@pytest.mark.parametrize("ext", [".tiff", ".png"])
def test_16bit_rgb_written_by_opencv(ext, astronaut):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    # Offsets of at most +-128 keep round(v / 257) == astronaut exactly, while
    # dropping the low byte (Pillow's own 16 -> 8 bit path) would be off by one.
    offsets = rng.integers(-128, 129, astronaut.shape)
    deep = np.clip(astronaut.astype(np.int32) * 257 + offsets, 0, 65535).astype(np.uint16)
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(deep[..., ::-1]))  # OpenCV wants BGR
    assert ok
    image = load_image(encoded.tobytes(), name=f"deep{ext}")
    assert image.mode == "RGB" and image.size == (512, 512)
    assert max_diff(np.asarray(image), astronaut) <= 1
    assert np.array_equal(np.asarray(image), astronaut)  # rounding, per the module contract


def test_16bit_rgba_png_written_by_opencv(astronaut):
    cv2 = pytest.importorskip("cv2")
    alpha = alpha_ramp(512, 512)
    deep = np.dstack([astronaut, alpha]).astype(np.uint16) * 257
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(deep[..., [2, 1, 0, 3]]))
    assert ok
    image = load_image(encoded.tobytes())
    assert image.mode == "RGBA"
    assert np.array_equal(np.asarray(image), np.dstack([astronaut, alpha]))


def test_float_rgb_tiff_pillow_cannot_open_uses_opencv(astronaut):
    cv2 = pytest.importorskip("cv2")
    ok, encoded = cv2.imencode(".tiff", np.ascontiguousarray(astronaut[..., ::-1]).astype(np.float32) / 255)
    assert ok
    image = load_image(encoded.tobytes(), name="float.tiff")
    assert image.mode == "RGB"
    assert max_diff(np.asarray(image), astronaut) <= 1


@pytest.mark.parametrize("scale", [1 / 255, 1.0])
def test_float_f_tiff(tmp_path, camera, scale):
    path = tmp_path / "float.tiff"
    Image.fromarray(camera.astype(np.float32) * np.float32(scale)).save(path)
    assert Image.open(path).mode == "F"
    image = load_image(path)
    assert image.mode == "RGB"
    assert max_diff(np.asarray(image)[..., 0], camera) <= 1


@pytest.mark.parametrize("mode", ["RGBX", "YCbCr", "HSV", "PA", "RGBa"])
def test_other_pil_modes(astronaut, mode):
    source = Image.fromarray(np.dstack([astronaut, np.full((512, 512), 255, np.uint8)]))
    source = source.convert("P").convert("PA") if mode == "PA" else source.convert(mode)
    image = load_image(source)
    assert image.mode == ("RGBA" if mode in ("PA", "RGBa") else "RGB")
    tolerance = 16.0 if mode == "PA" else 2.0  # PA went through a 256-colour palette
    assert mean_diff(np.asarray(image)[..., :3], astronaut) < tolerance


def test_premultiplied_la():
    source = Image.frombytes("La", (2, 1), bytes([31, 128, 0, 0]))  # premultiplied 62 at alpha 128
    image = load_image(source)
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0)) == (62, 62, 62, 128) and image.getpixel((1, 0))[3] == 0


def test_mode_i_is_read_as_16bit(camera):
    image = load_image(Image.fromarray(camera.astype(np.int32) * 257))
    assert image.mode == "RGB" and np.array_equal(np.asarray(image)[..., 0], camera)


def test_16bit_grayscale_colour_key_becomes_alpha(camera):
    key = int(camera[0, 0])
    data = png_bytes(Image.fromarray(camera.astype(np.uint16) * 257), transparency=key * 257)
    image = load_image(data)
    assert image.mode == "RGBA"
    assert np.array_equal(np.asarray(image)[..., 3] == 0, camera == key)


# ---------------------------------------------------------------- EXIF orientation


def test_exif_orientation_6_is_applied(tmp_path, coffee):
    original = Image.fromarray(coffee)  # 600 wide, 400 high
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    original.save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.size == (400, 600)
    expected = np.asarray(original.transpose(Image.Transpose.ROTATE_270))
    assert mean_diff(np.asarray(image), expected) < 3.0
    # And it really is a rotation, not merely a transposed size.
    assert mean_diff(np.asarray(image), np.asarray(original.transpose(Image.Transpose.ROTATE_90))) > 20

    with Image.open(path) as opened:  # a caller's PIL image gets the same treatment
        assert load_image(opened).size == (400, 600)


def with_exif_chunk(png: bytes, orientation: int) -> bytes:
    """Insert an eXIf chunk (EXIF Orientation) right after a PNG's IHDR chunk."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()[len(b"Exif\x00\x00") :]  # the chunk holds the bare TIFF structure
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    ihdr_end = 8 + 8 + 13 + 4  # signature, length + type, IHDR data, CRC
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def test_exif_orientation_on_16bit_rgb_decoded_by_opencv(coffee):
    # OpenCV's IMREAD_UNCHANGED ignores EXIF, so the orientation must come from Pillow's header.
    cv2 = pytest.importorskip("cv2")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(coffee[..., ::-1]).astype(np.uint16) * 257)
    assert ok
    data = with_exif_chunk(encoded.tobytes(), 8)
    image = load_image(data)
    assert image.size == (400, 600)
    expected = np.asarray(Image.fromarray(coffee).transpose(Image.Transpose.ROTATE_90))
    assert np.array_equal(np.asarray(image), expected)


def test_exif_orientation_on_tiff(coffee):
    exif = Image.Exif()
    exif[0x0112] = 3
    buffer = io.BytesIO()
    Image.fromarray(coffee).save(buffer, format="TIFF", exif=exif)
    image = load_image(buffer.getvalue())
    assert image.size == (600, 400)
    assert np.array_equal(np.asarray(image), coffee[::-1, ::-1])


# ---------------------------------------------------------------- in-memory inputs


def test_numpy_inputs(astronaut, camera):
    assert np.array_equal(np.asarray(load_image(astronaut)), astronaut)
    assert np.array_equal(np.asarray(load_image(astronaut.astype(np.uint16) * 257)), astronaut)
    assert np.array_equal(np.asarray(load_image(astronaut / 255.0)), astronaut)
    assert np.array_equal(np.asarray(load_image((astronaut / 255.0).astype(np.float32))), astronaut)
    gray = load_image(camera)
    assert gray.mode == "RGB" and np.array_equal(np.asarray(gray)[..., 2], camera)
    assert np.array_equal(np.asarray(load_image(camera[..., None]))[..., 0], camera)
    rgba = np.dstack([astronaut, alpha_ramp(512, 512)])
    assert load_image(rgba).mode == "RGBA" and np.array_equal(np.asarray(load_image(rgba)), rgba)
    # Non-contiguous views (e.g. a BGR -> RGB flip) are fine.
    assert np.array_equal(np.asarray(load_image(astronaut[:, ::-1])), astronaut[:, ::-1])


def test_numpy_float_is_clipped_to_unit_range(camera):
    values = camera / 255.0
    values[0, 0], values[0, 1], values[0, 2] = 1.0001, -0.5, np.nan
    out = np.asarray(load_image(values))[..., 0]
    assert (out[0, 0], out[0, 1], out[0, 2]) == (255, 0, 0)
    assert np.array_equal(out[1:], camera[1:])


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((2, 4, 4, 3), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
        np.zeros((4, 4, 3), np.int64),
    ],
    ids=["2-channels", "4-d", "empty", "int64"],
)
def test_numpy_rejected(array):
    with pytest.raises(ImageReadError) as excinfo:
        load_image(array)
    assert_one_line_error(excinfo, "<array>")


def test_bytes_and_file_like_inputs(tmp_path, astronaut):
    data = png_bytes(Image.fromarray(astronaut))
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        assert np.array_equal(np.asarray(load_image(source)), astronaut)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    with open(path, "rb") as stream:
        assert np.array_equal(np.asarray(load_image(stream)), astronaut)


def test_pil_input_is_not_modified(astronaut):
    original = Image.fromarray(astronaut).convert("L")
    result = load_image(original)
    assert result.mode == "RGB" and original.mode == "L"
    rgb = Image.fromarray(astronaut)
    assert load_image(rgb) is not rgb


def test_unsupported_source_type():
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        load_image(io.StringIO("text"))  # text-mode stream


# ---------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def astronaut_png(astronaut) -> bytes:
    return png_bytes(Image.fromarray(astronaut))


@pytest.mark.parametrize(
    ("filename", "make", "expected"),
    [
        ("empty.png", lambda png: b"", "empty file"),
        ("noise.png", lambda png: np.random.default_rng(1).bytes(4096), "not an image"),
        ("truncated.png", lambda png: png[: len(png) // 2], "truncated"),
        ("notes.txt", lambda png: b"just some text\nnot an image\n", "not an image"),
        ("header_only.png", lambda png: png[:60], ""),
    ],
)
def test_bad_files(tmp_path, astronaut_png, filename, make, expected):
    path = tmp_path / filename
    path.write_bytes(make(astronaut_png))
    with pytest.raises(ImageReadError) as excinfo:
        load_image(path)
    assert isinstance(excinfo.value, U2SegError)
    assert_one_line_error(excinfo, filename, expected)


def test_truncated_jpeg(tmp_path, astronaut):
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageReadError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, "cut.jpg", "truncated")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's own warning while probing the cut file
def test_truncated_16bit_tiff(astronaut):
    cv2 = pytest.importorskip("cv2")
    ok, encoded = cv2.imencode(".tiff", astronaut.astype(np.uint16) * 257)
    data = encoded.tobytes()
    with pytest.raises(ImageReadError) as excinfo:
        load_image(data[: len(data) // 2], name="deep.tiff")
    assert_one_line_error(excinfo, "deep.tiff")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError) as excinfo:
        load_image(tmp_path / "nope.jpg")
    assert_one_line_error(excinfo, "nope.jpg", "no such file")


def test_directory(tmp_path):
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(ImageReadError) as excinfo:
        load_image(folder)
    assert_one_line_error(excinfo, "folder.png", "directory")


def test_empty_bytes_and_stream():
    with pytest.raises(ImageReadError) as excinfo:
        load_image(b"")
    assert_one_line_error(excinfo, "<bytes>", "empty")
    with pytest.raises(ImageReadError) as excinfo:
        load_image(io.BytesIO(b""), name="<stdin>")
    assert_one_line_error(excinfo, "<stdin>", "empty")


def test_name_with_newline_stays_one_line(tmp_path):
    with pytest.raises(ImageReadError) as excinfo:
        load_image(b"garbage bytes", name="two\nlines.png")
    assert_one_line_error(excinfo, "lines.png")


def test_decompression_bomb(monkeypatch, astronaut_png):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(ImageReadError) as excinfo:
        load_image(astronaut_png, name="huge.png")
    assert_one_line_error(excinfo, "huge.png", "too many pixels (262144 > 20000)")


def test_decompression_bomb_opencv_path(monkeypatch, astronaut):
    cv2 = pytest.importorskip("cv2")
    ok, encoded = cv2.imencode(".tiff", astronaut.astype(np.float32) / 255)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(ImageReadError) as excinfo:
        load_image(encoded.tobytes(), name="huge.tiff")
    assert_one_line_error(excinfo, "huge.tiff", "too many pixels")


@pytest.mark.parametrize("kind", ["bytes", "pil", "array", "tiff-opencv"])
def test_max_pixels_refuses_before_decoding(kind, astronaut, astronaut_png):
    from u2seg.errors import PixelLimitError

    if kind == "bytes":
        source = astronaut_png
    elif kind == "pil":
        source = Image.open(io.BytesIO(astronaut_png))  # lazily opened: refused before it decodes
    elif kind == "array":
        source = astronaut
    else:
        cv2 = pytest.importorskip("cv2")
        source = cv2.imencode(".tiff", astronaut.astype(np.float32) / 255)[1].tobytes()  # only OpenCV reads it
    with pytest.raises(PixelLimitError) as excinfo:
        load_image(source, name="big one", max_pixels=512 * 512 - 1)
    message = assert_one_line_error(excinfo, "big one: image of 512×512 = 262,144 pixels is over the limit of "
                                              "262,143 pixels")
    assert message.startswith("big one: ") and excinfo.value.input_name == "big one"
    assert isinstance(excinfo.value, ValueError) and isinstance(excinfo.value, U2SegError)
    if kind == "pil":
        assert source.tile  # still to decode: Pillow empties the tile list once it has decoded
    assert load_image(source, max_pixels=512 * 512).size == (512, 512)


def test_max_pixels_over_pillows_own_guard_is_still_a_pixel_limit_error(monkeypatch, astronaut_png):
    from u2seg.errors import PixelLimitError

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow refuses in Image.open already
    with pytest.raises(PixelLimitError) as excinfo:
        load_image(astronaut_png, name="huge.png", max_pixels=50_000)
    assert_one_line_error(excinfo, "huge.png: image of 512×512 = 262,144 pixels is over the limit of 50,000")


# ---------------------------------------------------------------- encoding / saving


@pytest.fixture(scope="module")
def cutout(astronaut) -> Image.Image:
    rgba = np.dstack([astronaut, alpha_ramp(512, 512)])
    return Image.fromarray(rgba)


@pytest.mark.parametrize("fmt", ["png", "webp", "PNG", ".webp"])
def test_encode_image_lossless_with_alpha(cutout, fmt):
    data = encode_image(cutout, fmt)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == fmt.lstrip(".").upper()
    assert decoded.mode == "RGBA"
    # exact, including colour under fully transparent pixels
    assert np.array_equal(np.asarray(decoded), np.asarray(cutout))


def test_encode_image_errors(cutout):
    with pytest.raises(ValueError, match="png, webp"):
        encode_image(cutout, "jpg")
    with pytest.raises(TypeError):
        encode_image(object(), "png")  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_save_image_round_trip(tmp_path, cutout, suffix):
    target = tmp_path / "new" / "deeper" / f"cutout{suffix}"
    assert save_image(cutout, target) == target
    assert np.array_equal(np.asarray(load_image(target)), np.asarray(cutout))
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_save_image_fmt_overrides_suffix(tmp_path, cutout):
    target = save_image(cutout, tmp_path / "mask.bin", fmt="webp")
    assert Image.open(target).format == "WEBP"


def test_save_image_unknown_suffix(tmp_path, cutout):
    with pytest.raises(ValueError, match="png"):
        save_image(cutout, tmp_path / "out.jpg")
    assert list(tmp_path.iterdir()) == []


def test_save_image_encode_failure_keeps_existing_file(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"original bytes")
    with pytest.raises(TypeError):
        save_image(object(), target)  # type: ignore[arg-type]
    assert target.read_bytes() == b"original bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_save_image_replace_failure_keeps_existing_file(tmp_path, monkeypatch, cutout):
    target = tmp_path / "out.webp"
    target.write_bytes(b"original bytes")

    def failing_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(image_io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        save_image(cutout, target)
    assert target.read_bytes() == b"original bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.webp"]


def test_save_image_write_failure_removes_temp(tmp_path, monkeypatch, cutout):
    target = tmp_path / "out.png"

    def failing_fsync(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(image_io.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="fsync failed"):
        save_image(cutout, target)
    assert list(tmp_path.iterdir()) == []


def test_write_bytes_atomic(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    write_bytes_atomic(b"one", target)
    assert target.read_bytes() == b"one"
    write_bytes_atomic(b"two", target)
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["data.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_write_bytes_atomic_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    fresh = tmp_path / "fresh.bin"
    write_bytes_atomic(b"x", fresh)
    # Not the 0o600 of a bare temporary file.
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    write_bytes_atomic(b"new", kept)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640


def test_write_bytes_atomic_onto_directory_fails_cleanly(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_bytes(b"keep")
    with pytest.raises(OSError):
        write_bytes_atomic(b"data", target)
    assert (target / "inside").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_relative_path(tmp_path, monkeypatch, cutout):
    monkeypatch.chdir(tmp_path)
    save_image(cutout, Path("here.png"))
    assert (tmp_path / "here.png").is_file()
