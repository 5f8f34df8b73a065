"""The matmul Lanczos resize against Pillow's own, on real photos, noise and float maps."""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from u2seg.infer.lanczos import (
    horizontal_first,
    lanczos_matrix,
    resize_image_tensor,
    resize_map_tensor,
)

LANCZOS = Image.Resampling.LANCZOS
PHOTOS = ("astronaut", "coffee", "chelsea", "camera", "noise")


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    if name == "noise":
        return np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    from skimage import data

    return getattr(data, name)()


def source(name: str, size: tuple[int, int] | None) -> np.ndarray:
    """The photo as is, or resized by Pillow to ``size`` (to get big, tiny and odd inputs)."""
    pixels = photo(name)
    return pixels if size is None else np.asarray(Image.fromarray(pixels).resize(size, LANCZOS))


def ours(pixels: np.ndarray, size: tuple[int, int], **kwargs) -> np.ndarray:
    tensor = torch.from_numpy(pixels.copy())
    chw = tensor.permute(2, 0, 1) if pixels.ndim == 3 else tensor[None]
    out = resize_image_tensor(chw, size, **kwargs)
    assert out.dtype == torch.float32 and tuple(out.shape[-2:]) == (size[1], size[0])
    return out.permute(1, 2, 0).numpy() if pixels.ndim == 3 else out[0].numpy()


def pillow(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize(size, LANCZOS), dtype=np.float32)


@pytest.mark.parametrize("in_size,out_size", [(1, 320), (7, 320), (100, 320), (333, 320),
                                              (451, 320), (2000, 320), (320, 1411), (320, 3000)])
def test_matrix_is_pillows_impulse_response(in_size: int, out_size: int) -> None:
    matrix = lanczos_matrix(in_size, out_size)
    assert matrix.shape == (out_size, in_size) and matrix.dtype == np.float64
    assert not matrix.flags.writeable and lanczos_matrix(in_size, out_size) is matrix
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # Mode F resizes of an identity image: column j of the output is Pillow's response to an
    # impulse at j, i.e. its double coefficients stored as float32 — bit for bit ours.
    impulses = Image.fromarray(np.eye(in_size, dtype=np.float32), mode="F")
    response = np.asarray(impulses.resize((out_size, in_size), LANCZOS))
    np.testing.assert_array_equal(response, matrix.T.astype(np.float32))


CASES = [  # (photo, resized by Pillow to this first or None, target)
    *[(name, None, (320, 320)) for name in PHOTOS],
    *[(name, None, size) for name in ("astronaut", "coffee", "noise")
      for size in ((256, 192), (320, 200), (1000, 700))],
    *[(name, (1600, 1200), (320, 320)) for name in PHOTOS],
    *[(name, (7, 5), (320, 320)) for name in ("chelsea", "camera")],
    *[(name, (1, 1), (320, 320)) for name in ("coffee", "camera")],
    *[(name, (100, 100), (320, 320)) for name in ("astronaut", "noise")],
    *[(name, (333, 517), (320, 320)) for name in ("chelsea", "noise")],  # Pillow 13: vertical first
]


@pytest.mark.parametrize("name,first,size", CASES)
def test_8bit_resize_matches_pillow(name: str, first: tuple[int, int] | None,
                                    size: tuple[int, int]) -> None:
    pixels = source(name, first)
    diff = np.abs(ours(pixels, size) - pillow(pixels, size))
    # Same coefficients and rounding as Pillow; only float32 accumulation can tip a value
    # that sits on a .5 boundary by one level (about 1 value in 30 000 measured).
    assert diff.max() <= 1.0
    assert diff.mean() <= 1e-3
    assert (diff > 0).mean() <= 1e-3


def test_pass_order_follows_pillow() -> None:
    assert horizontal_first((2000, 1500), (320, 320), "pillow13")
    assert not horizontal_first((333, 517), (320, 320), "pillow13")
    assert not horizontal_first((400, 400), (320, 100), "pillow13")  # 300 rows lost > 2 × 80 columns
    assert horizontal_first((100, 100), (320, 320), "pillow13")
    assert horizontal_first((333, 517), (320, 320), "horizontal")
    pixels = source("noise", (333, 517))
    other = "horizontal" if int(Image.__version__.split(".")[0]) >= 13 else "pillow13"
    assert np.abs(ours(pixels, (320, 320), pass_order=other) - pillow(pixels, (320, 320))).max() > 1


def test_batches_float_input_and_float_passes() -> None:
    a, b = (source(name, (500, 400)) for name in ("astronaut", "chelsea"))
    batch = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2)
    out = resize_image_tensor(batch, (320, 320))
    assert out.shape == (2, 3, 320, 320)
    assert torch.equal(out[1], resize_image_tensor(batch[1].float(), (320, 320)))
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255
    smooth = resize_image_tensor(batch, (320, 320), uint8_passes=False)
    assert not torch.equal(smooth, smooth.round())  # no rounding, no clipping
    assert (smooth - out).abs().mean() < 0.5
    same = resize_image_tensor(batch, (500, 400))  # no axis changes: a float copy
    assert torch.equal(same, batch.float())


MAPS = {
    "camera": source("camera", (320, 320)).astype(np.float32) / 255,
    "noise": np.random.default_rng(1).random((320, 320), dtype=np.float32),
}
MAP_CASES = [(name, size) for name in sorted(MAPS)
             for size in ((451, 300), (300, 451), (1411, 1411), (160, 100), (320, 320))]


@pytest.mark.parametrize("name,size", [*MAP_CASES, ("noise", (4000, 3000))])
def test_float_map_matches_pillow_mode_f(name: str, size: tuple[int, int]) -> None:
    values = MAPS[name]
    expected = np.asarray(Image.fromarray(values, mode="F").resize(size, LANCZOS))
    got = resize_map_tensor(torch.from_numpy(values), size)
    assert got.dtype == torch.float32 and got.shape == (size[1], size[0])
    # float32 matmul vs Pillow's double sums: measured ≤ 3.3e-7 of the range.
    assert np.abs(got.numpy() - expected).max() <= 1e-5 * float(np.ptp(expected))
    if size[0] * size[1] < 3_000_000:
        batched = resize_map_tensor(torch.from_numpy(np.stack([values, values])), size)
        np.testing.assert_allclose(batched[1].numpy(), got.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("call", [lambda: resize_image_tensor(torch.zeros(4, 4), (2, 2)),
                                  lambda: resize_map_tensor(torch.zeros(1, 1, 4, 4), (2, 2)),
                                  lambda: resize_map_tensor(torch.zeros(4, 4), (0, 2)),
                                  lambda: horizontal_first((4, 4), (2, 2), "vertical")])
def test_bad_shapes_sizes_and_orders(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_imports_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module loads (and builds its matrices) where torch cannot be imported."""
    import importlib.util

    import u2seg.infer.lanczos as installed

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    spec = importlib.util.spec_from_file_location("lanczos_without_torch", installed.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.lanczos_matrix(9, 2).shape == (2, 9)
    with pytest.raises(ImportError):
        module.resize_map_tensor(np.zeros((2, 2), np.float32), (3, 3))
