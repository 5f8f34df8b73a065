"""The picture window's background work (:mod:`.gui`): a job runs a function in a pool thread,
:class:`JobBoard` keeps the jobs in flight and hands each outcome to its handlers in the GUI
thread; :class:`Segmented` and :class:`Rendered` are what the window's two kinds of job return.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage

from ..errors import U2SegError, collapse_whitespace

__all__ = ["JobBoard", "Segmented", "Rendered", "describe_error"]

log = logging.getLogger(__name__)


def describe_error(exc: BaseException) -> str:
    """One line for the window: u2seg's own errors carry their message, others get the type."""
    if isinstance(exc, (U2SegError, OSError, ValueError)):
        text = str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    return collapse_whitespace(text)


class _JobSignals(QObject):
    done = Signal(int, object)
    failed = Signal(int, str)


class _Job(QRunnable):
    """Runs ``fn()`` in a pool thread and reports ``done(id, result)`` or ``failed(id, message)``;
    the board's slots receive them in the GUI thread (queued connections)."""

    def __init__(self, job_id: int, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.job_id = job_id
        self.fn = fn
        self.signals = _JobSignals()

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # every error becomes a message in the window
            log.debug("worker failed:\n%s", traceback.format_exc())
            self.signals.failed.emit(self.job_id, describe_error(exc))
        else:
            self.signals.done.emit(self.job_id, result)


class JobBoard(QObject):
    """The jobs in flight (``len()``): :meth:`start` runs one in a pool; its ``on_done(result)``
    or ``on_failed(message, context)`` is then called in the GUI thread."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)  # the window's child: lives (and runs its slots) in the GUI thread
        self._jobs: dict[int, tuple] = {}  # id -> (job, on_done, on_failed, context)
        self._job_counter = 0

    def __len__(self) -> int:
        return len(self._jobs)

    def start(self, pool: QThreadPool, fn: Callable[[], Any], on_done: Callable[[Any], None],
              on_failed: Callable[[str, Any], None], *, context: Any = None) -> None:
        self._job_counter += 1
        job = _Job(self._job_counter, fn)
        self._jobs[job.job_id] = (job, on_done, on_failed, context)
        job.signals.done.connect(self._job_done)
        job.signals.failed.connect(self._job_failed)
        pool.start(job)

    @Slot(int, object)
    def _job_done(self, job_id: int, result: object) -> None:
        entry = self._jobs.pop(job_id, None)
        if entry is not None:
            entry[1](result)

    @Slot(int, str)
    def _job_failed(self, job_id: int, message: str) -> None:
        entry = self._jobs.pop(job_id, None)
        if entry is not None:
            entry[2](message, entry[3])


@dataclass(frozen=True)
class Segmented:
    """A picture segmented with a model: the decoded image and its probability map, kept so that
    every adjustment re-renders without running the network again."""

    path: Path
    model: str
    image: Image.Image
    prob: np.ndarray
    confidence: float | None = None


@dataclass(frozen=True)
class Rendered:
    """One rendering of the current options (``key``): the output, and the mask and output as Qt
    images ready to show."""

    key: tuple
    output: Image.Image
    mask_q: QImage
    output_q: QImage
