"""Colour handling end to end, through the real removal path (the pretrained u2netp weights):
EXIF orientations, palette / 16-bit / CMYK / LA inputs, and ICC profiles carried from the input
into the written cutout."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from u2seg.image_encode import encode_image
from u2seg.image_io import load_image
from u2seg.infer.files import Task
from u2seg.infer.refine import RefineOptions
from u2seg.infer.removal import remove, remove_files

W, H = 96, 64  # not square: a missed rotation changes the shape


@pytest.fixture(scope="module")
def upright(coffee) -> Image.Image:
    return Image.fromarray(coffee).resize((W, H), Image.Resampling.LANCZOS)


def encoded(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def cutout(source, predictor, **options) -> Image.Image:
    return remove(source, predictor=predictor, **options)


def insert_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """A chunk right after IHDR."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:33] + chunk + png[33:]


def decoded_profile(data: bytes) -> bytes | None:
    with Image.open(io.BytesIO(data)) as image:
        return image.info.get("icc_profile")


# ---------------------------------------------------------------------------- EXIF orientation

# For each orientation: what turns the upright picture into the stored one (the inverse of the
# fix a viewer applies).
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,     # the viewer rotates 270 (90 clockwise) back
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def stored(upright: Image.Image, orientation: int, fmt: str = "PNG", **params) -> bytes:
    turn = STORED[orientation]
    pixels = upright.transpose(turn) if turn is not None else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(pixels, fmt, exif=exif, **params)


@pytest.fixture(scope="module")
def upright_cutout(upright, predictor) -> Image.Image:
    return cutout(encoded(upright), predictor)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_an_upright_cutout_and_mask(orientation, upright, predictor, upright_cutout):
    data = stored(upright, orientation)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.size == ((H, W) if orientation >= 5 else (W, H))  # really stored turned
    got = cutout(data, predictor)
    # The colours and the mask (the cutout's alpha: what --only-mask writes) both upright, exactly.
    assert got.size == (W, H)
    assert np.array_equal(np.asarray(got), np.asarray(upright_cutout))
    if orientation == 6:  # the common camera case, through the mask path itself
        mask = cutout(data, predictor, only_mask=True)
        assert np.array_equal(np.asarray(mask), np.asarray(upright_cutout.getchannel("A")))


def test_a_folder_of_rotated_jpegs_comes_out_upright(upright, predictor, tmp_path):
    """The folder path (remove_files, as `u2seg remove DIR -o OUT`) on camera-style JPEGs."""
    (tmp_path / "in").mkdir()
    tasks = []
    orientations = (1, 2, 6, 7)  # upright, mirrored, turned, turned and mirrored
    for orientation in orientations:
        source = tmp_path / "in" / f"o{orientation}.jpg"
        source.write_bytes(stored(upright, orientation, "JPEG", quality=95))
        tasks.append(Task(source, tmp_path / "out" / f"o{orientation}.png"))
    report = remove_files(predictor, tasks, RefineOptions(only_mask=True), workers=1, progress=False)
    assert report.failed == [] and len(report.written) == len(orientations)
    masks = [np.asarray(Image.open(task.output)).astype(int) for task in tasks]
    want = masks[0]  # orientation 1: the JPEG stored upright
    for orientation, mask in zip(orientations, masks):
        assert mask.shape == (H, W), orientation
        # JPEG quantises a turned picture a little differently: close (measured ≤ 2), not identical;
        # a mask left flipped is ~20 off, one left mirrored ~40.
        assert np.abs(mask - want).mean() < 5, orientation
        assert np.abs(mask - want[::-1]).mean() > 10 and np.abs(mask - want[:, ::-1]).mean() > 10


# ---------------------------------------------------------------------------- pixel modes

def assert_valid_cutout(output: Image.Image, decoded: Image.Image) -> np.ndarray:
    """An RGBA cutout of the input's size whose visible colours are the input's."""
    assert output.mode == "RGBA" and output.size == decoded.size
    rgba = np.asarray(output)
    alpha = rgba[..., 3]
    assert alpha.max() > 0, "nothing kept"
    source = np.asarray(decoded.convert("RGB"))
    visible = alpha > 0
    assert np.array_equal(rgba[..., :3][visible], source[visible])
    assert not rgba[..., :3][~visible].any()  # zeros under transparent pixels
    return alpha


