"""Command line: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import U2SegError
from .weights.registry import DEFAULT_WEIGHTS

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE = 0, 1, 2
_MODEL_HELP = f"model name (default: what --weights describes, else {DEFAULT_WEIGHTS}; -m u2netp is the fast one)"


def _err(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"u2seg: {message}", file=sys.stderr)  # keeps a running progress bar intact


# ------------------------------------------------------------------------------------- remove

def _add_remove(sub: argparse._SubParsersAction) -> None:
    from .infer.options import add_cli_arguments

    p = sub.add_parser("remove", help="remove backgrounds (or write masks) of images",
                       description="Remove the background of images. INPUT is files, folders "
                                   "(searched recursively), globs, or '-' for stdin → stdout.")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", type=Path, metavar="OUTDIR", help="output folder (created if needed)")
    add_cli_arguments(p, "refine")  # --only-mask … --crop-margin, from the option table
    p.add_argument("--model", "-m", help=_MODEL_HELP)
    p.add_argument("--weights", "-w", type=Path, metavar="PATH",
                   help="weights file or folder (.onnx, .pth, .safetensors, u2seg folder)")
    p.add_argument("--size", type=int, metavar="N", help="network input size (default 320)")
    add_cli_arguments(p, "output")  # --format
    p.add_argument("--compression", type=int, default=3, choices=range(10), metavar="0-9",
                   help="PNG zlib level / WebP effort: lower is faster, larger (default 3)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist although this job's manifest did not write them")
    job = p.add_argument_group("resuming (folder jobs keep a manifest: OUTDIR/.u2seg-manifest.jsonl)")
    job.add_argument("--manifest", type=Path, metavar="PATH", help="keep the job's manifest here instead")
    job.add_argument("--force", action="store_true", help="redo every image, even those already done")
    job.add_argument("--retry-failed", action="store_true", help="try the images that failed before again")
    job.add_argument("--watch", action="store_true",
                     help="keep watching the INPUT folder (sub-folders too) and process images as they arrive, "
                          "once each per content and settings; Ctrl-C or SIGTERM stops after the images in flight")
    job.add_argument("--settle", type=float, default=None, metavar="S",
                     help="--watch: take a file once unchanged this long (default 1 s; at once when its writer closes it)")
    scale = p.add_argument_group("scale-out")
    scale.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local (default: this process) or ray (a Ray cluster, with Ray Data; pip install 'u2seg[ray]')")
    scale.add_argument("--ray-address", metavar="ADDRESS",
                       help="--engine ray: the cluster to join (e.g. auto, or ray://HOST:10001; default: a local Ray)")
    scale.add_argument("--ray-actors", type=int, metavar="N",
                       help="--engine ray: predictor actors (default: one per GPU, else one per 4 CPUs)")
    p.add_argument("--flip", action="store_true",
                   help="average with the mirror image (test-time augmentation; also feeds the confidence score)")
    p.add_argument("--raw", metavar="WIDTHxHEIGHT",
                   help="INPUT '-' is raw rgb24 frames of this size (ffmpeg -f rawvideo -pix_fmt rgb24 -): "
                        "PNG frames into -o OUTDIR, or raw rgba frames to stdout with -o - (gray with --only-mask)")
    review = p.add_argument_group("confidence")
    review.add_argument("--report", type=Path, metavar="PATH",
                        help="append one JSON line per image: input, output, size, model, confidence score, timings")
    review.add_argument("--review", type=Path, metavar="DIR",
                        help="also write the outputs whose confidence is under --review-below here, for a person to check")
    review.add_argument("--review-below", type=float, default=None, metavar="SCORE",
                        help="confidence under which --review gets a copy (0-1, default 0.5)")
    review.add_argument("--cascade-below", type=float, default=None, metavar="SCORE",
                        help="with -m small+large (e.g. u2netp+u2net): run the large model on the images whose "
                             "confidence with the small one is under this (default 0.8)")
    _add_engine_options(p)
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per network call (default 1)")
    p.add_argument("--workers", type=int, metavar="N", help="threads for decoding, pre- and post-processing, encoding (default: one per core)")
    p.set_defaults(func=_cmd_remove)


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    from .infer.backends import BACKENDS, PRECISIONS
    from .resize import RESAMPLE_METHODS

    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="inference engine (default auto: the fastest installed; -v says which)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default), bf16 (CPUs with bf16, CUDA) or int8 (calibrated, cached)")
    p.add_argument("--threads", type=int, metavar="N", help="threads for the network (default: all cores)")
    p.add_argument("--resample", choices=RESAMPLE_METHODS, default="lanczos",
                   help="resize filter: lanczos (default, as rembg) or fast (OpenCV, see BENCHMARKS.md)")
    p.add_argument("--calibration", type=Path, metavar="DIR", help="images to calibrate int8 on")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available)")
    p.add_argument("--compile", action="store_true",
                   help="torch backend: torch.compile the network (CUDA graphs on CUDA; slow start, fast calls)")


def _predictor(args: argparse.Namespace, files: int = 1, tta=None, model: str | None = None,
               weights: Path | None = None, backend=None):
    """The shared Predictor for the engine options (``backend``: a ready one, e.g. bench's fixed map)."""
    return _predictor_spec(args, files, tta, model, weights, backend).build()


def _predictor_spec(args: argparse.Namespace, files: int = 1, tta=None, model: str | None = None,
                    weights: Path | None = None, backend=None):
    from .infer.removal import network_threads
    from .infer.sessions import PredictorSpec

    calibration = None
    if args.precision == "int8" and args.calibration is not None:
        calibration = _calibration_inputs(args.calibration)
    settings = dict(size=args.size, device=args.device, precision=args.precision, resample=args.resample,
                    threads=args.threads or network_threads(files, args.precision), tta=tta,
                    backend=backend or args.backend)
    if calibration is not None:
        settings["calibration"] = calibration
    if args.compile:
        settings["compile"] = True
    if getattr(args, "cascade_below", None) is not None:
        settings["cascade_below"] = args.cascade_below
    return PredictorSpec(args.model or model, args.weights or weights, settings)


def _calibration_inputs(folder: Path):
    from .export.quantize import calibration_inputs
    from .infer.files import find_images

    images, _ = find_images([str(folder)])
    if not images:
        raise U2SegError(f"{folder}: no images to calibrate int8 on")
    return calibration_inputs(images)


def _refine_options(args: argparse.Namespace):
    from .infer.options import refine_options_from_cli

    return refine_options_from_cli(args)


def _report_plan_problems(plan, extra=None) -> bool:
    """Print a plan's conflicts (True: nothing may be written) and its inputs that named nothing."""
    conflicts = plan.conflicts + (extra.conflicts if extra is not None else [])
    for line in dict.fromkeys(conflicts):
        _err(f"error: {line}")
    if conflicts:
        _err("nothing was written: rename or separate the inputs above")
        return True
    for argument in plan.missing:
        _err(f"error: {argument}: no such file, folder or match")
    return False


def _cmd_remove(args: argparse.Namespace) -> int:
    from .infer import encode_image, load_image, plan_outputs, remove_files, render
    from .infer.confidence import DEFAULT_REVIEW_BELOW
    from .infer.files import split_videos, video_media
    from .infer.predictor import TTA
    from .infer.removal import Review

    options = _refine_options(args)  # bad values fail here, before any work
    stdin = "-" in args.inputs
    if stdin and len(args.inputs) > 1:
        raise U2SegError("'-' (stdin) cannot be combined with other inputs")
    if not stdin and args.output is None:
        raise U2SegError("give an output folder with -o OUTDIR (or use '-' to pipe one image)")
    if stdin and (args.report or args.review):
        raise U2SegError("--report and --review need files: give inputs and -o OUTDIR, not '-'")
    below = DEFAULT_REVIEW_BELOW if args.review_below is None else args.review_below
    if not 0.0 <= below <= 1.0:
        raise U2SegError(f"--review-below must be between 0 and 1, got {below:g}")
    if args.review_below is not None and args.review is None:
        raise U2SegError("--review-below needs --review DIR")
    review = Review(args.review, below, args.output) if args.review is not None else None

    if args.engine == "ray" and (stdin or args.watch):
        raise U2SegError("--engine ray runs folder jobs: give inputs and -o OUTDIR (not '-' or --watch)")
    if args.engine != "ray" and (args.ray_address or args.ray_actors):
        raise U2SegError("--ray-address and --ray-actors need --engine ray")
    if args.watch:
        return _watch(args, options, review)
    if args.raw is not None:
        return _remove_raw(args, options)
    plan = None
    videos: list = []
    if not stdin:
        # Every output is planned; the manifest decides which exist because this job wrote them.
        plan = plan_outputs(args.inputs, args.output, fmt=args.format, overwrite=True,
                            media=video_media(args.video_format))
        if _report_plan_problems(plan):
            return EXIT_USAGE
        plan.tasks, videos = split_videos(plan.tasks)
        if not plan.tasks and not videos:
            return EXIT_FAILED_INPUTS if plan.missing else EXIT_OK

    spec = _predictor_spec(args, files=1 if stdin else len(plan.tasks), tta=TTA(flip=True) if args.flip else None)
    predictor = spec.build()
    logging.getLogger(__name__).info("model %s on %s (%s), input %d×%d", predictor.model_name, predictor.backend.name,
                                     predictor.backend.precision, *predictor.preprocessing.size)

    if stdin:
        image = load_image(sys.stdin.buffer.read(), name="<stdin>")
        result = render(predictor, image, options)
        sys.stdout.buffer.write(encode_image(result, args.format, compression=args.compression))
        sys.stdout.buffer.flush()
        return EXIT_OK

    video_written, video_failed = _remove_videos(args, predictor, options, videos) if videos else (0, 0)
    if not plan.tasks:
        if videos:
            _err(f"wrote {video_written} file(s) to {args.output}" + (f"; {video_failed} failed" if video_failed else ""))
        return EXIT_FAILED_INPUTS if video_failed or plan.missing else EXIT_OK
    manifest = _job_manifest(args, predictor, options)
    if manifest.torn:
        _err(f"note: the last line of {manifest.path} was cut short (an interrupted run); it was dropped")
    decision = manifest.decide(plan.tasks, force=args.force, retry_failed=args.retry_failed, overwrite=args.overwrite)
    if decision.not_ours:
        _err(f"skipping {len(decision.not_ours)} file(s) whose output exists and was not written by this job, "
             f"e.g. {decision.not_ours[0].output} (use --overwrite to replace)")
    if decision.done:
        _err(f"{len(decision.done)} file(s) already done with these settings (--force redoes them)")
    if decision.failed:
        _err(f"{len(decision.failed)} file(s) failed before (--retry-failed tries them again)")
    if not decision.run:
        return EXIT_FAILED_INPUTS if plan.missing or decision.failed else EXIT_OK
    common = dict(fmt=args.format, compression=args.compression, batch_size=args.batch_size, workers=args.workers,
                  on_error=lambda line: _err(f"error: {line}"), report=args.report, review=review, manifest=manifest)
    if args.engine == "ray":
        from .infer.ray_engine import remove_files_ray

        report = remove_files_ray(spec, decision.run, options, preparer=predictor.host_preparer(),
                                  address=args.ray_address, actors=args.ray_actors, **common)
    else:
        report = remove_files(predictor, decision.run, options, **common)
    failed = len(report.failed) + len(plan.missing) + len(decision.failed) + video_failed
    copies = sum(1 for path in report.written if review is not None and path.is_relative_to(review.folder))
    _err(f"wrote {len(report.written) - copies + video_written} file(s) to {args.output}"
         + (f" (+{copies} for review in {review.folder})" if copies else "") + (f"; {failed} failed" if failed else ""))
    return EXIT_FAILED_INPUTS if failed else EXIT_OK


def _remove_videos(args: argparse.Namespace, predictor, options, tasks: list) -> tuple[int, int]:
    """``u2seg remove`` for videos and animated images. Returns (outputs written, failures)."""
    from .infer.video import VideoInterrupted, remove_videos

    try:
        return remove_videos(predictor, tasks, options, temporal=args.temporal, overwrite=args.overwrite,
                             batch_size=args.batch_size, workers=args.workers, progress=sys.stderr.isatty(),
                             on_error=lambda line: _err(f"error: {line}"), on_note=_err)
    except VideoInterrupted as exc:
        _err(str(exc))
        raise KeyboardInterrupt from None


def _remove_raw(args: argparse.Namespace, options) -> int:
    """``u2seg remove --raw WxH - -o OUT|-``: raw rgb24 frames from stdin."""
    from .infer.engine import Engine
    from .infer.video import parse_raw_size, remove_raw_stream

    width, height = parse_raw_size(args.raw)
    if args.inputs != ["-"]:
        raise U2SegError("--raw reads frames from stdin: give '-' as the only INPUT")
    if args.output is None:
        raise U2SegError("--raw needs -o OUTDIR (PNG frames) or -o - (raw frames to stdout)")
    to_stdout = str(args.output) == "-"
    predictor = _predictor(args, files=2)
    with Engine(predictor, batch_size=args.batch_size, workers=args.workers) as engine:
        count = remove_raw_stream(engine, width, height, sys.stdin.buffer, None if to_stdout else args.output,
                                  sys.stdout.buffer if to_stdout else None, options=options, temporal=args.temporal)
    if not to_stdout:
        _err(f"wrote {count} frame(s) to {args.output}")
    return EXIT_OK


# -------------------------------------------------------------------------------------- bench

def _add_bench(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--model", "-m", help=_MODEL_HELP)
    p.add_argument("--weights", "-w", type=Path, metavar="PATH", help="weights file or folder")
    p.add_argument("--size", type=int, metavar="N", help="network input size (default from the weights)")
    _add_engine_options(p)
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per network call (default 1)")
    p.add_argument("--workers", type=int, metavar="N", help="threads for the CPU stages (default: one per core)")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    import json
    import time

    from .infer.bench import FixedMapBackend, format_bench, generated_photos, process_start_time, run_bench
    from .infer.files import find_images
    from .infer.refine import RefineOptions

    started = process_start_time()
    if args.inputs:
        inputs, missing = find_images(args.inputs)
        for argument in missing:
            _err(f"error: {argument}: no such file, folder or match")
        if not inputs:
            raise U2SegError("no images to time")
    else:
        from .weights.cache import u2seg_home

        folder = args.photos_dir or u2seg_home() / "bench" / f"photos-{args.count}-{args.megapixels:g}mp"
        making = time.time()
        inputs = generated_photos(folder, args.count, args.megapixels)
        started += time.time() - making  # making the photos is not part of the figures
    predictor = _predictor(args, files=len(inputs), backend=FixedMapBackend() if args.no_network else None)
    result = run_bench(predictor, inputs, options=RefineOptions(only_mask=args.only_mask), fmt=args.format,
                       compression=args.compression, batch_size=args.batch_size, workers=args.workers,
                       started=started)
    print(format_bench(result))
    if args.json is not None:
        from .fileio import write_bytes_atomic

        write_bytes_atomic((json.dumps(result, indent=2) + "\n").encode(), args.json)
    return EXIT_OK


# ------------------------------------------------------------------------------------ weights

def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list, fetch or convert pretrained weights")
    wsub = p.add_subparsers(dest="weights_command", required=True, metavar="{list,fetch,convert}")
    wsub.add_parser("list", help="registered weights and whether they are cached").set_defaults(func=_cmd_weights_list)
    f = wsub.add_parser("fetch", help="download and convert weights into the cache")
    f.add_argument("name")
    f.set_defaults(func=_cmd_weights_fetch)
    c = wsub.add_parser("convert", help="convert .pth / fused .onnx / checkpoints into a u2seg folder")
    c.add_argument("input", type=Path)
    c.add_argument("output", type=Path, help="folder to write model.safetensors + config.json into")
    c.add_argument("--model", "-m", help="architecture (default: inferred from the weights)")
    c.set_defaults(func=_cmd_weights_convert)


def _cmd_weights_list(args: argparse.Namespace) -> int:
    from .weights import list_weights, weights_dir

    for w in list_weights():
        cached = "cached" if (weights_dir(w.name) / "config.json").is_file() else "not cached"
        print(f"{w.name:10} model={w.model:8} {cached:11} licence: {w.license}\n"
              f"{'':10} {w.description}\n{'':10} source: {w.sources[0].describe()}")
    return EXIT_OK


def _cmd_weights_fetch(args: argparse.Namespace) -> int:
    from .weights import fetch_weights

    print(fetch_weights(args.name))
    return EXIT_OK


def _cmd_weights_convert(args: argparse.Namespace) -> int:
    from .weights import convert_file

    out = convert_file(args.input, args.output, arch=args.model)
    print(out)
    return EXIT_OK


# ------------------------------------------------------------------------------------- export

def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX, OpenVINO or TorchScript, verified",
                       description="Export a model (pretrained default, --weights file or checkpoint) and "
                                   "verify the export against PyTorch (fails above 1e-4 in fp32).")
    p.add_argument("output", type=Path, help="file to write (.onnx, .xml for OpenVINO, .pt for TorchScript)")
    p.add_argument("--format", choices=("onnx", "openvino", "torchscript"), default="onnx")
    p.add_argument("--model", "-m", help=_MODEL_HELP)
    p.add_argument("--weights", "-w", type=Path, metavar="PATH", help="weights file, folder or checkpoint")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    p.add_argument("--calibration", type=Path, metavar="DIR", help="int8: images to calibrate on (default: sample photos)")
    p.add_argument("--rembg", action="store_true", help="ONNX for rembg's u2net_custom session (7 sigmoid outputs)")
    p.add_argument("--size", type=int, default=320, metavar="N", help="example input size (default 320)")
    p.add_argument("--static", action="store_true", help="fixed batch and image size instead of dynamic axes")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model
    from .weights import load_network

    network = load_network(args.model, args.weights)
    calibration = _calibration_inputs(args.calibration) if args.calibration else None
    result = export_model(network, args.output, fmt=args.format, precision=args.precision, rembg=args.rembg,
                          dynamic=not args.static, input_size=(args.size, args.size), calibration=calibration)
    if result.fidelity:
        f = result.fidelity
        print(f"int8 against fp32 on {f['images']} held-out image(s): mask MAE {f['mask_mae_mean']:.2f}/255 "
              f"(worst {f['mask_mae_worst']:.2f}), maxF agreement {f['maxf_vs_reference_mean']:.4f} "
              f"(worst {f['maxf_vs_reference_worst']:.4f})")
    if result.max_abs_diff is not None:
        print(f"verified against PyTorch: max |difference| {result.max_abs_diff:.2e} "
              f"({'ok' if result.ok else 'FAILED'}, limit 1e-4)")
    print(result.path)
    return EXIT_OK if result.ok else EXIT_FAILED_INPUTS


# --------------------------------------------------------------------------------------- data

def _add_data(sub: argparse._SubParsersAction) -> None:
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
    from .data.synth import make_synthetic_dataset

    if args.video:
        from .data.synth_video import make_synthetic_videos

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
    from .data.split import split_dataset

    lists = split_dataset(args.root, tuple(args.ratios), args.seed, images_dir=args.images_dir,
                          masks_dir=args.masks_dir, separator=args.separator, overwrite=args.overwrite)
    for name, path in lists.items():
        print(f"{name}: {path} ({sum(1 for _ in path.open())} pairs)")
    return EXIT_OK


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (see configs/synthetic_demo.yaml)")
    p.add_argument("config", type=Path, help="the YAML training config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optimizer.lr=1e-4 (repeatable; values are YAML)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue from the latest checkpoint in output_dir, or from PATH (after CONFIG)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs and metrics files only)")
    p.set_defaults(func=_cmd_train)


def _add_data_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="check a training config's datasets before training")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{check}")
    c = dsub.add_parser("check", help="every problem in the train/val sets, one line per file")
    c.add_argument("config", type=Path)
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.set_defaults(func=_cmd_data_check)


