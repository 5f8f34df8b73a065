"""Semantic (multi-class) segmentation metrics from an accumulated confusion matrix."""

from __future__ import annotations

import numpy as np

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """A ``num_classes × num_classes`` confusion matrix (rows: ground truth, columns: prediction,
    as ``sklearn.metrics.confusion_matrix``), accumulated with one ``np.bincount`` per update.

    Pixels whose ground truth equals ``ignore_index`` (``None``: none) are skipped. Any other
    value outside ``0 … num_classes − 1``, in either array, is an error.

    >>> cm = ConfusionMatrix(21)
    >>> for logits, label in batches:
    ...     cm.update(logits.argmax(1).numpy(), label.numpy())
    >>> cm.results()["mIoU"]
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        if ignore_index is not None and 0 <= ignore_index < self.num_classes:
            raise ValueError(f"ignore_index {ignore_index} is also a class (0 … {self.num_classes - 1})")
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[...] = 0

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts (e.g. from another worker); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.matrix += other.matrix
        return self

    def update(self, pred, gt) -> None:
        """Add predicted and ground-truth class indices of the same shape (H×W, or N×H×W)."""
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction has shape {pred.shape} but ground truth has {gt.shape}")
        for name, a in (("prediction", pred), ("ground truth", gt)):
            if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
                raise TypeError(f"{name} must hold integer class indices, got {a.dtype} "
                                "(take argmax over the class axis first)")
        pred = pred.ravel()
        gt = gt.ravel()
        if self.ignore_index is not None:
            keep = gt != self.ignore_index
            if not keep.all():
                pred, gt = pred[keep], gt[keep]
        if gt.size == 0:
            return
        k = self.num_classes
        for name, a in (("ground truth", gt), ("prediction", pred)):
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= k:
                bad = lo if lo < 0 else hi
                ignore = f" or the ignore index {self.ignore_index}" if name == "ground truth" and \
                    self.ignore_index is not None else ""
                raise ValueError(f"{name} holds class {bad}, outside 0 … {k - 1}{ignore}")
        index = gt.astype(np.int64) * k + pred.astype(np.int64)
        self.matrix += np.bincount(index, minlength=k * k).reshape(k, k)

    def results(self) -> dict:
        """Metrics of the counts so far.

        - ``IoU`` (per class, float64 array), ``mIoU``: TP / (TP + FP + FN). A class absent from
          both ground truth and prediction has NaN IoU and is left out of the mean; a class that
          is predicted but absent from the ground truth has IoU 0 and counts.
        - ``Dice`` (per class), ``mDice``: 2·TP / (2·TP + FP + FN), NaN and left out likewise.
        - ``pixel_accuracy``: correct pixels / counted pixels.
        - ``class_accuracy`` (per class recall, NaN for classes absent from the ground truth),
          ``mean_accuracy``: their mean over the classes present in the ground truth.
        - ``kappa``: Cohen's κ = (p_o − p_e) / (1 − p_e); NaN when p_e = 1 (one class only, in
          both ground truth and prediction), like scikit-learn.
        - ``confusion_matrix`` (int64 array), ``pixels``, ``num_classes``.
        """
        cm = self.matrix.astype(np.float64)
        total = cm.sum()
        if total == 0:
            raise ValueError("ConfusionMatrix has no pixels: call update() first (all pixels ignored?)")
        tp = np.diag(cm)
        gt_count = cm.sum(axis=1)
        pred_count = cm.sum(axis=0)
        union = gt_count + pred_count - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            dice = np.where(union > 0, 2 * tp / (gt_count + pred_count), np.nan)
            class_acc = np.where(gt_count > 0, tp / gt_count, np.nan)
        p_o = tp.sum() / total
        p_e = float((gt_count * pred_count).sum() / (total * total))
        kappa = (p_o - p_e) / (1 - p_e) if p_e < 1 else float("nan")
        return {
            "mIoU": float(np.nanmean(iou)),
            "IoU": iou,
            "mDice": float(np.nanmean(dice)),
            "Dice": dice,
            "pixel_accuracy": float(p_o),
            "mean_accuracy": float(np.nanmean(class_acc)),
            "class_accuracy": class_acc,
            "kappa": float(kappa),
            "confusion_matrix": self.matrix.copy(),
            "pixels": int(total),
            "num_classes": self.num_classes,
        }
