"""From (image, probability map) to the final output: one place for every front end.

``refine_output(image, prob, RefineOptions(...))`` gives the ``L`` mask or the RGBA cutout (or
a composite over a colour or a background picture); ``refine_alpha`` gives only the final alpha.
The CLI, the HTTP server and the desktop window all call these, so an option means the same thing
everywhere. The steps, in order:

0. ``edge_refine``: the probability's edges are moved onto the image's own, at full resolution:
   the fast guided filter (:func:`u2seg.infer.guided_filter.guided_upsample`, colour guide,
   window 1/32 of the long side, coefficients fitted at 512 px and applied to the
   full-resolution colours; about 40 ms per megapixel, no numba). The map arrives here already
   resized to the image (Lanczos, by the Predictor); the filter reduces it to its 512-px working
   size by area averaging, which on a 320-px prediction loses nothing (the benchmark measures
   the same figures either way). Sure pixels (near 0 or 1) keep their value, so masks change
   only along edges. The steps below then work on the refined map.
1. ``threshold``: binarise the probability (``prob >= threshold``).
2. ``post_process_mask``: rembg's clean-up of the 8-bit mask: morphological opening with a 3×3
   ellipse, Gaussian blur (5×5, sigma 2), re-threshold at 127. The result is binary with a smooth
   outline; isolated specks (up to about 3×3 pixels) disappear. On images larger than 1024 px
   (long side) the kernel and the blur grow in proportion, so the clean-up does the same thing
   at any resolution (the probability map comes from a 320×320 prediction, so its artefacts
   scale with the image); up to 1024 px it is exactly rembg's.
3. ``alpha_matting``: a trimap from the 8-bit mask (sure foreground: mask >= ``fg_threshold``,
   sure background: mask <= ``bg_threshold``, both eroded by an ``erode_size`` square, the rest
   unknown), closed-form matting (pymatting ``estimate_alpha_cf``) for the unknown pixels and
   multi-level foreground estimation (``estimate_foreground_ml``) for the cutout's colours.
   Differences from rembg: the thresholds are inclusive (so ``fg_threshold=255`` works on a
   binary mask), an object cut by the picture's frame is not eroded from the frame, and a
   trimap without unknown pixels, or without sure foreground or background, returns the mask as
   alpha instead of raising.

   Matting works on the unknown band's bounding box, reduced above 1024 px
   (:mod:`u2seg.infer.matting` says how and why).
4. ``decontaminate`` (without matting): the foreground colour at soft edges is estimated with
   "blur fusion" (Forte & Pitié, *Approximate Fast Foreground Colour Estimation*, ICIP 2021,
   :func:`u2seg.infer.matting.estimate_foreground_blur`): box blurs with OpenCV, 10–30 ms on a
   0.3 MP photo, no numba compile and no pymatting needed, and within ~9–17/255 of pymatting's
   multi-level estimate on soft pixels (the untouched picture is 31–43/255 off). Opaque pixels
   keep their colour exactly; semi-transparent ones lose the old background's tint. With
   matting the multi-level estimate is used anyway.
5. Cutout: straight (not premultiplied) RGBA, alpha multiplied by the image's own alpha.
6. ``crop``: the bounding box of the output's non-zero alpha (of the mask with ``only_mask``),
   grown by ``crop_margin`` and clipped to the image; an empty alpha keeps the whole image.
7. ``bgcolor`` / ``background``: the cutout composited over a colour, or over a picture scaled to
   cover the output (aspect kept, centred, cropped). The result is RGB when it is fully opaque
   (an opaque colour or picture), RGBA otherwise.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..image_io import carry_icc_profile, load_image
from .matting import MATTING_MAX_SIDE, bounding_box, build_trimap, estimate_foreground_blur, matting_alpha
from .postprocess import parse_color, to_uint8

__all__ = [
    "RefineOptions", "Refined", "refine", "refine_output", "refine_alpha", "post_process_mask", "crop_box",
    "finish_output", "needs_host",
]

log = logging.getLogger(__name__)

#: Below this long side the post-processing uses rembg's exact kernels.
_POST_PROCESS_REFERENCE_SIDE = 1024
_MAX_ERODE = 1000


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_int(name: str, value: object, lo: int, hi: int | None) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        allowed = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be within {allowed}, got {value}")


@dataclass(frozen=True)
class RefineOptions:
    """What to make of a probability map. Every field is validated on construction
    (``ValueError`` naming the field); ``bgcolor`` is normalised to an RGBA tuple."""

    only_mask: bool = False
    alpha_matting: bool = False          # rembg -a
    fg_threshold: int = 240              # rembg -af: mask >= this (0..255) is sure foreground
    bg_threshold: int = 10               # rembg -ab: mask <= this (0..255) is sure background
    erode_size: int = 10                 # rembg -ae: erosion of both sure regions, pixels
    post_process_mask: bool = False      # rembg -ppm: opening + blur + re-threshold
    threshold: float | None = None       # hard threshold of the probability (0..1)
    decontaminate: bool = False          # estimate foreground colours at soft edges
    bgcolor: tuple[int, int, int, int] | None = None  # rembg -bgc
    background: Image.Image | None = None  # background picture, scaled to cover the output
    crop: bool = False                   # crop to the object's bounding box
    crop_margin: int = 0                 # pixels around the box
    edge_refine: bool = False            # guided-filter edges at full resolution (step 0)

    def __post_init__(self) -> None:
        for name in ("only_mask", "alpha_matting", "post_process_mask", "decontaminate", "crop", "edge_refine"):
            _check_bool(name, getattr(self, name))
        _check_int("fg_threshold", self.fg_threshold, 0, 255)
        _check_int("bg_threshold", self.bg_threshold, 0, 255)
        if self.bg_threshold >= self.fg_threshold:
            raise ValueError(f"bg_threshold ({self.bg_threshold}) must be lower than fg_threshold "
                             f"({self.fg_threshold})")
        _check_int("erode_size", self.erode_size, 0, _MAX_ERODE)
        _check_int("crop_margin", self.crop_margin, 0, None)
        if self.threshold is not None:
            t = self.threshold
            if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Real) or not 0.0 <= float(t) <= 1.0:
                raise ValueError(f"threshold must be None or a number within 0..1, got {t!r}")
            object.__setattr__(self, "threshold", float(t))
        if self.bgcolor is not None:
            if isinstance(self.bgcolor, (str, bytes)) or not isinstance(self.bgcolor, (Sequence, np.ndarray)):
                raise ValueError(f"bgcolor must be 3 or 4 integers in 0..255 (R G B [A]), got {self.bgcolor!r}")
            try:
                color = parse_color(self.bgcolor)
            except (TypeError, ValueError):
                raise ValueError(f"bgcolor must be 3 or 4 integers in 0..255 (R G B [A]), "
                                 f"got {self.bgcolor!r}") from None
            object.__setattr__(self, "bgcolor", color)
        if self.background is not None and not isinstance(self.background, Image.Image):
            raise ValueError(f"background must be a PIL image, got {type(self.background).__name__}")
        if self.bgcolor is not None and self.background is not None:
            raise ValueError("bgcolor and background are exclusive: give one or the other")
        if self.only_mask:
            clashing = [n for n in ("bgcolor", "background") if getattr(self, n) is not None]
            clashing += ["decontaminate"] if self.decontaminate else []
            if clashing:
                raise ValueError(f"only_mask excludes {', '.join(clashing)} (a mask has no colours)")


# --------------------------------------------------------------------------- inputs


def _as_image(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image (see u2seg.infer.load_image), not {type(image).__name__}")
    if image.mode in ("RGB", "RGBA"):
        return image
    has_alpha = image.mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _as_probability(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    p = np.asarray(prob)
    if p.ndim == 3 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 2:
        raise ValueError(f"prob must be a 2-D H×W map, got shape {p.shape}")
    if p.shape[::-1] != tuple(size):
        raise ValueError(f"prob is {p.shape[1]}×{p.shape[0]} (W×H) but the image is {size[0]}×{size[1]}")
    if p.dtype == np.uint8:
        return p.astype(np.float32) / 255.0
    p = np.clip(p.astype(np.float32, copy=False), 0.0, 1.0)  # a new array: safe to edit in place
    return np.nan_to_num(p, copy=False, nan=0.0)


# --------------------------------------------------------------------------- mask clean-up


def _odd(x: float) -> int:
    return 2 * int(x / 2) + 1


def post_process_mask(mask: np.ndarray) -> np.ndarray:
    """rembg's ``post_process`` on an 8-bit mask: opening (3×3 ellipse), Gaussian blur (5×5,
    sigma 2), threshold at 127 → 0/255. Kernels grow in proportion above 1024 px."""
    scale = max(1.0, max(mask.shape) / _POST_PROCESS_REFERENCE_SIDE)
    k, blur = _odd(3 * scale), _odd(5 * scale)  # 3 and 5 up to 1024 px
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    blurred = cv2.GaussianBlur(opened, (blur, blur), sigmaX=2.0 * scale, sigmaY=2.0 * scale,
                               borderType=cv2.BORDER_DEFAULT)
    return np.where(blurred < 127, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- the pipeline


def _refine(image: Image.Image, prob: np.ndarray, options: RefineOptions,
            want_colours: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(alpha float32 H×W, foreground colours float32 H×W×3 or None)."""
    p = _as_probability(prob, image.size)
    if options.edge_refine:
        from .guided_filter import guided_upsample

        p = guided_upsample(p, np.asarray(image))  # RGB or RGBA: the filter reads the colours
    if options.threshold is not None:
        p = (p >= options.threshold).astype(np.float32)
    if not (options.post_process_mask or options.alpha_matting):
        return p, None
    mask = to_uint8(p)
    if options.post_process_mask:
        mask = post_process_mask(mask)
    alpha = mask.astype(np.float32) / 255.0
    if not options.alpha_matting:
        return alpha, None
    trimap = build_trimap(mask, options.fg_threshold, options.bg_threshold, options.erode_size)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    result = matting_alpha(rgb, trimap, max_side=MATTING_MAX_SIDE, foreground=want_colours)
    if result is None:
        log.info("alpha matting: the trimap has no unknown band or no sure region; using the mask")
        return alpha, None
    return result


