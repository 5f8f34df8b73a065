"""int8 post-training static quantisation (onnxruntime, QDQ) and its fidelity report."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import U2SegError
from ..fileio import write_bytes_atomic

__all__ = ["quantize_onnx", "needs_reduced_range", "default_calibration", "calibration_inputs", "fidelity_report"]


def calibration_inputs(images: Iterable, preprocessing=None) -> list[np.ndarray]:
    """Pre-process calibration images (paths, arrays, PIL) exactly as inference will."""
    from ..image_io import load_image
    from ..preprocessing import Preprocessing

    preprocessing = preprocessing or Preprocessing()
    return [preprocessing(load_image(image)) for image in images]


def default_calibration() -> list[np.ndarray]:
    """Photos that scikit-image ships, when the user gives no calibration images."""
    try:
        from skimage import data
    except ImportError:
        raise U2SegError("int8 needs calibration images: pass --calibration DIR "
                         "(or install scikit-image for its sample photos)") from None
    names = ("astronaut", "coffee", "chelsea", "rocket", "camera", "motorcycle_left", "immunohistochemistry", "retina")
    photos = []
    for name in names:
        try:
            photos.append(getattr(data, name)())
        except Exception:  # some need a download in some versions: skip them
            continue
    return calibration_inputs(photos)


def needs_reduced_range() -> bool:
    """Whether int8 weights should use 7 bits on this CPU. Without VNNI, x86 int8 kernels sum
    u8×s8 pairs into saturating 16-bit lanes (vpmaddubsw); full-range weights overflow them. On
    an AVX2-only CPU that moved U²-Net-P masks by 4.5/255 on a photo where 7-bit weights move them
    by 0.7/255 (against fp32)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), "").split()
    except OSError:
        return False
    x86 = "sse2" in flags
    return x86 and not ({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, calibration: Sequence[np.ndarray], *,
                  reduce_range: bool | None = None) -> Path:
    """Quantise weights (per channel, int8; 7-bit where the CPU needs it, see
    :func:`needs_reduced_range`) and activations (uint8) from calibration inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    inputs = list(calibration)
    if not inputs:
        raise U2SegError("int8 calibration needs at least one image")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(inputs)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"input": item[None].astype(np.float32)}

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "int8.onnx"
        reduce = needs_reduced_range() if reduce_range is None else reduce_range
        quantize_static(str(fp32_path), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=reduce,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=outlier_convs(fp32_path))
        write_bytes_atomic(target.read_bytes(), out_path)
    return out_path


OUTLIER_RATIO = 64.0


def outlier_convs(path: str | Path, ratio: float = OUTLIER_RATIO) -> list[str]:
    """Conv nodes whose weights have outliers (an output channel's max |w| over its mean |w|
    above ``ratio``): int8 cannot hold both ends, so these stay in fp32.

    In the official U²-Net-P one such layer (stage2d's last conv, ratio ≈ 120) alone moves masks
    by ~54/255 when quantised, while every other layer costs under 1.5/255.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    excluded = []
    for node in graph.node:
        if node.op_type == "Conv" and node.input[1] in weights:
            w = np.abs(weights[node.input[1]].reshape(weights[node.input[1]].shape[0], -1))
            if float((w.max(axis=1) / np.maximum(w.mean(axis=1), 1e-12)).max()) > ratio:
                excluded.append(node.name)
    return excluded


def fidelity_report(reference: Callable[[np.ndarray], np.ndarray], candidate: Callable[[np.ndarray], np.ndarray],
                    inputs: Sequence[np.ndarray]) -> dict:
    """How close ``candidate``'s maps are to ``reference``'s on held-out inputs (each a function
    batch → probabilities, e.g. ``backend.run``).

    Mask MAE in 1/255 units, and maxF of the candidate against the reference's mask at 0.5
    (1.0 = the same segmentation).
    """
    from ..metrics import mae, max_f_measure

    maes, fs = [], []
    for x in inputs:
        ref = reference(x[None])[0, 0]
        out = candidate(x[None])[0, 0]
        ref, out = _minmax(ref), _minmax(out)
        maes.append(mae(out, ref) * 255)
        fs.append(max_f_measure(out, ref > 0.5))
    return {"images": len(maes), "mask_mae_mean": float(np.mean(maes)), "mask_mae_worst": float(np.max(maes)),
            "maxf_vs_reference_mean": float(np.mean(fs)), "maxf_vs_reference_worst": float(np.min(fs))}


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi - lo > 1e-12 else x
