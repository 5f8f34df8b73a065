"""Salient-object detection metrics on probability maps in [0, 1] against binary ground truth.

Two layers:

- quick functions on one map: :func:`mae`, :func:`f_measure_curve`, :func:`max_f_measure` (used
  by the int8 fidelity report), plus :func:`s_measure`, :func:`e_measure_curve` and
  :func:`weighted_f_measure`;
- :class:`SODMetrics`, the accumulator over a data set that reports the metrics of the SOD
  literature: maxF, meanF, adaptive F, MAE, S-measure, max/mean/adaptive E-measure, weighted F,
  and the mean precision-recall and F-measure curves over 256 thresholds.

The accumulator follows the conventions of the Matlab evaluation code of the SOD papers as
ported by PySODMetrics (``pysodmetrics``), and agrees with it within 1e-4 (tested):

- a map is thresholded at ``t/255`` for ``t = 0 … 255`` and a pixel is foreground when
  ``pred >= t/255``, i.e. on ``floor(255 * pred)`` (``(pred * 255).astype(uint8)``);
- dataset curves are the mean of the per-image curves; maxF/maxE are the maxima of those mean
  curves (not the mean of per-image maxima), meanF/meanE their means;
- the adaptive threshold is ``min(2 * mean(pred), 1)``; the weighted F-measure uses β² = 1
  (Margolin et al.'s default), the others β² = 0.3;
- integer ground truth is read as 0..255 with foreground ``> 128``.

Where u2seg differs from pysodmetrics (documented on each item): the E-measure divides the
enhanced-alignment sum by ``H*W`` (the paper's mean; the Matlab code and pysodmetrics divide by
``H*W - 1``, so a perfect map scores ``H*W / (H*W - 1)`` there and exactly 1 here); an empty
S-measure quadrant (centroid on the last row/column) contributes 0 here and NaN there; maps are
not min-max stretched unless ``SODMetrics(minmax=True)`` (pysodmetrics stretches uint8 inputs).

:func:`f_measure_curve` / :func:`max_f_measure` keep their earlier behaviour (levels rounded,
``rint(255 * pred)``, rather than floored), so they may differ from ``SODMetrics``' maxF by one
threshold step on the same map.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "BETA2", "THRESHOLDS", "SODMetrics", "mae", "f_measure_curve", "max_f_measure", "s_measure",
    "e_measure_curve", "e_measure", "weighted_f_measure", "adaptive_threshold",
]

BETA2 = 0.3  # the SOD literature's β², weighting precision over recall
WFM_BETA2 = 1.0  # Margolin et al.'s weighted F-measure: precision and recall weighted equally
THRESHOLDS = np.arange(256, dtype=np.float64) / 255.0  # curve index t ↔ threshold t/255
_EPS = float(np.spacing(1))  # Matlab's eps, as in the reference implementations


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error between a map in [0, 1] and a ground truth in {0, 1} (or [0, 1])."""
    return float(np.abs(pred.astype(np.float64) - gt.astype(np.float64)).mean())


def f_measure_curve(pred: np.ndarray, gt: np.ndarray, *, beta2: float = BETA2) -> np.ndarray:
    """F-measure at the 256 thresholds 0/255 … 255/255 (prediction ≥ threshold is foreground).

    Levels are ``rint(255 * pred)`` here (kept for the export fidelity figures); ``SODMetrics``
    uses ``floor(255 * pred)``, the convention of the SOD evaluation code.
    """
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


# --------------------------------------------------------------------------------------------
# Per-image building blocks (pred: float64 in [0, 1]; gt: bool; both H×W)
# --------------------------------------------------------------------------------------------

def adaptive_threshold(pred: np.ndarray) -> float:
    """``min(2 * mean(pred), 1)`` (Achanta et al. 2009)."""
    return min(2.0 * float(pred.mean()), 1.0)


