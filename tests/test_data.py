"""u2seg.data: datasets (FolderPairs, FileList, VOC), checks, joint transforms, synthetic data, splits.

Data is made here: synthetic composites (u2seg.data.synth) and crops of scikit-image's photos.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from u2seg.data import (
    DatasetError, FileList, FolderPairs, VOCSegmentation, build_transform, check_dataset, letterbox,
    make_synthetic_dataset, official_eval, official_train, resize_mask, split_dataset, synth_sample,
)
from u2seg.errors import U2SegError

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


# --------------------------------------------------------------------------- helpers


def _photo(name: str = "astronaut", size: tuple[int, int] | None = None) -> np.ndarray:
    from skimage import data

    pixels = getattr(data, name)()
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if size is not None:
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
    return pixels


def _save(array: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _disc(h: int, w: int, value: int = 255) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.where((ys - h / 2) ** 2 + (xs - w / 2) ** 2 < (min(h, w) / 3) ** 2, value, 0).astype(np.uint8)


def _voc_palette() -> list[int]:
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _palette_png(indices: np.ndarray, path: Path) -> Path:
    image = Image.fromarray(indices.astype(np.uint8))
    image.putpalette(_voc_palette())  # an "L" image becomes "P": the indices stay as they are
    assert image.mode == "P"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), count=12, size=64, seed=3)


@pytest.fixture(scope="module")
def synth_multi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth_mc"), count=8, size=64, seed=4,
                                  multiclass=True, num_classes=4)


def test_light_imports_do_not_load_torch() -> None:
    code = ("import sys, u2seg.data, u2seg.data.synth, u2seg.data.split; "
            "from u2seg.data import make_synthetic_dataset, split_dataset; "
            "print('torch' in sys.modules, 'albumentations' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- datasets


def test_folder_pairs_binary(synth_root: Path) -> None:
    ds = FolderPairs(synth_root)
    assert len(ds) == 12 and ds.binary and ds.num_classes == 1
    item = ds[5]
    assert item["name"] == "00005"
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 64, 64)
    assert item["mask"].dtype == torch.float32 and item["mask"].shape == (1, 64, 64)
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    stored = np.asarray(Image.open(synth_root / "masks" / "00005.png"))
    assert np.array_equal(item["mask"][0].numpy(), (stored > 127).astype(np.float32))
    # transform=None: the image normalised as inference does (divide by max, ImageNet mean/std)
    raw = np.asarray(Image.open(synth_root / "images" / "00005.jpg").convert("RGB")).astype(np.float32)
    expected = ((raw / raw.max() - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(item["image"].numpy(), expected, atol=1e-5)
    assert ds.check() == []
    check_dataset(ds)  # no problems: no exception


def test_folder_pairs_duts_layout_and_subfolders(tmp_path: Path) -> None:
    images, masks = tmp_path / "DUTS-TR" / "DUTS-TR-Image", tmp_path / "DUTS-TR" / "DUTS-TR-Mask"
    photo = _photo("coffee", (60, 40))
    for name in ("ILSVRC2012_test_00000004", "sun_abc", "sub/inner"):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (images / f"{name}.jpg").write_bytes(_jpeg_bytes(photo))
        _save(_disc(40, 60), masks / f"{name}.png")
    (images / ".DS_Store").write_bytes(b"junk")  # hidden files and non-images are skipped
    (images / "._sun_abc.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (masks / "notes.txt").write_text("not an image")
    ds = FolderPairs(images, masks)
    assert [s.name for s in ds.samples] == ["ILSVRC2012_test_00000004", "sub/inner", "sun_abc"]
    assert ds.check() == []
    item = ds[1]
    assert item["name"] == "sub/inner" and item["image"].shape == (3, 40, 60)


def test_folder_pairs_multiclass(synth_multi: Path) -> None:
    ds = FolderPairs(synth_multi, num_classes=4, transform=official_train(size=64, crop=48))
    item = ds[0]
    assert item["image"].shape == (3, 48, 48)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (48, 48)
    values = set(torch.cat([ds[i]["mask"].flatten() for i in range(len(ds))]).unique().tolist())
    assert 0 in values and values <= {0, 1, 2, 3} and len(values) >= 3
    assert ds.check() == []


def test_binarisation_rules(tmp_path: Path) -> None:
    photo = _photo("chelsea", (32, 24))
    soft = np.zeros((24, 32), np.uint8)
    soft[:, 8:] = 100   # below the threshold → 0
    soft[:, 16:] = 128  # above → 1
    soft[:, 24:] = 255
    zero_one = (_disc(24, 32) > 0).astype(np.uint8)  # a 0/1 mask is used as it is
    for name, mask in (("soft", soft), ("zero_one", zero_one)):
        (tmp_path / "images").mkdir(exist_ok=True)
        _save(photo, tmp_path / "images" / f"{name}.png")
        _save(mask, tmp_path / "masks" / f"{name}.png")
    # a 0/255 mask saved as an RGB JPEG: binarised, and not reported as a colour mask
    (tmp_path / "images" / "jpeg.png").write_bytes((tmp_path / "images" / "soft.png").read_bytes())
    (tmp_path / "masks" / "jpeg.jpg").write_bytes(_jpeg_bytes(np.repeat(_disc(24, 32)[:, :, None], 3, 2)))
    ds = FolderPairs(tmp_path)
    assert ds.check() == []
    jpeg_out = ds[ds_index(ds, "jpeg")]["mask"][0].numpy()
    assert np.mean(jpeg_out != (_disc(24, 32) > 0)) < 0.02
    soft_out = ds[ds_index(ds, "soft")]["mask"][0].numpy()
    assert soft_out[:, :16].max() == 0 and soft_out[:, 16:].min() == 1
    assert np.array_equal(ds[ds_index(ds, "zero_one")]["mask"][0].numpy(), zero_one.astype(np.float32))


def ds_index(ds, name: str) -> int:
    return [s.name for s in ds.samples].index(name)


def test_file_list_custom_separator_and_comments(tmp_path: Path) -> None:
    photo = _photo("rocket", (48, 32))
    for i in range(3):
        _save(photo, tmp_path / "imgs" / f"a {i}.png")  # spaces in names: hence the separator
        _save(_disc(32, 48, 2 if i == 1 else 1), tmp_path / "labels" / f"a {i}.png")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text(
        "# PaddleSeg file list\r\n\r\nimgs/a 0.png|labels/a 0.png\r\n"
        "   # indented comment\nimgs/a 2.png | labels/a 2.png\nimgs/a 1.png|labels/a 1.png\n\n",
        encoding="utf-8")
    ds = FileList(tmp_path, "lists/train.txt", separator="|", num_classes=3)
    assert [s.name for s in ds.samples] == ["imgs/a 0", "imgs/a 2", "imgs/a 1"]
    assert ds.samples[1].source.endswith("train.txt:5")
    item = ds[2]
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (32, 48)
    assert set(item["mask"].unique().tolist()) == {0, 2}
    assert ds.check() == []
    # list path given relative to the working directory / absolute works too
    assert len(FileList(tmp_path, tmp_path / "lists" / "train.txt", separator="|", num_classes=3)) == 3


def test_file_list_errors(tmp_path: Path) -> None:
    photo = _photo("coffee", (30, 20))
    _save(photo, tmp_path / "images" / "ok.png")
    _save(_disc(20, 30, 1), tmp_path / "masks" / "ok.png")
    with pytest.raises(U2SegError, match="file list not found"):
        FileList(tmp_path, "train.txt", num_classes=2)
    with pytest.raises(U2SegError, match="dataset folder not found"):
        FileList(tmp_path / "nope", "train.txt", num_classes=2)
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(U2SegError, match="no samples"):
        FileList(tmp_path, "empty.txt", num_classes=2)
    (tmp_path / "bad.txt").write_text("images/ok.png masks/ok.png\nimages/ok.png\n")
    with pytest.raises(U2SegError, match=r"bad\.txt:2: expected 'image mask'"):
        FileList(tmp_path, "bad.txt", num_classes=2)
    # listed files that don't exist: kept, reported by check() with the list's line, raised on access
    (tmp_path / "missing.txt").write_text("images/ok.png masks/ok.png\nimages/gone.jpg masks/ok.png\n"
                                          "images/ok.png masks/gone.png\n")
    ds = FileList(tmp_path, "missing.txt", num_classes=2)
    problems = ds.check()
    assert len(problems) == 2
    assert "missing.txt:2: " in problems[0] and "images/gone.jpg: image file not found" in problems[0]
    assert "missing.txt:3: " in problems[1] and "masks/gone.png: mask file not found" in problems[1]
    with pytest.raises(U2SegError, match="missing.txt:2: .*gone.jpg: no such file"):
        ds[1]


def _make_voc(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    ids = ["2007_000032", "2007_000039", "2008_000123"]
    photo = _photo("astronaut", (80, 60))
    for k, name in enumerate(ids):
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (voc / "JPEGImages" / f"{name}.jpg").write_bytes(_jpeg_bytes(photo))
        labels = np.zeros((60, 80), np.uint8)
        labels[10:50, 20:60] = 255          # VOC's border band...
        labels[12:48, 22:58] = 15 if k else 1   # ...around an object (person / aeroplane)
        _palette_png(labels, voc / "SegmentationClass" / f"{name}.png")
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (sets / "val.txt").write_text(ids[2] + "\n")
    return voc


def test_voc_segmentation(tmp_path: Path) -> None:
    voc = _make_voc(tmp_path)
    train = VOCSegmentation(voc, "train")
    assert len(train) == 2 and train.num_classes == 21 and not train.binary
    item = train[1]
    assert item["name"] == "2007_000039"
    assert item["image"].shape == (3, 60, 80)
    mask = item["mask"]
    assert mask.dtype == torch.int64 and mask.shape == (60, 80)
    assert set(mask.unique().tolist()) == {0, 15, 255}
    assert mask[30, 40] == 15 and mask[10, 40] == 255 and mask[0, 0] == 0
    assert train.check() == []
    # the VOCdevkit folder works too; letterbox pads multi-class masks with 255 (ignore)
    val = VOCSegmentation(tmp_path / "VOCdevkit", "val", transform=letterbox(100))
    out = val[0]
    assert out["image"].shape == (3, 100, 100) and out["mask"].shape == (100, 100)
    assert (out["mask"][:12] == 255).all() and (out["mask"][-12:] == 255).all()  # 80×60 → 100×75
    with pytest.raises(U2SegError, match="split list not found; splits here: train, val"):
        VOCSegmentation(voc, "trainval")
    with pytest.raises(U2SegError, match="VOC folder not found"):
        VOCSegmentation(tmp_path / "nothing")


def test_check_finds_every_problem(tmp_path: Path) -> None:
    photo = _photo("coffee", (40, 30))
    images, masks = tmp_path / "images", tmp_path / "masks"
    for name in ("good", "mismatch", "badvalues", "truncated", "garbage", "lonely_image",
                 "colour", "twice"):
        _save(photo, images / f"{name}.png")
    _save(photo, images / "twice.jpg")                      # two images with one stem
    for name in ("good", "truncated", "garbage", "twice"):
        _save(_disc(30, 40, 1), masks / f"{name}.png")
    _save(_disc(20, 40, 1), masks / "mismatch.png")         # 40×20 mask for a 40×30 image
    bad = _disc(30, 40, 1)
    bad[0, :3] = [3, 7, 200]
    _save(bad, masks / "badvalues.png")
    colour = np.zeros((30, 40, 3), np.uint8)
    colour[5:20, 5:20] = (128, 0, 0)                        # a VOC-style colour mask
    _save(colour, masks / "colour.png")
    _save(_disc(30, 40, 1), masks / "lonely_mask.png")
    (images / "truncated.png").write_bytes((images / "truncated.png").read_bytes()[:150])
    (images / "garbage.png").write_bytes(b"this is not an image")

    ds = FolderPairs(tmp_path, num_classes=3)
    problems = ds.check()
    text = "\n".join(problems)
    assert all("\n" not in line for line in problems)

    def line(fragment: str) -> str:
        found = [p for p in problems if fragment in p]
        assert len(found) == 1, (fragment, problems)
        return found[0]

    assert str(masks) in line("lonely_image.png: no mask")
    assert str(images) in line("lonely_mask.png: no image")
    assert "twice.jpg, twice.png" in line("share the name 'twice'")
    assert str(masks / "mismatch.png") in line(f"{images / 'mismatch.png'}: 40×30 but its mask")
    assert "3, 7, 200" in line(f"{masks / 'badvalues.png'}: mask values")
    assert line(f"{images / 'truncated.png'}:")
    assert "not an image" in line(f"{images / 'garbage.png'}:")
    assert line(f"{masks / 'colour.png'}: colour (RGB) mask")
    assert "good" not in text
    assert len(problems) == 8

    with pytest.raises(DatasetError) as info:
        check_dataset(ds, limit=3)
    message = str(info.value)
    assert message.splitlines()[0].startswith("8 problems in FolderPairs at ")
    assert len(message.splitlines()) == 1 + 3 + 1 and "… and 5 more" in message
    assert info.value.problems == problems
    # header-only reading (decode=False) still sees every problem but the truncated pixels
    assert len(ds.check(decode=False)) == 7
    # reading a bad sample raises with the file's name
    with pytest.raises(U2SegError, match="mismatch.png: 40×30 but its mask"):
        ds[ds_index(ds, "mismatch")]
    with pytest.raises(U2SegError, match="badvalues.png: mask values 3, 7, 200"):
        ds[ds_index(ds, "badvalues")]


def test_binary_checks_and_multiclass_hint(tmp_path: Path) -> None:
    photo = _photo("chelsea", (40, 30))
    _save(photo, tmp_path / "images" / "indices.png")
    _save(_disc(30, 40, 2), tmp_path / "masks" / "indices.png")   # class indices used as a binary mask
    _save(photo, tmp_path / "images" / "fine.png")
    _save(_disc(30, 40, 255), tmp_path / "masks" / "fine.png")
    colour = np.zeros((30, 40, 3), np.uint8)
    colour[5:25, 5:35] = (255, 60, 0)                             # a red object: luminance 108
    _save(photo, tmp_path / "images" / "colour.png")
    _save(colour, tmp_path / "masks" / "colour.png")
    problems = FolderPairs(tmp_path).check()
    text = "\n".join(problems)
    assert len(problems) == 3, problems
    assert "indices.png: no value above 127 (max 2)" in text
    assert "colour.png: colour mask; binary masks should be grayscale" in text
    assert "colour.png: no value above 127 (max 111)" in text
    # read anyway through its luminance (ITU-R 601: 0.299·255 + 0.587·60 ≈ 111 ≤ 127 → background)
    ds = FolderPairs(tmp_path)
    assert ds[ds_index(ds, "colour")]["mask"].max() == 0
    (tmp_path / "masks" / "colour.png").unlink()
    (tmp_path / "images" / "colour.png").unlink()
    # 0/255 masks with num_classes=2: 255 would be "ignore" everywhere
    (tmp_path / "masks" / "indices.png").unlink()
    (tmp_path / "images" / "indices.png").unlink()
    problems = FolderPairs(tmp_path, num_classes=2).check()
    assert len(problems) == 1 and "masks hold only 0 and 255" in problems[0]


def test_constructor_errors(tmp_path: Path) -> None:
    with pytest.raises(U2SegError, match="dataset folder not found"):
        FolderPairs(tmp_path / "missing")
    (tmp_path / "images").mkdir()
    with pytest.raises(U2SegError, match="no masks/ folder"):
        FolderPairs(tmp_path)
    (tmp_path / "masks").mkdir()
    _save(_photo("coffee", (20, 20)), tmp_path / "images" / "a.png")
    _save(_disc(20, 20), tmp_path / "masks" / "b.png")
    with pytest.raises(U2SegError, match=r"no image has a mask .*\(1 images, 1 masks"):
        FolderPairs(tmp_path)
    with pytest.raises(U2SegError, match="mask folder not found"):
        FolderPairs(tmp_path / "images", tmp_path / "nope")
    with pytest.raises(ValueError, match="num_classes"):
        FolderPairs(tmp_path / "images", tmp_path / "images", num_classes=0)


# --------------------------------------------------------------------------- transforms


def _l_shape(size: int = 320) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[40:280, 40:80] = 1     # a vertical bar...
    mask[240:280, 40:220] = 1   # ...with a foot to the right: not mirror-symmetric
    return mask


def _find_crop(full: np.ndarray, crop: np.ndarray) -> tuple[int, int] | None:
    h, w = crop.shape
    for y in range(full.shape[0] - h + 1):
        for x in range(full.shape[1] - w + 1):
            if np.array_equal(full[y:y + h, x:x + w], crop):
                return y, x
    return None


def test_official_train_crop_and_consistent_flip() -> None:
    mask = _l_shape()
    image = np.full((320, 320, 3), 40, np.uint8)
    image[..., 0][mask == 1] = 250   # the red channel carries the mask
    transform = official_train(seed=7)
    flips = set()
    for _ in range(12):
        x, y = transform(image, mask, binary=True)
        assert x.shape == (3, 288, 288) and x.dtype == np.float32
        assert y.shape == (288, 288) and set(np.unique(y)) == {0, 1}
        red = x[0] * STD[0] + MEAN[0]                       # back to [0, 1] (divided by the max, 250)
        assert np.array_equal((red > 0.6).astype(np.uint8), y)  # image and mask moved together
        flipped = _find_crop(mask[:, ::-1], y) is not None
        assert flipped or _find_crop(mask, y) is not None
        flips.add(flipped)
    assert flips == {True, False}
    # vflip_p: the official data_loader's image[::-1] (rows reversed)
    _, y = official_train(flip_p=0.0, vflip_p=1.0)(image, mask)
    assert _find_crop(mask[::-1], y) is not None and _find_crop(mask, y) is None
    # a seed makes the sequence repeatable
    a, b = official_train(seed=3), official_train(seed=3)
    for _ in range(3):
        xa, ya = a(image, mask)
        xb, yb = b(image, mask)
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def test_official_train_resizes_masks_by_kind() -> None:
    photo = _photo("astronaut")                 # 512×512 → 320 → crop 288
    labels = np.zeros((512, 512), np.uint8)
    labels[100:400, 100:300] = 2
    labels[100:400, 300:400] = 255
    x, y = official_train()(photo, labels, binary=False)
    assert x.shape == (3, 288, 288) and set(np.unique(y)) <= {0, 2, 255}
    # binary: bilinear then threshold keeps 0/1; multi-class: nearest keeps the labels
    disc = (_disc(97, 131) > 0).astype(np.uint8)
    small = resize_mask(disc, (40, 30), binary=True)
    assert small.shape == (30, 40) and set(np.unique(small)) == {0, 1}
    expected = np.asarray(Image.fromarray(disc * 255).resize((40, 30), Image.Resampling.BILINEAR)) >= 128
    assert np.array_equal(small, expected)
    assert set(np.unique(resize_mask(labels, (33, 47), binary=False))) == {0, 2, 255}


@pytest.mark.parametrize("name,size", [("astronaut", 320), ("coffee", 320), ("chelsea", 256)])
def test_official_eval_equals_inference_preprocessing(name: str, size: int) -> None:
    from u2seg.infer.predictor import Preprocessing

    photo = _photo(name)
    mask = np.zeros(photo.shape[:2], np.uint8)
    x, y = official_eval(size)(photo, mask)
    expected = Preprocessing(size=(size, size))(Image.fromarray(photo))
    assert x.shape == expected.shape == (3, size, size)
    assert float(np.abs(x - expected).max()) <= 1e-5
    assert y.shape == (size, size)
    x_full, y_full = official_eval(size, resize_mask=False)(photo, mask)
    assert np.array_equal(x_full, x) and y_full.shape == photo.shape[:2]


def test_opencv_filters_differ_from_the_inference_resize() -> None:
    """Why the recipes resize with u2seg.resize instead of albumentations' (OpenCV) Resize."""
    import cv2

    photo = _photo("coffee")
    pil = np.asarray(Image.fromarray(photo).resize((320, 320), Image.Resampling.LANCZOS)).astype(np.float32)
    for flag in (cv2.INTER_LANCZOS4, cv2.INTER_LINEAR, cv2.INTER_AREA):
        diff = np.abs(cv2.resize(photo, (320, 320), interpolation=flag).astype(np.float32) - pil)
        assert diff.mean() > 0.5 and diff.max() > 20  # measured: mean 1.4-2.3, max 42-65 (0..255)


