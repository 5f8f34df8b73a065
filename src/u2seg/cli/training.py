"""Datasets and training: ``u2seg synth`` and ``u2seg split`` make them, ``u2seg data check`` checks a
training config's sets, ``u2seg train`` trains."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_FAILED_INPUTS, EXIT_OK, err


def add_synth_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic salient-object dataset (images/ + masks/)")
    p.add_argument("outdir", type=Path)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--size", type=int, metavar="N",
                   help="image side (default 256); with --fine the width, height 3/4 of it (default 2048)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fine", action="store_true",
                   help="high-resolution composites with hair, holes and soft edges; masks are exact 8-bit alpha")
    p.add_argument("--multiclass", action="store_true", help="class-index masks (background + shape types)")
    p.add_argument("--num-classes", type=int, default=3, help="with --multiclass (2…5)")
    p.add_argument("--video", action="store_true",
                   help="video clips instead (clips/NNNNN.mp4, masks/NNNNN/000001.png …): an object moving, turning, "
                        "scaling, partly leaving the frame; --size is the width (default 320), height 3/4 of it")
    p.add_argument("--frames", type=int, default=48, metavar="F", help="with --video: frames per clip (default 48)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_synth)
    s = sub.add_parser("split", help="write train.txt / val.txt (/ test.txt) for images/ + masks/ under ROOT")
    s.add_argument("root", type=Path)
    s.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.2], metavar="R")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--images-dir", default="images")
    s.add_argument("--masks-dir", default="masks")
    s.add_argument("--separator", default=" ")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_cmd_split)


def _cmd_synth(args: argparse.Namespace) -> int:
    from ..data.synth import make_synthetic_dataset

    if args.video:
        from ..data.synth_video import make_synthetic_videos

        width = args.size or 320
        print(make_synthetic_videos(args.outdir, count=args.count, frames=args.frames, width=width,
                                    height=max(16, (width * 3 // 4) // 2 * 2), seed=args.seed, overwrite=args.overwrite))
        return EXIT_OK

    size = args.size if args.size is not None else (2048 if args.fine else 256)
    out = make_synthetic_dataset(args.outdir, count=args.count, size=size, seed=args.seed,
                                 multiclass=args.multiclass, num_classes=args.num_classes, overwrite=args.overwrite,
                                 fine=args.fine)
    print(out)
    return EXIT_OK


def _cmd_split(args: argparse.Namespace) -> int:
    from ..data.split import split_dataset

    lists = split_dataset(args.root, tuple(args.ratios), args.seed, images_dir=args.images_dir,
                          masks_dir=args.masks_dir, separator=args.separator, overwrite=args.overwrite)
    for name, path in lists.items():
        print(f"{name}: {path} ({sum(1 for _ in path.open())} pairs)")
    return EXIT_OK


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (see configs/synthetic_demo.yaml)")
    p.add_argument("config", type=Path, help="the YAML training config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optimizer.lr=1e-4 (repeatable; values are YAML)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue from the latest checkpoint in output_dir, or from PATH (after CONFIG)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs and metrics files only)")
    p.set_defaults(func=_cmd_train)


def add_data_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="check a training config's datasets before training")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{check}")
    c = dsub.add_parser("check", help="every problem in the train/val sets, one line per file")
    c.add_argument("config", type=Path)
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.set_defaults(func=_cmd_data_check)


def _cmd_data_check(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from ..data import build_dataset

    config = load_config(args.config, args.overrides)
    problems = 0
    for split in ("train", "val"):
        spec = getattr(config.data, split)
        if spec is None:
            continue
        dataset = build_dataset(spec, config.model.num_classes)
        found = dataset.check()
        problems += len(found)
        for line in found:
            err(f"error: {split}: {line}")
        print(f"{split}: {len(dataset)} samples, {len(found)} problem(s)")
    return EXIT_FAILED_INPUTS if problems else EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    import json
    import os

    from ..train.config import load_config
    from ..train.trainer import train

    config = load_config(args.config, args.overrides)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the result is rank 0's to print
        return EXIT_OK
    print(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None}, indent=2))
    return EXIT_OK
