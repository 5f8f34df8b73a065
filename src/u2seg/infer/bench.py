"""``u2seg bench``: where the time goes when removing backgrounds, stage by stage.

It runs ``u2seg remove``'s own job (decode, pre-process, network, post-process, refine, encode,
write into a temporary folder) through the engine with the same settings, and reports the
seconds per image of each stage, the end-to-end rate (start-up included, as ``remove`` is timed
from outside) and the network's share. ``no_network`` swaps the network for a fixed map to
measure everything else.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .engine import default_workers, run_job
from .job_types import Item
from .predictor import Predictor
from .refine import RefineOptions
from .removal import RemovalJob

__all__ = ["FixedMapBackend", "generated_photos", "run_bench", "format_bench", "process_start_time"]

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "immunohistochemistry", "retina",
          "hubble_deep_field", "camera")


class FixedMapBackend:
    """Stands in for the network: the same soft disc for every image (a mask that looks like an
    object, so post-processing and encoding cost what they cost on real cutouts)."""

    name = "none"
    precision = "fp32"
    num_classes = 1
    thread_safe = True

    def run(self, batch: np.ndarray) -> np.ndarray:
        n, _, h, w = batch.shape
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        r = np.hypot((x - w / 2) / (0.35 * w), (y - h / 2) / (0.42 * h))
        disc = np.clip(1.5 - r, 0.0, 1.0)[None, None]
        return np.repeat(disc, n, axis=0).astype(np.float32)


def generated_photos(folder: Path, count: int = 60, megapixels: float = 1.5, seed: int = 0) -> list[Path]:
    """``count`` photos (scikit-image's, resized) of ``megapixels`` on average, from a fifth of
    that to 8.3 MP (one in ten, the pixels of a 4K frame), every third a PNG, the rest JPEG;
    written once into ``folder``."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = []
    for name in PHOTOS:
        try:
            sources.append(Image.fromarray(getattr(data, name)()).convert("RGB"))
        except Exception:  # noqa: BLE001 - some need a download in some versions
            continue
    # Sizes: log-uniform around the target, rescaled so the mean is the target, capped at 4K.
    areas = np.exp(rng.uniform(np.log(megapixels / 5), np.log(megapixels * 2.2), count))
    areas = np.minimum(areas * megapixels / areas.mean(), 8.3)
    if count >= 10 and megapixels * count > 8.3 * 2:  # one in ten is a 4K frame; the rest keep the mean
        big = np.arange(count) % 10 == 5
        areas[big] = 8.3
        areas[~big] *= (megapixels * count - 8.3 * big.sum()) / areas[~big].sum()
    files = []
    for i, area in enumerate(areas):
        source = sources[i % len(sources)]
        aspect = source.width / source.height
        height = int(round((area * 1e6 / aspect) ** 0.5))
        width = int(round(height * aspect))
        if max(width, height) > 3840:  # 4K's long side at most
            width, height = round(width * 3840 / max(width, height)), round(height * 3840 / max(width, height))
        path = folder / f"photo_{i:03d}_{width}x{height}.{'png' if i % 3 == 2 else 'jpg'}"
        if not path.exists():
            source.resize((width, height), Image.Resampling.BICUBIC).save(path, quality=90)
        files.append(path)
    return files


def process_start_time() -> float:
    """When this process started, on ``time.time()``'s clock (Linux: from /proc; elsewhere the
    first call of this function)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def run_bench(predictor: Predictor, inputs: Sequence[Path], *, options: RefineOptions = RefineOptions(),
              fmt: str = "png", compression: int = 3, batch_size: int = 1, workers: int | None = None,
              started: float | None = None) -> dict:
    """Remove the backgrounds of ``inputs`` into a temporary folder and report the figures:
    ``images_per_s`` (from ``started``, default: now), ``engine_images_per_s`` (the engine's
    run alone), ``stages`` (ms per image), ``network_share`` and the settings."""
    started = time.time() if started is None else started
    with tempfile.TemporaryDirectory(prefix="u2seg-bench-") as tmp:
        items = [Item(path, str(path), Path(tmp) / f"{i:06d}.{fmt}") for i, path in enumerate(inputs)]
        engine_start = time.time()
        report = run_job(predictor, items, RemovalJob(options, fmt, compression), batch_size=batch_size,
                         workers=workers, progress=False)
        finished = time.time()
    stages = report.stages.per_image_ms()
    busy = sum(stages.values())
    backend = predictor.backend
    device = getattr(backend, "device", None)
    return {
        "images": report.processed, "failed": len(report.failed),
        "images_per_s": report.processed / max(finished - started, 1e-9),
        "engine_images_per_s": report.processed / max(finished - engine_start, 1e-9),
        "startup_s": engine_start - started,
        "stages": {k: round(v, 3) for k, v in stages.items()},
        "network_share": stages.get("network", 0.0) / busy if busy else 0.0,
        "settings": {"model": predictor.model_name, "backend": backend.name, "precision": backend.precision,
                     "device": str(device) if device is not None else "cpu",
                     "arithmetic": "device" if predictor.device_arithmetic is not None else "host",
                     "threads": _network_threads(backend), "workers": workers or _workers(),
                     "batch_size": batch_size, "input_size": list(predictor.preprocessing.size),
                     "format": fmt, "compression": compression},
        "failures": report.failed[:5],
    }


def _workers() -> int:
    return default_workers()


def _network_threads(backend) -> int | None:
    if backend.name == "torch":
        import torch

        return torch.get_num_threads()
    return getattr(backend, "threads", None)


def format_bench(result: dict) -> str:
    """The figures as a few lines for a terminal."""
    s = result["settings"]
    lines = [f"{result['images']} images, model {s['model']}, backend {s['backend']} ({s['precision']}) on "
             f"{s['device']}, arithmetic on the {s['arithmetic']}, {s['workers']} workers, batch {s['batch_size']}, "
             f"network threads {s['threads'] or 'default'}"]
    lines += [f"  {stage:12} {ms:9.2f} ms/image" for stage, ms in result["stages"].items()]
    lines.append(f"  network share {100 * result['network_share']:.0f} % of the stage time")
    lines.append(f"end to end: {result['images_per_s']:.2f} images/s (start-up {result['startup_s']:.1f} s "
                 f"included); engine alone {result['engine_images_per_s']:.2f} images/s")
    if result["failed"]:
        lines.append(f"{result['failed']} failed, e.g. {result['failures'][0]}")
    return "\n".join(lines)

