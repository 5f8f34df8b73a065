"""What the command modules share: exit codes, messages, the engine options and the Predictor they make."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import U2SegError
from ..weights.registry import DEFAULT_WEIGHTS

if TYPE_CHECKING:  # hints only: loading the engine waits until a command needs it
    import numpy as np

    from ..infer.backends import Backend
    from ..infer.files import Plan
    from ..infer.predictor import TTA, Predictor
    from ..infer.sessions import PredictorSpec

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE = 0, 1, 2
MODEL_HELP = f"model name (default: what --weights describes, else {DEFAULT_WEIGHTS}; -m u2netp is the fast one)"


def err(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"u2seg: {message}", file=sys.stderr)  # keeps a running progress bar intact


def add_engine_options(p: argparse.ArgumentParser) -> None:
    from ..infer.backends import BACKENDS, PRECISIONS
    from ..resize import RESAMPLE_METHODS

    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="inference engine (default auto: the fastest installed; -v says which)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default), bf16 (CPUs with bf16, CUDA) or int8 (calibrated, cached)")
    p.add_argument("--threads", type=int, metavar="N", help="threads for the network (default: all cores)")
    p.add_argument("--resample", choices=RESAMPLE_METHODS, default="lanczos",
                   help="resize filter: lanczos (default, as rembg) or fast (OpenCV, see BENCHMARKS.md)")
    p.add_argument("--calibration", type=Path, metavar="DIR", help="images to calibrate int8 on")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available)")
    p.add_argument("--compile", action="store_true",
                   help="torch backend: torch.compile the network (CUDA graphs on CUDA; slow start, fast calls)")


def build_predictor(args: argparse.Namespace, files: int = 1, tta: TTA | None = None, model: str | None = None,
                    weights: Path | None = None, backend: Backend | None = None) -> Predictor:
    """The shared Predictor for the engine options (``backend``: a ready one, e.g. bench's fixed map)."""
    return predictor_spec(args, files, tta, model, weights, backend).build()


def predictor_spec(args: argparse.Namespace, files: int = 1, tta: TTA | None = None, model: str | None = None,
                   weights: Path | None = None, backend: Backend | None = None) -> PredictorSpec:
    from ..infer.removal import network_threads
    from ..infer.sessions import PredictorSpec

    calibration = None
    if args.precision == "int8" and args.calibration is not None:
        calibration = calibration_from_folder(args.calibration)
    settings = dict(size=args.size, device=args.device, precision=args.precision, resample=args.resample,
                    threads=args.threads or network_threads(files, args.precision), tta=tta,
                    backend=backend or args.backend)
    if calibration is not None:
        settings["calibration"] = calibration
    if args.compile:
        settings["compile"] = True
    if getattr(args, "cascade_below", None) is not None:
        settings["cascade_below"] = args.cascade_below
    return PredictorSpec(args.model or model, args.weights or weights, settings)


def calibration_from_folder(folder: Path) -> list[np.ndarray]:
    from ..export.quantize import calibration_inputs
    from ..infer.files import find_images

    images, _ = find_images([str(folder)])
    if not images:
        raise U2SegError(f"{folder}: no images to calibrate int8 on")
    return calibration_inputs(images)


def report_plan_problems(plan: Plan, extra: Plan | None = None) -> bool:
    """Print a plan's conflicts (True: nothing may be written) and its inputs that named nothing."""
    conflicts = plan.conflicts + (extra.conflicts if extra is not None else [])
    for line in dict.fromkeys(conflicts):
        err(f"error: {line}")
    if conflicts:
        err("nothing was written: rename or separate the inputs above")
        return True
    for argument in plan.missing:
        err(f"error: {argument}: no such file, folder or match")
    return False