def _cmd_data_check(args: argparse.Namespace) -> int:
    from .train.config import load_config
    from .data import build_dataset

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
            _err(f"error: {split}: {line}")
        print(f"{split}: {len(dataset)} samples, {len(found)} problem(s)")
    return EXIT_FAILED_INPUTS if problems else EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    import json
    import os

    from .train.config import load_config
    from .train.trainer import train

    config = load_config(args.config, args.overrides)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the result is rank 0's to print
        return EXIT_OK
    print(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None}, indent=2))
    return EXIT_OK


# ------------------------------------------------------------------------- eval / predict / visualize

def _add_dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, nargs="?", metavar="CONFIG",
                   help="a training config: its data.val set, model and output_dir/best weights")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--split", choices=("val", "train"), default="val", help="with CONFIG: which set (default val)")
    g = p.add_argument_group("a dataset without a config")
    g.add_argument("--data", type=Path, metavar="ROOT", help="dataset folder (images/ + masks/, or see --format)")
    g.add_argument("--format", dest="data_format", choices=("folder", "filelist", "voc"), default="folder",
                   help="layout of --data (default folder)")
    g.add_argument("--num-classes", type=int, default=None, metavar="K",
                   help="1: binary masks (default); K ≥ 2: class-index masks (VOC: 21)")
    g.add_argument("--images-dir", help="folder layout: images folder under ROOT (default images)")
    g.add_argument("--masks-dir", help="folder layout: masks folder under ROOT (default masks)")
    g.add_argument("--list-file", help="filelist layout: the 'image mask' list")
    g.add_argument("--separator", default=" ", help="filelist layout: column separator (default space)")
    g.add_argument("--voc-split", help="voc layout: ImageSets/Segmentation/<name>.txt (default train)")


