"""Evaluation: score a model on a dataset (or saved masks against ground truth), write reports,
and draw image | label | prediction sheets.

    >>> from u2seg.evaluation import evaluate_predictor, evaluate_saved
    >>> result = evaluate_predictor(Predictor(weights="runs/x/best"), dataset)   # any u2seg dataset
    >>> result.summary["maxF"], result.write("runs/x/eval")                      # JSON + plots

Modules: ``runner`` (evaluate_predictor, evaluate_saved, EvalResult) and ``visualize``
(write_triptychs, write_predictions). Names load on first use.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "EvalResult": "runner", "evaluate_predictor": "runner", "evaluate_saved": "runner", "headline": "runner",
    "write_predictions": "visualize", "write_triptychs": "visualize",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
