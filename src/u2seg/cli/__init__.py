"""Command line: parses arguments and calls the library; no logic of its own.

One module per concept, each registering its commands' parsers:

- ``remove``: remove (images, videos, raw streams, --watch, Ray) and jobs status
- ``bench``: bench
- ``models``: weights (list, fetch, convert), export, models
- ``training``: synth, split, data check, train
- ``evaluation``: eval, predict, visualize
- ``apps``: serve and gui (launchers), keys
- ``common``: what they share (exit codes, messages, engine options, the Predictor)
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from .. import __version__
from ..errors import U2SegError, os_error_line
from . import apps, bench, evaluation, models, remove, training
from .common import EXIT_FAILED_INPUTS, EXIT_USAGE, err

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="u2seg", description="U²-Net segmentation and background removal")
    parser.add_argument("--version", action="version", version=f"u2seg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="say more (model, backend, cache)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # in the order `u2seg --help` lists them
    remove.add_remove(sub)
    bench.add_bench(sub)
    models.add_weights(sub)
    models.add_export(sub)
    training.add_synth_split(sub)
    training.add_train(sub)
    training.add_data_check(sub)
    evaluation.add_eval(sub)
    evaluation.add_predict(sub)
    evaluation.add_visualize(sub)
    apps.add_app_launchers(sub)
    apps.add_keys(sub)
    remove.add_jobs(sub)
    models.add_models(sub)
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
        err(str(exc))
        return EXIT_USAGE
    except ValueError as exc:  # bad option values reach us as ValueError from the library
        err(f"error: {exc}")
        return EXIT_USAGE
    except OSError as exc:  # the filesystem said no: permissions, a full disk, a file where a folder should be
        err(f"error: {os_error_line(exc)}")
        return EXIT_FAILED_INPUTS
    except KeyboardInterrupt:
        err("interrupted")
        return 130
