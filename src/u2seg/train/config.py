"""Training configuration: a YAML file validated into dataclasses, with ``--set`` overrides.

    >>> cfg = load_config("configs/synthetic_demo.yaml", ["optimizer.lr=5e-4", "iterations=200"])
    >>> cfg.model.name, cfg.optimizer.lr, cfg.iterations
    ('u2netp', 0.0005, 200)

Every error is a :class:`ConfigError` that names the file and the key (``data.train.root``):
unknown keys (with a "did you mean" suggestion), wrong types, missing required keys, missing
dataset files and folders, and inconsistent values. Relative paths are taken from the current
working directory.

Here: the schema (the dataclasses) and the checks of its values. Turning the YAML mapping into
the dataclasses (keys, types, ``--set`` overrides) is :mod:`.config_parse`'s; ``ConfigError``,
``apply_overrides`` and ``config_to_dict`` come from there and are importable from here too.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.build import under_root
from .config_parse import ConfigError, apply_overrides, config_to_dict, dataclass_from_dict

__all__ = ["ConfigError", "DataConfig", "DatasetConfig", "LossConfig", "ModelConfig", "OptimizerConfig",
           "ScheduleConfig", "SyntheticConfig", "TrainConfig", "TransformStage", "apply_overrides", "config_from_dict",
           "config_to_dict", "load_config"]

REQUIRED: Any = dataclasses.MISSING


@dataclass
class ModelConfig:
    name: str = "u2netp"
    num_classes: int = 1
    pretrained: bool | str = False
    in_channels: int = 3


@dataclass
class SyntheticConfig:
    """Make the dataset with ``make_synthetic_dataset`` when ``root`` does not exist yet."""
    count: int = 200
    size: int = 256
    seed: int = 0


@dataclass
class TransformStage:
    """An earlier transform for the part of the run before ``until`` (a fraction of the steps, or of
    max_minutes): progressive resizing, e.g. smaller crops first, which train faster per image."""
    until: float = REQUIRED
    transform: str | dict = REQUIRED


@dataclass
class DatasetConfig:
    root: str = REQUIRED
    format: str = "folder"                     # folder | filelist | voc
    images_dir: str | None = None           # folder: default root/images
    masks_dir: str | None = None            # folder: default root/masks
    list_file: str | None = None            # filelist (relative to root or to the cwd)
    split: str | None = None                # voc: default "train"
    separator: str = " "                       # filelist
    transform: str | dict | None = None   # a registry name or {name: ..., options}
    stages: list[TransformStage] | None = None  # train only: earlier transforms, see TransformStage
    synthetic: SyntheticConfig | None = None


@dataclass
class DataConfig:
    train: DatasetConfig = REQUIRED
    val: DatasetConfig | None = None
    cache: str | bool = "auto"                 # auto | memory | mmap | off: decode once, augment batches on
                                               # the device (official_train/eval; see u2seg.train.batches)
    cache_dir: str | None = None            # mmap caches; default $U2SEG_HOME/train-cache


@dataclass
class OptimizerConfig:
    # The official U²-Net settings: Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    name: str = "adam"                         # adam | adamw | sgd
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.9                      # sgd only


@dataclass
class ScheduleConfig:
    name: str = "constant"                     # constant | poly | cosine
    warmup_iters: int = 0                      # linear warm-up from warmup_ratio·lr
    warmup_ratio: float = 0.0
    power: float = 0.9                         # poly
    min_lr: float = 0.0                        # poly, cosine: the final learning rate


@dataclass
class LossConfig:
    weights: list[float] | None = None      # one per model output; None: all 1 (official)
    dice_weight: float = 0.0
    iou_weight: float = 0.0


@dataclass
class TrainConfig:
    data: DataConfig = REQUIRED
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 12                       # per process: under torchrun the global batch is batch_size × processes
    iterations: int | None = None           # give iterations or epochs; a step is one (synchronous) update
    epochs: float | None = None                # passes over the train set, counted in global batches
    max_minutes: float | None = None           # a time budget (wall clock, evaluation included): the
                                               # schedule decays over it and the run stops in time
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    precision: str = "fp32"                    # fp32 | bf16 (autocast) | auto (bf16 where the hardware has it)
    ema_decay: float = 0.0                     # 0: off; e.g. 0.998: evaluate and save an average of the weights
    channels_last: bool = False                # NHWC tensors: faster convolutions on CPUs and tensor cores
    compile: str | bool = "off"                # off | default | reduce-overhead (CUDA graphs): torch.compile
                                               # the training step's network; the first step compiles
    device: str = "auto"                       # auto | cpu | cuda | cuda:N (torchrun: process i takes cuda:i)
    sync_bn: bool = False                      # torchrun on GPUs: BatchNorm statistics over the global batch
    freeze_bn: bool = False                    # BatchNorm keeps the statistics it was loaded with (fine-tuning
                                               # pretrained weights on small batches or crops)
    seed: int = 0
    deterministic: bool = False
    workers: int = 0
    log_interval: int = 10
    eval_interval: int = 1000                  # 0: only at the end
    eval_batch_size: int | None = None      # default batch_size
    save_interval: int = 1000                  # 0: only at the end (and on Ctrl-C)
    keep_checkpoints: int = 3                  # 0: keep all
    preview_interval: int = 0                  # 0: no previews
    preview_count: int = 4
    tensorboard: bool = True                   # scalars to output_dir/tensorboard/ when tensorboard is installed
    output_dir: str = "runs/train"


# --------------------------------------------------------------------------------------------
# loading


def load_config(path: str | Path, overrides: typing.Sequence[str] = (), *, check_paths: bool = True) -> TrainConfig:
    """Read a YAML config, apply ``key.sub=value`` overrides (values parsed as YAML), validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides, source=str(path))
    return config_from_dict(raw, source=str(path), check_paths=check_paths)


