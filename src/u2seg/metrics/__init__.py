"""Metrics: salient-object (binary) and semantic (multi-class) segmentation."""

from .sod import f_measure_curve, mae, max_f_measure

__all__ = ["f_measure_curve", "mae", "max_f_measure"]