def test_letterbox_sizes_and_padding() -> None:
    photo = _photo("coffee", (200, 100))         # 2:1 landscape
    mask = np.ones((100, 200), np.uint8)
    x, y = letterbox(64)(photo, mask, binary=True)
    assert x.shape == (3, 64, 64) and y.shape == (64, 64)
    black = (-MEAN / STD)[:, None]                   # 0 before normalisation
    np.testing.assert_allclose(x[:, :16].reshape(3, -1), np.broadcast_to(black, (3, 16 * 64)), atol=1e-5)
    np.testing.assert_allclose(x[:, 48:].reshape(3, -1), np.broadcast_to(black, (3, 16 * 64)), atol=1e-5)
    assert (y[:16] == 0).all() and (y[48:] == 0).all() and (y[16:48] == 1).all()
    _, y_multi = letterbox(64)(photo, mask, binary=False)
    assert (y_multi[:16] == 255).all() and (y_multi[48:] == 255).all() and (y_multi[16:48] == 1).all()
    tall = letterbox(50)(_photo("rocket", (30, 90)), np.zeros((90, 30), np.uint8), binary=False)
    assert tall[0].shape == (3, 50, 50) and (tall[1][:, :16] == 255).all() and (tall[1][:, -17:] == 255).all()


def test_build_transform_registry() -> None:
    photo = _photo("chelsea", (90, 60))
    mask = np.zeros((60, 90), np.uint8)
    t = build_transform({"name": "official_train", "size": 64, "crop": 32})
    assert t(photo, mask)[0].shape == (3, 32, 32)
    assert build_transform("official_eval", size=48)(photo, mask)[0].shape == (3, 48, 48)
    assert build_transform("letterbox", size=40)(photo, mask)[1].shape == (40, 40)
    assert build_transform(None)(photo, mask)[0].shape == (3, 60, 90)
    with pytest.raises(ValueError, match="unknown transform 'mosaic'; choose one of: letterbox"):
        build_transform("mosaic")
    with pytest.raises(ValueError, match="official_train"):
        build_transform("official_train", crop_size=10)
    with pytest.raises(ValueError, match="crop must be within"):
        official_train(size=64, crop=100)