def _add_model_options(p: argparse.ArgumentParser, *, tta: bool = True) -> None:
    p.add_argument("--model", "-m", help="model name (default: what --weights or CONFIG describes)")
    p.add_argument("--weights", "-w", type=Path, metavar="PATH",
                   help="weights file or folder (default with CONFIG: output_dir/best; else pretrained)")
    p.add_argument("--size", type=int, metavar="N", help="network input size (default: from the weights)")
    if tta:
        p.add_argument("--flip", action="store_true", help="test-time augmentation: average with the mirror image")
        p.add_argument("--scales", type=float, nargs="+", metavar="S",
                       help="test-time augmentation: average over input scales, e.g. 0.75 1 1.25")
    _add_engine_options(p)


def _eval_source(args: argparse.Namespace, *, need_weights: bool = True):
    """The dataset (and the model the config names) that the dataset options describe."""
    from .evaluation.sources import EvalSource, from_config, from_folder, timestamped

    if args.config is not None and args.data is not None:
        raise U2SegError("give a CONFIG or --data ROOT, not both")
    if args.config is not None:
        return from_config(args.config, args.overrides, split=args.split, weights=args.weights,
                           need_weights=need_weights)
    if args.data is None:
        raise U2SegError("say what to score: a training CONFIG, or --data ROOT (with --format, --num-classes)")
    dataset = from_folder(args.data, format=args.data_format, num_classes=args.num_classes or
                          (21 if args.data_format == "voc" else 1), images_dir=args.images_dir,
                          masks_dir=args.masks_dir, list_file=args.list_file, separator=args.separator,
                          split=args.voc_split)
    return EvalSource(dataset, args.model, args.weights, timestamped(Path("runs"), "eval"))


