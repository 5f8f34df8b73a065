"""The numbers a paper reports from a metric's full results (what training logs and evaluation
summaries show)."""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["BINARY_KEYS", "MULTICLASS_KEYS", "headline"]

BINARY_KEYS = ("maxF", "meanF", "adpF", "wF", "MAE", "S", "maxE", "meanE", "adpE")
MULTICLASS_KEYS = ("mIoU", "mDice", "pixel_accuracy", "mean_accuracy", "kappa")


def headline(results: dict[str, Any], kind: Literal["binary", "multiclass"]) -> dict[str, Any]:
    """The numbers a paper reports, as plain floats (per-class IoU as a list for multi-class)."""
    if kind == "binary":
        return {k: float(results[k]) for k in BINARY_KEYS}
    out: dict[str, Any] = {k: float(results[k]) for k in MULTICLASS_KEYS}
    out["IoU"] = [float(v) for v in results["IoU"]]
    return out
