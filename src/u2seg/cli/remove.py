"""``u2seg remove`` (images, videos, raw frame streams, --watch, the Ray engine) and ``u2seg jobs``, which
reads the manifests that remove's folder jobs keep."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import U2SegError
from ..fileio import check_output_folder
from .common import (EXIT_FAILED_INPUTS, EXIT_OK, EXIT_USAGE, MODEL_HELP, add_engine_options, build_predictor, err,
                     predictor_spec, report_plan_problems)


def add_remove(sub: argparse._SubParsersAction) -> None:
    from ..infer.options import add_cli_arguments

    p = sub.add_parser("remove", help="remove backgrounds (or write masks) of images",
                       description="Remove the background of images. INPUT is files, folders "
                                   "(searched recursively), globs, or '-' for stdin → stdout.")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", type=Path, metavar="OUTDIR",
                   help="output folder (created if needed); for one input also a file: -o cutout.png|.webp, "
                        "or clip.webm|.mov|.mp4|.gif|.webp for a video")
    add_cli_arguments(p, "refine")  # --only-mask … --crop-margin, from the option table
    p.add_argument("--model", "-m", help=MODEL_HELP)
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
    add_engine_options(p)
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per network call (default 1)")
    p.add_argument("--workers", type=int, metavar="N", help="threads for decoding, pre- and post-processing, encoding (default: one per core)")
    p.set_defaults(func=_cmd_remove)


def _refine_options(args: argparse.Namespace):
    from ..infer.options import refine_options_from_cli

    return refine_options_from_cli(args)


def _cmd_remove(args: argparse.Namespace) -> int:
    from ..infer import encode_image, load_image, plan_outputs, remove_files, render
    from ..infer.confidence import DEFAULT_REVIEW_BELOW
    from ..infer.files import plan_file_output, split_videos, video_media
    from ..infer.predictor import TTA
    from ..infer.removal import Review

    options = _refine_options(args)  # bad values fail here, before any work
    stdin = "-" in args.inputs
    if stdin and len(args.inputs) > 1:
        raise U2SegError("'-' (stdin) cannot be combined with other inputs")
    if not stdin and args.output is None:
        raise U2SegError("give an output folder with -o OUTDIR (or use '-' to pipe one image)")
    to_stdout = not stdin and args.raw is None and str(args.output) == "-"
    if to_stdout and (len(args.inputs) != 1 or not Path(args.inputs[0]).is_file()):
        raise U2SegError("-o - writes one picture to stdout: give one image file")
    piped = stdin or to_stdout  # one picture, its output on stdout
    if piped and (args.report or args.review):
        raise U2SegError("--report and --review need files: give inputs and -o OUTDIR, not '-'")
    below = DEFAULT_REVIEW_BELOW if args.review_below is None else args.review_below
    if not 0.0 <= below <= 1.0:
        raise U2SegError(f"--review-below must be between 0 and 1, got {below:g}")
    if args.review_below is not None and args.review is None:
        raise U2SegError("--review-below needs --review DIR")
    review = Review(args.review, below, args.output) if args.review is not None else None

    if args.engine == "ray" and (piped or args.watch):
        raise U2SegError("--engine ray runs folder jobs: give inputs and -o OUTDIR (not '-' or --watch)")
    if args.engine != "ray" and (args.ray_address or args.ray_actors):
        raise U2SegError("--ray-address and --ray-actors need --engine ray")
    if args.watch:
        check_output_folder(args.output)
        return _watch(args, options, review)
    if args.raw is not None:
        return _remove_raw(args, options)
    file_plan = None if piped else plan_file_output(args.inputs, args.output, overwrite=args.overwrite)
    if file_plan is not None:
        return _remove_to_file(args, options, file_plan)
    plan = None
    videos: list = []
    if not piped:
        # Every output is planned; the manifest decides which exist because this job wrote them.
        check_output_folder(args.output)
        plan = plan_outputs(args.inputs, args.output, fmt=args.format, overwrite=True,
                            media=video_media(args.video_format))
        if report_plan_problems(plan):
            return EXIT_USAGE
        plan.tasks, videos = split_videos(plan.tasks)
        if not plan.tasks and not videos:
            if not plan.missing:
                err(f"nothing to do: no images or videos in {', '.join(args.inputs)}")
            return EXIT_FAILED_INPUTS if plan.missing else EXIT_OK

    spec = predictor_spec(args, files=1 if piped else len(plan.tasks), tta=TTA(flip=True) if args.flip else None)
    predictor = spec.build()
    logging.getLogger(__name__).info("model %s on %s (%s), input %d×%d", predictor.model_name, predictor.backend.name,
                                     predictor.backend.precision, *predictor.preprocessing.size)

    if piped:
        image = load_image(sys.stdin.buffer.read(), name="<stdin>") if stdin else load_image(Path(args.inputs[0]))
        result = render(predictor, image, options)
        sys.stdout.buffer.write(encode_image(result, args.format, compression=args.compression))
        sys.stdout.buffer.flush()
        return EXIT_OK

    video_written, video_failed = _remove_videos(args, predictor, options, videos) if videos else (0, 0)
    if not plan.tasks:
        if videos:
            err(f"wrote {video_written} file(s) to {args.output}" + (f"; {video_failed} failed" if video_failed else ""))
        return EXIT_FAILED_INPUTS if video_failed or plan.missing else EXIT_OK
    manifest = _job_manifest(args, predictor, options)
    if manifest.torn:
        err(f"note: the last line of {manifest.path} was cut short (an interrupted run); it was dropped")
    decision = manifest.decide(plan.tasks, force=args.force, retry_failed=args.retry_failed, overwrite=args.overwrite)
    if decision.not_ours:
        err(f"skipping {len(decision.not_ours)} file(s) whose output exists and was not written by this job, "
            f"e.g. {decision.not_ours[0].output} (use --overwrite to replace)")
    if decision.done:
        err(f"{len(decision.done)} file(s) already done with these settings (--force redoes them)")
    if decision.failed:
        err(f"{len(decision.failed)} file(s) failed before (--retry-failed tries them again)")
    if not decision.run:
        return EXIT_FAILED_INPUTS if plan.missing or decision.failed else EXIT_OK
    common = dict(fmt=args.format, compression=args.compression, batch_size=args.batch_size, workers=args.workers,
                  on_error=lambda line: err(f"error: {line}"), report=args.report, review=review, manifest=manifest)
    if args.engine == "ray":
        from ..infer.ray_engine import remove_files_ray

        report = remove_files_ray(spec, decision.run, options, preparer=predictor.host_preparer(),
                                  address=args.ray_address, actors=args.ray_actors, **common)
    else:
        report = remove_files(predictor, decision.run, options, **common)
    failed = len(report.failed) + len(plan.missing) + len(decision.failed) + video_failed
    copies = sum(1 for path in report.written if review is not None and path.is_relative_to(review.folder))
    err(f"wrote {len(report.written) - copies + video_written} file(s) to {args.output}"
        + (f" (+{copies} for review in {review.folder})" if copies else "") + (f"; {failed} failed" if failed else ""))
    return EXIT_FAILED_INPUTS if failed else EXIT_OK


def _remove_to_file(args: argparse.Namespace, options, plan) -> int:
    """``u2seg remove photo.jpg -o cutout.png`` (or ``clip.mp4 -o clip.webm``): one picture or video
    to one file, its suffix the format (no manifest: there is nothing to resume)."""
    from ..infer import remove_files
    from ..infer.files import FILE_OUTPUT_FORMATS, VIDEO_FILE_FORMATS
    from ..infer.predictor import TTA
    from ..video_read import is_video_file

    if args.engine == "ray" or args.review or args.manifest:
        raise U2SegError("-o FILE writes one picture or video here; --engine ray, --review and --manifest need -o OUTDIR")
    if report_plan_problems(plan):
        return EXIT_USAGE
    if plan.existing:
        err(f"error: {plan.existing[0].output} exists (--overwrite replaces it)")
        return EXIT_FAILED_INPUTS
    task = plan.tasks[0]
    video = is_video_file(task.source)
    fmt = (VIDEO_FILE_FORMATS if video else FILE_OUTPUT_FORMATS)[task.output.suffix.lower()]
    given, flag = (args.video_format, "--video-format") if video else (args.format, "--format")
    if given not in (None, "png", fmt) or (video and given == "png"):  # png: --format's default
        raise U2SegError(f"{flag} {given} does not match the output file {task.output.name}")
    predictor = predictor_spec(args, files=0 if video else 1, tta=TTA(flip=True) if args.flip else None).build()
    if video:
        written, failed = _remove_videos(args, predictor, options, [task])
    else:
        report = remove_files(predictor, plan.tasks, options, fmt=fmt, compression=args.compression,
                              on_error=lambda line: err(f"error: {line}"), progress=False, report=args.report)
        written, failed = len(report.written), len(report.failed)
    if failed or not written:
        return EXIT_FAILED_INPUTS
    err(f"wrote {task.output}")
    return EXIT_OK


def _remove_videos(args: argparse.Namespace, predictor, options, tasks: list) -> tuple[int, int]:
    """``u2seg remove`` for videos and animated images. Returns (outputs written, failures)."""
    from ..infer.video import VideoInterrupted, remove_videos

    try:
        return remove_videos(predictor, tasks, options, temporal=args.temporal, overwrite=args.overwrite,
                             batch_size=args.batch_size, workers=args.workers, progress=sys.stderr.isatty(),
                             on_error=lambda line: err(f"error: {line}"), on_note=err)
    except VideoInterrupted as exc:
        err(str(exc))
        raise KeyboardInterrupt from None


def _remove_raw(args: argparse.Namespace, options) -> int:
    """``u2seg remove --raw WxH - -o OUT|-``: raw rgb24 frames from stdin."""
    from ..infer.engine import Engine
    from ..infer.video import parse_raw_size, remove_raw_stream

    width, height = parse_raw_size(args.raw)
    if args.inputs != ["-"]:
        raise U2SegError("--raw reads frames from stdin: give '-' as the only INPUT")
    if args.output is None:
        raise U2SegError("--raw needs -o OUTDIR (PNG frames) or -o - (raw frames to stdout)")
    to_stdout = str(args.output) == "-"
    predictor = build_predictor(args, files=2)
    with Engine(predictor, batch_size=args.batch_size, workers=args.workers) as engine:
        count = remove_raw_stream(engine, width, height, sys.stdin.buffer, None if to_stdout else args.output,
                                  sys.stdout.buffer if to_stdout else None, options=options, temporal=args.temporal)
    if not to_stdout:
        err(f"wrote {count} frame(s) to {args.output}")
    return EXIT_OK


def _watch(args: argparse.Namespace, options, review) -> int:
    """``u2seg remove --watch IN -o OUT``: the engine fed by the folder's new images until a signal."""
    import signal
    import threading
    import time

    from ..infer.removal import remove_files
    from ..infer.watch import DEFAULT_SETTLE_S, watch_tasks

    if len(args.inputs) != 1 or not Path(args.inputs[0]).is_dir() or args.output is None:
        raise U2SegError("--watch takes one folder and -o OUTDIR: u2seg remove --watch IN -o OUT")
    settle = DEFAULT_SETTLE_S if args.settle is None else args.settle
    if settle < 0:
        raise U2SegError(f"--settle must not be negative, got {settle:g}")
    predictor = build_predictor(args, files=2)
    manifest = _job_manifest(args, predictor, options)
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    counts = {"done": 0, "failed": 0}

    def said(record) -> None:  # noqa: ANN001 - an ImageRecord
        counts["done" if record.status == "done" else "failed"] += 1
        if record.status == "done":
            err(f"{record.input} -> {record.output} ({record.score:.2f})")

    err(f"watching {args.inputs[0]} (Ctrl-C to stop)")
    started = time.monotonic()
    tasks = watch_tasks(Path(args.inputs[0]), args.output, manifest, fmt=args.format, stop=stop, settle=settle,
                        overwrite=args.overwrite, on_skip=lambda line: err(f"skipping {line}"))
    remove_files(predictor, tasks, options, fmt=args.format, compression=args.compression, batch_size=args.batch_size,
                 workers=args.workers, on_error=lambda line: err(f"error: {line}"), progress=False,
                 report=args.report, review=review, manifest=manifest, on_record=said)
    err(f"stopped after {time.monotonic() - started:.0f} s: {counts['done']} done, {counts['failed']} failed")
    return EXIT_OK


def _job_manifest(args: argparse.Namespace, predictor, options):
    """The folder job's manifest: ``--manifest``, else ``OUTDIR/.u2seg-manifest.jsonl``, for these settings."""
    from ..infer.manifest import MANIFEST_NAME, Manifest, settings_digest

    return Manifest(args.manifest or args.output / MANIFEST_NAME,
                    settings_digest(predictor, options, args.format, args.compression))


def add_jobs(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="folder jobs: what their manifests say")
    actions = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="done, failed and interrupted outputs of OUTDIR's job, and its speed")
    status.add_argument("output", type=Path, metavar="OUTDIR")
    status.add_argument("--manifest", type=Path, metavar="PATH", help="a manifest kept elsewhere")
    status.add_argument("--json", action="store_true", help="as one JSON object")
    status.set_defaults(func=_cmd_jobs_status)


def _cmd_jobs_status(args: argparse.Namespace) -> int:
    import json

    from ..infer.manifest import MANIFEST_NAME, summarise

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
