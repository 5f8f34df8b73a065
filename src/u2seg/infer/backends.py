"""Inference backends: one small interface, three engines (PyTorch, onnxruntime, OpenVINO).

A backend takes a pre-processed float32 batch ``N×C×H×W`` and returns the fused output's
probabilities ``N×K×H×W`` (K = 1 for binary models, the classes otherwise). The Predictor, CLI,
server and GUI reach the network only through :func:`create_backend` and ``Backend.run``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import queue
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol


import numpy as np

from ..errors import U2SegError

if TYPE_CHECKING:  # torch loads only when a backend is built: `u2seg --help` stays quick
    import torch
    from torch import nn

__all__ = ["Backend", "TorchBackend", "OnnxRuntimeBackend", "OpenVINOBackend", "ExportedModel", "create_backend",
           "resolve_backend", "available_backends", "default_device", "BACKENDS", "PRECISIONS"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


class Backend(Protocol):
    """``run`` may be called from several threads at once (every backend here allows it)."""

    name: str
    precision: str
    num_classes: int
    thread_safe: bool

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def default_device() -> "torch.device":
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cuda_possible() -> bool:
    """Whether CUDA could be there, without importing torch on machines with no NVIDIA driver."""
    if not Path("/proc/driver/nvidia/version").exists() and os.name == "posix":
        return False
    return default_device().type == "cuda"


def resolve_backend(backend: str = "auto", precision: str = "fp32", device: str | None = None) -> str:
    """The engine that :func:`create_backend` would use (``auto`` resolved)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if backend != "auto":
        return backend
    on_cuda = device.startswith("cuda") if device else _cuda_possible()
    if on_cuda and precision != "int8":
        return "torch"
    installed = available_backends()
    choices = [b for b in _AUTO_ORDER[precision] if b in installed]
    if not choices:
        raise U2SegError(f"no installed backend runs {precision}; install openvino (pip install openvino)")
    return choices[0]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class TorchBackend:
    """Eager PyTorch, channels-last; bf16 autocast on CPUs that have bf16 instructions, CUDA when present.

    On CUDA, fp32 means fp32: TF32 convolutions (PyTorch's default for cuDNN) moved U²-Net-P
    masks by 2.8/255 mean and 61/255 at a pixel against the CPU, so they are turned off (masks
    then agree within 0.001/255). Reduced precision (bf16, and fp16 on CUDA) keeps the layers
    that :mod:`u2seg.infer.mixed_precision` found sensitive in fp32. ``compile=True`` runs the
    network through ``torch.compile`` (CUDA graphs on CUDA): slow to start, fast per call.
    """

    name = "torch"
    thread_safe = True

    def __init__(self, model: "nn.Module", *, device: "str | torch.device | None" = None,
                 precision: str = "fp32", threads: int | None = None, compile: bool = False) -> None:
        import torch

        self.device = torch.device(device) if device is not None else default_device()
        if precision == "int8":
            raise U2SegError("the torch backend has no int8 mode; use --backend onnxruntime or openvino")
        if precision == "bf16" and self.device.type == "cpu" and not torch.cpu._is_avx512_bf16_supported():
            raise U2SegError("this CPU has no bf16 instructions (avx512_bf16); use --precision fp32")
        if precision == "fp16" and self.device.type != "cuda":
            raise U2SegError("fp16 runs on CUDA only; on a CPU use --precision bf16 or int8")
        if threads:
            torch.set_num_threads(threads)
        if self.device.type == "cuda":
            _faithful_cuda()
        self.precision = precision
        self.num_classes = int(getattr(model, "num_classes", 1))
        model = model.to(self.device, memory_format=torch.channels_last).eval()
        if precision in ("bf16", "fp16"):
            from .mixed_precision import FP32_LAYERS, keep_in_fp32

            model = keep_in_fp32(model, FP32_LAYERS.get(getattr(model, "arch", ""), ()))
        self.model = model
        self._forward = torch.compile(model, mode="reduce-overhead" if self.device.type == "cuda" else "default",
                                      dynamic=False) if compile else model
        self._dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def run_tensor(self, x: "torch.Tensor") -> "torch.Tensor":
        """A float32 ``N×C×H×W`` tensor (any device) → probabilities ``N×K×H×W`` on this device."""
        import torch

        x = x.to(self.device, dtype=torch.float32).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self._dtype or torch.bfloat16,
                                                    enabled=self._dtype is not None):
            fused = self._forward(x)[0].float()
            probs = torch.sigmoid(fused) if self.num_classes == 1 else torch.softmax(fused, dim=1)
        return probs.clone() if probs.device.type == "cuda" else probs  # out of CUDA graphs' reused memory

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        return self.run_tensor(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).cpu().numpy()


