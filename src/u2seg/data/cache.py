"""The decode-once cache: every sample of a dataset decoded and resized once to ``size×size``
(``uint8`` images ``N×S×S×3`` and label masks ``N×S×S``), so that training steps only crop, flip
and normalise (:mod:`.batch_augment`).

Modes: ``memory`` decodes into this process's memory (nothing on disk); ``mmap`` keeps the
arrays as ``.npy`` files under a cache folder and memory-maps them, so later runs skip the decoding
and the operating system shares the pages between processes. The folder is named by what
determines the pixels (the dataset's class and files, ``num_classes``, ``size``, ``resample``),
and its ``meta.json`` records the files' sizes and modification times: a changed, added or
removed file makes the next run rebuild it. ``auto`` is ``memory`` up to
:data:`AUTO_MEMORY_BYTES` of decoded pixels and ``mmap`` above. Decoding runs in threads (Pillow
releases the GIL), with a progress bar.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import write_bytes_atomic
from .pair_resize import resize_pair

__all__ = ["AUTO_MEMORY_BYTES", "CACHE_MODES", "DecodedSet", "decode_dataset"]

log = logging.getLogger(__name__)

CACHE_MODES = ("auto", "memory", "mmap", "off")
AUTO_MEMORY_BYTES = 1 << 30
_FORMAT = 1  # bump when the stored pixels would change


@dataclass
class DecodedSet:
    """A dataset's samples decoded and resized: ``images`` ``uint8 N×S×S×3``, ``masks`` ``uint8
    N×S×S`` (0/1, or class indices with 255 = ignore); ``folder`` when memory-mapped."""

    images: np.ndarray
    masks: np.ndarray
    folder: Path | None = None
    reused: bool = False  # mmap: found valid on disk, not decoded now

    @property
    def mode(self) -> str:
        return "mmap" if self.folder is not None else "memory"


def _slot(dataset: Any, size: int, resample: str) -> str:
    """The cache folder's name: a hash of what determines the pixels, the files' contents aside."""
    described = {"format": _FORMAT, "dataset": type(dataset).__name__, "num_classes": dataset.num_classes,
                 "size": size, "resample": resample,
                 "samples": [[str(Path(s.image).resolve()), str(Path(s.mask).resolve())] for s in dataset.samples]}
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:24]


def _fingerprint(dataset: Any) -> str:
    """A hash of every image's and mask's size and modification time."""
    h = hashlib.sha256()
    for sample in dataset.samples:
        for path in (sample.image, sample.mask):
            st = os.stat(path)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _decoded_bytes(count: int, size: int) -> int:
    """The memory ``count`` samples take decoded at ``size×size`` (image and mask)."""
    return count * size * size * 4


def decode_dataset(dataset: Any, size: int, resample: str, *, mode: str = "auto", folder: str | Path | None = None,
                   workers: int | None = None, progress: bool = False) -> DecodedSet:
    """``dataset``'s samples (``load_pair``) resized to ``size×size`` as :class:`~.pair_resize.PairResize` does.

    Args:
        mode: ``memory``, ``mmap`` or ``auto`` (see the module's doc).
        folder: the cache folder for ``mmap`` (one sub-folder per dataset and size).
        workers: decoding threads (default: the CPU cores, at most 16).
        progress: show a progress bar while decoding.
    """
    if mode not in ("auto", "memory", "mmap"):
        raise ValueError(f"mode must be auto, memory or mmap, not {mode!r}")
    n = len(dataset)
    if mode == "auto":
        mode = "memory" if _decoded_bytes(n, size) <= AUTO_MEMORY_BYTES or folder is None else "mmap"
    if mode == "memory":
        images = np.empty((n, size, size, 3), np.uint8)
        masks = np.empty((n, size, size), np.uint8)
        _decode_into(dataset, size, resample, images, masks, workers, progress)
        return DecodedSet(images, masks)
    if folder is None:
        raise ValueError("mode mmap needs a cache folder")
    target = Path(folder).expanduser() / _slot(dataset, size, resample)
    fingerprint = _fingerprint(dataset)
    meta_path = target / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if meta is not None and meta.get("fingerprint") == fingerprint:
        return DecodedSet(np.load(target / "images.npy", mmap_mode="r"), np.load(target / "masks.npy", mmap_mode="r"),
                          target, reused=True)
    if meta is not None:
        log.info("%s: the dataset's files changed since the cache was made: decoding again", target)
    # build beside the target, then swap it in: a run killed halfway leaves no half-written cache
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    images = np.lib.format.open_memmap(building / "images.npy", "w+", np.uint8, (n, size, size, 3))
    masks = np.lib.format.open_memmap(building / "masks.npy", "w+", np.uint8, (n, size, size))
    _decode_into(dataset, size, resample, images, masks, workers, progress)
    images.flush()
    masks.flush()
    del images, masks
    write_bytes_atomic(json.dumps({"fingerprint": fingerprint, "count": n, "size": size, "resample": resample,
                                   "root": str(dataset.root)}, indent=2).encode(), building / "meta.json")
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    return DecodedSet(np.load(target / "images.npy", mmap_mode="r"), np.load(target / "masks.npy", mmap_mode="r"),
                      target)


def _decode_into(dataset: Any, size: int, resample: str, images: np.ndarray, masks: np.ndarray,
                 workers: int | None, progress: bool) -> None:
    from tqdm import tqdm

    def one(index: int) -> None:
        image, mask = dataset.load_pair(index)
        images[index], masks[index] = resize_pair(image, mask, size, resample, binary=dataset.binary)

    indices: Sequence[int] = range(len(dataset))
    threads = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, \
            tqdm(total=len(indices), desc=f"decoding {len(indices)} samples at {size} px", unit="img",
                 disable=not progress, dynamic_ncols=True) as bar:
        for _ in pool.map(one, indices):
            bar.update(1)
