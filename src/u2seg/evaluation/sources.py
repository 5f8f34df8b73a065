"""Where an evaluation's data and weights come from: a training config, or a folder named on the
command line. One place, shared by ``u2seg eval`` and ``u2seg visualize``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import U2SegError

__all__ = ["EvalSource", "from_config", "from_folder", "timestamped"]


@dataclass
class EvalSource:
    """A dataset to score, the model that belongs to it (None: the caller's choice), and the
    folder where its reports go by default."""

    dataset: object
    model: str | None
    weights: Path | None
    out_dir: Path


def timestamped(parent: Path, prefix: str) -> Path:
    """``parent/<prefix>-YYYYmmdd-HHMMSS``: a fresh folder name, so no earlier report is replaced."""
    return parent / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def from_config(path: str | Path, overrides: Sequence[str] = (), *, split: str = "val",
                weights: str | Path | None = None, need_weights: bool = True) -> EvalSource:
    """The ``data.<split>`` set of a training config, its model name, and its trained weights
    (``output_dir/best`` unless ``weights`` is given; None when not ``need_weights``)."""
    from ..data import build_dataset
    from ..train.config import load_config

    if split not in ("train", "val"):
        raise U2SegError(f"--split must be train or val, got {split!r}")
    # Paths of the other split need not exist where one evaluates: check only the one used.
    config = load_config(path, overrides, check_paths=False)
    spec = getattr(config.data, split)
    if spec is None:
        raise U2SegError(f"{path}: data.{split} is not set; choose --split train, or add a val set")
    dataset = build_dataset(spec, config.model.num_classes)
    output_dir = Path(config.output_dir).expanduser()
    if weights is None and need_weights:
        best = output_dir / "best"
        if not best.is_dir():
            raise U2SegError(f"{best}: no trained weights yet (train with u2seg train {path}, "
                             "or give --weights PATH)")
        weights = best
    return EvalSource(dataset, config.model.name, Path(weights) if weights else None,
                      timestamped(output_dir, f"eval-{split}"))


def from_folder(root: str | Path, *, format: str = "folder", num_classes: int = 1, images_dir: str | None = None,
                masks_dir: str | None = None, list_file: str | None = None, separator: str = " ",
                split: str | None = None) -> object:
    """A dataset named by its folder and layout (``folder``: images/ + masks/, ``filelist``,
    ``voc``); a wrong layout or a missing folder is one clear error."""
    from ..data import build_dataset
    from ..train.config import DatasetConfig

    if format not in ("folder", "filelist", "voc"):
        raise U2SegError(f"--format must be folder, filelist or voc, got {format!r}")
    if format == "filelist" and list_file is None:
        raise U2SegError("--format filelist needs --list-file (a file of 'image mask' lines)")
    if format == "voc" and num_classes < 2:
        raise U2SegError("--format voc holds class indices: give --num-classes (21 for Pascal VOC)")
    if not Path(root).expanduser().exists():
        raise U2SegError(f"{root}: dataset folder not found")
    spec = DatasetConfig(root=str(root), format=format, images_dir=images_dir, masks_dir=masks_dir,
                         list_file=list_file, separator=separator, split=split)
    return build_dataset(spec, num_classes)