def _faithful_cuda() -> None:
    """fp32 on CUDA without TF32 (see :class:`TorchBackend`); cuDNN picks its fastest kernels
    for the fixed input size."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True


@dataclass(frozen=True)
class ExportedModel:
    """An already exported ONNX file: what the ONNX engines need, without torch."""

    path: Path
    num_classes: int = 1


def _int8_kind(calibration: list[np.ndarray] | None) -> str:
    from ..export.quantize import needs_reduced_range

    base = "int8r7" if needs_reduced_range() else "int8"  # 7-bit weights: another file
    if calibration is None:
        return base
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(x, np.float32).tobytes() for x in calibration))
    return f"{base}-{digest.hexdigest()[:8]}"  # other calibration images, another file


def _onnx_for(model: "nn.Module | ExportedModel", precision: str,
              calibration: Iterable[np.ndarray] | None) -> str:
    """The cached ONNX file (fp32, or int8 calibrated) that the ONNX engines load."""
    if isinstance(model, ExportedModel):
        return str(model.path)
    from ..export.cache import cached_export
    from ..export.onnx import export_onnx

    fp32 = cached_export(model, "fp32", lambda path: export_onnx(model, path))
    if precision != "int8":
        return str(fp32)
    from ..export.quantize import default_calibration, quantize_onnx

    inputs = None if calibration is None else list(calibration)
    return str(cached_export(model, _int8_kind(inputs), lambda path: quantize_onnx(
        fp32, path, inputs if inputs is not None else default_calibration())))


class OnnxRuntimeBackend:
    """onnxruntime on the CPU (or CUDA with onnxruntime-gpu); fp32 or int8 (static QDQ)."""

    name = "onnxruntime"
    thread_safe = True  # InferenceSession.run is safe to call concurrently

    def __init__(self, model: "nn.Module | ExportedModel", *, precision: str = "fp32", threads: int | None = None,
                 calibration: Iterable[np.ndarray] | None = None) -> None:
        if precision in ("bf16", "fp16"):
            raise U2SegError(f"onnxruntime has no {precision} kernels on the CPU; use --backend openvino or torch")
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(_onnx_for(model, precision, calibration), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.precision = precision
        self.num_classes = int(getattr(model, "num_classes", 1))

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


class OpenVINOBackend:
    """OpenVINO on the CPU: fp32, bf16 (inference precision hint) or int8 (the quantized ONNX)."""

    name = "openvino"
    thread_safe = True  # a request serves one call at a time: concurrent calls take one each

    def __init__(self, model: "nn.Module | ExportedModel", *, precision: str = "fp32", threads: int | None = None,
                 calibration: Iterable[np.ndarray] | None = None) -> None:
        import openvino as ov

        if precision == "fp16":
            raise U2SegError("the openvino backend runs fp32, bf16 or int8; fp16 is for --backend torch on CUDA")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise U2SegError("OpenVINO reports no bf16 support on this CPU; use --precision fp32")
        config = {"PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        from ..weights.cache import u2seg_home

        # OpenVINO's model cache keeps the compiled network next to the ONNX exports: later
        # processes load it instead of compiling again (part of a fast start).
        config["CACHE_DIR"] = str(u2seg_home() / "exports" / "openvino-cache")
        self.compiled = core.compile_model(_onnx_for(model, precision, calibration), "CPU", config)
        # Idle infer requests; not thread-locals, which break in threads that Qt or other C++
        # pools create and whose Python thread state is torn down after every task.
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self.precision = precision
        self.num_classes = int(getattr(model, "num_classes", 1))

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            result = request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
            # The request reuses its output buffer on the next call: copy the result out.
            return np.array(result[self.compiled.output(0)], copy=True)
        finally:
            self._idle.put(request)


_ENGINES: dict[str, tuple[str, Callable[..., Backend]]] = {
    "torch": ("torch", TorchBackend),
    "onnxruntime": ("onnxruntime", OnnxRuntimeBackend),
    "openvino": ("openvino", OpenVINOBackend),
}
# Which engine "auto" takes on a CPU, fastest first (see BENCHMARKS.md for the measurements).
_AUTO_ORDER = {"fp32": ("openvino", "onnxruntime", "torch"),
               "bf16": ("openvino", "torch"),
               "fp16": ("torch",),
               "int8": ("openvino", "onnxruntime")}


def available_backends() -> list[str]:
    return [name for name, (module, _) in _ENGINES.items() if _installed(module)]


def create_backend(model: "nn.Module | ExportedModel", *, backend: str = "auto", precision: str = "fp32",
                   device: str | None = None, threads: int | None = None,
                   calibration: Iterable[np.ndarray] | None = None, compile: bool = False) -> Backend:
    """Build the backend that runs ``model`` (a network, or an :class:`ExportedModel` for the ONNX
    engines); ``auto`` picks the fastest one installed."""
    backend = resolve_backend(backend, precision, device)
    module, engine = _ENGINES[backend]
    if not _installed(module):
        raise U2SegError(f"backend {backend!r} needs the {module} package (pip install {module})")
    if backend == "torch":
        if isinstance(model, ExportedModel):
            raise TypeError("the torch backend needs the network, not an exported file")
        chosen = engine(model, device=device, precision=precision, threads=threads, compile=compile)
    else:
        if compile:
            raise U2SegError("--compile is for the torch backend")
        if device is not None and device.startswith("cuda") and backend == "openvino":
            raise U2SegError("the openvino backend runs on the CPU; drop --device or use --backend torch")
        chosen = engine(model, precision=precision, threads=threads, calibration=calibration)
    log.info("backend: %s, %s", chosen.name, chosen.precision)
    return chosen
