"""Evaluation reports: a JSON file and plots, from ``SODMetrics.results()`` (``kind="binary"``)
or ``ConfusionMatrix.results()`` (``kind="multiclass"``).

Plots need matplotlib (``pip install matplotlib``), imported only here and only when plots are
asked for; figures are drawn on the Agg canvas without pyplot, so no global backend is touched.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..fileio import write_bytes_atomic

__all__ = ["write_report", "to_jsonable"]

JSON_NAME = "metrics.json"


def write_report(results: Mapping[str, Any], out_dir: str | Path, *, kind: Literal["binary", "multiclass"],
                 class_names: Sequence[str] | None = None, plots: bool = True) -> dict[str, Path]:
    """Write ``out_dir/metrics.json`` and plots; returns ``{name: path}`` of what was written.

    - JSON: the results with arrays as lists and NaN/±inf as ``null``, plus ``kind`` (and
      ``class_names``), written atomically.
    - ``kind="binary"``: ``pr_curve.png`` (mean precision vs recall over the 256 thresholds) and
      ``f_measure.png`` (F-measure, and E-measure when present, vs threshold); the results
      need ``precision``, ``recall`` and ``f_curve``.
    - ``kind="multiclass"``: ``class_iou.png`` (IoU per class, mIoU line; classes without a
      value are marked n/a); the results need ``IoU``.

    Keys: ``json``, ``pr_curve``, ``f_measure`` or ``class_iou``.
    """
    if kind not in ("binary", "multiclass"):
        raise ValueError(f"kind must be 'binary' or 'multiclass', got {kind!r}")
    out_dir = Path(out_dir)
    if kind == "binary":
        missing = [k for k in ("precision", "recall", "f_curve") if k not in results]
    else:
        missing = [k for k in ("IoU",) if k not in results]
    if missing:
        raise ValueError(f"{kind} results lack {', '.join(missing)} (pass SODMetrics.results() for "
                         "'binary', ConfusionMatrix.results() for 'multiclass')")
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        n = len(np.atleast_1d(results["IoU"])) if kind == "multiclass" else len(class_names)
        if len(class_names) != n:
            raise ValueError(f"{len(class_names)} class names for {n} classes")
    figure_cls = _matplotlib_figure() if plots else None  # fail before writing anything

    payload = {"kind": kind, **to_jsonable(dict(results))}
    if class_names is not None:
        payload["class_names"] = class_names
    written = {"json": out_dir / JSON_NAME}
    write_bytes_atomic(json.dumps(payload, indent=2, allow_nan=False).encode() + b"\n", written["json"])
    if not plots:
        return written

    if kind == "binary":
        written["pr_curve"] = out_dir / "pr_curve.png"
        _save(_pr_figure(figure_cls, results), written["pr_curve"])
        written["f_measure"] = out_dir / "f_measure.png"
        _save(_f_figure(figure_cls, results), written["f_measure"])
    else:
        written["class_iou"] = out_dir / "class_iou.png"
        _save(_iou_figure(figure_cls, results, class_names), written["class_iou"])
    return written


def to_jsonable(value: Any) -> Any:
    """NumPy arrays and scalars → lists and Python numbers, NaN/±inf → None, paths → str."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _matplotlib_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("report plots need matplotlib: pip install matplotlib "
                          "(or write_report(..., plots=False) for the JSON only)") from exc
    return Figure


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)  # Figure without pyplot: the Agg canvas
    write_bytes_atomic(buffer.getvalue(), path)


def _pr_figure(Figure, results):
    precision = np.asarray(results["precision"], dtype=np.float64)
    recall = np.asarray(results["recall"], dtype=np.float64)
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    ax.plot(recall, precision, color="tab:blue", lw=2, label="mean over images")
    f = np.asarray(results["f_curve"], dtype=np.float64)
    best = int(np.nanargmax(f))
    ax.plot(recall[best], precision[best], "o", color="tab:red",
            label=f"maxF = {f[best]:.4f} at threshold {best}/255")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
           title=_title("Precision-recall", results))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def _f_figure(Figure, results):
    f = np.asarray(results["f_curve"], dtype=np.float64)
    thresholds = np.asarray(results.get("thresholds", np.arange(f.size) / (f.size - 1)), dtype=np.float64)
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    ax.plot(thresholds, f, color="tab:blue", lw=2, label=f"F-measure (β² = 0.3), mean {np.nanmean(f):.4f}")
    best = int(np.nanargmax(f))
    ax.plot(thresholds[best], f[best], "o", color="tab:red", label=f"maxF = {f[best]:.4f}")
    if "e_curve" in results:
        e = np.asarray(results["e_curve"], dtype=np.float64)
        ax.plot(thresholds, e, color="tab:green", lw=1.5, ls="--", label=f"E-measure, max {np.nanmax(e):.4f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="threshold", ylabel="score",
           title=_title("F-measure vs threshold", results))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower center")
    fig.tight_layout()
    return fig


def _iou_figure(Figure, results, class_names):
    iou = np.asarray(results["IoU"], dtype=np.float64)
    n = iou.size
    names = class_names or [str(i) for i in range(n)]
    fig = Figure(figsize=(min(max(6.0, 0.45 * n + 2), 24), 5))
    ax = fig.add_subplot()
    x = np.arange(n)
    present = np.isfinite(iou)
    bars = ax.bar(x[present], iou[present], color="tab:blue")
    if n <= 40:
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in iou[present]], fontsize=8, padding=2)
    for i in x[~present]:
        ax.text(i, 0.02, "n/a", ha="center", va="bottom", fontsize=8, color="gray", rotation=90)
    if "mIoU" in results and results["mIoU"] is not None and np.isfinite(results["mIoU"]):
        ax.axhline(results["mIoU"], color="tab:red", ls="--", label=f"mIoU = {results['mIoU']:.4f}")
        ax.legend(loc="upper right")
    rotate = n > 6 or max(map(len, names)) > 8
    ax.set_xticks(x, names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set(xlim=(-0.6, n - 0.4), ylim=(0, 1.1), ylabel="IoU", title="IoU per class")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _title(what: str, results) -> str:
    images = results.get("images")
    return f"{what} ({images} images)" if images else what
