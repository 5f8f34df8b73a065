"""Joint image + mask transforms for training and evaluation, built on albumentations.

A transform is a callable ``transform(image, mask, *, binary) -> (image, mask)``:

* in: ``image`` ``uint8 H×W×3`` (RGB), ``mask`` ``uint8 H×W`` of **labels** (binary: 0/1;
  multi-class: class indices with 255 = ignore) or None; ``binary`` says which kind of mask it is
  (it picks the mask's resize filter and padding value);
* out: the network input ``float32 3×H'×W'`` (normalised) and the ``uint8 H'×W'`` label mask.

Datasets (:mod:`u2seg.data.datasets`) call it and turn the result into tensors. Any callable with
this signature works; :class:`JointTransform` wraps an albumentations pipeline and adds
:class:`ImageNorm`, the normalisation that inference uses.

Recipes (``build_transform(name, **kw)`` picks one by name, for YAML configs):

``official_train(size=320, crop=288)``
    The official U²-Net training recipe: resize to ``size×size``, random ``crop×crop`` crop,
    horizontal flip (p = 0.5), then divide by the (cropped) image's max and ImageNet mean/std.
    Note: the official ``data_loader.py`` flips with ``image[::-1]``, which reverses the *rows*
    (an upside-down flip), and only in some versions of the file; ``flip_p=0, vflip_p=0.5``
    reproduces that. Its labels stay soft (``label / max``); ours are binarised (see datasets).
``official_eval(size=320)``
    Resize to ``size×size`` and normalise: the same pixels as
    :class:`u2seg.infer.predictor.Preprocessing` (tested equal to 1e-5; the arithmetic is the same,
    so in practice the difference is 0).
``letterbox(size)``
    Longest side to ``size`` (aspect kept), centred on a black ``size×size`` canvas. The mask is
    padded with 0 (background) when binary and with 255 (ignore) when multi-class.
``normalize_only()``
    No geometry, just :class:`ImageNorm` (what datasets use when ``transform=None``).

Resize filters (:mod:`.pair_resize`): images are resized exactly as inference resizes them
(``resample="lanczos"`` by default); binary masks by a bilinear majority vote, multi-class masks
by nearest neighbour, so that labels stay labels and edges line up with the image.

Random state: a :class:`JointTransform` reseeds itself the first time it runs in a new process,
from ``torch.utils.data.get_worker_info().seed`` in a DataLoader worker (so workers differ, and
runs repeat when ``torch.manual_seed`` is set) or from fresh entropy elsewhere; albumentations
2.0 would otherwise give every worker the same augmentation sequence. ``reseed(seed)`` restarts
the sequence at a given seed (the trainer does so per sample).

Importing this module imports albumentations, which imports torch when it is installed.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Union

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else: a PyPI request on every import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .batch_augment import BatchPlan  # noqa: E402
from .colour import ColourJitter, JitterSpec  # noqa: E402
from .pair_resize import LongestSideResize, PairResize, check_resample, resize_image  # noqa: E402

__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageNorm",
    "JointTransform",
    "Transform",
    "TRANSFORMS",
    "build_transform",
    "letterbox",
    "normalize_only",
    "official_eval",
    "official_train",
    "register_transform",
]

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Transform(Protocol):
    """What a dataset calls: ``(uint8 H×W×3, uint8 H×W labels | None) → (float32 3×H×W, labels)``."""

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, *,
                 binary: bool = True) -> tuple[np.ndarray, np.ndarray | None]: ...


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class ImageNorm:
    """``uint8 H×W×3`` → ``float32 3×H×W``: divide by the image's max (``input_norm="max"``, the
    official code and rembg; ``"unit"``: by 255), then subtract ``mean`` and divide by ``std``.
    The same operations, in the same order, as :class:`u2seg.infer.predictor.Preprocessing`."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_norm: str = "max"

    def __post_init__(self) -> None:
        if self.input_norm not in ("max", "unit"):
            raise ValueError(f"input_norm must be 'max' or 'unit', not {self.input_norm!r}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = np.asarray(image).astype(np.float32)
        if x.ndim == 2:
            x = np.repeat(x[:, :, None], 3, axis=2)
        scale = float(x.max()) if self.input_norm == "max" else 255.0
        if scale > 0:  # an all-black image stays zero instead of becoming NaN
            x /= scale
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))


# --------------------------------------------------------------------------- the joint transform

Steps = Union[Sequence[A.BasicTransform], Callable[[bool], Sequence[A.BasicTransform]]]


