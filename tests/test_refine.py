"""refine_output / refine_alpha: thresholds, clean-up, matting, decontamination, crop, compositing."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from u2seg.infer.matting import build_trimap, estimate_foreground_blur, matting_alpha
from u2seg.infer.refine import RefineOptions, crop_box, refine, refine_alpha, refine_output


@pytest.fixture(scope="module")
def cup(predictor, coffee):
    """coffee.jpg (600×400) and its real u2netp probability."""
    image = Image.fromarray(coffee)
    return image, predictor.predict(image)


@pytest.fixture(scope="module")
def small_cup(predictor, coffee):
    """coffee reduced to 300×200 (matting tests) and its probability."""
    image = Image.fromarray(coffee).resize((300, 200), Image.Resampling.LANCZOS)
    return image, predictor.predict(image)


def _distance_to_contour(prob: np.ndarray) -> np.ndarray:
    """Each pixel's distance (px) to the 0.5 contour of ``prob``."""
    inside = (prob >= 0.5).astype(np.uint8)
    return np.where(inside, cv2.distanceTransform(inside, cv2.DIST_L2, 5),
                    cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5))


def _eight_bit(prob: np.ndarray) -> np.ndarray:
    """``prob`` rounded to 8 bits, as float32 in [0, 1] (what a mask-based step returns)."""
    return np.rint(prob * 255).astype(np.uint8).astype(np.float32) / 255


# --------------------------------------------------------------------------- imports