def _threshold_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at thresholds t/255, t = 0 … 255 (index t), in one pass."""
    levels = (pred * 255).astype(np.uint8)  # floor: level ≥ t  ⇔  pred ≥ t/255
    fg = np.bincount(levels[gt], minlength=256)
    bg = np.bincount(levels[~gt], minlength=256)
    tp = np.cumsum(fg[::-1])[::-1].astype(np.float64)
    fp = np.cumsum(bg[::-1])[::-1].astype(np.float64)
    return tp, fp


def _precision_recall_f(tp, fp, n_fg: int, beta2: float):
    """Precision, recall and F from counts (arrays or scalars); 0 where undefined (0/0)."""
    tp = np.asarray(tp, np.float64)
    predicted = tp + np.asarray(fp, np.float64)
    precision = tp / np.where(predicted == 0, 1.0, predicted)
    recall = tp / max(n_fg, 1)
    numerator = (1 + beta2) * precision * recall
    denominator = np.where(numerator == 0, 1.0, beta2 * precision + recall)
    return precision, recall, numerator / denominator


def _enhanced_alignment_sum(tp, fp, n_fg: int, n: int):
    """Σ of Fan et al.'s enhanced-alignment matrix for a binarised map with ``tp``/``fp`` counts.

    The binary map and the ground truth each take two values, so the matrix takes four; each is
    counted by how many pixels carry it (vectorised over thresholds).
    """
    tp = np.asarray(tp, np.float64)
    fp = np.asarray(fp, np.float64)
    pred_fg = tp + fp
    pred_bg = n - pred_fg
    if n_fg == 0:  # the reference: φ = 1 − binary map
        return pred_bg
    if n_fg == n:  # φ = binary map
        return pred_fg
    fn = n_fg - tp
    tn = pred_bg - fn
    mean_pred = pred_fg / n
    mean_gt = n_fg / n
    total = np.zeros_like(tp)
    for count, a, b in ((tp, 1 - mean_pred, 1 - mean_gt), (fp, 1 - mean_pred, -mean_gt),
                        (fn, -mean_pred, 1 - mean_gt), (tn, -mean_pred, -mean_gt)):
        align = 2 * a * b / (a * a + b * b + _EPS)
        total = total + (align + 1) ** 2 / 4 * count
    return total


def e_measure_curve(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """E-measure (Fan et al., IJCAI 2018) at thresholds t/255, t = 0 … 255.

    The mean of the enhanced-alignment matrix (divided by ``H*W``; the Matlab code divides by
    ``H*W - 1``, see the module notes).
    """
    tp, fp = _threshold_counts(pred, gt)
    return _enhanced_alignment_sum(tp, fp, int(np.count_nonzero(gt)), gt.size) / gt.size


def e_measure(pred: np.ndarray, gt: np.ndarray, threshold: float) -> float:
    """E-measure of ``pred >= threshold`` (no quantisation of the threshold)."""
    binary = pred >= threshold
    tp = np.count_nonzero(binary & gt)
    fp = np.count_nonzero(binary & ~gt)
    return float(_enhanced_alignment_sum(tp, fp, int(np.count_nonzero(gt)), gt.size) / gt.size)


def _adaptive_f(pred: np.ndarray, gt: np.ndarray, beta2: float) -> float:
    binary = pred >= adaptive_threshold(pred)
    tp = np.count_nonzero(binary & gt)
    fp = np.count_nonzero(binary & ~gt)
    return float(_precision_recall_f(tp, fp, int(np.count_nonzero(gt)), beta2)[2])


def s_measure(pred: np.ndarray, gt: np.ndarray, *, alpha: float = 0.5) -> float:
    """Structure measure (Fan et al., ICCV 2017): ``α · object + (1 − α) · region``, ≥ 0.

    Empty ground truth: ``1 − mean(pred)``; full: ``mean(pred)``. The region term splits the
    image at the ground truth's centroid, rounded with NumPy's ``round`` (half to even) and
    shifted by one as in pysodmetrics (Matlab's ``round`` goes half away from zero, so the
    split can differ by one row/column when a centroid coordinate is exactly k + 0.5).
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, bool)
    y = gt.mean()
    if y == 0:
        return float(1 - pred.mean())
    if y == 1:
        return float(pred.mean())
    score = alpha * _s_object(pred, gt) + (1 - alpha) * _s_region(pred, gt)
    return float(max(0.0, score))


def _object_score(x: np.ndarray) -> float:
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return 2 * mean / (mean * mean + 1 + std + _EPS)


def _s_object(pred: np.ndarray, gt: np.ndarray) -> float:
    y = gt.mean()
    return _object_score(pred[gt]) * y + _object_score(1 - pred[~gt]) * (1 - y)


