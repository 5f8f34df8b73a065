"""The shipped training configs: every ``configs/*.yaml`` validates; the DUTS and VOC configs say
what their headers promise; and each trains one real iteration when its data paths point at a
tiny dataset in the real layout (DUTS-TR/DUTS-TR-Image + DUTS-TR-Mask; VOC2012 with palette PNGs
and ImageSets lists), with the sizes shrunk by ``--set``-style overrides."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from u2seg.data import build_transform
from u2seg.data.synth import make_synthetic_dataset
from u2seg.train.config import load_config
from u2seg.train.trainer import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DUTS_CONFIGS = {"u2net_duts.yaml": "u2net", "u2netp_duts.yaml": "u2netp"}
VOC_CONFIG = "u2netp_voc_semantic.yaml"
OFFICIAL_HEADS = ["side1.weight", "side1.bias", "side2.weight", "side2.bias", "side3.weight", "side3.bias",
                  "side4.weight", "side4.bias", "side5.weight", "side5.bias", "side6.weight", "side6.bias",
                  "outconv.weight", "outconv.bias"]


def _all_configs() -> list[Path]:
    return sorted(CONFIGS.glob("*.yaml"))


# -- every config validates ---------------------------------------------------------------------

def test_the_new_configs_are_there():
    names = {p.name for p in _all_configs()}
    assert {*DUTS_CONFIGS, VOC_CONFIG} <= names


@pytest.mark.parametrize("path", _all_configs(), ids=lambda p: p.name)
def test_config_loads(path):
    config = load_config(path, check_paths=False)
    for split in ("train", "val"):
        spec = getattr(config.data, split)
        if spec is not None and spec.transform is not None:
            build_transform(spec.transform)  # the transform options are real arguments
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# "), "a config starts with a header comment saying what it is for"
    assert f"u2seg train configs/{path.name}" in text, "the header gives the command line"


# -- the values the headers promise ------------------------------------------------------------

def _official_adam(o):
    return (o.name, o.lr, o.betas, o.eps, o.weight_decay) == ("adam", 1e-3, (0.9, 0.999), 1e-8, 0.0)


@pytest.mark.parametrize("name, model", DUTS_CONFIGS.items())
def test_duts_config_is_the_official_recipe(name, model):
    c = load_config(CONFIGS / name, check_paths=False)
    assert (c.model.name, c.model.num_classes, c.model.pretrained) == (model, 1, False)
    train_set, val_set = c.data.train, c.data.val
    assert (train_set.format, Path(train_set.root).name, train_set.images_dir, train_set.masks_dir) == (
        "folder", "DUTS-TR", "DUTS-TR-Image", "DUTS-TR-Mask")
    assert (val_set.format, Path(val_set.root).name, val_set.images_dir, val_set.masks_dir) == (
        "folder", "DUTS-TE", "DUTS-TE-Image", "DUTS-TE-Mask")
    assert train_set.transform == {"name": "official_train", "size": 320, "crop": 288, "flip_p": 0.5}
    assert val_set.transform == {"name": "official_eval", "size": 320}
    assert c.batch_size == 12 and c.iterations == 600_000 and c.epochs is None
    assert _official_adam(c.optimizer)
    assert (c.schedule.name, c.schedule.warmup_iters) == ("constant", 0)
    assert c.loss.weights == [1.0] * 7 and c.loss.dice_weight == 0 and c.loss.iou_weight == 0
    assert (c.precision, c.channels_last) == ("fp32", False)
    assert c.save_interval == 2000 and c.eval_interval > 0 and c.workers >= 4
    assert Path(c.output_dir).name == name.removesuffix(".yaml")


def test_voc_config_is_paddleseg_style_fine_tuning():
    c = load_config(CONFIGS / VOC_CONFIG, check_paths=False)
    assert (c.model.name, c.model.num_classes, c.model.pretrained) == ("u2netp", 21, True)
    assert (c.data.train.format, c.data.train.split, c.data.val.format, c.data.val.split) == ("voc", "train", "voc", "val")
    assert Path(c.data.train.root).parts[-2:] == ("VOCdevkit", "VOC2012") == Path(c.data.val.root).parts[-2:]
    assert c.data.train.transform == {"name": "official_train", "size": 320, "crop": 288, "flip_p": 0.5}
    assert c.data.val.transform == {"name": "official_eval", "size": 320}
    o, s = c.optimizer, c.schedule
    assert (o.name, o.lr, o.momentum, o.weight_decay) == ("sgd", 0.01, 0.9, 4e-5)
    assert (s.name, s.power, s.min_lr) == ("poly", 0.9, 0.0) and s.warmup_iters > 0 and 0 < s.warmup_ratio < 1
    assert c.loss.weights == [1.0] * 7 and c.iterations == 40_000 and c.batch_size == 8


# -- one real iteration on a tiny dataset in each layout -------------------------------------

def _duts_split(root: Path, split: str, count: int, seed: int) -> Path:
    """``root/DUTS-<split>/DUTS-<split>-Image/*.jpg`` + ``-Mask/*.png``, masks soft-edged like DUTS'."""
    made = make_synthetic_dataset(root / f"synth-{split}", count=count, size=64, seed=seed)
    folder = root / f"DUTS-{split}"
    folder.mkdir(parents=True)
    shutil.move(made / "images", folder / f"DUTS-{split}-Image")
    masks = folder / f"DUTS-{split}-Mask"
    masks.mkdir()
    for png in sorted((made / "masks").glob("*.png")):
        Image.open(png).convert("L").filter(ImageFilter.GaussianBlur(1)).save(masks / png.name)
    shutil.rmtree(made)
    return folder


def _voc_palette() -> list[int]:
    """The VOC colour map (bit-interleaved), 256 RGB entries."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def _voc(root: Path) -> Path:
    """``root/VOCdevkit/VOC2012`` with JPEGImages/, palette-PNG SegmentationClass/ (object borders
    255 as in VOC) and ImageSets/Segmentation/{train,val}.txt."""
    made = make_synthetic_dataset(root / "synth-voc", count=6, size=64, seed=5, multiclass=True, num_classes=3)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    ids = []
    for i, png in enumerate(sorted((made / "masks").glob("*.png"))):
        name = f"2007_{i:06d}"
        ids.append(name)
        shutil.copy(made / "images" / f"{png.stem}.jpg", voc / "JPEGImages" / f"{name}.jpg")
        labels = np.asarray(Image.open(png)).astype(np.uint8)
        border = np.zeros(labels.shape, bool)
        border[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        border[1:, :] |= labels[1:, :] != labels[:-1, :]
        labels = np.where(border, 255, labels).astype(np.uint8)
        mask = Image.fromarray(labels, mode="P")
        mask.putpalette(_voc_palette())
        mask.save(voc / "SegmentationClass" / f"{name}.png")
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(ids[:4]) + "\n", encoding="utf-8")
    (lists / "val.txt").write_text("\n".join(ids[4:]) + "\n", encoding="utf-8")
    shutil.rmtree(made)
    return voc


TINY = ["data.train.transform.size=64", "data.train.transform.crop=56", "data.val.transform.size=56",
        "batch_size=2", "eval_batch_size=2", "iterations=1", "workers=0", "log_interval=1"]


def _check_run(result: dict, out: Path, main_metric: str) -> None:
    assert result["step"] == 1 and result["iterations"] == 1
    assert math.isfinite(result["loss"])
    assert main_metric in result and math.isfinite(result[main_metric])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["kind"] for r in rows] == ["train", "eval"]
    assert (out / "best").is_dir() and (out / "checkpoints" / "step_1.pt").is_file()


@pytest.mark.parametrize("name", DUTS_CONFIGS)
def test_duts_config_trains_one_iteration(name, tmp_path):
    train_dir = _duts_split(tmp_path / "DUTS", "TR", count=4, seed=0)
    test_dir = _duts_split(tmp_path / "DUTS", "TE", count=2, seed=1)
    out = tmp_path / "run"
    overrides = [f"data.train.root={train_dir}", f"data.val.root={test_dir}", *TINY, f"output_dir={out}"]
    config = load_config(CONFIGS / name, overrides)  # check_paths: the DUTS sub-folders are found
    assert config.model.name == DUTS_CONFIGS[name]
    result = train(config, progress=False)
    _check_run(result, out, "val_maxF")
    assert result["skipped"] == []


def test_voc_config_fine_tunes_one_iteration(tmp_path, use_pretrained_home):
    voc = _voc(tmp_path)
    out = tmp_path / "run"
    overrides = [f"data.train.root={voc}", f"data.val.root={voc}", *TINY, f"output_dir={out}"]
    config = load_config(CONFIGS / VOC_CONFIG, overrides)
    result = train(config, progress=False)
    _check_run(result, out, "val_mIoU")
    assert result["skipped"] == OFFICIAL_HEADS  # the salient-object weights loaded, the 1-class heads not
    assert len(result["val_IoU"]) == 21


def test_demo_config_fine_tunes_the_pretrained_weights_with_frozen_statistics(tmp_path, use_pretrained_home):
    import torch
    from safetensors.torch import load_file

    root = tmp_path / "synth"
    train_dir = make_synthetic_dataset(root / "train", count=4, size=192, seed=0)
    val_dir = make_synthetic_dataset(root / "val", count=2, size=192, seed=1)
    out = tmp_path / "run"
    overrides = [f"data.train.root={train_dir}", f"data.val.root={val_dir}", "iterations=2", "batch_size=2",
                 "max_minutes=null", "eval_interval=0", "save_interval=0", "preview_interval=0", f"output_dir={out}"]
    config = load_config(CONFIGS / "synthetic_demo.yaml", overrides)
    assert config.freeze_bn and config.model.pretrained is True
    result = train(config, progress=False)
    assert result["skipped"] == [] and math.isfinite(result["val_maxF"])
    pretrained = load_file(str(use_pretrained_home / "weights" / "u2netp" / "model.safetensors"))
    trained = load_file(str(out / "best" / "model.safetensors"))
    stats = [k for k in pretrained if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(trained[k], pretrained[k]) for k in stats)     # statistics as loaded
    assert not torch.equal(trained["outconv.weight"], pretrained["outconv.weight"])  # the rest learned
    # the weights carry the input size they were evaluated at: the images' own 192 px
    assert json.loads((out / "best" / "config.json").read_text())["input_size"] == [192, 192]
