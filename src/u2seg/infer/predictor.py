"""One Predictor for the CLI, the server and the GUI: image in, foreground probability out.

The default pipeline is the one the official test script and rembg share, so masks agree with
rembg's on the same weights: resize to 320x320 with Lanczos, divide by the image's max, ImageNet
mean/std, fused output d0, min-max normalisation, Lanczos resize back to the original size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import numpy as np
from PIL import Image

from ..weights import load_network
from .backends import Backend, ExportedModel, _int8_kind, create_backend, resolve_backend
from ..image_io import load_image
from .confidence import Confidence, estimate_confidence, foreground_probabilities
from .postprocess import probability_to_mask
from ..preprocessing import InputNorm, Preprocessing
from ..resize import resize_map

if TYPE_CHECKING:  # torch loads only when a network is needed
    from torch import nn

__all__ = ["Preprocessing", "Predictor", "Prepared", "HostPreparer", "ImageInput", "TTA", "ARITHMETIC"]

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]
OutputNorm = Literal["minmax", "none"]
#: Where the arithmetic between decode and encode runs: ``host`` (NumPy, Pillow, OpenCV),
#: ``device`` (torch tensors on the backend's device), ``auto`` (device on CUDA, else host).
ARITHMETIC = ("auto", "host", "device")



@dataclass
class Prepared:
    """One image made ready for the network: ``size`` is the image's (width, height),
    ``inputs`` the network's input for each TTA scale (``3×h×w`` arrays, or tensors on the
    device), ``pixels`` the full-resolution image as a device tensor when the arithmetic stays
    there (for compositing without a round trip to the host). The network's pass fills in
    ``flip_disagreement`` (with flip TTA: how much the mirrored pass disagreed, for the
    confidence score) and ``model`` (a cascade: which of its models made the probabilities)."""

    size: tuple[int, int]
    inputs: tuple
    pixels: object = None
    flip_disagreement: float | None = None
    model: str | None = None


@dataclass(frozen=True)
class HostPreparer:
    """Pre-processing on the host for each TTA scale (``Predictor.host_preparer``)."""

    scaled: tuple[Preprocessing, ...]

    def __call__(self, image: Image.Image) -> Prepared:
        return Prepared(image.size, tuple(prep(image) for prep in self.scaled))


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: the network's probabilities averaged over the input ``scales``
    (factors of the input size) and, with ``flip``, their left-right mirror images. Averaging
    happens at the base input size, before the usual post-processing."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if not self.scales or any(not 0.0 < s <= 8.0 for s in self.scales):
            raise ValueError(f"TTA scales must lie in (0, 8], got {self.scales}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    @property
    def passes(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)


def _cached_export(model: str | None, weights: str | Path | None, precision: str) -> tuple[ExportedModel | None, dict]:
    """The ONNX export of u2seg-folder weights, if one is cached: then no torch is needed at all."""
    from ..export.cache import export_path, fingerprint
    from ..weights.cache import resolve_weights
    from ..weights.folder import read_verified_config

    path = resolve_weights(model, weights)
    if not path.is_dir():
        return None, {}
    config = read_verified_config(path)
    if not config.get("sha256") or not config.get("num_classes") or (model and config.get("model") != model):
        return None, {}
    kind = _int8_kind(None) if precision == "int8" else "fp32"  # bf16 is a run-time hint on the fp32 graph
    onnx = export_path(config.get("model"), fingerprint(config["sha256"], config["num_classes"]), kind)
    return (ExportedModel(onnx, int(config["num_classes"])), config) if onnx.is_file() else (None, {})


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    w, h = size
    return (int(w), int(h))


class Predictor:
    """Foreground probability maps from a segmentation model.

    Args:
        model: a registry name (``"u2netp"``, ``"u2net"``), a ``torch.nn.Module``, or None (the
            architecture that ``weights`` describes, else ``u2net``: ``DEFAULT_WEIGHTS``).
        weights: a weights file or folder; None loads the registry's pretrained default.
        size: network input size (int or (width, height)); default from the weights (320).
        input_norm: ``"max"`` (divide by the image's max) or ``"unit"`` (divide by 255).
        output_norm: ``"minmax"`` stretches each map to [0, 1] (official, rembg); ``"none"``.
        threshold: if set, maps are binarised at this probability.
        device: torch device; default CUDA when available.
        backend: ``"auto"`` (the fastest installed), ``"torch"``, ``"onnxruntime"``, ``"openvino"``,
            or a ready :class:`~u2seg.infer.backends.Backend`.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"`` (backends that support it).
        threads: threads for the network (default: the engine's choice, all cores).
        calibration: pre-processed inputs for int8 calibration (default: sample photos).
        tta: test-time augmentation (:class:`TTA`); None: one pass.
        arithmetic: where pre- and post-processing run: ``"auto"`` (on the device with the
            torch backend on CUDA, else on the host), ``"host"`` or ``"device"`` (torch backend
            only; on a CPU it runs the same tensor code, which the tests use).
        compile: torch backend: ``torch.compile`` the network (CUDA graphs on CUDA).
    """

    def __init__(self, model: "str | nn.Module | None" = None, *, weights: str | Path | None = None,
                 size: int | Sequence[int] | None = None, input_norm: InputNorm = "max",
                 output_norm: OutputNorm = "minmax", threshold: float | None = None,
                 resample: str = "lanczos", device: str | None = None,
                 backend: str | Backend = "auto", precision: str = "fp32", threads: int | None = None,
                 calibration: Iterable[np.ndarray] | None = None, tta: TTA | None = None,
                 arithmetic: str = "auto", compile: bool = False) -> None:
        if output_norm not in ("minmax", "none"):
            raise ValueError(f"output_norm must be 'minmax' or 'none', not {output_norm!r}")
        if arithmetic not in ARITHMETIC:
            raise ValueError(f"arithmetic must be one of {', '.join(ARITHMETIC)}, not {arithmetic!r}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        config: dict = {}
        self._source = (model, weights)
        by_name = model is None or isinstance(model, str)
        # A module given with weights gets them loaded on first use of .network.
        self._network: "nn.Module | None" = None if by_name or weights is not None else model
        self.model_name: str | None = getattr(model, "arch", None)
        if isinstance(backend, str):
            engine = resolve_backend(backend, precision, device)
            target, config = None, {}
            if by_name and engine != "torch" and calibration is None:
                target, config = _cached_export(model, weights, precision)
            if target is None:  # build (and cache) the export from the network
                target = self.network
                config = dict(getattr(target, "weights_config", None) or {})
            self.model_name = config.get("model") or getattr(target, "arch", None)
            backend = create_backend(target, backend=engine, precision=precision, device=device,
                                     threads=threads, calibration=calibration, compile=compile)
        self.backend: Backend = backend
        self.weights_config: dict = dict(config)   # what the weights say of themselves (checksums, recipe)
        default_size = tuple(config.get("input_size", (320, 320)))
        self.preprocessing = Preprocessing(
            size=_as_size(size) if size is not None else _as_size(default_size),
            mean=tuple(config.get("mean", Preprocessing.mean)),
            std=tuple(config.get("std", Preprocessing.std)),
            input_norm=input_norm, resample=resample)
        self.output_norm = output_norm
        self.threshold = threshold
        self.tta = tta
        self.num_classes = int(getattr(self.backend, "num_classes", 1))
        self.device_arithmetic = _device_arithmetic(self.backend, arithmetic)

    @property
    def _scaled(self) -> tuple[Preprocessing, ...]:
        """The pre-processing of each TTA scale (just the base one without TTA)."""
        if self.tta is None:
            return (self.preprocessing,)
        base = self.preprocessing.size
        return tuple(replace(self.preprocessing, size=(max(1, round(base[0] * s)), max(1, round(base[1] * s))))
                     for s in self.tta.scales)

    @property
    def network(self) -> "nn.Module":
        """The PyTorch module (loaded on first use when the backend started from a cached export)."""
        if self._network is None:
            self._network = load_network(*self._source)
        return self._network

    # ------------------------------------------------------------------ core
    def predict(self, image: ImageInput) -> np.ndarray:
        """Foreground probability, float32 ``H×W`` in [0, 1] at the image's original size."""
        return self.predict_many([image])[0]

    def predict_many(self, images: Iterable[ImageInput]) -> list[np.ndarray]:
        """Like :meth:`predict` for several images, run through the network as one batch."""
        return self._per_image(images, self.foreground)

    def predict_with_confidence(self, image: ImageInput) -> tuple[np.ndarray, Confidence]:
        """:meth:`predict`, with how much to trust it (:mod:`u2seg.infer.confidence`)."""
        loaded = load_image(image)
        (prepared,) = [self.prepare(loaded)]
        (probs,) = self.infer([prepared])
        confidence = estimate_confidence(foreground_probabilities(self.to_host(probs)),
                                         flip_disagreement=prepared.flip_disagreement)
        return self.foreground(probs, loaded.size), confidence

    def predict_classes(self, image: ImageInput) -> np.ndarray:
        """Class indices, ``uint8 H×W`` at the image's size: the argmax of the class
        probabilities resized to the image (bilinear), for semantic models; foreground ≥ 0.5 (0/1)
        for binary ones."""
        return self.predict_classes_many([image])[0]

    def predict_classes_many(self, images: Iterable[ImageInput]) -> list[np.ndarray]:
        return self._per_image(images, self.class_map)

    def _per_image(self, images: Iterable[ImageInput], finish) -> list[np.ndarray]:
        """Load the images, run them as one batch, and ``finish(probs, (width, height))`` each."""
        loaded = [load_image(im) for im in images]
        if not loaded:
            return []
        probs = self.infer([self.prepare(im) for im in loaded])
        return [finish(p, im.size) for p, im in zip(probs, loaded)]

    # ------------------------------------------------------------------ the engine's stages
    def prepare(self, image: Image.Image) -> Prepared:
        """Pre-process one loaded image: the network's input for each TTA scale (arrays, or
        tensors on the device when the arithmetic stays there)."""
        if self.device_arithmetic is not None:
            pixels = self.device_arithmetic.upload(image)
            inputs = tuple(self.device_arithmetic.prepare(pixels, prep) for prep in self._scaled)
            return Prepared(image.size, inputs, pixels)
        return HostPreparer(self._scaled)(image)

    def host_preparer(self) -> HostPreparer:
        """:meth:`prepare`'s host arithmetic as a small picklable object: what other processes
        run (the Ray engine's tasks) to make inputs this Predictor takes."""
        return HostPreparer(self._scaled)

    def infer(self, prepared: Sequence[Prepared]) -> list:
        """The network on a batch of prepared images: ``K×h×w`` probabilities per image at the
        base input size (sigmoid, or softmax over K classes), averaged over the TTA passes."""
        if not prepared:
            return []
        device = self.device_arithmetic
        base = self.preprocessing.size
        flips = (False, True) if self.tta is not None and self.tta.flip else (False,)
        total = None
        unflipped = None
        for s, prep in enumerate(self._scaled):
            if device is not None:
                batch = device.stack([p.inputs[s] for p in prepared])
            else:
                batch = np.stack([p.inputs[s] for p in prepared])
            for flipped in flips:
                view = batch.flip(-1) if device is not None and flipped else batch[..., ::-1] if flipped else batch
                probs = self._run(view)
                if flipped:
                    probs = probs.flip(-1) if device is not None else probs[..., ::-1]
                    if s == 0:
                        self._note_flip_disagreement(prepared, unflipped, probs)
                elif s == 0:
                    unflipped = probs
                if prep.size != base:
                    probs = device.resize_probs(probs, base) if device is not None else _resize_probs(probs, base)
                total = probs if total is None else total + probs
        if len(self._scaled) * len(flips) > 1:
            total = total / (len(self._scaled) * len(flips))
        return list(total)

    def _note_flip_disagreement(self, prepared: Sequence[Prepared], plain, mirrored) -> None:
        """Mean |p − p of the mirrored pass| per image, on the foreground map."""
        plain, mirrored = self.to_host(plain), self.to_host(mirrored)
        for i, item in enumerate(prepared):
            a, b = plain[i], mirrored[i]
            fg_a = a[0] if a.shape[0] == 1 else 1.0 - a[0]
            fg_b = b[0] if b.shape[0] == 1 else 1.0 - b[0]
            item.flip_disagreement = float(np.abs(fg_a - fg_b).mean())

    def _run(self, batch):
        if self.device_arithmetic is not None:
            return self.backend.run_tensor(batch)
        return self.backend.run(np.ascontiguousarray(batch))

    def network_probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``N×K×h×w`` probabilities at the input size (sigmoid, or softmax over K classes),
        averaged over the test-time augmentations when ``tta`` is set."""
        return np.stack([self.to_host(p) for p in self.infer([self.prepare(im) for im in images])])

    def postprocess(self, probs, size: tuple[int, int]):
        """``K×h×w`` network probabilities → foreground ``H×W`` at ``size`` (width, height).
        A device tensor in gives a device tensor out (see :attr:`device_arithmetic`)."""
        if self.device_arithmetic is not None and not isinstance(probs, np.ndarray):
            return self.device_arithmetic.postprocess(probs, size, self.output_norm, self.threshold,
                                                      self.preprocessing.resample)
        probs = np.asarray(probs)
        fg = probs[0] if probs.shape[0] == 1 else 1.0 - probs[0]  # classes: all but background
        fg = fg.astype(np.float32, copy=False)
        if self.output_norm == "minmax":
            lo, hi = float(fg.min()), float(fg.max())
            if hi - lo > 1e-12:  # a constant map has no range to stretch: keep it as it is
                fg = (fg - lo) / (hi - lo)
        fg = np.clip(resize_map(fg, size, self.preprocessing.resample), 0.0, 1.0)  # Lanczos overshoots
        if self.threshold is not None:
            fg = (fg >= self.threshold).astype(np.float32)
        return fg

    def foreground(self, probs, size: tuple[int, int]) -> np.ndarray:
        """:meth:`postprocess` as a float32 array on the host, whatever the arithmetic."""
        return self.to_host(self.postprocess(probs, size))

    @staticmethod
    def to_host(values) -> np.ndarray:
        """An array, or a (device) tensor copied to a float32 array."""
        if isinstance(values, np.ndarray):
            return values
        return values.float().cpu().numpy()

    def class_map(self, probs, size: tuple[int, int]) -> np.ndarray:
        """``uint8 H×W`` class indices at ``size`` from ``K×h×w`` probabilities."""
        return _class_map(self.to_host(probs), size)

    # ------------------------------------------------------------------ conveniences
    def colorized(self, image: ImageInput) -> Image.Image:
        """The class map as a palette PNG image (mode ``P``, VOC colours; indices = classes)."""
        from .colorize import colorize

        return colorize(self.predict_classes(image))

    def mask(self, image: ImageInput) -> Image.Image:
        """8-bit mask (mode ``L``) the size of the image."""
        return probability_to_mask(self.predict(image))

    def cutout(self, image: ImageInput, *, bgcolor: Sequence[int] | None = None) -> Image.Image:
        """RGBA cutout: the image with the mask as alpha, optionally over a background colour.
        For matting, cropping and the rest, see :func:`u2seg.infer.refine.refine_output`."""
        from .refine import RefineOptions, refine_output

        picture = load_image(image)
        return refine_output(picture, self.predict(picture), RefineOptions(bgcolor=bgcolor))


def _device_arithmetic(backend: Backend, arithmetic: str):
    """The tensor arithmetic for ``backend`` when it should be used (see ``ARITHMETIC``)."""
    device = getattr(backend, "device", None)
    usable = device is not None and hasattr(backend, "run_tensor")
    if arithmetic == "host" or (arithmetic == "auto" and not (usable and device.type == "cuda")):
        return None
    if not usable:
        raise ValueError(f"arithmetic='device' needs the torch backend, not {backend.name!r}")
    from .device import DeviceArithmetic

    return DeviceArithmetic(device)


def _resize_probs(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``N×K×h×w`` → ``N×K×H×W`` (bilinear), one map at a time (OpenCV caps channels)."""
    import cv2

    return np.stack([[cv2.resize(np.ascontiguousarray(m), size, interpolation=cv2.INTER_LINEAR) for m in item]
                     for item in probs]).astype(np.float32)


def _class_map(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``K×h×w`` probabilities → ``uint8 H×W`` class indices at ``size`` = (width, height).

    Each class map is resized (bilinear) and compared with the best so far, so memory stays at
    two ``H×W`` maps whatever K is (21 classes of a 24-megapixel photo would need 2 GB at once)."""
    import cv2

    if probs.shape[0] == 1:
        fg = cv2.resize(np.ascontiguousarray(probs[0], dtype=np.float32), size, interpolation=cv2.INTER_LINEAR)
        return (fg >= 0.5).astype(np.uint8)
    best = labels = None
    for k, channel in enumerate(probs):
        up = cv2.resize(np.ascontiguousarray(channel, dtype=np.float32), size, interpolation=cv2.INTER_LINEAR)
        if best is None:
            best, labels = up, np.zeros(up.shape, np.uint8)
            continue
        better = up > best
        labels[better] = k
        np.maximum(best, up, out=best)
    assert labels is not None
    return labels