def _s_region(pred: np.ndarray, gt: np.ndarray) -> float:
    h, w = gt.shape
    rows, cols = np.nonzero(gt)
    cy = int(np.round(rows.mean())) + 1
    cx = int(np.round(cols.mean())) + 1
    area = h * w
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    blocks = ((slice(0, cy), slice(0, cx), w_lt), (slice(0, cy), slice(cx, w), w_rt),
              (slice(cy, h), slice(0, cx), w_lb), (slice(cy, h), slice(cx, w), w_rb))
    return sum(_ssim(pred[r, c], gt[r, c]) * weight for r, c, weight in blocks)


def _ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    n = pred.size
    if n == 0:  # a quadrant of zero area (its weight is 0 too)
        return 0.0
    gt = gt.astype(np.float64)
    x, y = pred.mean(), gt.mean()
    dx, dy = pred - x, gt - y
    sigma_x = float((dx * dx).sum()) / (n - 1 + _EPS)
    sigma_y = float((dy * dy).sum()) / (n - 1 + _EPS)
    sigma_xy = float((dx * dy).sum()) / (n - 1 + _EPS)
    alpha = 4 * x * y * sigma_xy
    beta = (x * x + y * y) * (sigma_x + sigma_y)
    if alpha != 0:
        return float(alpha / (beta + _EPS))
    return 1.0 if beta == 0 else 0.0


def _matlab_gaussian(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """Matlab's ``fspecial('gaussian', size, sigma)``."""
    r = (size - 1) / 2
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h / h.sum()


def weighted_f_measure(pred: np.ndarray, gt: np.ndarray, *, beta2: float = WFM_BETA2) -> float:
    """Weighted F-measure (Margolin, Zelnik-Manor & Tal, CVPR 2014); 0 for an empty ground truth.

    Errors of background pixels are taken at their nearest foreground pixel (dependency), then
    smoothed by a 7×7 Gaussian (σ = 5, zero padding) and weighted by ``2 − 0.5^(d/5)`` with
    ``d`` the distance to the foreground (importance), as in the authors' Matlab code.
    """
    from scipy import ndimage  # only this metric needs SciPy

    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, bool)
    if not gt.any():
        return 0.0
    dist, (iy, ix) = ndimage.distance_transform_edt(~gt, return_indices=True)
    error = np.abs(pred - gt)
    error_t = error.copy()
    bg = ~gt
    error_t[bg] = error[iy[bg], ix[bg]]
    smoothed = ndimage.correlate(error_t, _matlab_gaussian(), mode="constant", cval=0.0)
    min_error = np.where(gt & (smoothed < error), smoothed, error)
    importance = np.where(bg, 2 - np.exp(math.log(0.5) / 5 * dist), 1.0)
    weighted = min_error * importance
    tp_w = np.count_nonzero(gt) - weighted[gt].sum()
    fp_w = weighted[bg].sum()
    recall = 1 - weighted[gt].mean()
    precision = tp_w / (tp_w + fp_w + _EPS)
    return float((1 + beta2) * recall * precision / (recall + beta2 * precision + _EPS))


# --------------------------------------------------------------------------------------------
# The accumulator
# --------------------------------------------------------------------------------------------

