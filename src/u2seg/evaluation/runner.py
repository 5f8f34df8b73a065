"""Scoring: a Predictor over a dataset, or saved masks against ground truth, at the ground
truth's own resolution (the SOD and semantic-segmentation convention).

- Binary (``num_classes == 1``): :class:`~u2seg.metrics.SODMetrics` on the Predictor's maps
  (min-max normalised, resized back to the image: what the official test script saves).
- Multi-class: :class:`~u2seg.metrics.ConfusionMatrix` on the class maps
  (:meth:`Predictor.predict_classes`), pixels labelled 255 ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import U2SegError
from ..data.reading import read_mask
from ..data.split import pair_folders
from ..image_io import load_image
from ..metrics import ConfusionMatrix, SODMetrics, write_report
from ..metrics.headline import BINARY_KEYS, MULTICLASS_KEYS, headline
from ..infer.engine import run_job
from ..infer.job_types import Item, Prediction, Result

if TYPE_CHECKING:
    from ..infer.predictor import Predictor

__all__ = ["BINARY_KEYS", "MULTICLASS_KEYS", "EvalResult", "evaluate_predictor", "evaluate_saved", "headline"]

log = logging.getLogger(__name__)



@dataclass
class EvalResult:
    """What an evaluation measured: ``results`` (all of the metric's output, curves included),
    ``summary`` (:func:`headline`), and how: images, class names, TTA, notes."""

    kind: Literal["binary", "multiclass"]
    results: dict[str, Any]
    images: int
    class_names: list[str] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        return headline(self.results, self.kind)

    def write(self, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
        """``out_dir/metrics.json`` (+ plots): see :func:`u2seg.metrics.write_report`."""

        payload = {**self.results, "images": self.images, "summary": self.summary, **self.details}
        return write_report(payload, out_dir, kind=self.kind, class_names=self.class_names, plots=plots)

    def table(self) -> str:
        """A short text table of the summary, for terminals and logs."""
        lines = [f"{key:<15} {value:.4f}" for key, value in self.summary.items() if isinstance(value, float)]
        if self.kind == "multiclass":
            names = self.class_names or [str(i) for i in range(len(self.summary["IoU"]))]
            width = max(len(n) for n in names)
            lines.append("IoU per class:")
            lines += [f"  {name:<{width}} " + ("n/a" if not np.isfinite(v) else f"{v:.4f}")
                      for name, v in zip(names, self.summary["IoU"])]
        return "\n".join(lines)


def _metric(num_classes: int):
    return SODMetrics() if num_classes == 1 else ConfusionMatrix(num_classes)


class _ScoreJob:
    """The engine's job for evaluation: the prediction at the mask's size (a probability map,
    or class indices), with the mask."""

    def finish(self, prediction: Prediction) -> tuple[np.ndarray, np.ndarray]:
        predictor, mask, size = prediction.predictor, prediction.meta, prediction.image.size
        if predictor.num_classes == 1:
            return predictor.to_host(prediction.foreground()), mask
        with prediction.timer("postprocess"):
            return predictor.class_map(prediction.probs, size), mask


def evaluate_predictor(predictor: Predictor, dataset, *, batch_size: int = 4, limit: int | None = None,
                       class_names: Sequence[str] | None = None, progress: bool = False) -> EvalResult:
    """Run ``predictor`` on every sample of ``dataset`` (a u2seg dataset: its raw image and mask
    files are read, its transform is not used) and score the outputs at each mask's size.

    Binary datasets need a binary model; multi-class ones a model with ``dataset.num_classes``
    classes."""
    num_classes = int(dataset.num_classes)
    model_classes = int(predictor.num_classes)
    if num_classes != model_classes:
        raise U2SegError(f"the model predicts {model_classes} class{'es' if model_classes > 1 else ''} but the "
                         f"dataset has num_classes={num_classes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    indices = list(range(len(dataset)))[: limit if limit else None]
    if not indices:
        raise U2SegError(f"{dataset}: nothing to evaluate")
    metric = _metric(num_classes)
    failures: list[str] = []

    def score(result: Result) -> None:
        if result.error is not None:
            failures.append(result.error)
        elif not failures:
            prediction, mask = result.value
            metric.update(prediction, mask.astype(bool) if num_classes == 1 else mask)

    items = [Item(partial(dataset.load_pair, i), dataset.samples[i].name) for i in indices]
    run_job(predictor, items, _ScoreJob(), batch_size=batch_size, on_result=score, progress=progress)
    if failures:  # a sample left out would flatter the score
        raise U2SegError(failures[0] + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""))
    names = list(class_names) if class_names is not None else _dataset_class_names(dataset)
    tta = predictor.tta
    details = {"tta": {"flip": tta.flip, "scales": list(tta.scales)} if tta else None,
               "input_size": list(predictor.preprocessing.size), "model": predictor.model_name,
               "backend": predictor.backend.name}
    return EvalResult("binary" if num_classes == 1 else "multiclass", metric.results(), len(indices), names,
                      details)


def _dataset_class_names(dataset) -> list[str] | None:
    """VOC's class names, or a synthetic set's (from its dataset.json), when they fit."""
    if dataset.num_classes == 1:
        return None
    names = getattr(dataset, "classes", None)
    if names is None:
        info = Path(getattr(dataset, "root", "")) / "dataset.json"
        try:
            names = json.loads(info.read_text(encoding="utf-8")).get("classes") if info.is_file() else None
        except (OSError, ValueError):
            names = None
    if names is not None and len(names) == dataset.num_classes:
        return [str(n) for n in names]
    return None


def evaluate_saved(pred_dir: str | Path, gt_dir: str | Path, *, num_classes: int = 1,
                   class_names: Sequence[str] | None = None, progress: bool = False) -> EvalResult:
    """Score saved predictions against ground-truth masks, matched by file name without suffix
    (``pred/a/1.png`` ↔ ``gt/a/1.png``), with no model.

    Binary: predictions are grey maps (0…255, or 16-bit), ground truth foreground > 127 (or 0/1).
    Multi-class: both hold class indices (palette or grey PNGs, as ``u2seg predict`` writes
    them); 255 in the ground truth is ignored. A prediction of another size than its ground
    truth is resized to it (bilinear for maps, nearest for classes) and counted in
    ``details["resized"]``. Ground truth without a prediction is an error (a missing prediction
    would silently flatter the score); extra predictions are ignored and counted."""
    from PIL import Image
    from tqdm import tqdm

    pairing = pair_folders(pred_dir, gt_dir)
    if pairing.unpaired_masks or pairing.ambiguous:
        lines = [f"{m}: no prediction for this ground truth" for m in pairing.unpaired_masks[:10]]
        lines += [f"{name}: several files for one name: {', '.join(map(str, files))}"
                  for name, files in pairing.ambiguous[:10]]
        more = len(pairing.unpaired_masks) + len(pairing.ambiguous) - len(lines)
        raise U2SegError(f"{pred_dir} vs {gt_dir}: predictions and ground truth do not match:\n  "
                         + "\n  ".join(lines) + (f"\n  … and {more} more" if more > 0 else ""))
    if not pairing.pairs:
        raise U2SegError(f"{pred_dir} vs {gt_dir}: no prediction has a ground-truth mask of the same name")
    metric = _metric(num_classes)
    resized = 0
    for _name, pred_path, gt_path in tqdm(pairing.pairs, disable=not progress, unit="img", dynamic_ncols=True):
        gt = read_mask(gt_path, num_classes)
        h, w = gt.shape
        if num_classes == 1:
            picture = load_image(pred_path)
            pred = _grey_map(picture)
            if pred.shape != gt.shape:
                resized += 1
                pred = np.asarray(Image.fromarray(pred, mode="F").resize((w, h), Image.Resampling.BILINEAR))
            metric.update(np.clip(pred, 0.0, 1.0), gt.astype(bool))
        else:
            pred = read_mask(pred_path, num_classes)
            if (pred == 255).any():
                raise U2SegError(f"{pred_path}: a prediction holds 255 (the ignore label); predictions must be "
                                 f"class indices 0..{num_classes - 1}")
            if pred.shape != gt.shape:
                resized += 1
                pred = np.asarray(Image.fromarray(pred).resize((w, h), Image.Resampling.NEAREST))
            metric.update(pred, gt)
    if resized:
        log.warning("%d of %d predictions differ in size from their ground truth and were resized to it",
                    resized, len(pairing.pairs))
    details = {"pred_dir": str(pred_dir), "gt_dir": str(gt_dir), "resized": resized,
               "extra_predictions": len(pairing.unpaired_images)}
    return EvalResult("binary" if num_classes == 1 else "multiclass", metric.results(), len(pairing.pairs),
                      list(class_names) if class_names is not None else None, details)


def _grey_map(picture) -> np.ndarray:
    """A saved saliency map (as ``load_image`` returns it: RGB, 16-bit scaled to 8) → float32
    H×W in [0, 1]."""
    return np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