def _tta(args: argparse.Namespace):
    from .infer.predictor import TTA

    if not args.flip and not args.scales:
        return None
    return TTA(flip=args.flip, scales=tuple(args.scales or (1.0,)))


def _model_predictor(args: argparse.Namespace, model: str | None, weights: Path | None, tta=None):
    return _predictor(args, tta=tta, model=model, weights=weights)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a model (or saved masks) against ground truth; JSON report and plots",
                       description="Score a model on a dataset: binary masks with the SOD metrics (maxF, meanF, "
                                   "adaptive F, MAE, S-measure, E-measure, weighted F), class masks with mIoU, "
                                   "per-class IoU, pixel accuracy, Kappa and Dice. Or score saved masks "
                                   "(--pred-dir) against ground truth (--gt-dir) without a model.")
    _add_dataset_options(p)
    _add_model_options(p)
    g = p.add_argument_group("saved masks, no model")
    g.add_argument("--pred-dir", type=Path, metavar="DIR", help="saved predictions (grey maps or class PNGs)")
    g.add_argument("--gt-dir", type=Path, metavar="DIR", help="ground-truth masks, matched by file name")
    p.add_argument("--out", "-o", type=Path, metavar="DIR",
                   help="report folder (default: a new eval-<split>-<time> folder in the config's output_dir, "
                        "or runs/eval-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    p.add_argument("--no-plots", action="store_true", help="the JSON report only")
    p.add_argument("--limit", type=int, metavar="N", help="score the first N samples only")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per network call (default 4)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_eval)


