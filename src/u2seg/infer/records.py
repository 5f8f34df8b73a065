"""One record per image processed, as JSON lines: what ``--report PATH`` writes (and the record
type a job manifest keeps).

    {"input": "photos/a.jpg", "output": "out/a.png", "status": "done", "size": [4032, 3024],
     "model": "u2netp", "score": 0.83, "confidence": {...}, "seconds": {"decode": 0.05, ...},
     "review": null, "error": null, "time": "2026-11-30T19:00:00+00:00"}

Lines are appended and flushed one at a time, so a report being written can be read (``tail -f``)
and a killed run leaves every finished image's line.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Iterable
from typing import IO, Any

from .job_types import Result

__all__ = ["ImageRecord", "RecordLog", "record_of"]


@dataclass
class ImageRecord:
    input: str
    output: str | None = None
    status: str = "done"                       # done | failed (| started: the manifest, before writing)
    size: list[int] | None = None              # width, height
    model: str | None = None
    score: float | None = None                 # confidence in [0, 1]
    confidence: dict[str, Any] | None = None   # the signals behind the score
    seconds: dict[str, float] = field(default_factory=dict)
    review: str | None = None                  # where a copy went for a person to check
    error: str | None = None
    # The job manifest's facts (u2seg.infer.manifest): the input as decoded, and the settings digest.
    input_bytes: int | None = None
    input_mtime_ns: int | None = None
    input_sha256: str | None = None
    settings: str | None = None
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> ImageRecord:
        fields = json.loads(line)
        if not isinstance(fields, dict) or "input" not in fields:
            raise ValueError("not an image record")
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


def record_of(result: Result, *, review: Path | None = None) -> ImageRecord:
    """The record of one engine result (``review``: the copy written for review, if any)."""
    written = [path for path in result.written if path != review]
    output = written[0] if written else result.item.output   # a failure names the output it was for
    confidence = result.confidence.as_dict() if result.confidence is not None else None
    return ImageRecord(
        input=result.item.name or str(result.item.source), output=str(output) if output else None,
        status="done" if result.ok else "failed", size=list(result.size) if result.size else None,
        model=result.model, score=confidence["score"] if confidence else None, confidence=confidence,
        seconds={k: round(v, 4) for k, v in result.seconds.items()}, review=str(review) if review else None,
        error=result.error, **(result.meta if isinstance(result.meta, dict) else {}))


class RecordLog:
    """Appends records to a JSON-lines file, one flushed line each (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: ImageRecord) -> None:
        with self._lock:
            self._file.write(record.to_json() + "\n")
            self._file.flush()

    def write_many(self, records: Iterable[ImageRecord]) -> None:
        """Append several records with one flush (a job's ``started`` records, written up front)."""
        with self._lock:
            self._file.writelines(record.to_json() + "\n" for record in records)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
