"""Where training batches come from, and which data path runs:

``cached``
    The samples decoded and resized once (:mod:`u2seg.data.cache`, ``data.cache``: auto, memory
    or mmap), then each step's random crop, flips, colour jitter and normalisation done on the
    whole batch on the training device (:mod:`u2seg.data.batch_augment`). For transforms that
    carry a ``batch_plan`` (``official_train``, ``official_eval``). A background thread gathers
    the next batch's pixels while the current step runs.
``loader``
    The dataset through a ``DataLoader``: each sample decoded, resized and augmented on the CPU
    (in ``workers`` processes). For every other transform (one that needs the full image each
    time, e.g. ``letterbox``, or a custom one), and with ``data.cache: off``.

Both take the samples the step sampler (:mod:`.sampler`) names, with the same augmentation seeds,
and give the same batches up to float rounding; the log says which path runs and why.

A run's batches (:func:`training_batches`) follow its transform stages (``data.train.stages``):
each earlier transform until its fraction of the run, then the configured one.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .sampler import SeededItems, StepSampler

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["BatchSource", "stage_at", "training_batches"]

log = logging.getLogger(__name__)


class BatchSource:
    """Batches of ``{"image", "mask"}`` for the steps a sampler lists, on ``device``.

    Args:
        dataset: the training set (``load_pair``, ``transform``, ``binary``).
        cache: ``auto``, ``memory``, ``mmap`` or ``off`` (the loader path for every transform).
        cache_dir: where ``mmap`` caches live (default ``$U2SEG_HOME/train-cache``).
        workers: DataLoader processes (loader path) or decoding threads (cache).
    """

    def __init__(self, dataset: Any, device: torch.device, *, workers: int, cache: str = "auto",
                 cache_dir: str | Path | None = None, progress: bool = False) -> None:
        from ..weights.cache import u2seg_home

        self.dataset, self.device, self.workers = dataset, device, workers
        self.cache, self.progress = cache, progress
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else u2seg_home() / "train-cache"
        self._decoded: dict[tuple[int, str], Any] = {}
        self._announced: set[int] = set()

    def plan(self, transform: Any) -> tuple[Any, str]:
        """The transform's batch plan, or None and why the loader path runs instead."""
        plan = getattr(transform, "batch_plan", None)
        if self.cache == "off":
            return None, "data.cache is off"
        if plan is None:
            return None, (f"the transform {transform!r} has no batch plan (only official_train and "
                          "official_eval run on cached pixels)")
        return plan, ""

    def prepare(self, transforms: Iterable[Any]) -> None:
        """Decode the caches the transforms' plans need (one per size), before training starts."""
        from ..data.cache import decode_dataset

        for transform in transforms:
            plan, _ = self.plan(transform)
            if plan is None or (plan.size, plan.resample) in self._decoded:
                continue
            decoded = decode_dataset(self.dataset, plan.size, plan.resample, mode=self.cache,
                                     folder=self.cache_dir, workers=self.workers or None, progress=self.progress)
            where = f" in {decoded.folder}{' (reused)' if decoded.reused else ''}" if decoded.folder else ""
            log.info("decode-once cache: %d samples at %d px, %s%s", len(self.dataset), plan.size, decoded.mode, where)
            self._decoded[(plan.size, plan.resample)] = decoded

    def batches(self, transform: Any, sampler: StepSampler) -> Iterator[dict[str, Any]]:
        """The sampler's batches, augmented by ``transform`` (the dataset's transform too). A new
        call starts afresh (new DataLoader workers hold a copy of the transform)."""
        plan, why = self.plan(transform)
        if plan is not None:
            self.prepare([transform])
        if id(transform) not in self._announced:
            self._announced.add(id(transform))
            if plan is not None:
                log.info("data path: cached (decoded once at %d px; crop, flips and normalisation on %s in "
                         "batches) for %r", plan.size, self.device, transform)
            else:
                log.info("data path: DataLoader (%d workers) for %r: %s", self.workers, transform, why)
        if plan is None:
            loader = torch.utils.data.DataLoader(SeededItems(self.dataset), batch_sampler=sampler,
                                                 num_workers=self.workers, pin_memory=self.device.type == "cuda")
            yield from loader
            return
        yield from self._cached(plan, self._decoded[(plan.size, plan.resample)], sampler)

    def _cached(self, plan: Any, decoded: Any, sampler: StepSampler) -> Iterator[dict[str, Any]]:
        pin = self.device.type == "cuda"

        def gather(keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, list]:
            indices = np.fromiter((i for i, _ in keys), dtype=np.int64, count=len(keys))
            images = torch.from_numpy(np.ascontiguousarray(decoded.images[indices]))
            masks = torch.from_numpy(np.ascontiguousarray(decoded.masks[indices]))
            if pin:
                images, masks = images.pin_memory(), masks.pin_memory()
            return images, masks, [plan.draw(seed) for _, seed in keys]

        steps = iter(sampler)

        def submit(pool: ThreadPoolExecutor) -> Future | None:
            keys = next(steps, None)
            return pool.submit(gather, keys) if keys is not None else None

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = submit(pool)
            while pending is not None:
                images, masks, draws = pending.result()
                pending = submit(pool)  # the next batch's gathering overlaps this step
                images = images.to(self.device, non_blocking=True)
                masks = masks.to(self.device, non_blocking=True)
                x, y = plan.apply(images, masks, draws, binary=self.dataset.binary)
                yield {"image": x, "mask": y}


def stage_at(stages: Sequence[tuple[float, Any]], fraction: float) -> int:
    """The index of the ``(until, transform)`` stage that applies ``fraction`` (0 … 1) into the
    run: the first whose ``until`` lies beyond it, else the last."""
    return next(i for i, (until, _) in enumerate(stages) if fraction < until or i == len(stages) - 1)


def training_batches(trainer: Trainer) -> Iterator[dict[str, Any]]:
    """The trainer's batches from its current step on, until its last step or the end of its time
    budget. When the transform stage changes the source starts again from that step with the new
    transform."""
    t, c, dist = trainer, trainer.config, trainer.dist
    while (t.total is None or t.step < t.total) and not t.budget_spent():
        stage = stage_at(t.stage_transforms, t.run_fraction())
        until, transform = t.stage_transforms[stage]
        if t.train_set.transform is not transform:
            t.train_set.transform = transform
            log.info("step %d: training transform %s%s", t.step, transform,
                     f" until {until:g} of the run" if until <= 1 else "")
        sampler = StepSampler(len(t.train_set), c.batch_size, c.seed, t.step, t.total,
                              rank=dist.rank, world_size=dist.world_size)
        for batch in t.source.batches(transform, sampler):
            yield batch
            if stage_at(t.stage_transforms, t.run_fraction()) != stage:
                break
        else:
            return