def _report_folder(out: Path, overwrite: bool) -> Path:
    from .metrics.report import JSON_NAME

    if (out / JSON_NAME).exists() and not overwrite:
        raise U2SegError(f"{out / JSON_NAME}: a report is already there; choose another --out or pass --overwrite")
    return out


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_predictor, evaluate_saved
    from .evaluation.sources import timestamped

    if args.pred_dir is not None or args.gt_dir is not None:
        if args.pred_dir is None or args.gt_dir is None:
            raise U2SegError("--pred-dir and --gt-dir go together")
        if args.config is not None or args.data is not None or args.weights is not None:
            raise U2SegError("--pred-dir/--gt-dir score saved masks: drop CONFIG, --data and --weights")
        out = _report_folder(args.out or timestamped(Path("runs"), "eval"), args.overwrite)
        result = evaluate_saved(args.pred_dir, args.gt_dir, num_classes=args.num_classes or 1,
                                progress=not args.no_progress)
    else:
        source = _eval_source(args)
        out = _report_folder(args.out or source.out_dir, args.overwrite)
        predictor = _model_predictor(args, source.model, source.weights, _tta(args))
        logging.getLogger(__name__).info("model %s on %s, input %s", predictor.model_name, predictor.backend.name,
                                         predictor.preprocessing.size)
        result = evaluate_predictor(predictor, source.dataset, batch_size=args.batch_size, limit=args.limit,
                                    progress=not args.no_progress)
    written = result.write(out, plots=not args.no_plots)
    print(f"{result.images} images")
    print(result.table())
    print(f"report: {written['json']}")
    for name, path in written.items():
        if name != "json":
            print(f"plot:   {path}")
    return EXIT_OK


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="masks of images: class-colour PNGs (semantic models) or grey maps, "
                                       "and overlays on the images",
                       description="Predict masks. Semantic models write palette PNGs whose pixel values are "
                                   "the class indices (VOC colours); binary models write grey maps. "
                                   "OUTDIR/masks/<name>.png and OUTDIR/overlays/<name>.png.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively), globs")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    _add_model_options(p)
    p.add_argument("--no-overlay", action="store_true", help="masks only")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours (default 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .evaluation.visualize import PredictionJob, write_predictions
    from .infer import plan_outputs

    if not 0.0 <= args.alpha <= 1.0:
        raise U2SegError(f"--alpha must lie in [0, 1], got {args.alpha}")
    masks = plan_outputs(args.inputs, args.output / "masks", overwrite=args.overwrite)
    overlays = None if args.no_overlay else plan_outputs(args.inputs, args.output / "overlays",
                                                         overwrite=args.overwrite)
    if _report_plan_problems(masks, overlays):
        return EXIT_USAGE
    skipped = {t.source for t in masks.existing} | ({t.source for t in overlays.existing} if overlays else set())
    if skipped:
        _err(f"skipping {len(skipped)} image(s) whose outputs exist (use --overwrite to replace)")
    overlay_of = {t.source: t.output for t in overlays.tasks} if overlays else {}
    jobs = [PredictionJob(t.source, t.output, overlay_of.get(t.source)) for t in masks.tasks if t.source not in skipped]
    if not jobs:
        return EXIT_FAILED_INPUTS if masks.missing else EXIT_OK
    predictor = _model_predictor(args, None, args.weights, _tta(args))
    report = write_predictions(predictor, jobs, alpha=args.alpha, on_error=lambda line: _err(f"error: {line}"))
    failed = len(report.failed) + len(masks.missing)
    _err(f"wrote {len(report.written)} file(s) to {args.output}" + (f"; {failed} failed" if failed else ""))
    return EXIT_FAILED_INPUTS if failed else EXIT_OK


def _add_visualize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="image | label | prediction sheets of a dataset",
                       description="Write OUT/<name>.png sheets: the image, its ground truth and a prediction "
                                   "(from a model, or saved masks with --pred-dir) side by side.")
    _add_dataset_options(p)
    _add_model_options(p)
    p.add_argument("--pred-dir", type=Path, metavar="DIR", help="saved predictions instead of a model")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    p.add_argument("--limit", type=int, metavar="N", help="the first N samples only")
    p.add_argument("--height", type=int, metavar="PX", help="panel height (default: the image's)")
    p.add_argument("--overwrite", action="store_true", help="replace sheets that already exist")
    p.set_defaults(func=_cmd_visualize)


