"""The models and their weights: ``u2seg weights`` (list, fetch, convert), ``u2seg export`` and ``u2seg models``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_FAILED_INPUTS, EXIT_OK, MODEL_HELP, calibration_from_folder


# ------------------------------------------------------------------------------------ weights

def add_weights(sub: argparse._SubParsersAction) -> None:
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
    from ..weights import list_weights, weights_dir

    for w in list_weights():
        cached = "cached" if (weights_dir(w.name) / "config.json").is_file() else "not cached"
        print(f"{w.name:10} model={w.model:8} {cached:11} licence: {w.license}\n"
              f"{'':10} {w.description}\n{'':10} source: {w.sources[0].describe()}")
    return EXIT_OK


def _cmd_weights_fetch(args: argparse.Namespace) -> int:
    from ..weights import fetch_weights

    print(fetch_weights(args.name))
    return EXIT_OK


def _cmd_weights_convert(args: argparse.Namespace) -> int:
    from ..weights import convert_file

    out = convert_file(args.input, args.output, arch=args.model)
    print(out)
    return EXIT_OK


# ------------------------------------------------------------------------------------- export

def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX, OpenVINO or TorchScript, verified",
                       description="Export a model (pretrained default, --weights file or checkpoint) and "
                                   "verify the export against PyTorch (fails above 1e-4 in fp32).")
    p.add_argument("output", type=Path, help="file to write (.onnx, .xml for OpenVINO, .pt for TorchScript)")
    p.add_argument("--format", choices=("onnx", "openvino", "torchscript"), default="onnx")
    p.add_argument("--model", "-m", help=MODEL_HELP)
    p.add_argument("--weights", "-w", type=Path, metavar="PATH", help="weights file, folder or checkpoint")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    p.add_argument("--calibration", type=Path, metavar="DIR", help="int8: images to calibrate on (default: sample photos)")
    p.add_argument("--rembg", action="store_true", help="ONNX for rembg's u2net_custom session (7 sigmoid outputs)")
    p.add_argument("--size", type=int, default=320, metavar="N", help="example input size (default 320)")
    p.add_argument("--static", action="store_true", help="fixed batch and image size instead of dynamic axes")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_model
    from ..weights import load_network

    network = load_network(args.model, args.weights)
    calibration = calibration_from_folder(args.calibration) if args.calibration else None
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


# ------------------------------------------------------------------------------------- models

def add_models(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("models", help="list the model architectures").set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models import list_models, model_description

    for name in list_models():
        print(f"{name:8} {model_description(name)}")
    return EXIT_OK
