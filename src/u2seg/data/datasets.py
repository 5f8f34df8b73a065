"""Segmentation datasets: folders of pairs, PaddleSeg file lists, Pascal VOC.

Every dataset is a ``torch.utils.data.Dataset`` whose items are dicts::

    {"image": float32 tensor 3×H×W (normalised, see u2seg.data.transforms),
     "mask":  binary (num_classes=1): float32 tensor 1×H×W in {0, 1}
              multi-class:           int64 tensor H×W, class indices, 255 = ignore,
     "name":  str: FolderPairs: the image's path below the image folder without suffix
              ("00001", "sub/00001"); FileList: the image path as listed, without suffix
              ("images/00001"); VOC: the id ("2007_000032")}

after the joint ``transform`` (default: :func:`~u2seg.data.transforms.normalize_only`, i.e. the
image normalised at its own size and the mask as it is). Images and masks are read by
:mod:`u2seg.data.reading` (how mask values become labels: see there).

Validation before training: ``dataset.check()`` returns one line per problem, each naming the file
(unpaired files, listed files that do not exist, undecodable images or masks, image/mask size
mismatches, mask values that do not fit ``num_classes``; binary masks whose values look like class
indices, colour masks), and :func:`check_dataset` raises :class:`DatasetError` with a summary.
Constructors raise :class:`~u2seg.errors.U2SegError` for a missing folder or list file and for a
dataset with no samples.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import ImageReadError, U2SegError, collapse_whitespace
from .reading import (
    IGNORE_INDEX,
    _bad_values,
    _binary_levels,
    _describe_values,
    _mask_values,
    binarize,
    read_image,
    read_mask,
)
from .split import pair_folders

__all__ = [  # IGNORE_INDEX, binarize, read_image, read_mask: re-exported from .reading
    "DatasetError",
    "FileList",
    "FolderPairs",
    "IGNORE_INDEX",
    "Sample",
    "SegmentationDataset",
    "VOCSegmentation",
    "VOC_CLASSES",
    "binarize",
    "check_dataset",
    "read_image",
    "read_mask",
]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

TransformFn = Callable[..., tuple[np.ndarray, "np.ndarray | None"]]


class DatasetError(U2SegError):
    """:func:`check_dataset` found problems; ``problems`` lists them all, one line each."""

    def __init__(self, message: str, problems: Sequence[str]) -> None:
        super().__init__(message)
        self.problems = list(problems)


class Sample(NamedTuple):
    """One item of a dataset: its name, its files, and where it was listed (``"train.txt:3"``)."""

    name: str
    image: Path
    mask: Path
    source: str | None = None


# --------------------------------------------------------------------------- the base class


class SegmentationDataset(Dataset):
    """Common machinery: ``samples`` (a list of :class:`Sample`), reading, the transform, checks.

    Attributes:
        samples: what the dataset holds, in order.
        num_classes: 1 for binary (salient-object) masks, else the number of classes.
        binary: ``num_classes == 1``.
        ignore_index: 255, the mask value that losses and metrics skip (multi-class).
        transform: the joint transform, called as ``transform(image, mask, binary=...)``.
    """

    ignore_index = IGNORE_INDEX

    def __init__(self, samples: Sequence[Sample], *, num_classes: int, transform: TransformFn | None,
                 root: Path) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer ≥ 1, got {num_classes!r}")
        if num_classes > 255:
            raise ValueError(f"num_classes must be ≤ 255 (masks are 8-bit, 255 = ignore), got {num_classes}")
        if transform is None:
            from .transforms import normalize_only

            transform = normalize_only()
        self.samples = list(samples)
        self.num_classes = num_classes
        self.transform = transform
        self.root = root

    @property
    def binary(self) -> bool:
        return self.num_classes == 1

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.root)!r}, {len(self)} samples, "
                f"num_classes={self.num_classes}, transform={self.transform!r})")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw sample, before the transform: ``uint8 H×W×3`` RGB and ``uint8 H×W`` labels
        (0/1 or class indices with 255). Raises :class:`~u2seg.errors.U2SegError` naming the file
        for unreadable files, size mismatches and invalid mask values."""
        sample = self.samples[index]
        where = f"{sample.source}: " if sample.source else ""
        try:
            image = read_image(sample.image)
            mask = read_mask(sample.mask, self.num_classes)
        except U2SegError as exc:
            raise type(exc)(f"{where}{exc}") from None
        if image.shape[:2] != mask.shape:
            raise U2SegError(f"{where}{sample.image}: {_size(image)} but its mask {sample.mask} is {_size(mask)}")
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image, mask = self.load_pair(index)
        x, y = self.transform(image, mask, binary=self.binary)
        if y is None:
            raise U2SegError(f"{sample.image}: the transform {self.transform!r} dropped the mask")
        image_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.binary:
            mask_t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None]
        else:
            mask_t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
        return {"image": image_t, "mask": mask_t, "name": sample.name}

    # ----------------------------------------------------------------- checks

    def _structure_problems(self) -> list[str]:
        """Problems found when the dataset was built (unpaired files ...)."""
        return []

    def _check_sample(self, sample: Sample, decode: bool) -> tuple[list[str], set[int]]:
        """Problems with one sample, and (multi-class) the mask's distinct values."""
        where = f"{sample.source}: " if sample.source else ""
        problems: list[str] = []
        for label, path in (("image", sample.image), ("mask", sample.mask)):
            if not path.is_file():
                problems.append(f"{where}{path}: {label} file not found")
        if problems:
            return problems, set()
        image_size = None
        try:
            if decode:
                image_size = _size(read_image(sample.image))
            else:
                with Image.open(sample.image) as header:
                    image_size = f"{header.width}×{header.height}"
        except ImageReadError as exc:
            problems.append(f"{where}{exc}")
        except Exception as exc:  # header-only check: Pillow's own error types
            problems.append(f"{where}{sample.image}: not an image ({collapse_whitespace(exc)})")
        values: set[int] = set()
        mask_size = None
        try:
            if self.binary:
                levels, colour = _binary_levels(sample.mask)
                mask_size = _size(levels)
                if colour:
                    problems.append(f"{where}{sample.mask}: colour mask; binary masks should be "
                                    "grayscale (0/255 or 0/1)")
                top = int(levels.max()) if levels.size else 0
                if 1 < top <= 127:
                    problems.append(f"{where}{sample.mask}: no value above 127 (max {top}), so the mask "
                                    "binarises to empty: class indices? use num_classes > 1")
            else:
                raw, colour = _mask_values(sample.mask)
                mask_size = _size(raw)
                if colour:
                    problems.append(f"{where}{sample.mask}: colour (RGB) mask; multi-class masks must "
                                    "hold class indices (palette or grayscale PNG)")
                else:
                    bad = _bad_values(raw, self.num_classes)
                    if bad.size:
                        problems.append(f"{where}{sample.mask}: mask values {_describe_values(bad)} are "
                                        f"not class indices (0..{self.num_classes - 1}) or 255 (ignore)")
                    values = {int(v) for v in np.unique(raw)[:512]}
        except ImageReadError as exc:
            problems.append(f"{where}{exc}")
        if image_size and mask_size and image_size != mask_size:
            problems.append(f"{where}{sample.image}: {image_size} but its mask {sample.mask} is {mask_size}")
        return problems, values

    def check(self, *, decode: bool = True, workers: int | None = None) -> list[str]:
        """Every problem that would stop or spoil training, one line each, naming the file.

        Args:
            decode: fully decode every image (finds truncated files); False reads image headers
                only (faster on big datasets). Masks are always decoded (their values are checked).
            workers: threads (default: up to 8, one per CPU core).
        """
        problems = self._structure_problems()
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(lambda s: self._check_sample(s, decode), self.samples))
        seen: set[int] = set()
        for lines, values in results:
            problems.extend(lines)
            seen |= values
        if not self.binary and seen and seen <= {0, IGNORE_INDEX} and IGNORE_INDEX in seen:
            problems.append(f"{self.root}: masks hold only 0 and 255, and 255 means 'ignore' with "
                            f"num_classes={self.num_classes}; 0/255 foreground masks need num_classes=1")
        return problems


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}×{array.shape[0]}"