def _cmd_visualize(args: argparse.Namespace) -> int:
    from .evaluation.visualize import write_triptychs

    if args.pred_dir is not None and args.weights is not None:
        raise U2SegError("give --weights or --pred-dir, not both")
    source = _eval_source(args, need_weights=args.pred_dir is None)
    predictor = None if args.pred_dir is not None else _model_predictor(args, source.model, source.weights,
                                                                          _tta(args))
    written = write_triptychs(source.dataset, args.output, predictor=predictor, pred_dir=args.pred_dir, limit=args.limit,
                              height=args.height, overwrite=args.overwrite)
    print(f"wrote {len(written)} sheet(s) to {args.output}")
    return EXIT_OK


# ------------------------------------------------------------------------------------- apps

def _add_apps(sub: argparse._SubParsersAction) -> None:
    # The apps own their options (one definition); `u2seg serve --help` shows them.
    serve = sub.add_parser("serve", help="HTTP service and web page (default http://127.0.0.1:7000/)",
                           add_help=False)
    serve.set_defaults(func=lambda a: _run_app("u2seg.apps.server", "main", a.app_args), passthrough=True)
    gui = sub.add_parser("gui", help="desktop window (PySide6)", add_help=False)
    gui.set_defaults(func=lambda a: _run_app("u2seg.apps.gui", "run_gui", a.app_args), passthrough=True)


