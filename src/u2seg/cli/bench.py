"""``u2seg bench``: u2seg remove's work timed stage by stage."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import U2SegError
from .common import EXIT_OK, MODEL_HELP, add_engine_options, build_predictor, err


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time u2seg remove stage by stage (decode … encode) on your images",
                       description="Run u2seg remove's work on INPUTs (default: generated photos) into a "
                                   "temporary folder and print ms per image for each stage, images/s end to "
                                   "end (start-up included) and the network's share.")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="files, folders or globs (default: generated photos)")
    p.add_argument("--count", type=int, default=24, metavar="N", help="generated photos (default 24)")
    p.add_argument("--megapixels", type=float, default=1.5, metavar="MP",
                   help="their mean size (default 1.5; from a fifth of it to 4K)")
    p.add_argument("--photos-dir", type=Path, metavar="DIR",
                   help="where generated photos are kept between runs (default: a folder in $U2SEG_HOME)")
    p.add_argument("--no-network", action="store_true", help="a fixed map instead of the network: the rest alone")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--only-mask", "-om", action="store_true", help="masks instead of cutouts")
    p.add_argument("--format", choices=("png", "webp"), default="png")
    p.add_argument("--compression", type=int, default=3, choices=range(10), metavar="0-9")
    p.add_argument("--model", "-m", help=MODEL_HELP)
    p.add_argument("--weights", "-w", type=Path, metavar="PATH", help="weights file or folder")
    p.add_argument("--size", type=int, metavar="N", help="network input size (default from the weights)")
    add_engine_options(p)
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per network call (default 1)")
    p.add_argument("--workers", type=int, metavar="N", help="threads for the CPU stages (default: one per core)")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    import json
    import time

    from ..infer.bench import FixedMapBackend, format_bench, generated_photos, process_start_time, run_bench
    from ..infer.files import find_images
    from ..infer.refine import RefineOptions

    started = process_start_time()
    if args.inputs:
        inputs, missing = find_images(args.inputs)
        for argument in missing:
            err(f"error: {argument}: no such file, folder or match")
        if not inputs:
            raise U2SegError("no images to time")
    else:
        from ..weights.cache import u2seg_home

        folder = args.photos_dir or u2seg_home() / "bench" / f"photos-{args.count}-{args.megapixels:g}mp"
        making = time.time()
        inputs = generated_photos(folder, args.count, args.megapixels)
        started += time.time() - making  # making the photos is not part of the figures
    predictor = build_predictor(args, files=len(inputs), backend=FixedMapBackend() if args.no_network else None)
    result = run_bench(predictor, inputs, options=RefineOptions(only_mask=args.only_mask), fmt=args.format,
                       compression=args.compression, batch_size=args.batch_size, workers=args.workers,
                       started=started)
    print(format_bench(result))
    if args.json is not None:
        from ..fileio import write_bytes_atomic

        write_bytes_atomic((json.dumps(result, indent=2) + "\n").encode(), args.json)
    return EXIT_OK
