"""Background removal: the engine's job that refines and encodes, for one image (``remove``)
and for many files (``remove_files``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import PixelLimitError  # defined there (load_image raises it too); importable from here
from .engine import run_job, run_one
from .job_types import Files, Item, Prediction, Report, Result
from .files import Task
from ..image_encode import encode_image
from ..image_io import carry_icc_profile
from .predictor import ImageInput, Predictor
from .confidence import DEFAULT_REVIEW_BELOW
from .manifest import Manifest
from .records import ImageRecord, RecordLog, record_of
from .refine import RefineOptions, finish_output, needs_host, refine_output
from .sessions import get_predictor

__all__ = ["RemovalJob", "Review", "RecordSinks", "PixelLimitError", "remove", "render", "remove_files", "record_for",
           "network_threads"]


@dataclass(frozen=True)
class Review:
    """Where results scoring under ``below`` get a second copy for a person to check: ``folder``,
    mirroring each output's path under ``root``."""

    folder: Path
    below: float = DEFAULT_REVIEW_BELOW
    root: Path | None = None

    def record(self, result: Result) -> ImageRecord:
        """The record of ``result``, naming the copy written here for review, if any."""
        copies = [path for path in result.written if path.is_relative_to(self.folder)]
        return record_of(result, review=copies[0] if copies else None)

    def path_for(self, output: Path) -> Path:
        try:
            relative = output.relative_to(self.root) if self.root is not None else Path(output.name)
        except ValueError:
            relative = Path(output.name)
        return self.folder / relative


@dataclass(frozen=True)
class RemovalJob:
    """Mask or cutout of each image, refined by ``options``; encoded as ``fmt`` (``None``: the
    PIL image itself, with its confidence in ``info["u2seg_confidence"]``). Items with an
    ``output`` path get it written, and a copy under ``review`` when the confidence is low."""

    options: RefineOptions = RefineOptions()
    fmt: str | None = "png"
    compression: int = 3
    # Refuse larger images (PixelLimitError): from the file's header, before decoding, where it
    # tells the size (the engine hands this to load_image), else right after decoding (admit).
    max_pixels: int | None = None
    review: Review | None = None

    def admit(self, image: Image.Image) -> None:
        if self.max_pixels is not None and image.width * image.height > self.max_pixels:
            raise PixelLimitError(f"image of {image.width}×{image.height} = {image.width * image.height:,} pixels is "
                                  f"over the limit of {self.max_pixels:,} pixels")

    def finish(self, prediction: Prediction) -> Files | bytes | Image.Image:
        output = render_prediction(prediction, self.options)
        if self.fmt is None:
            output.info["u2seg_confidence"] = prediction.confidence().as_dict()
            return output
        with prediction.timer("encode"):
            data = encode_image(output, self.fmt, compression=self.compression)
        target = prediction.item.output
        if target is None:
            return data
        files = {target: data}
        if self.review is not None and prediction.confidence().score < self.review.below:
            files[self.review.path_for(target)] = data
        return Files(files)


def render_prediction(prediction: Prediction, options: RefineOptions) -> Image.Image:
    """The refined output of one prediction: on the device when the Predictor keeps its
    arithmetic there and the options allow it, else on the host (:func:`refine_output`). A cutout
    or composite carries the input's RGB ICC profile (``info["icc_profile"]``, embedded by the
    encoder); a mask carries none (an RGB profile is invalid on a grey image)."""
    prob = prediction.foreground()
    device = prediction.predictor.device_arithmetic
    with prediction.timer("refine"):
        if device is None or isinstance(prob, np.ndarray) or needs_host(options):
            return refine_output(prediction.image, prediction.predictor.to_host(prob), options)
        alpha = prob if options.threshold is None else (prob >= options.threshold).float()
        pixels = device.mask(alpha) if options.only_mask else device.cutout(prediction.prepared.pixels, alpha)
        return carry_icc_profile(prediction.image, finish_output(pixels, options)[0])


def render(predictor: Predictor, image: ImageInput, options: RefineOptions = RefineOptions()) -> Image.Image:
    """Predict and refine the output for one image (through the engine's stages, in this thread)."""
    return run_one(predictor, Item.of(image), RemovalJob(options, fmt=None))


