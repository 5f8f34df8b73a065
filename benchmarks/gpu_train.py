"""Training throughput of u2seg's trainer on one GPU: the official recipe (resize 320, random 288
crop, flip, Adam 1e-3, seven BCE terms) with the fast settings (bf16 autocast, channels-last,
fused Adam, the decode-once cache with crop/flip/normalisation on the GPU), eager against
``compile: reduce-overhead`` (torch.compile with CUDA graphs), for U²-Net-P and U²-Net at batch 12
and 48. Prints one JSON line per figure; at most ``--budget`` seconds (default 290) in all.

    .venv/bin/python benchmarks/gpu_train.py                        # CUDA: 2 models × 2 batches × 2 modes
    .venv/bin/python benchmarks/gpu_train.py --device cpu --quick   # a smoke run: u2netp, 64 px, eager

Each figure runs ``u2seg.train.train`` for ``warmup + steps`` iterations on a synthetic set of 400
px images; a ``torch.optim`` step hook stamps every update, and the rate is ``steps × batch`` over
the time between the last warm-up update and the last update (set-up, decoding into the cache and
the warm-up steps, compilation included, are outside it). ``first_step_s``: from the call to the
end of the first step (set-up, decoding into the cache, and with compile mostly compilation).
Eager figures come first; a compiled figure that would not fit in the remaining budget (judged by
the slowest compiled one so far) is reported as skipped.

The goals of issue 14 on one H200: U²-Net-P at batch 12 ≥ 3 × 139 images/s; at batch 48 within 15 %
of the no-data ceiling (U²-Net-P 499, U²-Net 354 images/s, eager, bf16, channels-last).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


class _Stamps:
    """The time of every optimizer step, from a global step post-hook."""

    def __init__(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.times: list[float] = []
        self._handle = register_optimizer_step_post_hook(lambda *_: self.times.append(time.perf_counter()))

    def close(self) -> list[float]:
        self._handle.remove()
        return self.times


def run_one(args: argparse.Namespace, data: Path, out: Path, model: str, batch: int, mode: str) -> dict:
    from u2seg.train import train

    cuda = args.device.startswith("cuda")
    config = {
        "model": {"name": model},
        "data": {"train": {"root": str(data),
                           "transform": {"name": "official_train", "size": args.size, "crop": args.crop}},
                 "cache": "memory"},
        "batch_size": batch, "iterations": args.warmup + args.steps,
        "precision": "bf16" if cuda else "fp32", "channels_last": cuda,
        "compile": "off" if mode == "eager" else ("reduce-overhead" if cuda else "default"),
        "device": args.device, "workers": args.workers, "log_interval": args.warmup + args.steps,
        "eval_interval": 0, "save_interval": 0, "tensorboard": False, "output_dir": str(out),
    }
    stamps = _Stamps()
    start = time.perf_counter()
    try:
        train(config, progress=False)
    finally:
        times = stamps.close()
    wall = time.perf_counter() - start
    window = times[-1] - times[args.warmup - 1]
    first = times[0] - start  # set-up and the first step: compilation with compile on
    return {"model": model, "batch": batch, "mode": mode, "compile": config["compile"],
            "images_per_s": round(args.steps * batch / window, 2), "step_ms": round(1000 * window / args.steps, 2),
            "first_step_s": round(first, 2), "wall_s": round(wall, 2), "device": args.device,
            "precision": config["precision"], "data_path": "cached", "size": args.size, "crop": args.crop}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="u2netp, batch 2, 64 → 56 px, eager: a smoke run")
    parser.add_argument("--models", nargs="+", default=["u2netp", "u2net"])
    parser.add_argument("--batches", nargs="+", type=int, default=[12, 48])
    parser.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=["eager", "compiled"])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--crop", type=int, default=288)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per figure")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, cuDNN autotuning)")
    parser.add_argument("--images", type=int, default=96, help="synthetic 400 px training images")
    parser.add_argument("--workers", type=int, default=8, help="threads decoding into the cache")
    parser.add_argument("--budget", type=float, default=290.0, help="seconds for all figures")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.size, args.crop = ["u2netp"], [2], 64, 56
        args.steps, args.warmup, args.images = 3, 1, 8
        if "--modes" not in (argv if argv is not None else sys.argv[1:]):
            args.modes = ["eager"]  # compiling U²-Net on a small CPU takes minutes
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available here: use --device cpu (with --quick)")

    from u2seg.data.synth import make_synthetic_dataset

    started = time.perf_counter()
    compile_cost: float | None = None
    with tempfile.TemporaryDirectory(prefix="u2seg-gpu-train-") as tmp:
        data = make_synthetic_dataset(Path(tmp) / "data", count=args.images, size=400 if not args.quick else 96,
                                      seed=0)
        plan = [(mode, model, batch) for mode in args.modes for model in args.models for batch in args.batches]
        for i, (mode, model, batch) in enumerate(plan):
            left = args.budget - (time.perf_counter() - started)
            need = (compile_cost or 60.0) if mode == "compiled" else 0.0  # a first compile: a minute or more
            if left <= need:
                print(json.dumps({"model": model, "batch": batch, "mode": mode, "skipped": True,
                                  "why": f"{left:.0f} s of the budget left, about {need:.0f} s needed"}), flush=True)
                continue
            row = run_one(args, data, Path(tmp) / f"run-{i}", model, batch, mode)
            if mode == "compiled":
                compile_cost = max(compile_cost or 0.0, row["wall_s"])
            print(json.dumps(row), flush=True)
    print(json.dumps({"total_s": round(time.perf_counter() - started, 1), "torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
