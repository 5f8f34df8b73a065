"""Scoring and looking at a model's masks: ``u2seg eval``, ``u2seg predict`` and ``u2seg visualize``, with the
dataset and model options they share."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import U2SegError
from .common import (EXIT_FAILED_INPUTS, EXIT_OK, EXIT_USAGE, add_engine_options, build_predictor, err,
                     report_plan_problems)


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
    add_engine_options(p)


def _eval_source(args: argparse.Namespace, *, need_weights: bool = True):
    """The dataset (and the model the config names) that the dataset options describe."""
    from ..evaluation.sources import EvalSource, from_config, from_folder, timestamped

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
    from ..infer.predictor import TTA

    if not args.flip and not args.scales:
        return None
    return TTA(flip=args.flip, scales=tuple(args.scales or (1.0,)))


def _model_predictor(args: argparse.Namespace, model: str | None, weights: Path | None, tta=None):
    return build_predictor(args, tta=tta, model=model, weights=weights)


def add_eval(sub: argparse._SubParsersAction) -> None:
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
    from ..metrics.report import JSON_NAME

    if (out / JSON_NAME).exists() and not overwrite:
        raise U2SegError(f"{out / JSON_NAME}: a report is already there; choose another --out or pass --overwrite")
    return out


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_predictor, evaluate_saved
    from ..evaluation.sources import timestamped

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


def add_predict(sub: argparse._SubParsersAction) -> None:
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
    from ..evaluation.visualize import PredictionJob, write_predictions
    from ..infer import plan_outputs

    if not 0.0 <= args.alpha <= 1.0:
        raise U2SegError(f"--alpha must lie in [0, 1], got {args.alpha}")
    masks = plan_outputs(args.inputs, args.output / "masks", overwrite=args.overwrite)
    overlays = None if args.no_overlay else plan_outputs(args.inputs, args.output / "overlays",
                                                         overwrite=args.overwrite)
    if report_plan_problems(masks, overlays):
        return EXIT_USAGE
    skipped = {t.source for t in masks.existing} | ({t.source for t in overlays.existing} if overlays else set())
    if skipped:
        err(f"skipping {len(skipped)} image(s) whose outputs exist (use --overwrite to replace)")
    overlay_of = {t.source: t.output for t in overlays.tasks} if overlays else {}
    jobs = [PredictionJob(t.source, t.output, overlay_of.get(t.source)) for t in masks.tasks if t.source not in skipped]
    if not jobs:
        return EXIT_FAILED_INPUTS if masks.missing else EXIT_OK
    predictor = _model_predictor(args, None, args.weights, _tta(args))
    report = write_predictions(predictor, jobs, alpha=args.alpha, on_error=lambda line: err(f"error: {line}"))
    failed = len(report.failed) + len(masks.missing)
    err(f"wrote {len(report.written)} file(s) to {args.output}" + (f"; {failed} failed" if failed else ""))
    return EXIT_FAILED_INPUTS if failed else EXIT_OK


def add_visualize(sub: argparse._SubParsersAction) -> None:
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
    from ..evaluation.visualize import write_triptychs

    if args.pred_dir is not None and args.weights is not None:
        raise U2SegError("give --weights or --pred-dir, not both")
    source = _eval_source(args, need_weights=args.pred_dir is None)
    predictor = None if args.pred_dir is not None else _model_predictor(args, source.model, source.weights,
                                                                          _tta(args))
    written = write_triptychs(source.dataset, args.output, predictor=predictor, pred_dir=args.pred_dir, limit=args.limit,
                              height=args.height, overwrite=args.overwrite)
    print(f"wrote {len(written)} sheet(s) to {args.output}")
    return EXIT_OK
