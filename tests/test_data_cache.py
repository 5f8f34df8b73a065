"""The decode-once cache (u2seg.data.cache) and batch augmentation on the device
(u2seg.data.batch_augment): built once, reused, rebuilt when a file changes; the same batches as
the per-sample DataLoader path for the same seeds; shapes, ranges, masks that follow the images;
the trainer says which path runs. CPU tensors (the same code runs on CUDA)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from u2seg.data import FolderPairs, build_transform, decode_dataset, resize_pair
from u2seg.data.batch_augment import BatchPlan, JitterSpec
from u2seg.data.synth import make_synthetic_dataset
from u2seg.data.transforms import ImageNorm
from u2seg.train.batches import BatchSource
from u2seg.train.sampler import SeededItems, StepSampler, sample_seed


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("cache-data")
    return {"binary": make_synthetic_dataset(base / "binary", count=6, size=60, seed=0),
            "classes": make_synthetic_dataset(base / "classes", count=6, size=60, seed=1, multiclass=True,
                                              num_classes=3)}


def _dataset(roots, kind="binary", transform="official_train"):
    return FolderPairs(roots[kind], num_classes=1 if kind == "binary" else 3, transform=build_transform(transform))


class _Counting(FolderPairs):
    decoded = 0

    def load_pair(self, index):
        type(self).decoded += 1
        return super().load_pair(index)


def test_cache_is_built_once_reused_and_rebuilt_when_a_file_changes(roots, tmp_path, caplog):
    data = tmp_path / "data"
    make_synthetic_dataset(data, count=4, size=40, seed=5)
    dataset = _Counting(data, transform=build_transform("official_train"))
    folder = tmp_path / "cache"

    first = decode_dataset(dataset, 32, "lanczos", mode="mmap", folder=folder)
    assert (first.mode, first.reused, _Counting.decoded) == ("mmap", False, 4)
    assert first.images.shape == (4, 32, 32, 3) and first.masks.shape == (4, 32, 32)
    for i in range(4):  # the pixels PairResize makes
        image, mask = resize_pair(*dataset.load_pair(i), 32, "lanczos", binary=True)
        assert np.array_equal(first.images[i], image) and np.array_equal(first.masks[i], mask)
    _Counting.decoded = 0

    again = decode_dataset(dataset, 32, "lanczos", mode="mmap", folder=folder)
    assert again.reused and again.folder == first.folder and _Counting.decoded == 0
    assert np.array_equal(np.asarray(again.images), np.asarray(first.images))
    assert isinstance(again.images, np.memmap)
    assert len(list(folder.iterdir())) == 1
    other_size = decode_dataset(dataset, 24, "lanczos", mode="mmap", folder=folder)
    assert not other_size.reused and len(list(folder.iterdir())) == 2  # keyed by size too

    # touch one mask: the cache is stale
    mask = sorted((data / "masks").iterdir())[0]
    stamp = mask.stat().st_mtime_ns + 2_000_000_000
    os.utime(mask, ns=(stamp, stamp))
    _Counting.decoded = 0
    with caplog.at_level(logging.INFO, logger="u2seg"):
        rebuilt = decode_dataset(dataset, 32, "lanczos", mode="mmap", folder=folder)
    assert not rebuilt.reused and _Counting.decoded == 4 and "changed since the cache was made" in caplog.text
    assert decode_dataset(dataset, 32, "lanczos", mode="mmap", folder=folder).reused
    assert not list(folder.glob("*.building-*"))  # no leftovers

    in_memory = decode_dataset(dataset, 32, "lanczos", mode="memory")
    assert in_memory.mode == "memory" and in_memory.folder is None
    assert np.array_equal(in_memory.images, np.asarray(rebuilt.images))
    assert decode_dataset(dataset, 32, "lanczos", mode="auto", folder=folder).mode == "memory"  # small: in memory


TRANSFORMS = [
    {"name": "official_train", "size": 48, "crop": 40},
    {"name": "official_train", "size": 48, "crop": 40, "flip_p": 1.0, "vflip_p": 0.5},
    {"name": "official_train", "size": 48, "crop": None, "flip_p": 0.3, "input_norm": "unit"},
    {"name": "official_eval", "size": 44},
]


@pytest.mark.parametrize("kind", ["binary", "classes"])
@pytest.mark.parametrize("spec", TRANSFORMS, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_cached_batches_equal_the_per_sample_path(roots, kind, spec):
    dataset = _dataset(roots, kind, spec)
    plan = dataset.transform.batch_plan
    decoded = decode_dataset(dataset, plan.size, plan.resample, mode="memory")
    keys = [(i % len(dataset), sample_seed(7, p)) for p, i in enumerate([3, 0, 5, 1, 1, 4, 2, 2])]
    items = [SeededItems(dataset)[key] for key in keys]
    indices = [i for i, _ in keys]
    x, y = plan.apply(torch.from_numpy(decoded.images[indices]), torch.from_numpy(decoded.masks[indices]),
                      [plan.draw(seed) for _, seed in keys], binary=dataset.binary)
    expected_x = torch.stack([it["image"] for it in items])
    expected_y = torch.stack([it["mask"] for it in items])
    assert x.dtype == expected_x.dtype and x.shape == expected_x.shape
    assert y.dtype == expected_y.dtype and torch.equal(y, expected_y)
    torch.testing.assert_close(x, expected_x, atol=1e-5, rtol=1e-5)
    if spec.get("crop"):  # the draws do vary: not every sample got the same window
        assert len({(d.top, d.left) for d in (plan.draw(s) for _, s in keys)}) > 1


def test_colour_jitter_matches_the_per_sample_path(roots):
    spec = {"name": "official_train", "size": 48, "crop": 40, "brightness": 0.3, "contrast": 0.3,
            "saturation": 0.4, "jitter_p": 0.7}
    dataset = _dataset(roots, "binary", spec)
    plan = dataset.transform.batch_plan
    decoded = decode_dataset(dataset, plan.size, plan.resample, mode="memory")
    keys = [(p % len(dataset), sample_seed(3, p)) for p in range(12)]
    draws = [plan.draw(seed) for _, seed in keys]
    assert 0 < sum(d.jitter is not None for d in draws) < len(draws)  # jitter_p = 0.7
    indices = [i for i, _ in keys]
    x, y = plan.apply(torch.from_numpy(decoded.images[indices]), torch.from_numpy(decoded.masks[indices]), draws,
                      binary=True)
    expected = torch.stack([SeededItems(dataset)[key]["image"] for key in keys])
    assert torch.equal(y, torch.stack([SeededItems(dataset)[key]["mask"] for key in keys]))
    # rounding to 8 bits may land one level apart where float sums differ in their last bit
    diff = (x - expected).abs()
    assert diff.max() < 0.05 and (diff > 1e-4).float().mean() < 1e-3


def test_device_augmentation_shapes_ranges_and_masks_follow_the_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    masks = (images[..., 0] > 127).astype(np.uint8)  # a mask that can be read off its image
    norm = ImageNorm(input_norm="unit")
    plan = BatchPlan(32, "lanczos", 24, 0.5, 0.5, norm, JitterSpec(0.2, 0.2, 0.2, p=1.0))
    draws = [plan.draw(seed) for seed in range(5)]
    assert {d.hflip for d in draws} == {True, False} or {d.vflip for d in draws} == {True, False}
    x, y = plan.apply(torch.from_numpy(images), torch.from_numpy(masks), draws, binary=True)
    assert x.shape == (5, 3, 24, 24) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == (5, 1, 24, 24) and set(y.unique().tolist()) <= {0.0, 1.0}
    mean = torch.tensor(norm.mean)[None, :, None, None]
    std = torch.tensor(norm.std)[None, :, None, None]
    pixels = x * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5  # 8-bit range after jitter's clamp

    # the geometry alone (no jitter): the mask is still its image's red channel > 127
    plain = BatchPlan(32, "lanczos", 24, 0.5, 0.5, norm)
    geometry = [d._replace(jitter=None) for d in draws]
    x, y = plain.apply(torch.from_numpy(images), torch.from_numpy(masks), geometry, binary=True)
    red = ((x * std + mean)[:, 0] * 255).round()
    assert torch.equal(y[:, 0], (red > 127).float())
    for i, d in enumerate(geometry):  # and the window is the drawn one
        window = images[i, d.top:d.top + 24, d.left:d.left + 24, 0]
        window = window[::-1] if d.vflip else window
        window = window[:, ::-1] if d.hflip else window
        assert np.array_equal(red[i].numpy().astype(np.uint8), window)


def test_batch_source_paths_give_the_same_batches_and_say_which_runs(roots, tmp_path, caplog):
    dataset = _dataset(roots, "binary", {"name": "official_train", "size": 48, "crop": 40})
    transform = dataset.transform
    cached = BatchSource(dataset, torch.device("cpu"), workers=0, cache="mmap", cache_dir=tmp_path)
    loader = BatchSource(dataset, torch.device("cpu"), workers=0, cache="off")
    with caplog.at_level(logging.INFO, logger="u2seg"):
        a = list(cached.batches(transform, StepSampler(len(dataset), 4, seed=1, start=2, total=5)))
        b = list(loader.batches(transform, StepSampler(len(dataset), 4, seed=1, start=2, total=5)))
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        torch.testing.assert_close(x["image"], y["image"], atol=1e-5, rtol=1e-5)
        assert torch.equal(x["mask"], y["mask"])
    assert "data path: cached" in caplog.text and "data path: DataLoader" in caplog.text
    assert "data.cache is off" in caplog.text

    caplog.clear()
    letterbox = build_transform({"name": "letterbox", "size": 40})
    dataset.transform = letterbox
    with caplog.at_level(logging.INFO, logger="u2seg"):
        batch = next(iter(cached.batches(letterbox, StepSampler(len(dataset), 2, seed=1, start=0, total=1))))
    assert batch["image"].shape == (2, 3, 40, 40)
    assert "data path: DataLoader" in caplog.text and "has no batch plan" in caplog.text


def test_training_on_the_cached_path_matches_the_loader_path(roots, tmp_path, caplog):
    from u2seg.train import train

    def run(cache, out):
        return train({"model": {"name": "u2netp"}, "device": "cpu", "seed": 3,
                      "data": {"train": {"root": str(roots["binary"]),
                                         "transform": {"name": "official_train", "size": 48, "crop": 40}},
                               "cache": cache, "cache_dir": str(tmp_path / "cache")},
                      "batch_size": 2, "iterations": 2, "log_interval": 1, "eval_interval": 0, "save_interval": 0,
                      "output_dir": str(tmp_path / out)}, progress=False)

    with caplog.at_level(logging.INFO, logger="u2seg"):
        cached = run("mmap", "cached")
    assert "data path: cached" in caplog.text and "mmap in" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="u2seg"):
        plain = run("off", "plain")
    assert "data path: DataLoader" in caplog.text
    assert cached["loss"] == pytest.approx(plain["loss"], rel=1e-4)


def test_config_takes_the_data_path_and_compile_settings(roots):
    from u2seg.train.config import ConfigError, config_from_dict

    raw = {"data": {"train": {"root": str(roots["binary"])}}, "iterations": 1}
    config = config_from_dict(raw)
    assert (config.data.cache, config.data.cache_dir, config.compile) == ("auto", None, "off")
    config = config_from_dict({**raw, "data": {**raw["data"], "cache": "mmap", "cache_dir": "/tmp/c"},
                               "compile": "reduce-overhead"})
    assert (config.data.cache, config.data.cache_dir, config.compile) == ("mmap", "/tmp/c", "reduce-overhead")
    # YAML reads off/on as booleans
    config = config_from_dict({**raw, "data": {**raw["data"], "cache": False}, "compile": False})
    assert (config.data.cache, config.compile) == ("off", "off")
    assert config_from_dict({**raw, "compile": True}).compile == "default"
    with pytest.raises(ConfigError, match=r"data.cache: 'disk' is not one of auto, memory, mmap, off"):
        config_from_dict({**raw, "data": {**raw["data"], "cache": "disk"}})
    with pytest.raises(ConfigError, match=r"compile: 'max' is not one of off, default, reduce-overhead"):
        config_from_dict({**raw, "compile": "max"})