def test_custom_albumentations_pipeline_and_pickling(synth_root: Path) -> None:
    import pickle

    import albumentations as A

    from u2seg.data import JointTransform

    photo = _photo("chelsea", (90, 60))
    mask = np.zeros((60, 90), np.uint8)
    mask[:10] = 1
    for steps in ([A.VerticalFlip(p=1.0)], A.Compose([A.VerticalFlip(p=1.0)]), A.VerticalFlip(p=1.0)):
        x, y = JointTransform(steps)(photo, mask)
        assert x.shape == (3, 60, 90) and (y[-10:] == 1).all() and (y[:-10] == 0).all()
    for transform in (official_train(size=64, crop=48), official_eval(64), letterbox(64), None):
        ds = pickle.loads(pickle.dumps(FolderPairs(synth_root, transform=transform)))  # spawn-safe
        assert ds[0]["image"].shape[0] == 3


class _SameImage(torch.utils.data.Dataset):
    """Four copies of one sample: any difference between items comes from the augmentation."""

    def __init__(self) -> None:
        self.image = _photo("astronaut", (80, 80))
        self.mask = _disc(80, 80, 1)
        self.transform = official_train(size=64, crop=40)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.transform(self.image, self.mask)[0])


def test_dataloader_workers_augment_differently() -> None:
    loader = torch.utils.data.DataLoader(_SameImage(), batch_size=1, num_workers=2)
    items = [batch[0] for batch in loader]   # items 0, 2, 4, 6 from worker 0; 1, 3, 5, 7 from worker 1
    worker0, worker1 = torch.stack(items[0::2]), torch.stack(items[1::2])
    assert not torch.equal(worker0, worker1)