def test_palette_with_transparency(upright, predictor):
    palette = upright.quantize(32)
    indices = np.asarray(palette).copy()
    indices[:, : W // 3] = 31  # a transparent band on the left
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette(upright.quantize(32).getpalette())
    data = encoded(palette, transparency=31)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "P" and raw.info["transparency"] == 31
        expected = np.asarray(raw.convert("RGBA"))
    decoded = load_image(data)
    assert decoded.mode == "RGBA"
    assert np.array_equal(np.asarray(decoded), expected)  # palette colours exactly
    alpha = assert_valid_cutout(cutout(data, predictor), decoded)
    assert not alpha[:, : W // 3].any()  # transparent in the input: transparent in the cutout


def sixteen_bit(upright: Image.Image, with_alpha: bool) -> tuple[bytes, np.ndarray]:
    rgb16 = np.asarray(upright).astype(np.uint16) * 257 + np.uint16(100)  # not multiples of 257: rounding shows
    channels = [rgb16]
    if with_alpha:
        ramp = np.tile(np.linspace(0, 65535, W).astype(np.uint16), (H, 1))
        channels.append(ramp[..., None])
    pixels = np.concatenate(channels, axis=2)
    order = [2, 1, 0, 3] if with_alpha else [2, 1, 0]
    ok, data = cv2.imencode(".png", np.ascontiguousarray(pixels[..., order]))
    assert ok
    return data.tobytes(), pixels


@pytest.mark.parametrize("with_alpha", [False, True], ids=["rgb16", "rgba16"])
def test_16bit_png_scales_to_8_bits(upright, predictor, with_alpha):
    data, pixels = sixteen_bit(upright, with_alpha)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode in ("RGB", "RGBA") and ";16" in str(raw.tile[0][3])  # really 16 bits per channel
    expected = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v / 257)
    decoded = load_image(data)
    assert decoded.mode == ("RGBA" if with_alpha else "RGB")
    assert np.array_equal(np.asarray(decoded), expected)
    output = cutout(data, predictor)
    if not with_alpha:
        assert_valid_cutout(output, decoded)
    else:
        alpha = np.asarray(output)[..., 3].astype(int)
        own = expected[..., 3].astype(int)
        assert (alpha <= own + 1).all()  # never more opaque than the input
        assert not alpha[:, 0].any()  # the input's transparent column stays transparent


def test_16bit_grey_png(upright, predictor):
    grey16 = np.asarray(upright.convert("L")).astype(np.uint16) * 257 + np.uint16(100)
    data = encoded(Image.fromarray(grey16))
    decoded = load_image(data)
    expected = ((grey16.astype(np.uint32) + 128) // 257).astype(np.uint8)
    assert decoded.mode == "RGB"
    assert all(np.array_equal(np.asarray(decoded)[..., c], expected) for c in range(3))
    assert_valid_cutout(cutout(data, predictor), decoded)


def test_cmyk_jpeg(upright, predictor):
    data = encoded(upright.convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "CMYK"
        pillow_rgb = np.asarray(raw.convert("RGB"))
    decoded = load_image(data)
    assert decoded.mode == "RGB"
    assert np.abs(np.asarray(decoded).astype(int) - pillow_rgb).max() <= 1
    assert np.abs(np.asarray(decoded).astype(int) - np.asarray(upright)).mean() < 4  # the picture's colours
    assert_valid_cutout(cutout(data, predictor), decoded)


def test_la_png(upright, predictor):
    grey = np.asarray(upright.convert("L"))
    ramp = np.tile(np.linspace(0, 255, W).round().astype(np.uint8), (H, 1))
    data = encoded(Image.fromarray(np.dstack([grey, ramp]), mode="LA"))
    decoded = load_image(data)
    assert decoded.mode == "RGBA"
    rgba = np.asarray(decoded)
    assert all(np.array_equal(rgba[..., c], grey) for c in range(3)) and np.array_equal(rgba[..., 3], ramp)
    output = np.asarray(cutout(data, predictor))
    assert output.shape == (H, W, 4)
    assert (output[..., 3].astype(int) <= ramp.astype(int) + 1).all() and not output[:, 0, 3].any()


# ---------------------------------------------------------------------------- ICC profiles

def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def rgb_profile(description: str = "u2seg test wide-gamut RGB") -> bytes:
    """A small, valid ICC v2 RGB matrix/TRC display profile that is not sRGB (Adobe RGB-like
    primaries adapted to D50, gamma 2.2)."""
    def xyz(x, y, z):
        return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)

    text = description.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4) + bytes(4) + bytes(2) + bytes(1) + bytes(67)
    curve = b"curv" + bytes(4) + struct.pack(">I", 1) + struct.pack(">H", 563) + bytes(2)  # u8Fixed8 2.199
    tags = [
        (b"desc", desc),
        (b"cprt", b"text" + bytes(4) + b"No copyright, test data\0"),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.6097, 0.3111, 0.0195)),
        (b"gXYZ", xyz(0.2053, 0.6257, 0.0609)),
        (b"bXYZ", xyz(0.1492, 0.0632, 0.7446)),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
    ]
    table_end = 128 + 4 + 12 * len(tags)
    entries, blobs, offset = [], b"", table_end
    for signature, blob in tags:
        blob += bytes(-len(blob) % 4)
        entries.append(struct.pack(">4sII", signature, offset, len(blob)))
        blobs += blob
        offset += len(blob)
    size = offset
    header = (struct.pack(">I", size) + b"none" + bytes([2, 0x10, 0, 0]) + b"mntr" + b"RGB " + b"XYZ "
              + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + bytes(4) + bytes(4) + bytes(4) + bytes(4)
              + bytes(8) + bytes(4) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(4) + bytes(16) + bytes(28))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(entries) + blobs


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
WIDE = rgb_profile()


