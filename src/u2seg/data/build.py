"""A dataset from its description in a training config (``data.train``, ``data.val``): the
format, the folders or list file, the transform, and a synthetic set to make first.

The description is any object with the attributes of :class:`u2seg.train.config.DatasetConfig`
(the config itself, typically), so that this package does not import the training package.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .datasets import SegmentationDataset

__all__ = ["DatasetSpec", "build_dataset", "under_root"]

log = logging.getLogger(__name__)


class DatasetSpec(Protocol):
    """What :func:`build_dataset` reads from a dataset's config."""

    root: str
    format: str
    images_dir: str | None
    masks_dir: str | None
    list_file: str | None
    split: str | None
    separator: str
    transform: Any
    synthetic: Any


def under_root(root: Path, given: str) -> Path:
    """A sub-folder option: relative to the root when it exists there, else as given."""
    path = Path(given).expanduser()
    if not path.is_absolute() and (root / path).exists():
        return root / path
    return path if path.exists() or path.is_absolute() else root / path


def build_dataset(spec: DatasetSpec, num_classes: int) -> SegmentationDataset:
    """A dataset from its config (making the synthetic set first when asked for)."""
    from .datasets import FileList, FolderPairs, VOCSegmentation
    from .transforms import build_transform

    root = Path(spec.root).expanduser()
    synthetic = spec.synthetic
    if synthetic is not None and not root.exists():
        from .synth import make_synthetic_dataset

        log.info("making the synthetic dataset %s (%d images of %d px)", root, synthetic.count, synthetic.size)
        make_synthetic_dataset(root, count=synthetic.count, size=synthetic.size, seed=synthetic.seed,
                               multiclass=num_classes > 1, num_classes=max(num_classes, 2))
    transform = build_transform(spec.transform)
    if spec.format == "folder":
        if spec.images_dir is None and spec.masks_dir is None:
            return FolderPairs(root, num_classes=num_classes, transform=transform)
        images = under_root(root, spec.images_dir) if spec.images_dir else root / "images"
        masks = under_root(root, spec.masks_dir) if spec.masks_dir else root / "masks"
        return FolderPairs(images, masks, num_classes=num_classes, transform=transform)
    if spec.format == "filelist":
        return FileList(root, spec.list_file, separator=spec.separator, num_classes=num_classes,
                        transform=transform)
    return VOCSegmentation(root, spec.split or "train", num_classes=num_classes, transform=transform)
