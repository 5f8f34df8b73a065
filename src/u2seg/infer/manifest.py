"""The job manifest of a folder run: ``OUT/.u2seg-manifest.jsonl``, append-only JSON lines of
:class:`~u2seg.infer.records.ImageRecord` (the record type ``--report`` writes).

Per input it records the file's size, mtime and SHA-256 (of the very bytes decoded), a digest of
the settings that shape the output (model and weights, pre-processing, backend and precision,
refine options, format), the output, the status, the error line, timings and the confidence.
A rerun then does only what is missing, failed (with ``retry_failed``) or changed, and the
manifest owns the outputs it records: an existing output is replaced only when the manifest says
this job wrote it (or with ``overwrite``).

Crash safety (``kill -9`` at any moment): a ``started`` record is appended before an output is
written, the output is written to a temporary file and renamed, and a ``done`` record follows.
A rerun treats ``started`` without ``done`` as ours to redo, removes our temporary files left
beside outputs, and tolerates (and reports, and cuts) a torn last line.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import input_signature, read_input
from .files import Task
from .records import ImageRecord, RecordLog

__all__ = ["MANIFEST_NAME", "Manifest", "Decision", "settings_digest", "read_manifest", "read_with_facts", "summarise"]

MANIFEST_NAME = ".u2seg-manifest.jsonl"


def settings_digest(predictor: Any, options: Any, fmt: str, compression: int) -> str:
    """A short digest of everything that shapes an output's bytes."""
    return hashlib.sha256(json.dumps(_identity(predictor) | {
        "refine": asdict(options), "format": fmt, "compression": compression,
    }, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _identity(predictor: Any) -> dict[str, Any]:
    small, large = getattr(predictor, "small", None), getattr(predictor, "large", None)
    if small is not None and large is not None:  # a cascade
        return {"cascade": [_identity(small), _identity(large)], "below": predictor.below}
    return {"model": predictor.model_name, "weights": getattr(predictor, "weights_config", None),
            "preprocessing": asdict(predictor.preprocessing), "backend": predictor.backend.name,
            "precision": getattr(predictor.backend, "precision", None), "threshold": predictor.threshold,
            "output_norm": predictor.output_norm, "tta": repr(predictor.tta)}


def read_manifest(path: Path) -> tuple[list[ImageRecord], bool]:
    """The records, and whether the last line was torn (a crash while appending: ignored)."""
    records: list[ImageRecord] = []
    torn = False
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    except FileNotFoundError:
        return records, False
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(ImageRecord.from_json(line))
        except (ValueError, TypeError):
            if number >= len(lines) - 2:  # the last line (before the final newline, if any)
                torn = True
            else:
                raise ValueError(f"{path}:{number + 1}: not a manifest record") from None
    return records, torn


@dataclass
class Decision:
    run: list[Task] = field(default_factory=list)
    done: list[Task] = field(default_factory=list)           # recorded, unchanged: skipped
    failed: list[Task] = field(default_factory=list)         # recorded as failed: skipped (retry_failed runs them)
    not_ours: list[Task] = field(default_factory=list)       # outputs this job did not write: never replaced


class Manifest:
    """The manifest of one output folder: reads what earlier runs did, decides what to run, and
    records this run (thread-safe appends)."""

    def __init__(self, path: Path, settings: str) -> None:
        self.path = path
        self.settings = settings
        records, self.torn = read_manifest(path)
        if self.torn:  # cut the torn line so that new records start on a line of their own
            data = path.read_bytes()
            os.truncate(path, data.rfind(b"\n") + 1)
        self.latest: dict[str, ImageRecord] = {}
        self.owned: set[str] = set()
        for record in records:
            if record.output:
                self.owned.add(record.output)
            # The last record wins: "started" after "done" is a redo that was interrupted.
            self.latest[record.output or record.input] = record
        self.log: RecordLog | None = None
        self._lock = threading.Lock()

    def decide(self, tasks: Sequence[Task], *, force: bool = False, retry_failed: bool = False,
               overwrite: bool = False) -> Decision:
        decision = Decision()
        _remove_our_temporaries([task.output for task in tasks])
        for task in tasks:
            with self._lock:
                record = self.latest.get(str(task.output))
            exists = task.output.exists()
            if force and (not exists or overwrite or str(task.output) in self.owned):
                decision.run.append(task)
            elif record is None:
                (decision.not_ours if exists and not overwrite else decision.run).append(task)
            elif record.status == "done" and exists and record.settings == self.settings \
                    and _unchanged(task.source, record):
                decision.done.append(task)
            elif record.status == "failed" and record.settings == self.settings \
                    and _unchanged(task.source, record) and not retry_failed:
                decision.failed.append(task)
            else:
                decision.run.append(task)
        return decision

    def open(self) -> None:
        self.log = RecordLog(self.path)

    def write(self, record: ImageRecord) -> None:
        """Append ``record`` (this job's settings stamped on it); later decisions see it (a
        watched folder's file that comes back with the same bytes is not redone)."""
        assert self.log is not None, "open() the manifest first"
        record.settings = self.settings
        self.log.write(record)
        with self._lock:
            if record.output:
                self.owned.add(record.output)
            self.latest[record.output or record.input] = record

    def claim(self, tasks: Sequence[Task]) -> None:
        """Record ``started`` for every task at once (one flush): a scheduler that writes the
        outputs elsewhere (the Ray engine's workers) claims them all before any is written."""
        assert self.log is not None, "open() the manifest first"
        records = [ImageRecord(input=str(task.source), output=str(task.output), status="started",
                               settings=self.settings) for task in tasks]
        self.log.write_many(records)
        with self._lock:
            for record in records:
                self.owned.add(record.output)
                self.latest[record.output] = record

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def source_for(self, task: Task) -> Callable[[], tuple[bytes, dict[str, Any]]]:
        """The engine's source for ``task``: reads the file once, records ``started``, and hands
        the bytes on with their size, mtime and hash (so the record describes what was decoded)."""

        def read() -> tuple[bytes, dict[str, Any]]:
            data, facts = read_with_facts(task.source)
            self.write(ImageRecord(input=str(task.source), output=str(task.output), status="started", **facts))
            return data, facts

        return read


def read_with_facts(source: Path | str) -> tuple[bytes, dict[str, Any]]:
    """An input's bytes (a path or an fsspec URL) and the facts a record keeps of them: size,
    mtime and SHA-256."""
    data, mtime = read_input(source)
    return data, {"input_bytes": len(data), "input_mtime_ns": mtime, "input_sha256": hashlib.sha256(data).hexdigest()}


def _unchanged(source: Path | str, record: ImageRecord) -> bool:
    """The input is what the record describes: same size and mtime, or else the same content."""
    try:
        size, mtime = input_signature(source)
    except OSError:
        return False
    if size == record.input_bytes and mtime is not None and mtime == record.input_mtime_ns:
        return True
    if size != record.input_bytes:
        return False
    return hashlib.sha256(read_input(source)[0]).hexdigest() == record.input_sha256


def _remove_our_temporaries(outputs: Sequence[Path]) -> None:
    """Temporary files that interrupted atomic writes of ``outputs`` left (``.NAME.XXXX.tmp``
    beside each): each folder is listed once, whatever the number of outputs."""
    by_folder: dict[Path, set[str]] = {}
    for output in outputs:
        by_folder.setdefault(output.parent, set()).add(output.name)
    for folder, names in by_folder.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".tmp") \
                    and entry.name[1:-4].rsplit(".", 1)[0] in names:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass


def summarise(path: Path) -> dict[str, Any]:
    """``u2seg jobs status``: counts by the latest status of each output, and the throughput."""
    records, torn = read_manifest(path)
    latest: dict[str, ImageRecord] = {}
    for record in records:
        latest[record.output or record.input] = record
    counts = {"done": 0, "failed": 0, "in progress or interrupted": 0}
    for record in latest.values():
        key = record.status if record.status in ("done", "failed") else "in progress or interrupted"
        counts[key] += 1
    finished = [r for r in records if r.status in ("done", "failed")]
    summary: dict[str, Any] = {"manifest": str(path), "outputs": len(latest), **counts, "torn_last_line": torn}
    if len(finished) >= 2:
        from datetime import datetime

        times = sorted(datetime.fromisoformat(r.time) for r in finished)
        span = (times[-1] - times[0]).total_seconds()
        summary["images_per_s"] = round(len(finished) / span, 2) if span > 0 else None
    return summary