def test_the_hand_built_profile_is_a_real_rgb_profile(upright):
    profile = ImageCms.ImageCmsProfile(io.BytesIO(WIDE))
    assert ImageCms.getProfileDescription(profile).strip() == "u2seg test wide-gamut RGB"
    to_srgb = ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), "RGB", "RGB")
    converted = np.asarray(ImageCms.applyTransform(upright, to_srgb)).astype(int)
    assert np.abs(converted - np.asarray(upright)).mean() > 3  # a different colour space: colours move
    assert WIDE != SRGB


PROFILES = {"srgb": SRGB, "wide": WIDE}


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
@pytest.mark.parametrize("source", ["png", "jpeg", "webp", "png16"])
def test_the_input_icc_profile_is_embedded_in_the_cutout(profile, source, upright, predictor):
    if source == "png16":  # decoded by OpenCV: the profile comes from Pillow's reading of the header
        data, _ = sixteen_bit(upright, with_alpha=False)
        data = insert_chunk(data, b"iCCP", b"icc\0\0" + zlib.compress(profile))
    else:
        data = encoded(upright, source.upper(), icc_profile=profile, **({"lossless": True} if source == "webp" else {}))
    assert decoded_profile(data) == profile
    output = cutout(data, predictor)
    assert output.info.get("icc_profile") == profile
    for fmt in ("png", "webp"):
        # The same bytes, so photo tools show the same colours.
        assert decoded_profile(encode_image(output, fmt)) == profile, fmt
    written = encode_image(output, "png")
    back = cv2.imdecode(np.frombuffer(written, np.uint8), cv2.IMREAD_UNCHANGED)  # libpng accepts it
    assert back is not None and back.shape == (H, W, 4)
    assert np.array_equal(back[..., [2, 1, 0, 3]], np.asarray(output))


def test_composites_keep_the_profile(upright, predictor):
    """Over a colour the output is an RGB colour image made of the input's pixels: it keeps it."""
    output = cutout(encoded(upright, icc_profile=WIDE), predictor, bgcolor=(255, 255, 255, 255))
    assert output.mode == "RGB" and output.info.get("icc_profile") == WIDE
    assert decoded_profile(encode_image(output, "png")) == WIDE


def test_the_profile_reaches_the_files_written_for_a_folder(upright, predictor, tmp_path):
    source = tmp_path / "wide.png"
    source.write_bytes(encoded(upright, icc_profile=WIDE))
    for fmt in ("png", "webp"):
        task = Task(source, tmp_path / "out" / f"wide.{fmt}")
        report = remove_files(predictor, [task], fmt=fmt, progress=False)
        assert report.failed == [] and report.written == [task.output]
        assert decoded_profile(task.output.read_bytes()) == WIDE, fmt


def test_masks_carry_no_rgb_profile(upright, predictor, tmp_path):
    source = tmp_path / "wide.png"
    source.write_bytes(encoded(upright, icc_profile=WIDE))
    target = tmp_path / "out" / "mask.png"
    report = remove_files(predictor, [Task(source, target)], RefineOptions(only_mask=True), progress=False)
    assert report.failed == [] and decoded_profile(target.read_bytes()) is None  # --only-mask
    mask = cutout(source, predictor, only_mask=True)
    assert mask.mode == "L" and "icc_profile" not in mask.info
    assert decoded_profile(encode_image(mask, "png")) is None
    # Even when one is put there by hand, a grey PNG gets no RGB profile (libpng rejects it).
    mask.info["icc_profile"] = WIDE
    assert decoded_profile(encode_image(mask, "png")) is None
    assert decoded_profile(encode_image(mask, "webp")) is None


def test_a_profile_that_does_not_describe_rgb_is_dropped(upright, predictor):
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    assert lab[16:20] == b"Lab "
    data = insert_chunk(encoded(upright), b"iCCP", b"lab\0\0" + zlib.compress(lab))
    assert decoded_profile(data) == lab
    assert "icc_profile" not in load_image(data).info
    output = cutout(data, predictor)
    assert "icc_profile" not in output.info and decoded_profile(encode_image(output, "png")) is None


def test_images_without_a_profile_are_written_without_one(upright, predictor):
    output = cutout(encoded(upright), predictor)
    assert "icc_profile" not in output.info
    assert decoded_profile(encode_image(output, "png")) is None
    assert decoded_profile(encode_image(output, "webp")) is None
