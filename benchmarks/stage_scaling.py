"""Which CPU stages scale with threads: each stage alone, over the same photos, on 1 thread and
on N threads; a stage that holds the GIL (or a lock) shows a speed-up near 1.

    .venv/bin/python benchmarks/stage_scaling.py --count 16 --megapixels 1.5 --threads 2

Stages are the engine's (decode, preprocess, postprocess, refine, encode) with the default
settings: Lanczos in and out, min-max, RGBA cutout, PNG at compression 3. Prints one JSON line
per stage: seconds on 1 thread, on N, and the speed-up (ideal: N).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from u2seg.image_encode import encode_image  # noqa: E402
from u2seg.image_io import load_image  # noqa: E402
from u2seg.infer.bench import FixedMapBackend, generated_photos  # noqa: E402
from u2seg.infer.predictor import Predictor  # noqa: E402
from u2seg.infer.refine import RefineOptions, refine_output  # noqa: E402


def timed(fn, items, threads: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, items))
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--megapixels", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photos-dir", type=Path, default=Path("benchmarks/results/photos"))
    args = parser.parse_args()

    files = generated_photos(args.photos_dir / f"{args.count}-{args.megapixels:g}mp", args.count, args.megapixels)
    predictor = Predictor(backend=FixedMapBackend())
    images = [load_image(f) for f in files]
    prepared = [predictor.prepare(im) for im in images]
    probs = predictor.infer(prepared)
    maps = [predictor.postprocess(p, im.size) for p, im in zip(probs, images)]
    outputs = [refine_output(im, m, RefineOptions()) for im, m in zip(images, maps)]
    stages = {
        "decode": (lambda f: load_image(f), files),
        "preprocess": (lambda im: predictor.prepare(im), images),
        "postprocess": (lambda pair: predictor.postprocess(pair[0], pair[1].size), list(zip(probs, images))),
        "refine": (lambda pair: refine_output(pair[0], pair[1], RefineOptions()), list(zip(images, maps))),
        "encode": (lambda out: encode_image(out, "png", compression=3), outputs),
    }
    for name, (fn, items) in stages.items():
        one = timed(fn, items, 1, args.rounds)
        many = timed(fn, items, args.threads, args.rounds)
        print(json.dumps({"stage": name, "images": len(items), "ms_per_image_1_thread": round(1000 * one / len(items), 2),
                          f"ms_per_image_{args.threads}_threads": round(1000 * many / len(items), 2),
                          "speedup": round(one / many, 2)}), flush=True)



if __name__ == "__main__":
    main()