def config_from_dict(raw: dict, *, source: str = "config", check_paths: bool = True) -> TrainConfig:
    """Validate a plain dict (as read from YAML) into a :class:`TrainConfig`."""
    config = dataclass_from_dict(TrainConfig, raw, source=source, aliases=_ALIASES)
    _check_values(config, source, check_paths)
    return config


# names other trainers use (PaddleSeg, mmseg, the official script) → ours, for "did you mean"
_ALIASES = {
    "learning_rate": "lr", "base_lr": "lr", "optim": "optimizer", "scheduler": "schedule",
    "lr_scheduler": "schedule", "lr_schedule": "schedule", "iters": "iterations", "max_iters": "iterations",
    "total_iters": "iterations", "num_iterations": "iterations", "num_epochs": "epochs", "epoch_num": "epochs",
    "batch": "batch_size", "batch_size_train": "batch_size", "num_workers": "workers", "save_dir": "output_dir",
    "out_dir": "output_dir", "work_dir": "output_dir", "output": "output_dir", "arch": "name",
    "model_name": "name", "classes": "num_classes", "warmup": "warmup_iters", "warmup_steps": "warmup_iters",
    "amp": "precision", "dtype": "precision", "loss_weights": "weights", "coef": "weights",
    "train_dataset": "train", "val_dataset": "val", "validation": "val", "dataset_root": "root",
    "train_path": "list_file", "transforms": "transform", "type": "format",
}


# --------------------------------------------------------------------------------------------
# value checks


def _choice(value: str, choices: typing.Sequence[str], key: str, source: str) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{source}: {key}: {value!r} is not one of {', '.join(choices)}{hint}")


def _switch(value: str | bool, on: str) -> str:
    """A setting with an ``off`` value: YAML reads ``off`` (and ``on``) as a boolean."""
    if isinstance(value, bool):
        return on if value else "off"
    return value


def _positive(value: float | None, key: str, source: str, *, zero: bool = False) -> None:
    if value is None:
        return
    bad = value < 0 if zero else value <= 0
    if bad or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{source}: {key}: must be {'≥ 0' if zero else '> 0'}, got {value!r}")