def remove(image: ImageInput, *, model: str | None = None, weights: str | Path | None = None,
           size: int | None = None, predictor: Predictor | None = None, **options) -> Image.Image:
    """Remove the background of ``image`` (path, bytes, PIL image or array).

    Returns an RGBA cutout, or the 8-bit mask with ``only_mask=True``; the other keywords are
    :class:`~u2seg.infer.refine.RefineOptions` (``alpha_matting``, ``bgcolor``, ``crop`` …).
    The predictor for a given (model, weights, size) is built once per process and reused
    (:func:`u2seg.infer.sessions.get_predictor`).
    """
    refine_options = RefineOptions(**options)  # validate before loading anything
    if predictor is None:
        predictor = get_predictor(model, weights=weights, size=size)
    return render(predictor, image, refine_options)


def network_threads(files: int, precision: str = "fp32") -> int | None:
    """Threads for the network when processing ``files`` files. With the cheap bf16/int8 networks
    a folder goes faster when the network keeps to half the cores and decoding/encoding take the
    other half; fp32 networks dominate the work and want every core (BENCHMARKS.md). ``None``
    leaves the engine's default (all cores)."""
    cores = os.cpu_count() or 1
    return max(1, cores // 2) if files >= 4 and cores > 1 and precision != "fp32" else None


def remove_files(predictor: Predictor, tasks: Iterable[Task], options: RefineOptions = RefineOptions(), *,
                 fmt: str = "png", compression: int = 3, batch_size: int = 1,
                 workers: int | None = None, on_error: Callable[[str], None] | None = None,
                 progress: bool | None = None, report: str | Path | None = None,
                 review: Review | None = None, manifest: Manifest | None = None,
                 on_record: Callable[[ImageRecord], None] | None = None) -> Report:
    """Process planned tasks (see :func:`u2seg.infer.files.plan_outputs`) through the engine:
    decode, pre-process, network, refine, encode and write overlap in bounded queues (flat memory
    whatever the number of files); a file that fails is reported through ``on_error`` and the
    rest still run. ``report``: a JSON-lines file that gets one record per image (appended);
    ``review``: low-confidence outputs also go there; ``manifest``: the job's manifest (it reads
    each input, records it, and gets each result's record); ``on_record``: called with each
    result's record. ``tasks`` may be a stream (a watched folder's): the engine takes them as
    they come."""
    items = (Item(manifest.source_for(task) if manifest is not None else task.source, str(task.source),
                  task.output) for task in tasks)
    job = RemovalJob(options, fmt, compression, review=review)
    sinks = RecordSinks(report, manifest, on_record)

    def on_result(result: Result) -> None:
        if sinks.wanted:
            sinks.write(record_for(result, review))

    try:
        return run_job(predictor, items, job, batch_size=batch_size, workers=workers, on_error=on_error,
                       on_result=on_result, progress=progress, total=len(tasks) if isinstance(tasks, Sized) else None)
    finally:
        sinks.close()


def record_for(result: Result, review: Review | None) -> ImageRecord:
    """The record of one result, naming its review copy when the job keeps one."""
    return review.record(result) if review is not None else record_of(result)


class RecordSinks:
    """Where a folder job's records go (opened here, closed by :meth:`close`): the job's
    manifest, ``--report``'s JSON lines, and a callback; the local and the Ray engine share it."""

    def __init__(self, report: str | Path | None, manifest: Manifest | None,
                 on_record: Callable[[ImageRecord], None] | None) -> None:
        self.log = RecordLog(report) if report is not None else None
        self.manifest = manifest
        self.on_record = on_record
        if manifest is not None:
            manifest.open()

    @property
    def wanted(self) -> bool:
        return self.log is not None or self.manifest is not None or self.on_record is not None

    def write(self, record: ImageRecord) -> None:
        if self.manifest is not None:
            self.manifest.write(record)
        if self.log is not None:
            self.log.write(record)
        if self.on_record is not None:
            self.on_record(record)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.manifest is not None:
            self.manifest.close()