def _run_app(module: str, function: str, argv: list[str]) -> int:
    import importlib

    try:
        entry = getattr(importlib.import_module(module), function)
    except ImportError as exc:
        extra = "gui" if module.endswith("gui") else "server"
        raise U2SegError(f"{exc.name or exc} is not installed: pip install 'u2seg[{extra}]'") from None
    return int(entry(argv) or 0)


def _watch(args: argparse.Namespace, options, review) -> int:
    """``u2seg remove --watch IN -o OUT``: the engine fed by the folder's new images until a signal."""
    import signal
    import threading
    import time

    from .infer.removal import remove_files
    from .infer.watch import DEFAULT_SETTLE_S, watch_tasks

    if len(args.inputs) != 1 or not Path(args.inputs[0]).is_dir() or args.output is None:
        raise U2SegError("--watch takes one folder and -o OUTDIR: u2seg remove --watch IN -o OUT")
    settle = DEFAULT_SETTLE_S if args.settle is None else args.settle
    if settle < 0:
        raise U2SegError(f"--settle must not be negative, got {settle:g}")
    predictor = _predictor(args, files=2)
    manifest = _job_manifest(args, predictor, options)
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    counts = {"done": 0, "failed": 0}

    def said(record) -> None:  # noqa: ANN001 - an ImageRecord
        counts["done" if record.status == "done" else "failed"] += 1
        if record.status == "done":
            _err(f"{record.input} -> {record.output} ({record.score:.2f})")

    _err(f"watching {args.inputs[0]} (Ctrl-C to stop)")
    started = time.monotonic()
    tasks = watch_tasks(Path(args.inputs[0]), args.output, manifest, fmt=args.format, stop=stop, settle=settle,
                        overwrite=args.overwrite, on_skip=lambda line: _err(f"skipping {line}"))
    remove_files(predictor, tasks, options, fmt=args.format, compression=args.compression, batch_size=args.batch_size,
                 workers=args.workers, on_error=lambda line: _err(f"error: {line}"), progress=False,
                 report=args.report, review=review, manifest=manifest, on_record=said)
    _err(f"stopped after {time.monotonic() - started:.0f} s: {counts['done']} done, {counts['failed']} failed")
    return EXIT_OK


