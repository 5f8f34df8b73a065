"""A run's logs: ``metrics.jsonl`` (training rows and ``"kind": "eval"`` rows), ``metrics.csv``
(training rows) and ``tensorboard/`` (the same scalars, when tensorboard is installed). Rank 0
alone writes them.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import write_bytes_atomic

__all__ = ["MetricsLog", "jsonable", "summary_writer"]

log = logging.getLogger(__name__)

_NOT_SCALARS = frozenset({"kind", "step", "time", "train_seconds", "run_seconds", "main", "best"})  # → TensorBoard


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: numpy scalars as Python numbers, NaN and ±inf as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return jsonable(value.item())
    return value


def summary_writer(folder: Path, purge_step: int | None) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``folder``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("TensorBoard logging is off: tensorboard is not installed (pip install tensorboard, "
                 "or pip install 'u2seg[train]')")
        return None
    # purge_step: TensorBoard hides what an interrupted run logged past the checkpoint we resume from
    return SummaryWriter(str(folder), purge_step=purge_step)


class MetricsLog:
    """The log files of the run in ``out``; ``board`` is the TensorBoard writer while one is open."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.jsonl, self.csv = out / "metrics.jsonl", out / "metrics.csv"
        self.board: Any = None

    def open_board(self, step: int) -> None:
        """Start TensorBoard logging at ``step`` (what a run interrupted past it logged is hidden)."""
        self.board = summary_writer(self.out / "tensorboard", step + 1 if step else None)

    def close_board(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None

    def trim(self, step: int) -> None:
        """Drop rows past ``step`` (left by the interrupted run), or all of them when ``step`` is 0."""
        if not step:
            for p in (self.jsonl, self.csv, *(self.out / "tensorboard").glob("events.out.tfevents.*")):
                p.unlink(missing_ok=True)
            return
        if self.jsonl.exists():
            rows = [line for line in self.jsonl.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= step]
            write_bytes_atomic(("".join(r + "\n" for r in rows)).encode(), self.jsonl)
        if self.csv.exists():
            with self.csv.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                fields = reader.fieldnames or []
                kept = [r for r in reader if int(r.get("step") or 0) <= step]
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
            write_bytes_atomic(text.getvalue().encode(), self.csv)

    def write(self, row: dict[str, Any], *, to_csv: bool) -> None:
        """Append ``row`` (it has ``kind`` and ``step``) to the JSONL log and TensorBoard, and to
        the CSV log when ``to_csv`` (whose columns are the first row's)."""
        row = {k: jsonable(v) for k, v in row.items()}
        with self.jsonl.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.board is not None:
            group = "val" if row["kind"] == "eval" else row["kind"]
            for key, value in row.items():
                if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue  # None (not finite), lists (per-class IoU), flags
                self.board.add_scalar(f"{group}/{key}", value, row["step"])
        if to_csv:
            fields = list(row)
            new = not (self.csv.exists() and self.csv.stat().st_size)
            if not new:
                with self.csv.open(newline="", encoding="utf-8") as fh:
                    fields = next(csv.reader(fh), fields)
            with self.csv.open("a", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)
