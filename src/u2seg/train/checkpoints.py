"""Training checkpoints: finding, reading, writing and trimming ``checkpoints/step_N.pt``, and the
random-number states they carry.

A checkpoint is a ``torch.save`` of a dict (``format`` 1): ``step``, the clocks (``train_seconds``,
``run_seconds``, ``spent_budget``), ``world_size``, the plain model's ``state_dict`` (no DDP
``module.`` prefix, so it resumes in one process or in several), ``ema``, ``optimizer``,
``scheduler``, ``rng`` (rank 0's Python, numpy, torch and this GPU's states), ``best``,
``best_step`` and the run's ``config``.
"""
from __future__ import annotations

import io
import logging
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import U2SegError
from ..fileio import write_bytes_atomic
from .config import config_to_dict

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["CHECKPOINT_FORMAT", "find_checkpoint", "latest_checkpoint", "load_checkpoint", "read_checkpoint",
           "rng_states", "save_checkpoint", "set_rng_states", "write_checkpoint"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def _by_step(folder: Path) -> list[tuple[int, Path]]:
    return sorted((int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _STEP_FILE.match(p.name)))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``output_dir/checkpoints``, or None."""
    found = _by_step(Path(output_dir) / "checkpoints")
    return found[-1][1] if found else None


def find_checkpoint(resume: bool | str | Path, output_dir: Path) -> Path:
    """The file ``resume`` names: True → the latest in ``output_dir``; a run folder or its
    ``checkpoints/`` → the latest there; a file → itself."""
    if resume is True:
        path = latest_checkpoint(output_dir)
        if path is None:
            raise U2SegError(f"{output_dir / 'checkpoints'}: no checkpoint to resume from")
        return path
    path = Path(resume)
    if path.is_dir():
        found = latest_checkpoint(path if (path / "checkpoints").is_dir() else path.parent)
        path = found if found is not None else path
    if not path.is_file():
        raise U2SegError(f"{path}: checkpoint not found")
    return path


def read_checkpoint(path: Path, model: Any) -> dict[str, Any]:
    """A checkpoint's dict, checked to be ours and for the same ``model`` (name, num_classes,
    in_channels: a ``ModelConfig``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise U2SegError(f"{path}: not a readable u2seg checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise U2SegError(f"{path}: not a u2seg training checkpoint")
    saved = state["config"]["model"]
    for key in ("name", "num_classes", "in_channels"):
        if saved[key] != getattr(model, key):
            raise U2SegError(f"{path}: the checkpoint is for model.{key}={saved[key]!r}, "
                             f"the config says {getattr(model, key)!r}")
    return state


def write_checkpoint(state: dict[str, Any], folder: Path, keep: int) -> Path:
    """Write ``folder/step_N.pt`` atomically (N = ``state["step"]``), then delete all but the last
    ``keep`` checkpoints (0: keep all)."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    path = folder / f"step_{state['step']}.pt"
    write_bytes_atomic(buffer.getvalue(), path)
    if keep:
        for _, old in _by_step(folder)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def rng_states(device: torch.device) -> dict[str, Any]:
    """This process's Python, numpy and torch random states (and its GPU's, on CUDA)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":  # this process's GPU only: get_rng_state_all() would touch every visible GPU
        states["cuda_device"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_states` saved."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda":
        if "cuda_device" in states:
            torch.cuda.set_rng_state(states["cuda_device"], device)
        elif "cuda" in states:  # checkpoints of earlier versions: every GPU's state
            torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(trainer: Trainer) -> Path:
    """The trainer's state at its current step, to ``output_dir/checkpoints/step_N.pt``."""
    t = trainer
    state = {
        "step": t.step,
        "train_seconds": t.train_seconds,
        "run_seconds": t.clock(),
        "spent_budget": t.spent_budget,
        "world_size": t.dist.world_size,
        "model": t.model.state_dict(),  # the plain module's: no DDP "module." prefixes
        "ema": t.ema.state_dict() if t.ema is not None else None,
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "rng": rng_states(t.device),
        "best": t.best,
        "best_step": t.best_step,
        "config": config_to_dict(t.config),
    }
    return write_checkpoint(state, t.out / "checkpoints", t.config.keep_checkpoints)


def load_checkpoint(trainer: Trainer) -> Path:
    """Put the checkpoint ``trainer.resume`` names into the trainer (model, EMA, optimizer,
    schedule, step, clocks, best, RNG states); returns its path."""
    from .ema import ModelEMA

    t = trainer
    path = find_checkpoint(t.resume, t.out)
    state = read_checkpoint(path, t.config.model)
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    if t.ema is not None:
        if state.get("ema"):
            t.ema.load_state_dict(state["ema"])
        else:  # EMA switched on for the rest of a run: the average starts from these weights
            t.ema = ModelEMA(t.model, t.config.ema_decay)
            log.warning("%s has no EMA weights (ema_decay was off): the average starts at step %d",
                        path, int(state["step"]))
    t.scheduler.load_state_dict(state["scheduler"])
    t.step = int(state["step"])
    t.train_seconds = float(state.get("train_seconds", 0.0))
    t.run_seconds = float(state.get("run_seconds", t.train_seconds))
    t.spent_budget = state.get("spent_budget")
    t.best, t.best_step = state.get("best"), state.get("best_step")
    set_rng_states(state["rng"], t.device)  # rank 0's: augmentation does not draw from them
    log.info("resumed from %s at step %d", path, t.step)
    saved_batch = int(state["config"].get("batch_size", t.config.batch_size)) * int(state.get("world_size", 1))
    if saved_batch != t.global_batch:
        log.warning("the checkpoint was trained with a global batch of %d (batch_size × processes), this "
                    "run uses %d: the data order does not continue exactly", saved_batch, t.global_batch)
    return path
