"""The cascade ``-m u2netp+u2net`` against U²-Net alone: time, and agreement with U²-Net's masks.

    .venv/bin/python benchmarks/cascade.py                 # natural photos + synthetic composites
    .venv/bin/python benchmarks/cascade.py --json out.json

Each image goes through both models once (network time measured per image, one thread per
model call as in a folder run); the cascade at threshold t is then "U²-Net-P's mask when its
confidence ≥ t, else U²-Net's", costing U²-Net-P's time plus U²-Net's on the escalated images.
One real run of ``remove_files`` with the cascade at the default threshold, against one with
U²-Net, checks those sums end to end. Goal: within 2/255 (mean |Δ|) of U²-Net on ≥ 90 % of
images at ≤ 50 % of its time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NATURAL = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "cat", "horse",
           "motorcycle_left", "eagle", "retina", "skin", "colorwheel", "coins", "brick", "grass", "gravel",
           "page", "text", "moon", "logo", "clock", "hubble_deep_field", "microaneurysms")


def images(count_synthetic: int, seed: int) -> list[tuple[str, "object"]]:
    from PIL import Image
    from skimage import data

    from u2seg.data.synth import synth_sample

    out = []
    for name in NATURAL:
        try:
            out.append((name, Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")))
        except Exception:  # noqa: BLE001 - some need a download
            continue
    for i in range(count_synthetic):
        out.append((f"synth-{i:03d}", Image.fromarray(synth_sample(i, size=480, seed=seed).image)))
    return out


def mask_and_time(predictor, image) -> tuple[np.ndarray, float, float]:
    from u2seg.infer.confidence import estimate_confidence, foreground_probabilities

    prepared = predictor.prepare(image)
    started = time.perf_counter()
    (probs,) = predictor.infer([prepared])
    seconds = time.perf_counter() - started
    score = estimate_confidence(foreground_probabilities(predictor.to_host(probs))).score
    mask = np.round(predictor.foreground(probs, image.size) * 255)
    return mask, seconds, score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", type=int, default=16, help="synthetic composites beside the photos")
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

    from u2seg.infer.cascade import DEFAULT_CASCADE_BELOW
    from u2seg.infer.sessions import get_predictor

    small, large = get_predictor("u2netp"), get_predictor("u2net")
    rows = []
    for name, image in images(args.synthetic, args.seed):
        small_mask, small_s, score = mask_and_time(small, image)
        large_mask, large_s, _ = mask_and_time(large, image)
        rows.append({"name": name, "score": score, "small_s": small_s, "large_s": large_s,
                     "small_vs_large": float(np.abs(small_mask - large_mask).mean())})
    large_total = sum(r["large_s"] for r in rows)
    curve = []
    for below in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
        escalated = [r for r in rows if r["score"] < below]
        seconds = sum(r["small_s"] for r in rows) + sum(r["large_s"] for r in escalated)
        within = sum(1 for r in rows if r["score"] < below or r["small_vs_large"] <= 2.0)
        curve.append({"below": below, "escalated": len(escalated), "time_vs_u2net": round(seconds / large_total, 3),
                      "within_2_of_u2net": round(within / len(rows), 3)})
        print(json.dumps(curve[-1]))
    summary = {"images": len(rows), "u2netp_vs_u2net_s_per_image": [
        round(np.mean([r["small_s"] for r in rows]), 3), round(np.mean([r["large_s"] for r in rows]), 3)],
        "u2netp_alone_within_2": round(np.mean([r["small_vs_large"] <= 2.0 for r in rows]), 3), "curve": curve}

    # End to end at the default threshold: remove_files with the cascade vs with U²-Net.
    from PIL import Image as PILImage

    from u2seg.infer.files import plan_outputs
    from u2seg.infer.refine import RefineOptions
    from u2seg.infer.removal import remove_files

    cascade = get_predictor("u2netp+u2net")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for name, image in images(args.synthetic, args.seed):
            image.save(folder / f"{name}.png")
        timings = {}
        for label, predictor in (("u2net", large), ("cascade", cascade)):
            out = Path(tmp) / label
            plan = plan_outputs([str(folder)], out)
            started = time.perf_counter()
            remove_files(predictor, plan.tasks, RefineOptions(only_mask=True), progress=False)
            timings[label] = time.perf_counter() - started
        diffs = []
        for path in sorted((Path(tmp) / "u2net").iterdir()):
            a = np.asarray(PILImage.open(path), np.float32)
            b = np.asarray(PILImage.open(Path(tmp) / "cascade" / path.name), np.float32)
            diffs.append(float(np.abs(a - b).mean()))
    summary["end_to_end"] = {"below": DEFAULT_CASCADE_BELOW, "u2net_s": round(timings["u2net"], 1),
                             "cascade_s": round(timings["cascade"], 1),
                             "time_vs_u2net": round(timings["cascade"] / timings["u2net"], 3),
                             "within_2_of_u2net": round(float(np.mean([d <= 2.0 for d in diffs])), 3)}
    print(json.dumps(summary["end_to_end"]))
    summary["per_image"] = rows
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