class JointTransform:
    """An albumentations pipeline applied to image and mask together, then :class:`ImageNorm`.

    Args:
        steps: albumentations transforms (a list, one transform or a ``Compose``), or a function
            ``binary -> transforms`` when the steps depend on the mask kind (resize filter,
            padding value); two pipelines are then built, one per kind, sharing ``seed``. The
            steps work on ``uint8`` pixels and must not normalise (``norm`` does that last).
        norm: the image normalisation (default: ImageNet mean/std after dividing by the max).
        seed: fixes the random sequence (two transforms with one seed augment alike); None: random.
        name: shown in ``repr``.
        batch_plan: the same augmentation as a :class:`~u2seg.data.batch_augment.BatchPlan` (resize
            once, then crop/flip/normalise whole batches on the device), for the recipes that have
            one; None: this transform runs per sample only.

    Call: ``transform(image, mask=None, *, binary=True) -> (float32 3×H×W, uint8 H×W | None)``.
    """

    def __init__(self, steps: Steps, *, norm: ImageNorm | None = None, seed: int | None = None,
                 name: str = "custom", batch_plan: BatchPlan | None = None) -> None:
        if isinstance(steps, (A.BaseCompose, A.BasicTransform)):  # callable, but not a factory
            steps = [steps]
        factory = steps if callable(steps) else (lambda binary, _s=list(steps): _s)
        self._pipelines = {binary: A.Compose(list(factory(binary))) for binary in (True, False)}
        self.norm = norm if norm is not None else ImageNorm()
        self.seed = seed
        self.name = name
        self.batch_plan = batch_plan
        self.reseed(seed)

    def __repr__(self) -> str:
        steps = ", ".join(type(t).__name__ for t in self._pipelines[True].transforms)
        return f"JointTransform({self.name}: [{steps}], {self.norm})"

    def pipeline(self, binary: bool = True) -> A.Compose:
        """The albumentations pipeline used for binary (True) or multi-class (False) masks."""
        return self._pipelines[bool(binary)]

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, *,
                 binary: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        self._reseed_in_new_process()
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be uint8 H×W×3, got {image.dtype} {image.shape}")
        data: dict[str, np.ndarray] = {"image": image}
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != image.shape[:2]:
                raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
            data["mask"] = mask.astype(np.uint8, copy=False)
        out = self._pipelines[bool(binary)](**data)
        result_mask = np.ascontiguousarray(out["mask"]) if mask is not None else None
        return self.norm(out["image"]), result_mask

    def reseed(self, seed: int | None) -> None:
        """Restart the random sequence from ``seed`` (None: fresh entropy), for both mask kinds.

        The trainer calls it before each sample, so that a sample's augmentation is a function of
        its seed alone. It counts as this process's seeding: the reseed a new process (DataLoader
        worker) otherwise does on its first call does not override it.

        The steps draw in turn from one generator. (albumentations' ``set_random_seed`` would give
        each step its own generator with the same seed: every step's first draw is then the same
        number, so a flip would follow the crop's vertical offset, and two flips of equal p each
        other.)"""
        self._pid = os.getpid()
        for pipeline in self._pipelines.values():
            pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def _reseed_in_new_process(self) -> None:
        """A forked/spawned copy (DataLoader worker) must not replay its parent's random sequence."""
        if os.getpid() == self._pid:
            return
        seed: int | None = None
        torch_data = sys.modules.get("torch.utils.data")
        info = torch_data.get_worker_info() if torch_data is not None else None
        if info is not None:  # differs per worker and per epoch; repeatable under torch.manual_seed
            seed = int(np.random.SeedSequence([info.seed % 2**63, self.seed or 0]).generate_state(1)[0])
        self.reseed(seed)


# --------------------------------------------------------------------------- recipes

TRANSFORMS: dict[str, Callable[..., Transform]] = {}


def register_transform(name: str) -> Callable[[Callable[..., Transform]], Callable[..., Transform]]:
    """Decorator: make a transform factory available to :func:`build_transform` as ``name``."""
    def add(factory: Callable[..., Transform]) -> Callable[..., Transform]:
        TRANSFORMS[name] = factory
        return factory
    return add


def _norm(mean: Sequence[float], std: Sequence[float], input_norm: str) -> ImageNorm:
    return ImageNorm(tuple(float(v) for v in mean), tuple(float(v) for v in std), input_norm)  # type: ignore[arg-type]