def check_dataset(dataset: SegmentationDataset, *, limit: int = 10, decode: bool = True) -> None:
    """Raise :class:`DatasetError` if ``dataset.check()`` finds problems: the message's first line
    counts them, then up to ``limit`` of them follow, one per line; ``.problems`` has all."""
    problems = dataset.check(decode=decode)
    if not problems:
        return
    shown = problems[:limit]
    more = len(problems) - len(shown)
    head = (f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {type(dataset).__name__} "
            f"at {dataset.root} ({len(dataset)} samples)")
    tail = [f"  … and {more} more (dataset.check() lists them all)"] if more else []
    raise DatasetError("\n".join([head + ":", *(f"  {line}" for line in shown), *tail]), problems)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise U2SegError(f"{path}: {what} not found" if not path.exists() else f"{path}: {what} is not a folder")
    return path


# --------------------------------------------------------------------------- formats


class FolderPairs(SegmentationDataset):
    """Images and masks in two folders, matched by file name without suffix (recursively:
    ``images/a/1.jpg`` ↔ ``masks/a/1.png``).

    ``FolderPairs(root)`` reads ``root/images`` and ``root/masks``; ``FolderPairs(images_dir,
    masks_dir)`` takes the folders themselves, e.g. DUTS-TR's ``DUTS-TR-Image`` and
    ``DUTS-TR-Mask``. Files without a partner are left out of the samples and reported by
    :meth:`check` (run it, or :func:`check_dataset`, before training).

    Raises:
        U2SegError: a folder is missing, or no image has a mask.
    """

    def __init__(self, root_or_images_dir: str | os.PathLike, masks_dir: str | os.PathLike | None = None,
                 *, num_classes: int = 1, transform: TransformFn | None = None) -> None:
        first = Path(root_or_images_dir)
        if masks_dir is None:
            root = _require_dir(first, "dataset folder")
            images, masks = root / "images", root / "masks"
            for folder in (images, masks):
                if not folder.is_dir():
                    raise U2SegError(f"{root}: no {folder.name}/ folder; give FolderPairs(root) a folder "
                                     "with images/ and masks/, or the two folders: FolderPairs(IMAGES, MASKS)")
        else:
            images = _require_dir(first, "image folder")
            masks = _require_dir(Path(masks_dir), "mask folder")
            root = images
        self.images_dir, self.masks_dir = images, masks
        self.pairing = pair_folders(images, masks)
        if not self.pairing.pairs:
            counts = (f"{len(self.pairing.unpaired_images)} images, {len(self.pairing.unpaired_masks)} masks")
            raise U2SegError(f"{images}: no image has a mask in {masks} ({counts}; matched by file name "
                             "without suffix)")
        samples = [Sample(name, img, msk) for name, img, msk in self.pairing.pairs]
        super().__init__(samples, num_classes=num_classes, transform=transform, root=root)

    def _structure_problems(self) -> list[str]:
        return self.pairing.problems()


