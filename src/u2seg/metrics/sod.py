"""Salient-object detection metrics on probability maps in [0, 1] against binary ground truth."""

from __future__ import annotations

import numpy as np

__all__ = ["mae", "f_measure_curve", "max_f_measure"]

BETA2 = 0.3  # the SOD literature's β², weighting precision over recall


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error between a map in [0, 1] and a ground truth in {0, 1} (or [0, 1])."""
    return float(np.abs(pred.astype(np.float64) - gt.astype(np.float64)).mean())


def f_measure_curve(pred: np.ndarray, gt: np.ndarray, *, beta2: float = BETA2) -> np.ndarray:
    """F-measure at the 256 thresholds 0/255 … 255/255 (prediction ≥ threshold is foreground)."""
    levels = np.rint(np.clip(pred, 0, 1) * 255).astype(np.int64).ravel()
    positive = gt.ravel() > 0.5
    # Histograms give true/false positives for every threshold at once (cumulative from the top).
    tp = np.cumsum(np.bincount(levels[positive], minlength=256)[::-1])[::-1].astype(np.float64)
    fp = np.cumsum(np.bincount(levels[~positive], minlength=256)[::-1])[::-1].astype(np.float64)
    precision = tp / np.maximum(tp + fp, 1e-12)
    recall = tp / max(int(positive.sum()), 1)
    return (1 + beta2) * precision * recall / np.maximum(beta2 * precision + recall, 1e-12)


def max_f_measure(pred: np.ndarray, gt: np.ndarray, *, beta2: float = BETA2) -> float:
    return float(f_measure_curve(pred, gt, beta2=beta2).max())