def _check_values(c: TrainConfig, source: str, check_paths: bool) -> None:
    from ..models import list_models

    _choice(c.model.name, list_models(), "model.name", source)
    if not 1 <= c.model.num_classes <= 255:
        raise ConfigError(f"{source}: model.num_classes: must be within 1 … 255, got {c.model.num_classes}")
    _positive(c.model.in_channels, "model.in_channels", source)
    if isinstance(c.model.pretrained, str) and check_paths:
        p = Path(c.model.pretrained).expanduser()
        if not p.exists() and ("/" in c.model.pretrained or p.suffix):
            raise ConfigError(f"{source}: model.pretrained: {p}: no such weights file or folder")
    if c.iterations is not None and c.epochs is not None:
        raise ConfigError(f"{source}: iterations, epochs: give exactly one of them (both given)")
    if c.iterations is None and c.epochs is None and c.max_minutes is None:
        raise ConfigError(f"{source}: iterations, epochs: give exactly one of them (neither given), "
                          "or a time budget max_minutes")
    _positive(c.max_minutes, "max_minutes", source)
    _positive(c.iterations, "iterations", source)
    _positive(c.epochs, "epochs", source)
    for key in ("batch_size", "log_interval", "preview_count"):
        _positive(getattr(c, key), key, source)
    _positive(c.eval_batch_size, "eval_batch_size", source)
    for key in ("workers", "eval_interval", "save_interval", "keep_checkpoints", "preview_interval", "seed"):
        _positive(getattr(c, key), key, source, zero=True)
    _choice(c.precision, ("fp32", "bf16", "auto"), "precision", source)
    c.compile = _switch(c.compile, "default")
    _choice(c.compile, ("off", "default", "reduce-overhead"), "compile", source)
    if not (0 <= c.ema_decay < 1):
        raise ConfigError(f"{source}: ema_decay: must lie in [0, 1) (0: off; 0.99 … 0.9999 typical), "
                          f"got {c.ema_decay}")
    if not (c.device == "auto" or c.device == "cpu" or c.device.startswith("cuda")):
        raise ConfigError(f"{source}: device: expected auto, cpu, cuda or cuda:N, got {c.device!r}")
    if c.sync_bn and c.device == "cpu":  # torch's SyncBatchNorm runs on GPUs only
        raise ConfigError(f"{source}: sync_bn: SyncBatchNorm needs CUDA, the device is cpu (set sync_bn: false)")
    if c.sync_bn and c.freeze_bn:
        raise ConfigError(f"{source}: sync_bn, freeze_bn: frozen BatchNorm statistics are not synchronised; "
                          "set one of them")
    o = c.optimizer
    _choice(o.name, ("adam", "adamw", "sgd"), "optimizer.name", source)
    _positive(o.lr, "optimizer.lr", source)
    _positive(o.eps, "optimizer.eps", source)
    _positive(o.weight_decay, "optimizer.weight_decay", source, zero=True)
    _positive(o.momentum, "optimizer.momentum", source, zero=True)
    if not all(0 <= b < 1 for b in o.betas):
        raise ConfigError(f"{source}: optimizer.betas: each must lie in [0, 1), got {list(o.betas)}")
    s = c.schedule
    _choice(s.name, ("constant", "poly", "cosine"), "schedule.name", source)
    _positive(s.warmup_iters, "schedule.warmup_iters", source, zero=True)
    _positive(s.power, "schedule.power", source)
    _positive(s.min_lr, "schedule.min_lr", source, zero=True)
    if not 0 <= s.warmup_ratio <= 1:
        raise ConfigError(f"{source}: schedule.warmup_ratio: must lie in [0, 1], got {s.warmup_ratio}")
    if s.min_lr > o.lr:
        raise ConfigError(f"{source}: schedule.min_lr ({s.min_lr}) is above optimizer.lr ({o.lr})")
    lo = c.loss
    if lo.weights is not None:
        if not lo.weights or any(w < 0 or not math.isfinite(w) for w in lo.weights) or not any(lo.weights):
            raise ConfigError(f"{source}: loss.weights: give finite weights ≥ 0, not all 0, got {lo.weights}")
        expected = 1 if c.model.name == "unet" else 7
        if len(lo.weights) != expected:
            raise ConfigError(f"{source}: loss.weights: {c.model.name} has {expected} outputs, got "
                              f"{len(lo.weights)} weights")
    _positive(lo.dice_weight, "loss.dice_weight", source, zero=True)
    _positive(lo.iou_weight, "loss.iou_weight", source, zero=True)
    c.data.cache = _switch(c.data.cache, "auto")
    _choice(c.data.cache, ("auto", "memory", "mmap", "off"), "data.cache", source)
    for split in ("train", "val"):
        d = getattr(c.data, split)
        if d is not None:
            _check_dataset(d, f"data.{split}", c.model.num_classes, source, check_paths)