def test_import_and_plain_refining_do_not_load_pymatting():
    code = (
        "import sys, numpy as np\n"
        "from PIL import Image\n"
        "import u2seg.infer.refine as r\n"
        "assert 'pymatting' not in sys.modules and 'numba' not in sys.modules, 'imported at import'\n"
        "im = Image.new('RGB', (40, 30), (200, 10, 10))\n"
        "p = np.zeros((30, 40), np.float32); p[5:25, 10:30] = 1; p[4, 10:30] = 0.5\n"
        "r.refine_output(im, p, r.RefineOptions(decontaminate=True, post_process_mask=False, crop=True))\n"
        "r.refine_output(im, p, r.RefineOptions(threshold=0.3, post_process_mask=True, bgcolor=(1, 2, 3)))\n"
        "assert 'pymatting' not in sys.modules and 'numba' not in sys.modules, 'imported by refining'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- defaults and thresholds


def test_default_output_is_the_plain_cutout(cup):
    image, prob = cup
    out = refine_output(image, prob)
    assert out.mode == "RGBA" and out.size == image.size
    rgba = np.asarray(out)
    visible = rgba[..., 3] > 0
    assert np.array_equal(rgba[visible, :3], np.asarray(image)[visible])
    assert not rgba[~visible, :3].any()  # colour under fully transparent pixels is zeroed
    assert np.array_equal(rgba[..., 3], np.rint(prob * 255).astype(np.uint8))
    mask = refine_output(image, prob, RefineOptions(only_mask=True))
    assert mask.mode == "L" and np.array_equal(np.asarray(mask), rgba[..., 3])
    assert np.array_equal(refine_alpha(image, prob), prob)


def test_threshold_gives_binary_alpha(cup):
    image, prob = cup
    for t in (0.2, 0.5, 0.9):
        alpha = refine_alpha(image, prob, RefineOptions(threshold=t))
        assert set(np.unique(alpha)) == {0.0, 1.0}
        assert np.array_equal(alpha, (prob >= t).astype(np.float32))
    mask = np.asarray(refine_output(image, prob, RefineOptions(only_mask=True, threshold=0.5)))
    assert set(np.unique(mask)) == {0, 255}
    cut = np.asarray(refine_output(image, prob, RefineOptions(threshold=0.5)))
    assert set(np.unique(cut[..., 3])) == {0, 255}
    assert cut[150:250, 250:350, 3].min() == 255 and cut[:30, :30, 3].max() == 0


def test_rgba_input_alpha_is_multiplied(cup):
    image, prob = cup
    rgba = image.convert("RGBA")
    rgba.putalpha(128)
    out = np.asarray(refine_output(rgba, prob, RefineOptions(threshold=0.5)))
    assert set(np.unique(out[..., 3])) == {0, 128}
    # the mask is the segmentation alone, not the picture's own alpha
    mask = refine_output(rgba, prob, RefineOptions(only_mask=True, threshold=0.5))
    assert set(np.unique(np.asarray(mask))) == {0, 255}


def test_refine_returns_mask_alpha_and_box_with_the_output(cup):
    image, prob = cup
    done = refine(image, prob, RefineOptions(threshold=0.5, crop=True, crop_margin=3, bgcolor=(9, 9, 9)))
    assert done.mask.mode == "L" and done.mask.size == image.size
    assert np.array_equal(np.asarray(done.mask), (prob >= 0.5).astype(np.uint8) * 255)
    assert np.array_equal(done.alpha, (prob >= 0.5).astype(np.float32))
    left, top, right, bottom = done.box
    assert done.output.mode == "RGB" and done.output.size == (right - left, bottom - top)
    assert done.box == crop_box(prob >= 0.5, 3)


# --------------------------------------------------------------------------- post-processing


def test_post_processing_removes_an_isolated_blob(cup):
    image, prob = cup
    painted = prob.copy()
    painted[20:23, 560:563] = 1.0  # a 3×3 speck in the empty top-right corner
    painted[380:382, 20:22] = 0.9  # and a 2×2 one bottom-left
    raw = refine_alpha(image, painted, RefineOptions(threshold=0.5))
    assert raw[21, 561] == 1 and raw[380, 20] == 1
    clean = refine_alpha(image, painted, RefineOptions(post_process_mask=True))
    assert set(np.unique(clean)) == {0.0, 1.0}
    assert clean[15:30, 550:570].max() == 0 and clean[375:390, 15:30].max() == 0
    assert clean[150:250, 250:350].min() == 1  # the cup stays
    # the outline moves little: the clean mask agrees with the 0.5 threshold almost everywhere
    assert (clean != (prob >= 0.5)).mean() < 0.01


def test_post_processing_scales_with_the_image():
    prob = np.zeros((2048, 2048), np.float32)
    prob[500:1500, 500:1500] = 1.0
    prob[100:105, 100:105] = 1.0  # 5×5 at 2048 px is what a 2.5×2.5 speck is at 1024 px
    clean = refine_alpha(Image.new("RGB", (2048, 2048)), prob, RefineOptions(post_process_mask=True))
    assert clean[95:110, 95:110].max() == 0 and clean[600:1400, 600:1400].min() == 1


# --------------------------------------------------------------------------- matting


@pytest.mark.slow  # the first pymatting import in a fresh environment compiles numba code (~1 min)
def test_alpha_matting_changes_only_the_edges(small_cup):
    image, prob = small_cup
    erode = 5
    options = RefineOptions(alpha_matting=True, erode_size=erode)
    alpha = refine_alpha(image, prob, options)
    assert alpha.shape == prob.shape and alpha.dtype == np.float32
    assert 0 <= alpha.min() and alpha.max() <= 1
    dist = _distance_to_contour(prob)
    diff = np.abs(alpha - prob)
    far = dist > erode + 3
    assert far.mean() > 0.8
    assert np.percentile(diff[far], 99.9) < 0.02 and diff[far].max() < 0.06  # sure regions: 0/1 vs ~0/~1
    near = dist <= 3
    assert diff[near].mean() > 0.03 and (diff[near] > 0.1).mean() > 0.05  # matting did something there

    # The cutout takes its colours from the estimated foreground where alpha is soft, the
    # picture's own where alpha is 1.
    cut = np.asarray(refine_output(image, prob, options))
    assert np.array_equal(cut[..., 3], np.rint(alpha * 255).astype(np.uint8))
    original = np.asarray(image)
    soft = (alpha > 0.05) & (alpha < 0.95)
    opaque = alpha == 1
    assert np.abs(cut[..., :3].astype(int) - original)[soft].mean() > 3
    assert np.abs(cut[..., :3].astype(int) - original)[opaque].max() <= 2

    # Reduced resolution (forced here with a small max_side): the sure regions keep their exact
    # full-resolution values, the band gets the upsampled solution.
    trimap = build_trimap(np.rint(prob * 255).astype(np.uint8), 240, 10, erode)
    reduced, fg = matting_alpha(np.asarray(image) / 255.0, trimap, max_side=150, foreground=False)
    unknown = trimap == 0.5
    assert fg is None
    assert np.array_equal(reduced[~unknown], trimap[~unknown].astype(np.float32))
    assert np.abs(reduced - alpha)[unknown].mean() < 0.15


def test_matting_falls_back_to_the_mask_when_the_trimap_is_degenerate(small_cup):
    image, prob = small_cup
    # binary mask, no erosion: no unknown pixel
    binary = RefineOptions(alpha_matting=True, threshold=0.5, erode_size=0)
    assert np.array_equal(refine_alpha(image, prob, binary), (prob >= 0.5).astype(np.float32))
    # no sure foreground
    grey = np.full(prob.shape, 0.5, np.float32)
    grey[:, :20] = 0
    assert np.array_equal(refine_alpha(image, grey, RefineOptions(alpha_matting=True)), _eight_bit(grey))
    # nothing at all
    empty = np.zeros(prob.shape, np.float32)
    out = refine_output(image, empty, RefineOptions(alpha_matting=True, crop=True))
    assert out.size == image.size and np.asarray(out)[..., 3].max() == 0


# --------------------------------------------------------------------------- decontamination


def test_decontamination_changes_soft_edges_only(cup):
    image, prob = cup
    out = np.asarray(refine_output(image, prob, RefineOptions(decontaminate=True))).astype(int)
    original = np.asarray(image).astype(int)
    alpha8 = np.rint(prob * 255)
    assert np.array_equal(out[..., 3], alpha8)
    opaque = prob >= 1.0
    assert opaque.any() and np.array_equal(out[..., :3][opaque], original[opaque])
    soft = (prob > 0.1) & (prob < 0.9)
    assert np.abs(out[..., :3] - original)[soft].mean() > 5
    # synthetic: red object, blue background, a soft band that mixes both
    h, w = 60, 80
    alpha = np.zeros((h, w), np.float32)
    alpha[:, 40:] = 1
    alpha[:, 36:40] = np.linspace(0.2, 0.8, 4)
    picture = alpha[..., None] * np.array([1.0, 0, 0], np.float32) + (1 - alpha[..., None]) * np.array([0, 0, 1.0],
                                                                                                     np.float32)
    fg = estimate_foreground_blur(picture, alpha)
    band = fg[:, 36:40]
    assert band[..., 0].min() > 0.9 and band[..., 2].max() < 0.1  # red, the blue removed (was 0.2…0.8)


# --------------------------------------------------------------------------- crop


def test_crop_to_the_object_with_margin(cup):
    image, prob = cup
    alpha = (prob >= 0.5)
    left, top, right, bottom = crop_box(alpha)
    # the cup (saucer, cup, spoon) is inside the box, the empty corners are not
    assert left < 150 and top < 60 and right > 450 and bottom > 330
    assert (left, top) > (0, 0) and (right, bottom) < image.size
    tight = refine_output(image, prob, RefineOptions(threshold=0.5, crop=True))
    assert tight.size == (right - left, bottom - top)
    t = np.asarray(tight)[..., 3]
    assert t[0].max() == 255 and t[-1].max() == 255 and t[:, 0].max() == 255 and t[:, -1].max() == 255
    assert (t > 0).sum() == alpha.sum()  # nothing of the object is lost
    m = 7
    margin = refine_output(image, prob, RefineOptions(threshold=0.5, crop=True, crop_margin=m))
    assert margin.size == (right - left + 2 * m, bottom - top + 2 * m)
    a = np.asarray(margin)[..., 3]
    assert a[:m].max() == 0 and a[-m:].max() == 0 and a[:, :m].max() == 0 and a[:, -m:].max() == 0
    assert np.array_equal(a[m:-m, m:-m], t)
    # a margin beyond the frame is clipped to the image; the mask crops the same way
    huge = refine_output(image, prob, RefineOptions(threshold=0.5, crop=True, crop_margin=10_000))
    assert huge.size == image.size
    mask = refine_output(image, prob, RefineOptions(only_mask=True, threshold=0.5, crop=True, crop_margin=m))
    assert mask.mode == "L" and mask.size == margin.size and np.array_equal(np.asarray(mask), a)


def test_crop_of_an_empty_mask_is_the_whole_image(cup):
    image, _ = cup
    empty = np.zeros((image.height, image.width), np.float32)
    assert refine_output(image, empty, RefineOptions(crop=True, crop_margin=3)).size == image.size
    assert refine_output(image, empty, RefineOptions(crop=True, only_mask=True)).size == image.size


# --------------------------------------------------------------------------- compositing


def test_bgcolor_composite_is_opaque(cup):
    image, prob = cup
    out = refine_output(image, prob, RefineOptions(bgcolor=(255, 0, 0)))
    assert out.mode == "RGB" and out.size == image.size
    px = np.asarray(out)
    assert tuple(px[2, 2]) == (255, 0, 0)
    inside = prob >= 1.0
    assert np.array_equal(px[inside], np.asarray(image)[inside])
    # a translucent colour keeps an alpha channel
    see_through = np.asarray(refine_output(image, prob, RefineOptions(bgcolor=(0, 0, 255, 100))))
    assert see_through.shape[2] == 4 and see_through[2, 2, 3] == 100 and see_through[inside, 3].min() == 255
    assert RefineOptions(bgcolor=[1, 2, 3]).bgcolor == (1, 2, 3, 255)


def test_background_image_composite(cup, astronaut):
    image, prob = cup
    background = Image.fromarray(astronaut)  # 512×512 covers 600×400: scaled to 600×600, centre rows
    out = refine_output(image, prob, RefineOptions(background=background))
    assert out.mode == "RGB" and out.size == image.size
    px = np.asarray(out).astype(int)
    expected = np.asarray(background.resize((600, 600), Image.Resampling.LANCZOS))[100:500].astype(int)
    outside = prob == 0
    assert outside.any() and np.abs(px[outside] - expected[outside]).max() <= 1
    inside = prob >= 1.0
    assert np.array_equal(px[inside], np.asarray(image).astype(int)[inside])
    # any aspect ratio covers the output; with crop the background covers the cropped size
    tall = Image.new("RGB", (30, 300), (0, 255, 0))
    cropped = refine_output(image, prob, RefineOptions(background=tall, threshold=0.5, crop=True))
    c = np.asarray(cropped)
    box = crop_box(prob >= 0.5)
    assert cropped.size == (box[2] - box[0], box[3] - box[1])
    assert tuple(c[0, 0]) == (0, 255, 0)
    # a translucent background keeps alpha
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert refine_output(image, prob, RefineOptions(background=clear)).mode == "RGBA"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs, field", [
    ({"fg_threshold": 256}, "fg_threshold"),
    ({"fg_threshold": -1}, "fg_threshold"),
    ({"fg_threshold": 240.5}, "fg_threshold"),
    ({"bg_threshold": 300}, "bg_threshold"),
    ({"bg_threshold": 240, "fg_threshold": 240}, "bg_threshold"),
    ({"erode_size": -1}, "erode_size"),
    ({"erode_size": 5000}, "erode_size"),
    ({"erode_size": True}, "erode_size"),
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": -0.1}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"threshold": "0.5"}, "threshold"),
    ({"crop_margin": -2}, "crop_margin"),
    ({"bgcolor": (1, 2)}, "bgcolor"),
    ({"bgcolor": (0, 0, 300)}, "bgcolor"),
    ({"bgcolor": "white"}, "bgcolor"),
    ({"background": np.zeros((4, 4, 3))}, "background"),
    ({"only_mask": 1}, "only_mask"),
    ({"alpha_matting": "yes"}, "alpha_matting"),
    ({"bgcolor": (1, 2, 3), "background": Image.new("RGB", (2, 2))}, "exclusive"),
    ({"only_mask": True, "bgcolor": (1, 2, 3)}, "only_mask excludes bgcolor"),
    ({"only_mask": True, "background": Image.new("RGB", (2, 2))}, "only_mask excludes background"),
    ({"only_mask": True, "decontaminate": True}, "only_mask excludes decontaminate"),
])
def test_invalid_options_are_rejected(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RefineOptions(**kwargs)


def test_bad_inputs(cup):
    image, prob = cup
    with pytest.raises(ValueError, match="image is 600×400"):
        refine_output(image, prob[:100])
    with pytest.raises(ValueError, match="2-D"):
        refine_output(image, np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="RefineOptions"):
        refine_output(image, prob, {"only_mask": True})
    # 8-bit masks are accepted as they are
    assert np.array_equal(refine_alpha(image, np.rint(prob * 255).astype(np.uint8)), _eight_bit(prob))