def refine_alpha(image: Image.Image, prob: np.ndarray,
                 options: RefineOptions = RefineOptions()) -> np.ndarray:
    """The final alpha, float32 ``H×W`` in [0, 1] (threshold, post-processing and matting
    applied; not multiplied by the image's own alpha). ``prob`` is float in [0, 1] or uint8."""
    image = _as_image(image)
    alpha, _ = _refine(image, prob, options, want_colours=False)
    return alpha


def crop_box(alpha: np.ndarray, margin: int = 0) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of ``alpha > 0`` grown by ``margin`` and clipped to the
    array; the whole array when nothing is above zero."""
    box = bounding_box(np.asarray(alpha) > 0, margin)
    h, w = np.asarray(alpha).shape[:2]
    return box if box is not None else (0, 0, w, h)


def _cover(background: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``background`` scaled (aspect kept) to cover ``size`` and centre-cropped to it."""
    bw, bh = background.size
    w, h = size
    scale = max(w / bw, h / bh)
    new = (max(w, math.ceil(bw * scale - 1e-6)), max(h, math.ceil(bh * scale - 1e-6)))
    resized = background if new == (bw, bh) else background.resize(new, Image.Resampling.LANCZOS)
    left, top = (new[0] - w) // 2, (new[1] - h) // 2
    return resized.crop((left, top, left + w, top + h))