# --------------------------------------------------------------------------- synthetic data


def test_synth_is_deterministic(tmp_path: Path) -> None:
    a = make_synthetic_dataset(tmp_path / "a", count=6, size=64, seed=11)
    b = make_synthetic_dataset(tmp_path / "b", count=6, size=64, seed=11)
    c = make_synthetic_dataset(tmp_path / "c", count=6, size=64, seed=12)
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert len(names) == 13 and "images/00005.jpg" in names and "masks/00005.png" in names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert all((a / "images" / f"0000{i}.jpg").read_bytes() != (c / "images" / f"0000{i}.jpg").read_bytes()
               for i in range(6))
    # sample i does not depend on count
    assert np.array_equal(synth_sample(3, size=64, seed=11).image, synth_sample(3, size=64, seed=11).image)
    d = make_synthetic_dataset(tmp_path / "d", count=4, size=64, seed=11)
    assert (d / "images" / "00003.jpg").read_bytes() == (a / "images" / "00003.jpg").read_bytes()
    with pytest.raises(U2SegError, match="not empty; pass overwrite=True"):
        make_synthetic_dataset(d, count=2, size=64)
    make_synthetic_dataset(d, count=2, size=64, overwrite=True)
    assert sorted(p.name for p in (d / "images").iterdir()) == ["00000.jpg", "00001.jpg"]


