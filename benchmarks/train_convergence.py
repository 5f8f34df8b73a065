"""How fast U²-Net-P learns from scratch on this machine: maxF and MAE on a held-out synthetic
set against wall time. Goal (issue 3): maxF ≥ 0.90 within 15 minutes on a 2-core CPU.

It runs the real trainer (`u2seg.train.train`) on a config built here with a 15-minute time budget
(`max_minutes`: the cosine decay follows the clock and the run stops so its final evaluation fits),
evaluates the held-out set every `--eval-every` steps (the trainer's evaluation, at the training
input size), and at the end scores the best weights at the held-out images' own size with
`u2seg eval`'s code (`evaluate_predictor`, the inference pipeline, against the real masks): the
goal's figure. `wall_s` counts from the call to `train` (data checks, training, evaluations,
checkpoints); `train_s` is loading + updates alone; making the synthetic sets is not counted.

    .venv/bin/python benchmarks/train_convergence.py          # the best recipe found (BENCHMARKS.md)
    .venv/bin/python benchmarks/train_convergence.py --stages  # one crop size (80 px) throughout
    .venv/bin/python benchmarks/train_convergence.py --minutes 0 --iterations 1450 --size 72 --stages
    .venv/bin/python benchmarks/train_convergence.py --set precision=fp32   # any config key
    # make train-demo's recipe: the pretrained weights fine-tuned on 96 px crops of the 192 px
    # images, BatchNorm statistics frozen, evaluated (and saved) at 192 px
    .venv/bin/python benchmarks/train_convergence.py --minutes 3.5 --stages --resize 192 --crop 96 \
        --eval-size 192 --lr 5e-4 --warmup 10 --precision auto --set model.pretrained=true --set freeze_bn=true

Defaults: progressive resizing, 56 px crops (of the images resized to 64) for the first half of
the budget, then 80 px crops (of 91); evaluation at 80 px; batch 16, Adam lr 5e-3 with 100
warm-up steps and cosine decay (over the 15 minutes) to 1 %, BCE + IoU on the seven outputs,
bf16 autocast and channels_last.

The train and held-out sets come from different seeds of `make_synthetic_dataset` (no image is
shared). Results: a table on stdout and benchmarks/results/train_convergence.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_config(args: argparse.Namespace, data: Path, out: Path) -> dict:
    crop = args.crop or args.size
    return {
        "model": {"name": "u2netp", "num_classes": 1, "pretrained": False},
        "data": {
            "train": {"root": str(data / "train"), "transform": {"name": "official_train", "size": args.resize or
                                                                 round(args.size * 8 / 7), "crop": crop},
                      "stages": [{"until": until, "transform": {"name": "official_train", "size": size, "crop": c}}
                                 for until, size, c in args.stages]},
            "val": {"root": str(data / "heldout"), "transform": {"name": "official_eval",
                                                                 "size": args.eval_size or crop}},
        },
        "batch_size": args.batch,
        "iterations": args.iterations,
        "max_minutes": args.minutes,
        "optimizer": {"name": "adam", "lr": args.lr},
        "schedule": {"name": args.schedule, "warmup_iters": args.warmup, "min_lr": args.lr * 0.01},
        "loss": {"iou_weight": args.iou_weight},
        "precision": args.precision,
        "channels_last": True,
        "eval_interval": args.eval_every,
        "eval_batch_size": 16,
        "save_interval": 0,
        "log_interval": 25,
        "seed": args.seed,
        "output_dir": str(out),
    }


def _stage(text: str) -> tuple[float, int, int]:
    until, resize, crop = text.split(":")
    return float(until), int(resize), int(crop)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-count", type=int, default=800)
    p.add_argument("--heldout-count", type=int, default=100)
    p.add_argument("--image-size", type=int, default=192, help="synthetic image side (px)")
    p.add_argument("--size", type=int, default=80, help="final training crop = evaluation input size (px)")
    p.add_argument("--resize", type=int, help="resize before the random crop (default size·8/7)")
    p.add_argument("--crop", type=int, help="default --size")
    p.add_argument("--eval-size", type=int, help="the evaluation's input size, which the weights carry (default "
                   "the final crop)")
    p.add_argument("--stages", type=_stage, nargs="*", default=[(0.5, 64, 56)], metavar="UNTIL:RESIZE:CROP",
                   help="earlier, smaller crops (progressive resizing); none: one crop size throughout")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--minutes", type=float, default=15.0,
                   help="time budget: the schedule decays over it and the run ends within it (0: none)")
    p.add_argument("--iterations", type=int, help="a step budget instead (or as well)")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--iou-weight", type=float, default=1.0)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--work", type=Path, help="folder for data and the run (default: a temporary one)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_convergence.json")
    args = p.parse_args(argv)
    args.minutes = args.minutes or None
    if args.minutes is None and args.iterations is None:
        p.error("give --minutes or --iterations")

    import torch

    from u2seg.data.synth import make_synthetic_dataset
    from u2seg.evaluation import evaluate_predictor
    from u2seg.infer import Predictor
    from u2seg.train import train
    from u2seg.train.config import apply_overrides, config_from_dict
    from u2seg.data import build_dataset

    work = args.work or Path(tempfile.mkdtemp(prefix="u2seg-convergence-"))
    data = work / "data"
    t0 = time.perf_counter()
    if not (data / "train").exists():
        make_synthetic_dataset(data / "train", count=args.train_count, size=args.image_size, seed=0)
        make_synthetic_dataset(data / "heldout", count=args.heldout_count, size=args.image_size, seed=1000)
    synth_s = time.perf_counter() - t0
    run = work / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    raw = apply_overrides(build_config(args, data, run), args.overrides)
    config = config_from_dict(raw)

    start = time.time()
    result = train(config, progress=sys.stderr.isatty())
    wall_total = time.time() - start
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["img_per_s"] for r in rows if r["kind"] == "train" and r["step"] > 50]
    curve = [{"step": r["step"], "train_s": round(r["train_seconds"], 1),
              "wall_s": round(r["time"] - start, 1) if "time" in r else None,
              "maxF": round(r["maxF"], 4), "MAE": round(r["MAE"], 4)} for r in rows if r["kind"] == "eval"]

    heldout = build_dataset(config.data.val, 1)
    predictor = Predictor(weights=run / "best", backend="torch")
    full = evaluate_predictor(predictor, heldout, batch_size=16).summary
    reached = next((c for c in curve if c["maxF"] >= 0.90), None)
    budget = 900.0
    met = wall_total <= budget and full["maxF"] >= 0.90

    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "config": raw,
        "synth_seconds": round(synth_s, 1),
        "wall_seconds": round(wall_total, 1),
        "train_seconds": round(result["train_seconds"], 1),
        "steps": result["step"],
        "median_img_per_s": round(float(sorted(speeds)[len(speeds) // 2]), 1) if speeds else None,
        "curve": curve,
        "best_step": result["best_step"],
        "heldout_full_resolution": {k: round(v, 4) for k, v in full.items()},
        "first_maxF_0.90": reached,
        "goal_met": met,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    stages = ", ".join(f"{c} px until {u:g}" for u, _, c in args.stages)
    start_from = "fine-tuned from the pretrained weights" if config.model.pretrained else "from scratch"
    print(f"U²-Net-P {start_from}{' (BatchNorm statistics frozen)' if config.freeze_bn else ''}: {args.train_count} train / {args.heldout_count} held-out synthetic images of "
          f"{args.image_size} px; crops {stages + ', then ' if stages else ''}{config.data.train.transform}; "
          f"batch {args.batch}; {result['step']} steps in {wall_total:.0f} s wall "
          f"(median {report['median_img_per_s']} img/s)")
    print("| step | train s | wall s | maxF | MAE |\n|---:|---:|---:|---:|---:|")
    for c in curve:
        print(f"| {c['step']} | {c['train_s']} | {c['wall_s']} | {c['maxF']:.4f} | {c['MAE']:.4f} |")
    print(f"best weights (step {result['best_step']}) at full resolution ({args.image_size} px): "
          f"maxF {full['maxF']:.4f}, MAE {full['MAE']:.4f}, S {full['S']:.4f}")
    print(f"in-training evaluation (at {args.eval_size or args.crop or args.size} px) first ≥ 0.90: " +
          (f"step {reached['step']}, {reached['wall_s']} s wall" if reached else "never"))
    print(f"goal (weights trained within {budget:.0f} s wall score maxF ≥ 0.90 on the held-out set at its own "
          f"resolution): {'met' if met else 'NOT met'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
