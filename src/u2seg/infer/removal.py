"""Background removal: the engine's job that refines and encodes, for one image (``remove``)
and for many files (``remove_files``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .engine import Files, Item, Prediction, Report, run_job, run_one
from .files import Task
from ..image_io import encode_image
from .predictor import ImageInput, Predictor
from .refine import RefineOptions, finish_output, needs_host, refine_output
from .sessions import get_predictor

__all__ = ["RemovalJob", "remove", "render", "remove_files", "network_threads"]


@dataclass(frozen=True)
class RemovalJob:
    """Mask or cutout of each image, refined by ``options``; encoded as ``fmt`` (``None``: the
    PIL image itself). Items with an ``output`` path get it written."""

    options: RefineOptions = RefineOptions()
    fmt: str | None = "png"
    compression: int = 3
    max_pixels: int | None = None  # refuse larger images right after decoding

    def admit(self, image: Image.Image) -> None:
        if self.max_pixels is not None and image.width * image.height > self.max_pixels:
            raise PixelLimitError(f"image of {image.width}×{image.height} = {image.width * image.height:,} pixels is "
                                  f"over the limit of {self.max_pixels:,} pixels")

    def finish(self, prediction: Prediction) -> Files | bytes | Image.Image:
        output = render_prediction(prediction, self.options)
        if self.fmt is None:
            return output
        with prediction.timer("encode"):
            data = encode_image(output, self.fmt, compression=self.compression)
        target = prediction.item.output
        return Files({target: data}) if target is not None else data


class PixelLimitError(ValueError):
    """An image over a job's pixel limit."""


def render_prediction(prediction: Prediction, options: RefineOptions) -> Image.Image:
    """The refined output of one prediction: on the device when the Predictor keeps its
    arithmetic there and the options allow it, else on the host (:func:`refine_output`)."""
    prob = prediction.foreground()
    device = prediction.predictor.device_arithmetic
    with prediction.timer("refine"):
        if device is None or isinstance(prob, np.ndarray) or needs_host(options):
            return refine_output(prediction.image, prediction.predictor.to_host(prob), options)
        alpha = prob if options.threshold is None else (prob >= options.threshold).float()
        pixels = device.mask(alpha) if options.only_mask else device.cutout(prediction.prepared.pixels, alpha)
        return finish_output(pixels, options)[0]


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


def remove_files(predictor: Predictor, tasks: Sequence[Task], options: RefineOptions = RefineOptions(), *,
                 fmt: str = "png", compression: int = 3, batch_size: int = 1,
                 workers: int | None = None, on_error: Callable[[str], None] | None = None,
                 progress: bool | None = None) -> Report:
    """Process planned tasks (see :func:`u2seg.infer.files.plan_outputs`) through the engine:
    decode, pre-process, network, refine, encode and write overlap in bounded queues (flat memory
    whatever the number of files); a file that fails is reported through ``on_error`` and the
    rest still run."""
    items = [Item(task.source, str(task.source), task.output) for task in tasks]
    return run_job(predictor, items, RemovalJob(options, fmt, compression), batch_size=batch_size,
                   workers=workers, on_error=on_error, progress=progress)