def test_synth_masks_are_exact(tmp_path: Path) -> None:
    for index in range(20):
        s = synth_sample(index, size=96, seed=5)
        inside = s.mask == 255
        assert set(np.unique(s.mask)) <= {0, 255} and inside.any()
        # outside the mask the image is the background, exactly; inside, the object replaced it
        assert np.array_equal(s.image[~inside], s.background[~inside])
        changed = (s.image != s.background).any(axis=2)
        assert changed[inside].mean() > 0.8
    root = make_synthetic_dataset(tmp_path, count=3, size=96, seed=5)
    for index in range(3):
        s = synth_sample(index, size=96, seed=5)
        assert np.array_equal(np.asarray(Image.open(root / "masks" / f"0000{index}.png")), s.mask)
        jpeg = np.asarray(Image.open(root / "images" / f"0000{index}.jpg")).astype(np.float32)
        assert np.abs(jpeg - s.image).mean() < 6   # quality 95


def test_synth_multiclass_classes_follow_shapes() -> None:
    from u2seg.data.synth import SHAPES, class_names

    assert class_names(4) == ["background", "ellipse", "polygon", "star"]
    seen = set()
    for index in range(12):
        s = synth_sample(index, size=64, seed=2, multiclass=True, num_classes=4)
        values = set(np.unique(s.mask).tolist()) - {0}
        assert values and values <= {SHAPES.index(k) + 1 for k in s.shapes} <= {1, 2, 3}
        seen |= values
    assert seen == {1, 2, 3}
    with pytest.raises(ValueError, match="num_classes must be 2..5"):
        synth_sample(0, multiclass=True, num_classes=9)


