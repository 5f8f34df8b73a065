"""Background removal for one image (``remove``) and for many files (``remove_files``)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import ImageReadError
from .image_io import load_image, save_image
from .postprocess import make_cutout, probability_to_mask
from .predictor import ImageInput, Predictor

__all__ = ["remove", "render", "remove_files", "FilesReport"]


@functools.lru_cache(maxsize=4)
def _cached_predictor(model: str | None, weights: str | None, size: int | None) -> Predictor:
    return Predictor(model, weights=weights, size=size)


def render(predictor: Predictor, image: Image.Image, *, only_mask: bool = False,
           bgcolor: Sequence[int] | None = None) -> Image.Image:
    """The output for one loaded image: an ``L`` mask or an RGBA cutout."""
    mask = probability_to_mask(predictor.predict(image))
    return mask if only_mask else make_cutout(image, mask, bgcolor=bgcolor)


def remove(image: ImageInput, *, model: str | None = None, weights: str | Path | None = None,
           size: int | None = None, only_mask: bool = False, bgcolor: Sequence[int] | None = None,
           predictor: Predictor | None = None) -> Image.Image:
    """Remove the background of ``image`` (path, bytes, PIL image or array).

    Returns an RGBA cutout, or the 8-bit mask with ``only_mask=True``. The predictor for a given
    (model, weights, size) is built once per process and reused.
    """
    if predictor is None:
        predictor = _cached_predictor(model, None if weights is None else str(weights), size)
    return render(predictor, load_image(image), only_mask=only_mask, bgcolor=bgcolor)


@dataclass
class FilesReport:
    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one line each


def remove_files(predictor: Predictor, tasks: Sequence, *, only_mask: bool = False,
                 bgcolor: Sequence[int] | None = None, fmt: str = "png",
                 on_error: Callable[[str], None] | None = None, progress: bool | None = None) -> FilesReport:
    """Process planned tasks (see :func:`u2seg.infer.files.plan_outputs`); a file that fails is
    reported through ``on_error`` and the rest still run."""
    from tqdm import tqdm

    report = FilesReport()
    show = len(tasks) > 1 if progress is None else progress
    bar = tqdm(tasks, unit="img", disable=not show, file=sys.stderr, dynamic_ncols=True)
    for task in bar:
        try:
            image = load_image(task.source)
            result = render(predictor, image, only_mask=only_mask, bgcolor=bgcolor)
            save_image(result, task.output, fmt=fmt)
        except (ImageReadError, OSError) as exc:
            line = str(exc) if isinstance(exc, ImageReadError) else f"{task.source}: {exc}"
            report.failed.append(line)
            if on_error is not None:
                on_error(line)
            continue
        report.written.append(task.output)
    return report
