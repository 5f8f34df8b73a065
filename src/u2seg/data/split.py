"""Pair images with masks by file stem, and split a folder dataset into PaddleSeg file lists.

``split_dataset(root)`` writes ``root/train.txt`` and ``root/val.txt`` (and ``test.txt`` for three
ratios), one ``image<separator>mask`` line per pair, paths relative to ``root``: the format that
:class:`u2seg.data.FileList` (and PaddleSeg) reads. No torch needed.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import U2SegError
from ..fileio import write_bytes_atomic
from ..image_io import IMAGE_EXTENSIONS

__all__ = ["Pairing", "pair_folders", "split_dataset", "SPLIT_NAMES"]

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Pairing:
    """Images matched to masks: ``pairs`` as (name, image, mask), name = the path below the
    folder without suffix (``"cat/001"``); the leftovers name what could not be paired."""

    images_dir: Path
    masks_dir: Path
    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_masks: list[Path] = field(default_factory=list)
    ambiguous: list[tuple[str, list[Path]]] = field(default_factory=list)  # one stem, several files

    def problems(self) -> list[str]:
        """One line per unpaired or ambiguous file, naming both sides."""
        lines = [f"{img}: no mask for this image (looked for {self.masks_dir / _stem(img, self.images_dir)}.*)"
                 for img in self.unpaired_images]
        lines += [f"{mask}: no image for this mask (looked for {self.images_dir / _stem(mask, self.masks_dir)}.*)"
                  for mask in self.unpaired_masks]
        lines += [f"{files[0]}: {len(files)} files share the name {name!r} "
                  f"({', '.join(p.name for p in files)}); keep one" for name, files in self.ambiguous]
        return lines


def _stem(path: Path, folder: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def _image_files(folder: Path) -> dict[str, list[Path]]:
    """name → files with an image suffix below ``folder`` (recursive; hidden files and folders,
    such as macOS ``._x.jpg`` forks, are skipped)."""
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if filename.startswith(".") or Path(filename).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            path = Path(dirpath) / filename
            found.setdefault(_stem(path, folder), []).append(path)
    return found


def pair_folders(images_dir: str | os.PathLike, masks_dir: str | os.PathLike) -> Pairing:
    """Match files in ``images_dir`` and ``masks_dir`` (recursively) by path without suffix:
    ``images/a/1.jpg`` ↔ ``masks/a/1.png``. A name with several files on one side (``1.jpg`` and
    ``1.png``) is ambiguous and not paired. Pairs come sorted by name."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for label, folder in (("image", images_dir), ("mask", masks_dir)):
        if not folder.is_dir():
            raise U2SegError(f"{folder}: {label} folder not found")
    images, masks = _image_files(images_dir), _image_files(masks_dir)
    result = Pairing(images_dir, masks_dir)
    for name in sorted(set(images) | set(masks)):
        imgs, msks = images.get(name, []), masks.get(name, [])
        if len(imgs) > 1 or len(msks) > 1:
            result.ambiguous.append((name, imgs if len(imgs) > 1 else msks))
            continue
        if imgs and msks:
            result.pairs.append((name, imgs[0], msks[0]))
        elif imgs:
            result.unpaired_images.append(imgs[0])
        else:
            result.unpaired_masks.append(msks[0])
    return result


def _split_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of ``n * ratios``, then every split with a positive ratio gets
    at least one item while there are enough items."""
    exact = [n * r for r in ratios]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(ratios)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    for i, r in enumerate(ratios):
        if r > 0 and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def split_dataset(root: str | os.PathLike, ratios: Sequence[float] = (0.8, 0.2), seed: int = 0, *,
                  images_dir: str = "images", masks_dir: str = "masks", separator: str = " ",
                  overwrite: bool = False) -> dict[str, Path]:
    """Split the image/mask pairs below ``root`` into ``train.txt`` / ``val.txt`` (/ ``test.txt``).

    Args:
        root: the dataset folder; the lists are written there, paths in them relative to it.
        ratios: two (train, val) or three (train, val, test) fractions summing to 1 (±1e-6).
            Counts are rounded by largest remainder; each split with a positive ratio gets at
            least one pair when there are enough pairs.
        seed: the shuffle's seed; the same seed and files give the same lists.
        images_dir, masks_dir: the folders below ``root`` (paired by file stem, see
            :func:`pair_folders`).
        separator: between image and mask on each line (PaddleSeg's default is a space).
        overwrite: replace existing lists; otherwise an existing one stops the split.

    Returns:
        ``{"train": root/"train.txt", "val": ..., ["test": ...]}``. Each pair appears in exactly
        one list; lines are sorted within a list. Unpaired files are left out with a warning.

    Raises:
        ValueError: bad ratios or an empty separator.
        U2SegError: missing folders, no pairs, a path containing the separator, or an existing
            list without ``overwrite=True``.
    """
    ratios = [float(r) for r in ratios]
    if len(ratios) not in (2, 3):
        raise ValueError(f"ratios must be (train, val) or (train, val, test), got {tuple(ratios)}")
    if any(not math.isfinite(r) or r < 0 for r in ratios):
        raise ValueError(f"ratios must be non-negative numbers, got {tuple(ratios)}")
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"ratios must sum to 1, got {tuple(ratios)} (sum {sum(ratios):.6g})")
    if not separator or "\n" in separator or "\r" in separator:
        raise ValueError(f"separator must be a non-empty string without line breaks, got {separator!r}")
    root = Path(root)
    if not root.is_dir():
        raise U2SegError(f"{root}: dataset folder not found")
    names = SPLIT_NAMES[: len(ratios)]
    targets = {name: root / f"{name}.txt" for name in names}
    if not overwrite:
        existing = [str(p) for p in targets.values() if p.exists()]
        if existing:
            raise U2SegError(f"{existing[0]}: file list exists; pass overwrite=True to replace it"
                             + (f" (also {', '.join(existing[1:])})" if len(existing) > 1 else ""))

    folders = []
    for label, folder in (("images_dir", Path(images_dir)), ("masks_dir", Path(masks_dir))):
        if folder.is_absolute():  # allowed inside root: the lists hold paths relative to root
            if not folder.resolve().is_relative_to(root.resolve()):
                raise U2SegError(f"{folder}: {label} must be inside {root} (list paths are relative to it)")
            folder = folder.resolve().relative_to(root.resolve())
        folders.append(root / folder)
    pairing = pair_folders(*folders)
    if not pairing.pairs:
        raise U2SegError(f"{root}: no image/mask pairs in {images_dir}/ and {masks_dir}/ (matched by file stem)")
    skipped = pairing.problems()
    if skipped:
        warnings.warn(f"{root}: {len(skipped)} unpaired or ambiguous files left out of the split, "
                      f"e.g. {skipped[0]}", stacklevel=2)

    lines = []
    for _name, image, mask in pairing.pairs:
        rel = [image.relative_to(root).as_posix(), mask.relative_to(root).as_posix()]
        for path in rel:
            if separator in path:
                raise U2SegError(f"{root / path}: the path contains the separator {separator!r}; "
                                 "choose another separator")
        lines.append(separator.join(rel))

    order = np.random.default_rng(seed).permutation(len(lines))
    counts = _split_counts(len(lines), ratios)
    written: dict[str, Path] = {}
    start = 0
    for name, count in zip(names, counts):
        chosen = sorted(lines[i] for i in order[start:start + count])
        start += count
        text = "".join(line + "\n" for line in chosen)
        write_bytes_atomic(text.encode("utf-8"), targets[name])
        written[name] = targets[name]
    return written