# --------------------------------------------------------------------------- splits


def _read_list(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_split_ratios_determinism_and_overlap(synth_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(synth_root, root)
    lists = split_dataset(root, (0.8, 0.2), seed=1)
    assert set(lists) == {"train", "val"}
    train, val = _read_list(lists["train"]), _read_list(lists["val"])
    assert (len(train), len(val)) == (10, 2)             # 9.6 / 2.4 → largest remainder
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(f"images/{i:05d}.jpg masks/{i:05d}.png" for i in range(12))
    assert train == sorted(train)
    with pytest.raises(U2SegError, match=r"train\.txt: file list exists; pass overwrite=True"):
        split_dataset(root, (0.8, 0.2), seed=1)
    assert _read_list(lists["train"]) == train             # untouched
    again = split_dataset(root, (0.8, 0.2), seed=1, overwrite=True)
    assert _read_list(again["train"]) == train
    other = split_dataset(root, (0.8, 0.2), seed=2, overwrite=True)
    assert set(_read_list(other["val"])) != set(val)
    # three-way, read back by FileList
    three = split_dataset(root, (0.8, 0.1, 0.1), seed=0, overwrite=True)
    parts = [_read_list(three[k]) for k in ("train", "val", "test")]
    assert [len(p) for p in parts] == [10, 1, 1] and len(set().union(*parts)) == 12
    ds = FileList(root, "test.txt", num_classes=1)
    assert len(ds) == 1 and ds[0]["mask"].shape == (1, 64, 64)


def test_split_options_and_errors(synth_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(synth_root, root)
    with pytest.raises(ValueError, match="sum to 1"):
        split_dataset(root, (0.8, 0.3))
    with pytest.raises(ValueError, match=r"\(train, val\) or \(train, val, test\)"):
        split_dataset(root, (1.0,))
    assert split_dataset(root, (0.5, 0.3, 0.2 + 1e-7))  # within ±1e-6
    lists = split_dataset(root, (0.5, 0.5), separator=",", overwrite=True)
    assert all("," in line and " " not in line for line in _read_list(lists["train"]))
    assert len(FileList(root, "train.txt", separator=",", num_classes=1)) == 6
    (root / "images" / "extra.jpg").write_bytes((root / "images" / "00000.jpg").read_bytes())
    with pytest.warns(UserWarning, match="1 unpaired or ambiguous files left out"):
        lists = split_dataset(root, (0.5, 0.5), overwrite=True)
    assert sum(len(_read_list(p)) for p in lists.values()) == 12
    (root / "images" / "extra.jpg").unlink()
    shutil.move(root / "images" / "00000.jpg", root / "images" / "0 0.jpg")
    shutil.move(root / "masks" / "00000.png", root / "masks" / "0 0.png")
    with pytest.raises(U2SegError, match="0 0.jpg: the path contains the separator ' '"):
        split_dataset(root, overwrite=True)
    with pytest.raises(U2SegError, match="dataset folder not found"):
        split_dataset(tmp_path / "missing")


def test_synth_and_split_commands(tmp_path, capsys):
    from u2seg.cli import main

    assert main(["synth", str(tmp_path / "ds"), "--count", "10", "--size", "64", "--seed", "3"]) == 0
    assert len(list((tmp_path / "ds" / "images").iterdir())) == 10
    assert main(["split", str(tmp_path / "ds"), "--ratios", "0.8", "0.2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "(8 pairs)" in out and "(2 pairs)" in out
    assert main(["split", str(tmp_path / "ds")]) == 2  # lists exist: never overwritten silently
    assert main(["split", str(tmp_path / "ds"), "--ratios", "0.5", "0.2"]) == 2


def test_image_and_mask_stored_sideways_come_out_upright_and_aligned(tmp_path):
    """A camera's EXIF orientation turns the photo and its mask alike (load_image's rule), so the
    pair stays aligned; a mask without the tag is read as stored."""
    from u2seg.data.reading import read_image, read_mask

    upright_mask = np.zeros((40, 60), np.uint8)
    upright_mask[5:15, 10:50] = 255  # a wide bar near the top
    upright_image = np.repeat(upright_mask[..., None], 3, axis=2)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: viewers rotate it upright
    stored = lambda a: Image.fromarray(np.rot90(a, 1).copy())  # noqa: E731 - what a camera writes
    stored(upright_image).save(tmp_path / "photo.jpg", exif=exif, quality=100)
    stored(upright_mask).save(tmp_path / "mask.png", exif=exif)
    stored(upright_mask // 255 * 2).save(tmp_path / "classes.png", exif=exif)  # class indices 0 and 2
    stored(upright_mask).save(tmp_path / "plain.png")
    image, mask = read_image(tmp_path / "photo.jpg"), read_mask(tmp_path / "mask.png", num_classes=1)
    assert image.shape[:2] == mask.shape == (40, 60)
    assert (mask > 0).tolist() == (upright_mask > 0).tolist()
    assert np.abs(image[..., 0].astype(int) - upright_mask).mean() < 4
    assert read_mask(tmp_path / "classes.png", num_classes=3).tolist() == (upright_mask // 255 * 2).tolist()
    assert read_mask(tmp_path / "plain.png", num_classes=1).shape == (60, 40)
