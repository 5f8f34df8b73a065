"""Inference: image I/O, the Predictor, backends and post-processing."""

from .files import Plan, Task, plan_outputs
from .image_io import IMAGE_EXTENSIONS, OUTPUT_FORMATS, encode_image, load_image, save_image
from .postprocess import make_cutout, parse_color, probability_to_mask
from .predictor import Predictor, Preprocessing
from .remove import FilesReport, remove, remove_files, render

__all__ = [
    "Plan", "Task", "plan_outputs", "IMAGE_EXTENSIONS", "OUTPUT_FORMATS", "encode_image",
    "load_image", "save_image", "make_cutout", "parse_color", "probability_to_mask", "Predictor",
    "Preprocessing", "FilesReport", "remove", "remove_files", "render",
]
