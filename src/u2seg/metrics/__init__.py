"""Metrics: salient-object (binary) and semantic (multi-class) segmentation, and reports.

NumPy only at import; SciPy loads with the weighted F-measure, matplotlib with report plots.
"""

from .headline import headline
from .report import write_report
from .semantic import ConfusionMatrix
from .sod import (SODMetrics, e_measure, e_measure_curve, f_measure_curve, mae, max_f_measure, s_measure,
                  weighted_f_measure)

__all__ = [
    "ConfusionMatrix", "SODMetrics", "headline", "e_measure", "e_measure_curve", "f_measure_curve", "mae", "max_f_measure",
    "s_measure", "weighted_f_measure", "write_report",
]
