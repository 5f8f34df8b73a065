"""Does the confidence score know how good a mask is? Spearman correlation between (1 − score)
and the true per-image error (MAE of the mask, 0–1).

    .venv/bin/python benchmarks/confidence.py                     # 120 synthetic + natural photos
    .venv/bin/python benchmarks/confidence.py --count 60 --json out.json

Sets: (1) held-out synthetic images with exact masks (``u2seg synth``'s generator, seeds the
training configs never use), masks from the pretrained U²-Net-P; (2) scikit-image's natural
photos, where no exact mask exists: the reference is U²-Net's mask (the score of U²-Net-P's mask
against the big model's), stated as such. Goal: ρ ≥ 0.6 on the synthetic set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NATURAL = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "hubble_deep_field",
           "cat", "horse", "motorcycle_left", "page", "text", "moon", "brick", "grass", "gravel", "retina",
           "eagle", "logo", "clock", "microaneurysms", "skin", "colorwheel", "coins")


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def score_and_error(predictor, image, truth: np.ndarray) -> tuple[float, float, dict]:
    from u2seg.infer.engine import Item
    from u2seg.infer.removal import RemovalJob, run_one
    from u2seg.infer.refine import RefineOptions

    job = RemovalJob(RefineOptions(only_mask=True), fmt=None, )
    mask = run_one(predictor, Item.of(image), job)
    confidence = mask.info["u2seg_confidence"]
    error = float(np.abs(np.asarray(mask, np.float32) / 255.0 - truth).mean())
    return confidence["score"], error, confidence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=120, help="synthetic images")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--seed", type=int, default=9001, help="held out: the training configs use small seeds")
    parser.add_argument("--no-natural", action="store_true", help="skip the natural photos (needs u2net)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

    from PIL import Image
    from skimage import data

    from u2seg.data.synth import synth_sample
    from u2seg.infer.sessions import get_predictor

    small = get_predictor("u2netp")
    started = time.perf_counter()
    scores, errors = [], []
    for i in range(args.count):
        sample = synth_sample(i, size=args.size, seed=args.seed)
        truth = (np.asarray(sample.mask) > 0).astype(np.float32)
        score, error, _ = score_and_error(small, Image.fromarray(sample.image), truth)
        scores.append(score)
        errors.append(error)
    synthetic = {"set": "synthetic", "images": args.count, "spearman_error_vs_1_minus_score":
                 round(spearman([1 - s for s in scores], errors), 3),
                 "mean_score": round(float(np.mean(scores)), 3), "mean_mae": round(float(np.mean(errors)), 4),
                 "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(synthetic))
    results = [synthetic]

    if not args.no_natural:
        big = get_predictor("u2net")
        n_scores, n_errors, names = [], [], []
        from u2seg.infer.engine import Item
        from u2seg.infer.removal import RemovalJob, run_one
        from u2seg.infer.refine import RefineOptions

        for name in NATURAL:
            try:
                image = Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
            except Exception:  # noqa: BLE001 - some need a download
                continue
            reference = run_one(big, Item.of(image), RemovalJob(RefineOptions(only_mask=True), fmt=None))
            truth = np.asarray(reference, np.float32) / 255.0
            score, error, _ = score_and_error(small, image, truth)
            n_scores.append(score)
            n_errors.append(error)
            names.append(name)
        natural = {"set": "natural photos vs U²-Net's masks", "images": len(names),
                   "spearman_error_vs_1_minus_score": round(spearman([1 - s for s in n_scores], n_errors), 3),
                   "per_image": {n: {"score": round(s, 3), "mae_vs_u2net": round(e, 4)}
                                 for n, s, e in zip(names, n_scores, n_errors)}}
        print(json.dumps({k: v for k, v in natural.items() if k != "per_image"}))
        results.append(natural)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