@dataclass(frozen=True)
class Refined:
    """Everything :func:`refine` computed: ``output`` is what :func:`refine_output` returns;
    ``alpha`` (float32 H×W) and ``mask`` (``L``, full size, not cropped) are the refined
    segmentation; ``box`` is the (left, top, right, bottom) the output was cropped to (the whole
    image without ``crop``). Front ends that show the mask next to the output use this to run
    the refinement (matting included) once."""

    output: Image.Image
    mask: Image.Image
    alpha: np.ndarray
    box: tuple[int, int, int, int]


def needs_host(options: RefineOptions) -> bool:
    """Whether ``options`` need the host's refinement (matting, clean-up, decontamination, edge
    refinement, a background picture); the rest (threshold, mask, cutout, crop, colour) the device
    arithmetic does too. With ``edge_refine`` on the device path the map comes to the host (one
    float32 H×W copy) and the guided filter runs there: it costs ~40 ms/MP on the CPU, and
    the cutout would have to come back from the device anyway."""
    return options.alpha_matting or options.post_process_mask or options.decontaminate or \
        options.edge_refine or options.background is not None


def refine(image: Image.Image, prob: np.ndarray, options: RefineOptions = RefineOptions()) -> Refined:
    """Like :func:`refine_output`, returning the refined mask and alpha as well."""
    if not isinstance(options, RefineOptions):
        raise TypeError(f"options must be a RefineOptions, not {type(options).__name__}")
    source = image
    image = _as_image(image)
    want_colours = not options.only_mask
    alpha, fg = _refine(image, prob, options, want_colours)
    mask8 = to_uint8(alpha)
    mask = Image.fromarray(mask8, mode="L")

    if options.only_mask:
        output, box = finish_output(mask8, options)
        return Refined(output, mask, alpha, box)

    if fg is None and options.decontaminate:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        fg = estimate_foreground_blur(rgb, alpha)
    colours = to_uint8(fg) if fg is not None else np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    a8 = mask8
    if image.mode == "RGBA":
        own = np.asarray(image.getchannel("A"), dtype=np.uint16)
        a8 = ((a8.astype(np.uint16) * own + 127) // 255).astype(np.uint8)
    if options.bgcolor is None and options.background is None:
        # Colour under fully transparent pixels is invisible; zeros make PNGs ~30 % smaller and
        # ~1.5× faster to encode (OpenCV: one pass, keeping pixels where the mask is non-zero).
        colours = cv2.bitwise_and(colours, colours, mask=a8)
    rgba = cv2.merge([*cv2.split(colours), a8]) if colours.ndim == 3 else np.dstack([colours, a8])
    output, box = finish_output(rgba, options)
    return Refined(carry_icc_profile(source, output), mask, alpha, box)


def finish_output(pixels: np.ndarray, options: RefineOptions) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The last steps on a built mask (``uint8 H×W``) or cutout (``uint8 H×W×4``, straight
    RGBA): crop to the object, then composite over ``bgcolor`` / ``background``. Returns the
    output and the box it was cropped to. (The device arithmetic builds cutouts on the GPU and
    finishes them here too.)"""
    alpha = pixels if pixels.ndim == 2 else pixels[..., 3]
    whole = (0, 0, alpha.shape[1], alpha.shape[0])
    box = crop_box(alpha, options.crop_margin) if options.crop else whole
    part = pixels if box == whole else pixels[_slices(box)]
    if pixels.ndim == 2:
        return Image.fromarray(np.array(part, copy=True), mode="L"), box  # not sharing the mask's buffer
    cutout = Image.fromarray(np.ascontiguousarray(part), mode="RGBA")
    if options.bgcolor is not None:
        under = Image.new("RGBA", cutout.size, options.bgcolor)
        output = Image.alpha_composite(under, cutout)
        if options.bgcolor[3] == 255:
            output = output.convert("RGB")
    elif options.background is not None:
        under = _cover(load_image(options.background), cutout.size).convert("RGBA")
        output = Image.alpha_composite(under, cutout)
        if under.getchannel("A").getextrema()[0] == 255:
            output = output.convert("RGB")
    else:
        output = cutout
    return output, box


def refine_output(image: Image.Image, prob: np.ndarray,
                  options: RefineOptions = RefineOptions()) -> Image.Image:
    """The final output: the ``L`` mask (``only_mask``), the RGBA cutout, or the cutout
    composited over ``bgcolor`` / ``background`` (RGB when opaque, else RGBA).

    A cutout or composite keeps ``image``'s RGB ICC profile (``info["icc_profile"]``), which
    :func:`u2seg.image_encode.encode_image` embeds, so colours do not shift in photo tools. The
    mask keeps none: it holds alpha, not colours, and an RGB profile is invalid on a grey image.

    ``image`` is a PIL image (what :func:`u2seg.infer.load_image` returns); ``prob`` the
    Predictor's float ``H×W`` map at the image's size (uint8 is accepted too).
    """
    return refine(image, prob, options).output


def _slices(box: tuple[int, int, int, int]) -> tuple[slice, slice]:
    left, top, right, bottom = box
    return slice(top, bottom), slice(left, right)
