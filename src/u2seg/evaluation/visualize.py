"""Pictures for people: predictions written as files, and image | label | prediction sheets.

- :func:`write_predictions` (``u2seg predict``): for each image, the mask (a grey saliency map
  for binary models, a palette PNG of class indices for semantic ones) and, optionally, an
  overlay of the classes on the image.
- :func:`write_triptychs` (``u2seg visualize``): for each sample of a dataset, its image, its
  ground truth and a prediction (from a Predictor, or saved masks matched by name) side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..errors import U2SegError
from ..data.reading import read_mask
from ..image_encode import encode_image, save_image
from ..image_io import IMAGE_EXTENSIONS, load_image
from ..infer.postprocess import probability_to_mask
from ..infer.colorize import colorize, gray, label_colours, overlay, side_by_side
from ..infer.engine import run_job
from ..infer.job_types import Files, Item, Prediction, Report

if TYPE_CHECKING:
    from ..infer.predictor import Predictor

__all__ = ["PredictionJob", "PredictionFilesJob", "SheetJob", "write_predictions", "write_triptychs"]


@dataclass(frozen=True)
class PredictionJob:
    source: Path
    mask: Path
    overlay: Path | None = None


def _picture(labels_or_map: np.ndarray, binary: bool) -> np.ndarray:
    """What a person should see of a label or prediction: grey for binary maps, VOC colours
    for class indices."""
    if binary:
        values = labels_or_map
        if values.dtype == np.uint8 and values.size and values.max() <= 1:
            values = values * np.uint8(255)
        return gray(values)
    return label_colours(labels_or_map)


@dataclass(frozen=True)
class PredictionFilesJob:
    """The engine's job for ``u2seg predict``: per image the mask (a grey map, or a palette PNG
    of class indices) and, for sources in ``overlays``, the classes over the image."""

    overlays: Mapping[Path, Path | None]  # source → overlay path
    alpha: float = 0.5

    def finish(self, prediction: Prediction) -> Files:
        predictor, image = prediction.predictor, prediction.image.convert("RGB")
        if predictor.num_classes == 1:
            prob = predictor.to_host(prediction.foreground())
            mask_image = probability_to_mask(prob)
            classes = (prob >= 0.5).astype(np.uint8)
        else:
            with prediction.timer("postprocess"):
                classes = predictor.class_map(prediction.probs, image.size)
            mask_image = colorize(classes)
        files = {}
        with prediction.timer("encode"):
            files[prediction.item.output] = encode_image(mask_image, "png")
        overlay_path = self.overlays.get(Path(prediction.item.source))
        if overlay_path is not None:
            with prediction.timer("refine"):
                tinted = Image.fromarray(overlay(np.asarray(image), classes, alpha=self.alpha))
            with prediction.timer("encode"):
                files[overlay_path] = encode_image(tinted, "png")
        return Files(files)


def write_predictions(predictor: Predictor, jobs: Sequence[PredictionJob], *, alpha: float = 0.5,
                      on_error: Callable[[str], None] | None = None, batch_size: int = 1,
                      workers: int | None = None) -> Report:
    """Predict each job's source image and write its mask (and overlay) through the engine. A
    failing image is reported (``on_error`` and ``report.failed``) and the others go on."""
    items = [Item(job.source, str(job.source), job.mask) for job in jobs]
    task = PredictionFilesJob({Path(job.source): job.overlay for job in jobs}, alpha)
    return run_job(predictor, items, task, batch_size=batch_size, workers=workers, on_error=on_error,
                   progress=False)


def write_triptychs(dataset, out_dir: str | Path, *, predictor: Predictor | None = None,
                    pred_dir: str | Path | None = None, limit: int | None = None, height: int | None = None,
                    overwrite: bool = False) -> list[Path]:
    """``out_dir/<sample name>.png``: image | label | prediction for the first ``limit`` samples
    of ``dataset`` (all by default), each panel ``height`` px high (default: the image's).

    The prediction comes from ``predictor`` or from ``pred_dir/<sample name>.*`` (a saved map or
    class PNG); give exactly one. Existing sheets are kept unless ``overwrite``: then nothing is
    written and the error names them."""

    if (predictor is None) == (pred_dir is None):
        raise ValueError("give a predictor or a pred_dir (exactly one)")
    binary = dataset.num_classes == 1
    if predictor is not None and predictor.num_classes != dataset.num_classes:
        raise U2SegError(f"the model predicts {predictor.num_classes} class(es) but the dataset has "
                         f"num_classes={dataset.num_classes}")
    out_dir = Path(out_dir)
    count = len(dataset) if not limit else min(limit, len(dataset))
    names = [dataset.samples[i].name for i in range(count)]
    targets = [out_dir / f"{name}.png" for name in names]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise U2SegError(f"{existing[0]}: exists ({len(existing)} sheet(s) would be replaced); "
                         "choose another output folder or pass --overwrite")
    saved: dict[str, Path] = {}
    if pred_dir is not None:
        pred_dir = Path(pred_dir)
        if not pred_dir.is_dir():
            raise U2SegError(f"{pred_dir}: prediction folder not found")
        for path in pred_dir.rglob("*"):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                saved.setdefault(path.relative_to(pred_dir).with_suffix("").as_posix(), path)
        missing = [n for n in names if n not in saved]
        if missing:
            raise U2SegError(f"{pred_dir}: no prediction for {len(missing)} sample(s), e.g. {missing[0]}.png")
    if predictor is not None:  # through the engine: decoding, network and drawing overlap
        items = [Item(partial(dataset.load_pair, i), name, target)
                 for i, (name, target) in enumerate(zip(names, targets))]
        errors: list[str] = []
        report = run_job(predictor, items, SheetJob(height), on_error=errors.append, progress=False)
        if errors:
            raise U2SegError(errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
        return report.written
    written = []
    for index, (name, target) in enumerate(zip(names, targets)):
        image, label = dataset.load_pair(index)
        if binary:
            prediction = np.asarray(load_image(saved[name]).convert("L"))
        else:
            prediction = read_mask(saved[name], dataset.num_classes)
        save_image(Image.fromarray(_sheet(image, label, prediction, binary, height)), target, "png")
        written.append(target)
    return written


def _sheet(image: np.ndarray, label: np.ndarray, prediction: np.ndarray, binary: bool,
           height: int | None) -> np.ndarray:
    return side_by_side([image, _picture(label, binary), _picture(prediction, binary)], height=height)


@dataclass(frozen=True)
class SheetJob:
    """The engine's job for ``u2seg visualize``: image | label | prediction, as a PNG file."""

    height: int | None = None

    def finish(self, prediction: Prediction) -> Files:
        predictor, image = prediction.predictor, prediction.image.convert("RGB")
        binary = predictor.num_classes == 1
        if binary:
            predicted = predictor.to_host(prediction.foreground())
        else:
            with prediction.timer("postprocess"):
                predicted = predictor.class_map(prediction.probs, image.size)
        with prediction.timer("refine"):
            sheet = _sheet(np.asarray(image), prediction.meta, predicted, binary, self.height)
        with prediction.timer("encode"):
            return Files({prediction.item.output: encode_image(Image.fromarray(sheet), "png")})