@register_transform("official_train")
def official_train(size: int = 320, crop: int | None = 288, *, flip_p: float = 0.5,
                   vflip_p: float = 0.0, brightness: float = 0.0, contrast: float = 0.0,
                   saturation: float = 0.0, jitter_p: float = 1.0, resample: str = "lanczos",
                   mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   input_norm: str = "max", seed: int | None = None) -> JointTransform:
    """The official U²-Net training recipe: resize to ``size×size``, random ``crop×crop`` crop
    (None: no crop), horizontal flip with probability ``flip_p`` (and an upside-down flip with
    ``vflip_p``, 0 by default), then normalise (divide by the cropped image's max, ImageNet
    mean/std). ``seed`` fixes the random sequence.

    Not in the official recipe, off by default: a :class:`ColourJitter` after the flips
    (``brightness``, ``contrast``, ``saturation``: factors within ``1 ± value``; with
    probability ``jitter_p``). The transform carries the same steps as a ``batch_plan``, so the
    trainer can run them on whole batches on the device from a decode-once cache."""
    if crop is not None and not 1 <= crop <= size:
        raise ValueError(f"crop must be within 1..size ({size}), got {crop}")
    for label, p in (("flip_p", flip_p), ("vflip_p", vflip_p), ("jitter_p", jitter_p)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{label} must be within [0, 1], got {p}")
    check_resample(resample)
    jitter = JitterSpec(brightness, contrast, saturation, jitter_p) if brightness or contrast or saturation else None

    def steps(binary: bool) -> list[A.BasicTransform]:
        out: list[A.BasicTransform] = [PairResize(size, size, resample=resample, binary=binary)]
        if crop is not None and crop < size:
            out.append(A.RandomCrop(crop, crop))
        if flip_p > 0:
            out.append(A.HorizontalFlip(p=flip_p))
        if vflip_p > 0:
            out.append(A.VerticalFlip(p=vflip_p))
        if jitter is not None:
            out.append(ColourJitter(jitter.brightness, jitter.contrast, jitter.saturation, p=jitter.p))
        return out

    norm = _norm(mean, std, input_norm)
    plan = BatchPlan(size, resample, crop, flip_p, vflip_p, norm, jitter)
    return JointTransform(steps, norm=norm, seed=seed, name=f"official_train(size={size}, crop={crop})",
                          batch_plan=plan)


@register_transform("official_eval")
def official_eval(size: int = 320, *, resample: str = "lanczos", resize_mask: bool = True,
                  mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                  input_norm: str = "max") -> Transform:
    """Resize to ``size×size`` and normalise: equal to ``Preprocessing(size=(size, size))`` on the
    image. ``resize_mask=False`` keeps the mask at the original size (to score at full
    resolution; batches then need equal-sized images, e.g. ``batch_size=1``)."""
    check_resample(resample)
    norm = _norm(mean, std, input_norm)
    if resize_mask:
        return JointTransform(lambda binary: [PairResize(size, size, resample=resample, binary=binary)],
                              norm=norm, name=f"official_eval(size={size})",
                              batch_plan=BatchPlan(size, resample, None, 0.0, 0.0, norm))
    return _ImageOnlyResize(size, resample, norm)


class _ImageOnlyResize:
    """official_eval(resize_mask=False): the image is resized and normalised, the mask untouched."""

    def __init__(self, size: int, resample: str, norm: ImageNorm) -> None:
        self.size, self.resample, self.norm = int(size), resample, norm

    def __repr__(self) -> str:
        return f"official_eval(size={self.size}, resize_mask=False)"

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, *,
                 binary: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        resized = resize_image(np.asarray(image), (self.size, self.size), self.resample)
        return self.norm(resized), mask


@register_transform("letterbox")
def letterbox(size: int = 320, *, resample: str = "lanczos", mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD, input_norm: str = "max") -> JointTransform:
    """Longest side to ``size`` (aspect kept), centred on a ``size×size`` canvas: the image padded
    with black (0, before normalisation), the mask with 0 (background) when binary and with 255
    (ignore, so padding is not scored) when multi-class."""
    check_resample(resample)

    def steps(binary: bool) -> list[A.BasicTransform]:
        return [LongestSideResize(size, resample=resample, binary=binary),
                A.PadIfNeeded(size, size, position="center", border_mode=cv2.BORDER_CONSTANT,
                              fill=0, fill_mask=0 if binary else IGNORE_INDEX)]

    return JointTransform(steps, norm=_norm(mean, std, input_norm), name=f"letterbox(size={size})")


@register_transform("normalize_only")
def normalize_only(*, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   input_norm: str = "max") -> Transform:
    """No geometry: the image normalised at its own size, the mask as it is."""
    return _NormalizeOnly(_norm(mean, std, input_norm))


class _NormalizeOnly:
    def __init__(self, norm: ImageNorm) -> None:
        self.norm = norm

    def __repr__(self) -> str:
        return f"normalize_only({self.norm})"

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, *,
                 binary: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        return self.norm(np.asarray(image)), mask


def build_transform(name: str | Mapping[str, Any] | None, **kwargs: Any) -> Transform:
    """A transform by registry name, for configs: ``build_transform("official_train", crop=256)``
    or ``build_transform({"name": "official_train", "crop": 256})``. ``None`` or ``"none"`` →
    :func:`normalize_only`. Unknown names and arguments raise ``ValueError``."""
    if isinstance(name, Mapping):
        spec = dict(name)
        if "name" not in spec:
            raise ValueError(f"a transform spec needs a 'name' (one of {', '.join(sorted(TRANSFORMS))}): {spec}")
        name = spec.pop("name")
        kwargs = {**spec, **kwargs}
    if name is None or name == "none":
        name = "normalize_only"
    factory = TRANSFORMS.get(str(name))
    if factory is None:
        raise ValueError(f"unknown transform {name!r}; choose one of: {', '.join(sorted(TRANSFORMS))}")
    try:
        return factory(**kwargs)
    except TypeError as exc:  # a misspelt option in a config file
        raise ValueError(f"transform {name!r}: {exc}") from None
