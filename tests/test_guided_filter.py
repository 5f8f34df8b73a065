"""Edges at full resolution: the guided filter (u2seg.infer.guided_filter), the ``edge_refine``
option in every front end, and the fine-structure synthetic composites it is measured on."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from u2seg.cli import build_parser, main
from u2seg.data.synth import fine_sample
from u2seg.infer.guided_filter import default_radius, guided_upsample
from u2seg.infer.options import refine_options_from_cli
from u2seg.infer.refine import RefineOptions, needs_host
from u2seg.infer.removal import remove, render
from u2seg.resize import resize_map

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the window test: no display needed


def _band(mask: np.ndarray, radius: int = 10) -> np.ndarray:
    """Pixels within ``radius`` of a fractional or changing alpha (benchmarks/edges.py's band)."""
    soft = (mask > 0) & (mask < 255)
    changes = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate((soft | changes).astype(np.uint8), disk) > 0


@pytest.fixture(scope="module")
def composites() -> list:
    return [fine_sample(i, size=1024, seed=11) for i in range(2)]


# --------------------------------------------------------------------------- the filter itself


def test_a_blurred_low_res_mask_comes_back_closer_to_the_truth_at_the_edges(composites):
    for sample in composites:
        h, w = sample.mask.shape
        truth = sample.mask.astype(np.float32) / 255
        # What the network gives at best: the true alpha at 320×320 (squashed, as the network
        # sees it), slightly blurred.
        low = cv2.GaussianBlur(cv2.resize(truth, (320, 320), interpolation=cv2.INTER_AREA), (0, 0), 1.0)
        lanczos = np.clip(resize_map(low, (w, h), "lanczos"), 0, 1)
        bilinear = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
        guided = guided_upsample(low, sample.image)
        band = _band(sample.mask)
        errors = {name: float(np.abs(m - truth)[band].mean())
                  for name, m in (("lanczos", lanczos), ("bilinear", bilinear), ("guided", guided))}
        assert errors["guided"] < 0.9 * errors["lanczos"], errors
        assert errors["guided"] < 0.9 * errors["bilinear"], errors
        # from the map already at full size (the refine path) it is as good
        from_full = guided_upsample(lanczos, sample.image)
        assert float(np.abs(from_full - truth)[band].mean()) < 0.9 * errors["lanczos"]
        assert np.abs(from_full - guided).mean() < 0.01


def test_range_shape_and_constant_maps():
    rng = np.random.default_rng(0)
    guide = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for prob in (rng.random((10, 7)), rng.random((37, 53)).astype(np.float32) * 3 - 1,
                 rng.integers(0, 256, (20, 20), dtype=np.uint8)):
        out = guided_upsample(prob, guide)
        assert out.shape == (37, 53) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    for value in (0.0, 0.3, 1.0):
        out = guided_upsample(np.full((32, 32), value, np.float32), guide)
        assert np.abs(out - value).max() < 1e-5
    # uint8 maps are 0…255; an RGBA guide's alpha is ignored
    a = guided_upsample(np.full((8, 8), 255, np.uint8), np.dstack([guide, guide[..., :1]]))
    assert np.abs(a - 1.0).max() < 1e-5


def test_grey_guides_small_ridges_tiny_images_and_bad_inputs():
    rng = np.random.default_rng(1)
    grey = np.repeat(cv2.GaussianBlur(rng.integers(0, 256, (60, 80), dtype=np.uint8), (0, 0), 2)[..., None], 3, 2)
    prob = (cv2.GaussianBlur(rng.random((60, 80)), (0, 0), 6) > 0.5).astype(np.float32)
    for eps in (1e-2, 3e-4, 1e-5):  # a rank-1 colour covariance: the solve stays finite
        out = guided_upsample(prob, grey, eps=eps, radius=4)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert guided_upsample(np.ones((1, 1)), np.zeros((1, 1, 3), np.uint8)).shape == (1, 1)
    assert guided_upsample(np.zeros((3, 3)), np.zeros((2, 1, 3), np.uint8)).shape == (2, 1)
    assert default_radius(4000) == 125 and default_radius(10) == 2
    with pytest.raises(ValueError, match="guide"):
        guided_upsample(prob, grey[..., 0])
    with pytest.raises(ValueError, match="guide"):
        guided_upsample(prob, grey.astype(np.float32))
    with pytest.raises(ValueError, match="prob"):
        guided_upsample(np.zeros((2, 2, 2)), grey)
    with pytest.raises(ValueError, match="eps"):
        guided_upsample(prob, grey, eps=0)


# --------------------------------------------------------------------------- the option


def _edge_and_far(mask: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels within ``reach`` of the mask's soft edge, and the rest."""
    soft = ((mask > 5) & (mask < 250)).astype(np.uint8)
    distance = cv2.distanceTransform(1 - soft, cv2.DIST_L2, 5)
    return distance <= reach, distance > reach


def test_remove_with_edge_refine_changes_the_mask_at_edges_only(predictor, coffee):
    assert RefineOptions().edge_refine is False  # off by default: masks stay rembg's
    plain = np.asarray(remove(coffee, predictor=predictor, only_mask=True)).astype(int)
    refined = np.asarray(remove(coffee, predictor=predictor, only_mask=True, edge_refine=True)).astype(int)
    assert refined.shape == plain.shape
    r = default_radius(max(coffee.shape[:2]))
    near, far = _edge_and_far(plain.astype(np.uint8), r)
    change = np.abs(refined - plain)
    assert change[near].mean() > 2 and (change[near] > 10).mean() > 0.05  # edges move
    assert change[_edge_and_far(plain.astype(np.uint8), 2 * r)[1]].max() <= 1  # nothing else does
    assert far.any() and change[far].mean() < 0.01
    # cutouts and other options compose with it
    cutout = remove(coffee, predictor=predictor, edge_refine=True, threshold=0.5)
    alpha = np.asarray(cutout)[..., 3]
    assert cutout.mode == "RGBA" and set(np.unique(alpha)) <= {0, 255}
    with pytest.raises(ValueError, match="edge_refine"):
        RefineOptions(edge_refine="yes")


def test_device_arithmetic_brings_the_map_to_the_host(pretrained_home, predictor, coffee):
    from u2seg.infer import Predictor

    options = RefineOptions(only_mask=True, edge_refine=True)
    assert needs_host(options) and not needs_host(RefineOptions(only_mask=True))
    device = Predictor(weights=pretrained_home / "weights" / "u2netp", backend="torch", device="cpu",
                       arithmetic="device")
    assert device.device_arithmetic is not None
    on_device = np.asarray(render(device, coffee, options)).astype(int)
    on_host = np.asarray(render(predictor, coffee, options)).astype(int)
    plain = np.asarray(render(device, coffee, RefineOptions(only_mask=True))).astype(int)
    assert np.abs(on_device - on_host).mean() < 1.0
    assert np.abs(on_device - plain).mean() > 0.1


def test_cli_flag(use_pretrained_home, tmp_path, coffee):
    args = build_parser().parse_args(["remove", "x.jpg", "--edge-refine"])
    assert refine_options_from_cli(args).edge_refine is True
    assert refine_options_from_cli(build_parser().parse_args(["remove", "x.jpg"])).edge_refine is False
    Image.fromarray(coffee).save(tmp_path / "cup.png")
    for name, extra in (("plain", []), ("refined", ["--edge-refine"])):
        assert main(["remove", str(tmp_path / "cup.png"), "-o", str(tmp_path / name), "--only-mask",
                     "-m", "u2netp", *extra]) == 0
    plain = np.asarray(Image.open(tmp_path / "plain" / "cup.png")).astype(int)
    refined = np.asarray(Image.open(tmp_path / "refined" / "cup.png")).astype(int)
    assert refined.shape == plain.shape and np.abs(refined - plain).mean() > 0.1


def test_http_parameter(use_pretrained_home, predictor, coffee):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2")
        from fastapi.testclient import TestClient
    from u2seg.apps.server import create_app

    buffer = io.BytesIO()
    Image.fromarray(coffee).save(buffer, "PNG")
    with TestClient(create_app(predictor_factory=lambda name: predictor)) as client:
        def post(**params):
            return client.post("/api/remove", params={"only_mask": "1", **params}, content=buffer.getvalue(),
                               headers={"Content-Type": "image/png"})

        plain, refined = post(), post(edge_refine="true")
        assert plain.status_code == refined.status_code == 200, refined.text
        a = np.asarray(Image.open(io.BytesIO(plain.content))).astype(int)
        b = np.asarray(Image.open(io.BytesIO(refined.content))).astype(int)
        assert a.shape == b.shape and np.abs(a - b).mean() > 0.1
        bad = post(edge_refine="maybe")
        assert bad.status_code == 422 and "edge_refine" in bad.text
        names = {p["name"] for p in client.get("/openapi.json").json()["paths"]["/api/remove"]["post"]["parameters"]}
        assert "edge_refine" in names


def test_window_check_box(qtbot, use_pretrained_home, predictor, coffee, tmp_path):
    pytest.importorskip("PySide6")
    from u2seg.apps.gui import MainWindow, qimage_to_array

    window = MainWindow(lambda name: predictor, model="u2netp")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    Image.fromarray(coffee).save(tmp_path / "cup.png")
    window.open_paths([tmp_path / "cup.png"])
    qtbot.waitUntil(lambda: not window.busy and (window.current_output is not None or window.message), timeout=60_000)
    box = window.option_boxes["edge_refine"]
    assert box.text() == "Refine edges" and not box.isChecked() and "guided" in box.toolTip()
    before = qimage_to_array(window.mask_view.image()).copy()
    box.setChecked(True)  # re-rendered from the cached probability
    assert window.options().edge_refine
    qtbot.waitUntil(lambda: not window.busy
                    and not np.array_equal(qimage_to_array(window.mask_view.image()), before), timeout=60_000)
    window.wait_idle(30_000)


# --------------------------------------------------------------------------- fine synthetic composites


def test_synth_fine_writes_composites_with_exact_alpha(tmp_path: Path):
    out = tmp_path / "fine"
    assert main(["synth", str(out), "--fine", "--count", "2", "--size", "320", "--seed", "4"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["00000.png", "00001.png"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png"]
    for index in range(2):
        image = np.asarray(Image.open(out / "images" / f"{index:05d}.png"))
        mask = np.asarray(Image.open(out / "masks" / f"{index:05d}.png"))
        assert image.shape == (240, 320, 3) and mask.shape == (240, 320) and mask.dtype == np.uint8
        sample = fine_sample(index, size=320, seed=4)  # deterministic: the files are this sample
        assert np.array_equal(sample.image, image) and np.array_equal(sample.mask, mask)
        clear = mask == 0
        assert np.array_equal(image[clear], sample.background[clear])  # alpha 0: the background exactly
        assert ((mask > 0) & (mask < 255)).mean() > 0.01 and (mask == 255).mean() > 0.05


def test_fine_samples_have_strands_holes_and_soft_edges():
    sample = fine_sample(0, size=1024, seed=11)
    mask = sample.mask
    opaque = (mask >= 128).astype(np.uint8)
    # holes: background components that do not touch the frame
    count, labels = cv2.connectedComponents(1 - opaque, connectivity=4)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    assert any(k not in border for k in range(1, count))
    # strands: foreground thin enough that an opening with a 5×5 square removes it
    opened = cv2.morphologyEx(opaque, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    assert (opaque & (1 - opened)).sum() > 2000
    # soft edges: wide stretches of fractional alpha, not just anti-aliasing
    soft = (mask > 10) & (mask < 245)
    assert cv2.morphologyEx(soft.astype(np.uint8), cv2.MORPH_OPEN, np.ones((7, 7), np.uint8)).sum() > 2000
    with pytest.raises(ValueError, match="size"):
        fine_sample(0, size=32)
