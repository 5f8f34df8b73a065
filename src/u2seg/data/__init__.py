"""Training data: datasets, joint transforms, synthetic data, train/val splits.

    >>> from u2seg.data import FolderPairs, check_dataset, official_train, make_synthetic_dataset
    >>> root = make_synthetic_dataset("synth", count=200)            # images/*.jpg + masks/*.png
    >>> train = FolderPairs(root, transform=official_train())        # or FileList, VOCSegmentation
    >>> check_dataset(train)                                         # raises DatasetError listing problems
    >>> item = train[0]    # {"image": 3×288×288 float32, "mask": 1×288×288 float32 0/1, "name": "00000"}

Modules: ``datasets`` (FolderPairs, FileList, VOCSegmentation, check_dataset: needs torch),
``reading`` (read_image, read_mask: a sample's image and mask as arrays), ``build``
(build_dataset: a dataset from a training config's ``data.train`` / ``data.val``),
``cache`` (decode_dataset: samples decoded and resized once), ``batch_augment`` (BatchPlan:
crop, flips, colour jitter, normalisation of whole batches on the device), ``colour``
(ColourJitter: one recipe, per image and per batch),
``transforms`` (albumentations recipes: official_train, official_eval, letterbox,
build_transform), ``pair_resize`` (PairResize, resize_mask: image and mask resized together, the
image as inference does), ``synth`` (make_synthetic_dataset), ``synth_fine`` (fine_sample: fine
structure for edge benchmarks) and ``split`` (split_dataset). Names load on first use: ``import
u2seg.data`` and the ``reading``, ``synth`` and ``split`` modules do not import torch.
"""

from __future__ import annotations

import os

# albumentations otherwise asks PyPI for a newer version on every import (a 2 s wait offline)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from .._lazy import lazy_exports  # noqa: E402

_LAZY = {
    # datasets (torch)
    "DatasetError": "datasets", "FileList": "datasets", "FolderPairs": "datasets",
    "Sample": "datasets", "SegmentationDataset": "datasets", "VOCSegmentation": "datasets",
    "VOC_CLASSES": "datasets", "check_dataset": "datasets",
    # a sample's files read as arrays (no torch)
    "IGNORE_INDEX": "reading", "binarize": "reading", "read_image": "reading", "read_mask": "reading",
    # transforms (albumentations)
    "ImageNorm": "transforms", "JointTransform": "transforms", "TRANSFORMS": "transforms",
    "build_transform": "transforms", "letterbox": "transforms", "normalize_only": "transforms",
    "official_eval": "transforms", "official_train": "transforms", "register_transform": "transforms",
    # image and mask resized together (albumentations)
    "resize_mask": "pair_resize", "resize_pair": "pair_resize",
    # decode-once cache and batch augmentation on the device, colour jitter
    "BatchPlan": "batch_augment", "ColourJitter": "colour", "JitterSpec": "colour",
    "CACHE_MODES": "cache", "DecodedSet": "cache", "decode_dataset": "cache",
    # datasets from their configs
    "DatasetSpec": "build", "build_dataset": "build", "under_root": "build",
    # synthetic data and splits (no torch)
    "SHAPES": "synth", "SynthSample": "synth", "class_names": "synth",
    "make_synthetic_dataset": "synth", "synth_sample": "synth",
    "Pairing": "split", "pair_folders": "split", "split_dataset": "split",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