class SODMetrics:
    """Accumulates SOD metrics over a data set, one (prediction, ground truth) pair at a time.

    >>> metrics = SODMetrics()
    >>> for prob, mask in pairs:         # prob: float H×W in [0, 1]; mask: bool or uint8 0..255
    ...     metrics.update(prob, mask)
    >>> metrics.results()["maxF"]

    ``minmax=True`` stretches each map to [0, 1] first (``(p − min) / (max − min)``, a constant
    map is left as is), as the Matlab code and pysodmetrics do on saved uint8 maps. Memory is
    constant: sums of per-image values and curves are kept, not the maps.
    """

    def __init__(self, *, beta2: float = BETA2, alpha: float = 0.5, minmax: bool = False):
        self.beta2 = float(beta2)
        self.alpha = float(alpha)
        self.minmax = bool(minmax)
        self.reset()

    def reset(self) -> None:
        self._count = 0
        self._sums = dict.fromkeys(("adpF", "wF", "MAE", "S", "adpE"), 0.0)
        self._curves = {k: np.zeros(256) for k in ("precision", "recall", "f", "e")}

    def __len__(self) -> int:
        return self._count

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: ``pred`` float H×W in [0, 1] (or uint8 0..255), ``gt`` H×W bool, uint8
        0..255 (foreground > 128) or float in [0, 1] (foreground > 0.5)."""
        pred = _as_probability(pred)
        gt = _as_mask(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction is {_shape(pred)} but ground truth is {_shape(gt)}; "
                             "resize the prediction to the ground truth's size first")
        if self.minmax:
            lo, hi = pred.min(), pred.max()
            if hi > lo:
                pred = (pred - lo) / (hi - lo)

        n_fg = int(np.count_nonzero(gt))
        tp, fp = _threshold_counts(pred, gt)
        precision, recall, f = _precision_recall_f(tp, fp, n_fg, self.beta2)
        self._curves["precision"] += precision
        self._curves["recall"] += recall
        self._curves["f"] += f
        self._curves["e"] += _enhanced_alignment_sum(tp, fp, n_fg, gt.size) / gt.size

        self._sums["adpF"] += _adaptive_f(pred, gt, self.beta2)
        self._sums["adpE"] += e_measure(pred, gt, adaptive_threshold(pred))
        self._sums["wF"] += weighted_f_measure(pred, gt)
        self._sums["MAE"] += float(np.abs(pred - gt).mean())
        self._sums["S"] += s_measure(pred, gt, alpha=self.alpha)
        self._count += 1

    def results(self) -> dict:
        """The means over the images so far.

        Scalars (floats): ``maxF``, ``meanF``, ``adpF`` (β² = 0.3), ``wF`` (β² = 1), ``MAE``,
        ``S`` (α = 0.5), ``maxE``, ``meanE``, ``adpE``, and ``images``. Curves (float64 arrays
        of 256, index t ↔ threshold t/255): ``thresholds``, ``precision``, ``recall``,
        ``f_curve``, ``e_curve``.
        """
        if self._count == 0:
            raise ValueError("SODMetrics has no images: call update() first")
        n = self._count
        curves = {k: v / n for k, v in self._curves.items()}
        out = {
            "images": n,
            "maxF": float(curves["f"].max()),
            "meanF": float(curves["f"].mean()),
            "adpF": self._sums["adpF"] / n,
            "wF": self._sums["wF"] / n,
            "MAE": self._sums["MAE"] / n,
            "S": self._sums["S"] / n,
            "maxE": float(curves["e"].max()),
            "meanE": float(curves["e"].mean()),
            "adpE": self._sums["adpE"] / n,
            "thresholds": THRESHOLDS.copy(),
            "precision": curves["precision"],
            "recall": curves["recall"],
            "f_curve": curves["f"],
            "e_curve": curves["e"],
        }
        return out


def _shape(a: np.ndarray) -> str:
    return "×".join(map(str, a.shape))


def _as_probability(pred) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim != 2:
        raise ValueError(f"prediction must be one H×W map, got shape {pred.shape}")
    if pred.dtype == np.uint8:
        return pred / 255.0
    if pred.dtype == bool:
        return pred.astype(np.float64)
    if not np.issubdtype(pred.dtype, np.floating):
        raise TypeError(f"prediction must be float in [0, 1] (or uint8 0..255), got {pred.dtype}")
    pred = pred.astype(np.float64)
    lo, hi = float(pred.min()), float(pred.max())
    if not (-1e-6 <= lo and hi <= 1.0 + 1e-6):  # also catches NaN
        raise ValueError(f"prediction values must lie in [0, 1], got [{lo}, {hi}]; apply a sigmoid "
                         "or divide 8-bit maps by 255")
    return np.clip(pred, 0.0, 1.0)  # rounding noise (a blurred mask reaching 1 + 2e-16)


def _as_mask(gt) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise ValueError(f"ground truth must be one H×W mask, got shape {gt.shape}")
    if gt.dtype == bool:
        return gt
    if np.issubdtype(gt.dtype, np.integer):
        if gt.size and gt.max() == 1 and gt.min() >= 0:
            raise ValueError("integer ground truth is read as 0..255 (foreground > 128), but this one "
                             "holds only 0 and 1: pass gt.astype(bool) or gt * 255")
        return gt > 128
    if np.issubdtype(gt.dtype, np.floating):
        return gt > 0.5
    raise TypeError(f"ground truth must be bool, uint8 0..255 or float in [0, 1], got {gt.dtype}")