def _check_transform(spec: str | dict | None, key: str, source: str) -> None:
    if isinstance(spec, dict) and "name" not in spec:
        raise ConfigError(f"{source}: {key}: a mapping needs a 'name' key")
    if spec is not None:
        from ..data import TRANSFORMS

        name = spec["name"] if isinstance(spec, dict) else spec
        if name != "none":
            _choice(str(name), sorted(TRANSFORMS), key + (".name" if isinstance(spec, dict) else ""), source)


def _check_dataset(d: DatasetConfig, key: str, num_classes: int, source: str, check_paths: bool) -> None:
    _choice(d.format, ("folder", "filelist", "voc"), f"{key}.format", source)
    allowed = {"folder": ("images_dir", "masks_dir"), "filelist": ("list_file", "separator"), "voc": ("split",)}
    for option in ("images_dir", "masks_dir", "list_file", "split"):
        if getattr(d, option) is not None and option not in allowed[d.format]:
            raise ConfigError(f"{source}: {key}.{option}: not used by format {d.format!r} "
                              f"(it takes {', '.join(allowed[d.format])})")
    if d.format == "filelist" and d.list_file is None:
        raise ConfigError(f"{source}: {key}.list_file: required key is missing (format filelist)")
    if d.format == "voc" and num_classes < 2:
        raise ConfigError(f"{source}: {key}.format: voc masks hold class indices; set model.num_classes ≥ 2")
    if d.synthetic is not None and d.format != "folder":
        raise ConfigError(f"{source}: {key}.synthetic: only with format folder")
    _check_transform(d.transform, f"{key}.transform", source)
    if d.stages:
        if not key.endswith("train"):
            raise ConfigError(f"{source}: {key}.stages: only the training set has transform stages")
        previous = 0.0
        for i, stage in enumerate(d.stages):
            if not previous < stage.until < 1:
                raise ConfigError(f"{source}: {key}.stages[{i}].until: fractions of the run must increase "
                                  f"within (0, 1), got {stage.until} after {previous}")
            previous = stage.until
            _check_transform(stage.transform, f"{key}.stages[{i}].transform", source)
    if not check_paths:
        return
    root = Path(d.root).expanduser()
    if d.synthetic is not None and not root.exists():
        return  # made at the start of training
    if not root.is_dir():
        what = "not found" if not root.exists() else "is not a folder"
        raise ConfigError(f"{source}: {key}.root: {root}: dataset folder {what}")
    if d.format == "folder":
        for option, default in (("images_dir", "images"), ("masks_dir", "masks")):
            given = getattr(d, option)
            folder = under_root(root, given) if given is not None else root / default
            if not folder.is_dir():
                raise ConfigError(f"{source}: {key}.{option}: {folder}: folder not found")
    elif d.format == "filelist":
        listed = Path(d.list_file)
        if not (listed.is_file() or (not listed.is_absolute() and (root / listed).is_file())):
            raise ConfigError(f"{source}: {key}.list_file: {d.list_file}: file list not found "
                              f"(in {root} or the current folder)")

