"""export_model: ONNX, OpenVINO or TorchScript files, verified against PyTorch.

Every exported model takes one NCHW float32 input (pre-processed as the Predictor does) and gives
the fused output's probabilities first. ``rembg=True`` writes the official layout instead: all
seven sigmoid outputs (d0 … d6), opset 11, which rembg's ``u2net_custom`` session reads as is.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import U2SegError
from ..fileio import write_bytes_atomic
from .onnx import ProbabilityHead, export_onnx, onnx_bytes

__all__ = ["FORMATS", "ExportResult", "export_model", "verify_export", "ProbabilityHead", "export_onnx"]

FORMATS = ("onnx", "openvino", "torchscript")
FP32_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    path: Path
    format: str
    precision: str
    max_abs_diff: float | None = None  # against PyTorch, fp32 exports
    fidelity: dict = field(default_factory=dict)  # int8 exports: agreement with fp32

    @property
    def ok(self) -> bool:
        return self.max_abs_diff is None or self.max_abs_diff <= FP32_TOLERANCE


def _verification_inputs(model: nn.Module, input_size: Sequence[int], dynamic: bool) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    channels = int(getattr(model, "in_channels", 3))
    width, height = input_size
    shapes = [(1, channels, height, width)]
    if dynamic:  # another batch and an odd size exercise the dynamic axes
        shapes.append((2, channels, max(height // 2 + 3, 8), max(width // 2 - 5, 8)))
    return [rng.standard_normal(s, dtype=np.float32) for s in shapes]


def _reference(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return ProbabilityHead(model).eval()(torch.from_numpy(x)).numpy()


def _runner(path: Path, fmt: str):
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if fmt == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: np.asarray(compiled({0: x})[compiled.output(0)])
    module = torch.jit.load(str(path), map_location="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run


def verify_export(model: nn.Module, path: Path, fmt: str, *, input_size: Sequence[int] = (320, 320),
                  dynamic: bool = True) -> float:
    """Largest absolute difference of the exported model's first output against PyTorch."""
    run = _runner(path, fmt)
    model = model.eval()
    return max(float(np.abs(run(x) - _reference(model, x)).max())
               for x in _verification_inputs(model, input_size, dynamic))


def export_model(model: nn.Module, path: str | Path, *, fmt: str = "onnx", precision: str = "fp32",
                 rembg: bool = False, dynamic: bool = True, input_size: Sequence[int] = (320, 320),
                 calibration: Sequence[np.ndarray] | None = None, verify: bool = True) -> ExportResult:
    """Export ``model`` to ``path`` and (by default) verify it against PyTorch."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if precision not in ("fp32", "int8"):
        raise ValueError("export precision must be fp32 or int8 (bf16 is a run-time choice: --precision bf16)")
    if precision == "int8" and fmt == "torchscript":
        raise U2SegError("int8 export is available for onnx and openvino, not torchscript")
    if rembg and (fmt != "onnx" or precision != "fp32"):
        raise U2SegError("--rembg writes an fp32 ONNX file; drop --format/--precision")
    path = Path(path)
    if path.exists() and path.is_dir():
        raise U2SegError(f"{path}: is a folder; give a file name")
    model = model.eval().to("cpu", memory_format=torch.contiguous_format)

    if fmt == "torchscript":
        width, height = input_size
        example = torch.zeros(1, int(getattr(model, "in_channels", 3)), height, width)
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(ProbabilityHead(model).eval(), example, check_trace=False)
        with tempfile.TemporaryDirectory() as tmp:
            torch.jit.save(traced, str(Path(tmp) / "model.pt"))
            write_bytes_atomic((Path(tmp) / "model.pt").read_bytes(), path)
    elif rembg:
        write_bytes_atomic(onnx_bytes(model, input_size=input_size, dynamic=dynamic, opset=11, all_outputs=True), path)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(model, Path(tmp) / "model.onnx", input_size=input_size, dynamic=dynamic)
            if precision == "int8":
                from .quantize import default_calibration, fidelity_report, quantize_onnx

                inputs = list(calibration if calibration is not None else default_calibration())
                held_out = inputs[-max(1, len(inputs) // 4):] if len(inputs) > 1 else inputs
                calibrate_on = inputs[:len(inputs) - len(held_out)] or inputs
                int8_path = quantize_onnx(onnx_path, Path(tmp) / "int8.onnx", calibrate_on)
                fidelity = fidelity_report(_runner(onnx_path, "onnx"), _runner(int8_path, "onnx"), held_out)
                onnx_path = int8_path
            if fmt == "onnx":
                write_bytes_atomic(onnx_path.read_bytes(), path)
            else:
                _save_openvino(onnx_path, path)

    result = ExportResult(path, fmt, precision, fidelity=fidelity if precision == "int8" else {})
    if verify and precision == "fp32":
        result.max_abs_diff = verify_export(model, path, fmt, input_size=input_size, dynamic=dynamic)
    return result


def _save_openvino(onnx_path: Path, path: Path) -> None:
    """OpenVINO IR: ``path`` (.xml) and its .bin beside it."""
    import openvino as ov

    if path.suffix != ".xml":
        raise U2SegError(f"{path}: an OpenVINO model is an .xml file (with its .bin beside it)")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model.xml"
        ov.save_model(ov.Core().read_model(str(onnx_path)), str(staged), compress_to_fp16=False)
        write_bytes_atomic(staged.with_suffix(".bin").read_bytes(), path.with_suffix(".bin"))
        write_bytes_atomic(staged.read_bytes(), path)
