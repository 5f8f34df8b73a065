"""Background removal for one image (``remove``) and for many files (``remove_files``)."""

from __future__ import annotations

import functools
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ImageReadError
from .files import Task
from .image_io import load_image, save_image
from .predictor import ImageInput, Predictor
from .refine import RefineOptions, refine_output

__all__ = ["remove", "render", "remove_files", "network_threads", "FilesReport"]


@functools.lru_cache(maxsize=4)
def _cached_predictor(model: str | None, weights: str | None, size: int | None) -> Predictor:
    return Predictor(model, weights=weights, size=size)


def render(predictor: Predictor, image: Image.Image, options: RefineOptions = RefineOptions()) -> Image.Image:
    """Predict and refine the output for one loaded image."""
    return refine_output(image, predictor.predict(image), options)


def remove(image: ImageInput, *, model: str | None = None, weights: str | Path | None = None,
           size: int | None = None, predictor: Predictor | None = None, **options) -> Image.Image:
    """Remove the background of ``image`` (path, bytes, PIL image or array).

    Returns an RGBA cutout, or the 8-bit mask with ``only_mask=True``; the other keywords are
    :class:`~u2seg.infer.refine.RefineOptions` (``alpha_matting``, ``bgcolor``, ``crop`` …).
    The predictor for a given (model, weights, size) is built once per process and reused.
    """
    refine_options = RefineOptions(**options)  # validate before loading anything
    if predictor is None:
        predictor = _cached_predictor(model, None if weights is None else str(weights), size)
    return render(predictor, load_image(image), refine_options)


def network_threads(files: int, precision: str = "fp32") -> int | None:
    """Threads for the network when processing ``files`` files. With the cheap bf16/int8 networks
    a folder goes faster when the network keeps to half the cores and decoding/encoding take the
    other half; fp32 networks dominate the work and want every core (BENCHMARKS.md). ``None``
    leaves the engine's default (all cores)."""
    cores = os.cpu_count() or 1
    return max(1, cores // 2) if files >= 4 and cores > 1 and precision != "fp32" else None


@dataclass
class FilesReport:
    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one line each


def _prefetch(pool: ThreadPoolExecutor, fn: Callable, items: Sequence, depth: int) -> Iterator[Future]:
    """Yield futures of ``fn(item)`` in order, keeping at most ``depth`` submitted ahead."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


def remove_files(predictor: Predictor, tasks: Sequence[Task], options: RefineOptions = RefineOptions(), *,
                 fmt: str = "png", compression: int = 3, batch_size: int = 1,
                 workers: int | None = None, on_error: Callable[[str], None] | None = None,
                 progress: bool | None = None) -> FilesReport:
    """Process planned tasks (see :func:`u2seg.infer.files.plan_outputs`) as a pipeline.

    Worker threads decode and pre-process the next images while the network runs on a batch, and
    other workers post-process, encode and write finished ones. Queues are bounded, so memory
    stays flat whatever the number of files. A file that fails is reported through ``on_error``
    and the rest still run.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch size must be ≥ 1, got {batch_size}")
    workers = workers or min(4, (os.cpu_count() or 1) + 1)
    report = FilesReport()
    show = len(tasks) > 1 if progress is None else progress
    bar = tqdm(total=len(tasks), unit="img", disable=not show, file=sys.stderr, dynamic_ncols=True)

    def fail(task: Task, exc: BaseException) -> None:
        line = str(exc) if isinstance(exc, ImageReadError) else f"{task.source}: {exc}"
        report.failed.append(line)
        if on_error is not None:
            on_error(line)
        bar.update()

    def load(task: Task) -> tuple[Task, Image.Image, np.ndarray]:
        image = load_image(task.source)
        return task, image, predictor.preprocessing(image)

    def finish(task: Task, image: Image.Image, probs: np.ndarray) -> Path:
        prob = predictor.postprocess(probs, image.size)
        return save_image(refine_output(image, prob, options), task.output, fmt=fmt, compression=compression)

    writes: deque[tuple[Task, Future]] = deque()

    def collect(limit: int) -> None:
        while len(writes) > limit:
            task, future = writes.popleft()
            try:
                report.written.append(future.result())
                bar.update()
            except (ImageReadError, OSError, ValueError) as exc:
                fail(task, exc)

    batch: list[tuple[Task, Image.Image, np.ndarray]] = []

    def run_batch() -> None:
        probs = predictor.backend.run(np.stack([x for _, _, x in batch]))
        for (task, image, _), p in zip(batch, probs):
            writes.append((task, writers.submit(finish, task, image, p)))
        batch.clear()
        collect(2 * workers)

    with ThreadPoolExecutor(workers, thread_name_prefix="u2seg-read") as readers, \
            ThreadPoolExecutor(workers, thread_name_prefix="u2seg-write") as writers:
        for task, future in zip(tasks, _prefetch(readers, load, tasks, depth=batch_size + workers)):
            try:
                batch.append(future.result())
            except (ImageReadError, OSError) as exc:
                fail(task, exc)
                continue
            if len(batch) == batch_size:
                run_batch()
        if batch:
            run_batch()
        collect(0)
    bar.close()
    return report