class FileList(SegmentationDataset):
    """PaddleSeg's file list: one ``image<separator>mask`` line per sample, paths relative to
    ``root``; blank lines and lines starting with ``#`` are skipped.

    ``list_file`` is taken relative to ``root`` when it is relative and ``root/list_file`` exists
    (``FileList(root, "train.txt")``), else as given. Listed files that do not exist stay in the
    samples (indices follow the lines) and are reported by :meth:`check`.

    Raises:
        U2SegError: missing root or list file, a line that is not two fields, or no lines.
    """

    def __init__(self, root: str | os.PathLike, list_file: str | os.PathLike, *, separator: str = " ",
                 num_classes: int, transform: TransformFn | None = None) -> None:
        root = _require_dir(Path(root), "dataset folder")
        if not separator or "\n" in separator:
            raise ValueError(f"separator must be a non-empty string without line breaks, got {separator!r}")
        listed = Path(list_file)
        if not listed.is_absolute() and (root / listed).is_file():
            listed = root / listed
        if not listed.is_file():
            raise U2SegError(f"{listed}: file list not found")
        try:
            text = listed.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise U2SegError(f"{listed}: cannot read the file list ({exc})") from None
        samples, malformed = [], []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = [f.strip() for f in line.split(separator)]
            if len(fields) != 2 or not all(fields):
                malformed.append(f"{listed}:{number}: expected 'image{separator}mask', got {line!r}")
                continue
            image, mask = (root / f for f in fields)
            samples.append(Sample(Path(fields[0]).with_suffix("").as_posix(), image, mask, f"{listed}:{number}"))
        if malformed:
            more = f" (and {len(malformed) - 1} more such lines)" if len(malformed) > 1 else ""
            raise U2SegError(malformed[0] + more)
        if not samples:
            raise U2SegError(f"{listed}: the file list has no samples")
        self.list_file = listed
        self.separator = separator
        super().__init__(samples, num_classes=num_classes, transform=transform, root=root)


class VOCSegmentation(SegmentationDataset):
    """Pascal VOC layout: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs:
    the indices are the classes, 255 marks the borders to ignore), ids from
    ``ImageSets/Segmentation/<split>.txt``. ``root`` is the ``VOC2012`` folder (``VOCdevkit/``
    works too when it holds one ``VOC*`` folder).

    Raises:
        U2SegError: missing root or split list, or an empty split.
    """

    classes = VOC_CLASSES

    def __init__(self, root: str | os.PathLike, split: str = "train", *, num_classes: int = 21,
                 transform: TransformFn | None = None) -> None:
        if num_classes < 2:
            raise ValueError(f"VOC masks hold class indices: num_classes must be ≥ 2, got {num_classes}")
        root = _require_dir(Path(root), "VOC folder")
        if not (root / "ImageSets").is_dir():
            inner = sorted(p for p in root.glob("VOC*") if (p / "ImageSets").is_dir())
            if len(inner) == 1:
                root = inner[0]
        lists = root / "ImageSets" / "Segmentation"
        listed = lists / f"{split}.txt"
        if not listed.is_file():
            known = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
            hint = f"; splits here: {', '.join(known)}" if known else " (is this a VOC2012 folder?)"
            raise U2SegError(f"{listed}: split list not found{hint}")
        samples = []
        for number, raw in enumerate(listed.read_text(encoding="utf-8-sig").splitlines(), start=1):
            name = raw.strip()
            if not name or name.startswith("#"):
                continue
            name = name.split()[0]  # ImageSets/Main lists carry a second column
            samples.append(Sample(name, root / "JPEGImages" / f"{name}.jpg",
                                  root / "SegmentationClass" / f"{name}.png", f"{listed}:{number}"))
        if not samples:
            raise U2SegError(f"{listed}: the split lists no images")
        self.split = split
        super().__init__(samples, num_classes=num_classes, transform=transform, root=root)
