"""Edges at full resolution: Lanczos upsampling vs the guided filter vs closed-form matting.

The network sees 320 px, so a 4-megapixel photo's mask has edges ~7 px wide whatever the
picture holds. This measures three ways to bring the 320-px prediction to full resolution on
synthetic composites whose alpha is known exactly (:func:`u2seg.data.synth.fine_sample`: hair
strands 1–3 px wide, holes, feathered and wispy edges over photo-like backgrounds):

* ``lanczos``: today's output (the Predictor's Lanczos resize; rembg's too);
* ``guided``: the ``edge_refine`` option (:func:`u2seg.infer.guided_filter.guided_upsample` on
  that map, through :func:`u2seg.infer.refine.refine_alpha`, exactly as every front end runs it);
  ``guided_from_network`` runs the filter on the network's own 320×320 map instead (no Lanczos
  first), to show the refine path loses nothing by starting from the resized map;
* ``matting``: the ``alpha_matting`` option (closed-form matting by pymatting on a trimap from the
  mask, rembg's thresholds 240/10 and erosion 10, through the same ``refine_alpha``). pymatting's
  numba compile is done on a tiny image first, outside the timing.

Metrics, per image, then averaged over images:

* ``band_mae``: mean |predicted − true alpha| over the *edge band*: pixels within 10 px of
  where the true alpha is strictly between 0 and 1 or changes (a 3×3 morphological gradient);
* ``grad_err``: mean |∇predicted − ∇true| (Euclidean norm of the difference, alpha units per
  pixel) over the band, derivatives of Gaussians with sigma 1.4 as in alphamatting.com's
  gradient error;
* ``far_mae`` (outside the band) and ``mae`` (whole image), so that gains at the edge that cost
  elsewhere show; ``ms_per_mpx``: the method's own time per megapixel (for ``guided`` and
  ``matting`` the refinement step on the resized map, for ``lanczos`` the resize); the network
  (shared by all) is reported separately.

    U2SEG_HOME=.cache/u2seg-test .venv/bin/python benchmarks/edges.py --count 8 --size 2304 --json edges.json

One JSON line per method on stdout, then a summary line; ``--json`` writes the summary with
the per-image figures. Needs the pretrained u2netp (``U2SEG_HOME``; the repository's test cache
is used when the variable is not set and the cache exists) and pymatting (``--no-matting``
leaves it out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BAND_RADIUS = 10
GRADIENT_SIGMA = 1.4


def edge_band(alpha: np.ndarray, radius: int = BAND_RADIUS) -> np.ndarray:
    """bool mask of the pixels within ``radius`` of a fractional or changing true alpha."""
    a8 = np.asarray(alpha)
    soft = (a8 > 0) & (a8 < 255)
    changes = cv2.morphologyEx(a8, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate((soft | changes).astype(np.uint8), disk) > 0


def _gradient(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    smooth = cv2.GaussianBlur(values.astype(np.float32), (0, 0), GRADIENT_SIGMA)
    return (cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=1) * 0.5,  # central differences
            cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=1) * 0.5)


def measure(pred: np.ndarray, truth: np.ndarray, band: np.ndarray) -> dict[str, float]:
    """The figures of one prediction (float in [0, 1]) against the true alpha (float)."""
    error = np.abs(pred - truth)
    px, py = _gradient(pred)
    tx, ty = _gradient(truth)
    grad = np.hypot(px - tx, py - ty)
    return {"band_mae": float(error[band].mean()), "grad_err": float(grad[band].mean()),
            "far_mae": float(error[~band].mean()) if (~band).any() else 0.0, "mae": float(error.mean())}


def _predictor(weights: str | None):
    from u2seg.infer import Predictor

    cache = REPO / ".cache" / "u2seg-test"
    if weights is None and "U2SEG_HOME" not in os.environ and (cache / "weights" / "u2netp").exists():
        weights = str(cache / "weights" / "u2netp")
    return Predictor("u2netp" if weights is None else None, weights=weights, backend="auto")


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=8, help="composites (default 8)")
    parser.add_argument("--size", type=int, default=2304, help="width; height is 3/4 (default 2304: 4.0 Mpx)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--weights", help="u2netp weights (default: the pretrained ones)")
    parser.add_argument("--no-matting", action="store_true", help="leave closed-form matting out")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the summary here")
    args = parser.parse_args(argv)

    from u2seg.data.synth import fine_sample
    from u2seg.infer.guided_filter import guided_upsample
    from u2seg.infer.refine import RefineOptions, refine_alpha

    predictor = _predictor(args.weights)
    methods = ["lanczos", "guided", "guided_from_network"] + ([] if args.no_matting else ["matting"])
    guided_options, matting_options = RefineOptions(edge_refine=True), RefineOptions(alpha_matting=True)
    if not args.no_matting:  # pymatting's numba compile (about a minute the first time), untimed
        tiny = fine_sample(0, size=96, seed=99)
        refine_alpha(Image.fromarray(tiny.image), tiny.mask.astype(np.float32) / 255, matting_options)

    rows: list[dict] = []
    seconds = {m: 0.0 for m in methods}
    network_s = generate_s = 0.0
    megapixels = 0.0
    for index in range(args.count):
        sample, s = _timed(fine_sample, index, size=args.size, seed=args.seed)
        generate_s += s
        image = Image.fromarray(sample.image)
        truth = sample.mask.astype(np.float32) / 255.0
        band = edge_band(sample.mask)
        mpx = image.width * image.height / 1e6
        megapixels += mpx

        probs, s = _timed(predictor.network_probabilities, [image])
        network_s += s
        probs = probs[0]
        outputs: dict[str, np.ndarray] = {}
        outputs["lanczos"], seconds_l = _timed(predictor.foreground, probs, image.size)
        outputs["guided"], seconds_g = _timed(refine_alpha, image, outputs["lanczos"], guided_options)
        network_map = probs[0]
        lo, hi = float(network_map.min()), float(network_map.max())
        network_map = (network_map - lo) / max(hi - lo, 1e-12)  # the Predictor's min-max, before resizing
        outputs["guided_from_network"], seconds_n = _timed(guided_upsample, network_map, sample.image)
        step = {"lanczos": seconds_l, "guided": seconds_g, "guided_from_network": seconds_n}
        if "matting" in methods:
            outputs["matting"], step["matting"] = _timed(refine_alpha, image, outputs["lanczos"], matting_options)
        row = {"index": index, "width": image.width, "height": image.height,
               "band_fraction": round(float(band.mean()), 4)}
        for method in methods:
            seconds[method] += step[method]
            figures = measure(outputs[method], truth, band)
            row[method] = {k: round(v, 5) for k, v in figures.items()} | {"ms": round(1000 * step[method], 1)}
        rows.append(row)
        print(f"# image {index}: {image.width}×{image.height}, "
              + ", ".join(f"{m} band MAE {row[m]['band_mae']:.4f} ({row[m]['ms']:.0f} ms)" for m in methods),
              file=sys.stderr, flush=True)

    summary: dict = {
        "benchmark": "edges", "images": args.count, "size": [rows[0]["width"], rows[0]["height"]],
        "megapixels_per_image": round(megapixels / args.count, 2), "seed": args.seed,
        "band_radius_px": BAND_RADIUS, "gradient_sigma": GRADIENT_SIGMA,
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"),
        "backend": predictor.backend.name, "network_ms_per_image": round(1000 * network_s / args.count, 1),
        "generate_s_per_image": round(generate_s / args.count, 2), "methods": {},
    }
    for method in methods:
        line = {"method": method}
        for key in ("band_mae", "grad_err", "far_mae", "mae"):
            line[key] = round(float(np.mean([r[method][key] for r in rows])), 5)
        line["ms_per_mpx"] = round(1000 * seconds[method] / megapixels, 1)
        summary["methods"][method] = line
        print(json.dumps(line), flush=True)
    lanczos, guided = summary["methods"]["lanczos"], summary["methods"]["guided"]
    verdict = {
        "guided_band_mae_vs_lanczos": round(guided["band_mae"] / lanczos["band_mae"], 3),
        "guided_grad_err_vs_lanczos": round(guided["grad_err"] / lanczos["grad_err"], 3),
        "guided_better_on_every_image": all(r["guided"]["band_mae"] < r["lanczos"]["band_mae"] for r in rows),
    }
    if "matting" in methods:
        verdict["guided_time_vs_matting"] = round(guided["ms_per_mpx"] / summary["methods"]["matting"]["ms_per_mpx"], 4)
    summary["verdict"] = verdict
    print(json.dumps({"summary": verdict}), flush=True)
    if args.json is not None:
        summary["per_image"] = rows
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