def _job_manifest(args: argparse.Namespace, predictor, options):
    """The folder job's manifest: ``--manifest``, else ``OUTDIR/.u2seg-manifest.jsonl``, for these settings."""
    from .infer.manifest import MANIFEST_NAME, Manifest, settings_digest

    return Manifest(args.manifest or args.output / MANIFEST_NAME,
                    settings_digest(predictor, options, args.format, args.compression))


def _add_jobs(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="folder jobs: what their manifests say")
    actions = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="done, failed and interrupted outputs of OUTDIR's job, and its speed")
    status.add_argument("output", type=Path, metavar="OUTDIR")
    status.add_argument("--manifest", type=Path, metavar="PATH", help="a manifest kept elsewhere")
    status.add_argument("--json", action="store_true", help="as one JSON object")
    status.set_defaults(func=_cmd_jobs_status)


def _cmd_jobs_status(args: argparse.Namespace) -> int:
    import json

    from .infer.manifest import MANIFEST_NAME, summarise

    path = args.manifest or args.output / MANIFEST_NAME  # where _job_manifest keeps it
    if not path.is_file():
        raise U2SegError(f"{path}: no manifest (run 'u2seg remove INPUT -o {args.output}' first)")
    summary = summarise(path)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:28} {value}")
    return EXIT_OK


def _add_keys(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="API keys for 'u2seg serve --api-keys KEYS'")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key; it is printed once, as the last line")
    create.add_argument("name", help="who or what the key is for (letters, digits, . _ @ -)")
    create.add_argument("--file", required=True, type=Path, metavar="KEYS", help="keys file (appended to)")
    create.add_argument("--rpm", type=int, metavar="N", help="requests per minute for this key")
    create.add_argument("--concurrent", type=int, metavar="N", help="requests at once for this key")
    create.set_defaults(func=_cmd_keys_create)
    listing = actions.add_parser("list", help="the keys' names, dates and limits (never the keys)")
    listing.add_argument("--file", required=True, type=Path, metavar="KEYS")
    listing.set_defaults(func=_cmd_keys_list)
    revoke = actions.add_parser("revoke", help="remove a key; a running server stops taking it within a second")
    revoke.add_argument("name")
    revoke.add_argument("--file", required=True, type=Path, metavar="KEYS")
    revoke.set_defaults(func=_cmd_keys_revoke)


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from .apps.keys import create_key

    key = create_key(args.file, args.name, requests_per_minute=args.rpm, concurrent=args.concurrent)
    print(f"added key {args.name!r} to {args.file}; it is shown only now: keep it (a lost key is revoked "
          f"and made anew)", file=sys.stderr)
    print(key)
    return EXIT_OK


def _cmd_keys_list(args: argparse.Namespace) -> int:
    from .apps.keys import read_keys

    for record in read_keys(args.file):
        limits = ", ".join(f"{k} {v}" for k, v in (("rpm", record.requests_per_minute),
                                                    ("concurrent", record.concurrent)) if v is not None)
        print(f"{record.name:24} {record.created:25} {limits or 'server defaults'}")
    return EXIT_OK


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    from .apps.keys import revoke_key

    revoke_key(args.file, args.name)
    print(f"revoked key {args.name!r} in {args.file}")
    return EXIT_OK


# ------------------------------------------------------------------------------------- models

def _add_models(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("models", help="list the model architectures").set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models, model_description

    for name in list_models():
        print(f"{name:8} {model_description(name)}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="u2seg", description="U²-Net segmentation and background removal")
    parser.add_argument("--version", action="version", version=f"u2seg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="say more (model, backend, cache)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_remove(sub)
    _add_bench(sub)
    _add_weights(sub)
    _add_export(sub)
    _add_data(sub)
    _add_train(sub)
    _add_data_check(sub)
    _add_eval(sub)
    _add_predict(sub)
    _add_visualize(sub)
    _add_apps(sub)
    _add_keys(sub)
    _add_jobs(sub)
    _add_models(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.app_args = rest  # the app parses its own options
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="u2seg: %(message)s")
    try:
        return args.func(args)
    except U2SegError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except ValueError as exc:  # bad option values reach us as ValueError from the library
        _err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
