"""The streaming inference engine: every front end's images go through here.

    source → decode → prepare → batched network (+ TTA) → finish (post-process, refine, encode …) → sink

* **Stages.** Decoding, pre-processing and the job's ``finish`` run in a pool of worker threads
  (the libraries they use, Pillow's decoders and resampling, OpenCV, NumPy, release the GIL, so
  the threads use every core; ``benchmarks`` and ``u2seg bench`` measure it). One network thread
  gathers prepared images into batches (up to ``batch_size``, waiting at most ``max_wait_ms``
  for more while images are still being decoded) and runs the Predictor, TTA included, so
  batching and TTA exist nowhere else.
* **Jobs** say what to make of a prediction (:class:`Job`): an encoded cutout, a class map, a
  metric update. A job's ``finish`` returns a value, or :class:`Files` to be written atomically.
* **Two ways in.** :meth:`Engine.run` streams an iterable of :class:`Item` (folders, datasets)
  with bounded memory: at most ``window`` items are between the source and the consumer, so
  any number of inputs runs in flat memory; results come in input order (``ordered``) or as
  they finish. :meth:`Engine.submit` takes one item and returns a Future (the HTTP service:
  concurrent requests share batches).
* **Errors** are per item: a result carries one line, the others go on.
* **Timing**: every item's seconds per stage (decode, preprocess, network, postprocess, refine,
  encode, write) add up in :class:`StageTimes`.

The types that travel through a job (:class:`Item`, :class:`Prediction`, :class:`Job`,
:class:`Files`, :class:`Result`, :class:`Report`, the timers) live in :mod:`u2seg.infer.job_types`
and can be imported from here too; this module holds the :class:`Engine` and the functions that
run jobs (:func:`run_job`, :func:`run_one`, :func:`finish_prediction`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import U2SegError
from ..fileio import write_bytes_atomic
from ..image_io import load_image
from .job_types import (STAGES, Files, Item, Job, Prediction, Report, Result, StageTimes, Timer,
                        error_line)

if TYPE_CHECKING:
    from .predictor import Predictor

__all__ = ["Engine", "run_job", "run_one", "finish_prediction", "default_workers",
           # the types that travel through a job, defined in .job_types, importable from here too
           "Item", "Result", "Report", "StageTimes", "Timer", "Prediction", "Job", "Files", "error_line",
           "STAGES"]

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Worker threads for the CPU stages: one per core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


class _Flight:
    """One item on its way through the engine."""

    __slots__ = ("index", "item", "job", "done", "timer", "image", "prepared", "meta")

    def __init__(self, index: int, item: Item, job: Job, done: Callable[[Result], None]) -> None:
        self.index, self.item, self.job, self.done = index, item, job, done
        self.timer = Timer()
        self.image = self.prepared = self.meta = None


class Engine:
    """One Predictor's streaming engine (see the module docstring).

    Args:
        predictor: what runs the network (and owns pre- and post-processing).
        batch_size: images per network call (the most; fewer when no more are coming).
        workers: threads for decode, pre-processing and finishing (default: one per core).
        max_wait_ms: how long the network waits for a batch to fill while images are still on
            their way (``None``: until the batch is full or nothing more is being decoded).
        window: items between the source and the consumer in :meth:`run` (default: enough to
            keep every stage busy).
        stages: where the stage times add up (default: a new :class:`StageTimes`).
    """

    def __init__(self, predictor: Predictor, *, batch_size: int = 1, workers: int | None = None,
                 max_wait_ms: float | None = None, window: int | None = None,
                 stages: StageTimes | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be ≥ 1, got {batch_size}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.predictor = predictor
        self.batch_size = batch_size
        self.workers = workers or default_workers()
        self.max_wait = None if max_wait_ms is None else max(0.0, max_wait_ms) / 1000.0
        self.window = window or 2 * batch_size + 2 * self.workers
        self.stages = stages or StageTimes()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="u2seg-worker")
        self._ready: queue.Queue[_Flight | None] = queue.Queue()
        self._lock = threading.Lock()
        self._upstream = 0  # items decoding or pre-processing: the batcher waits only for those
        self._closed = False
        self._network = threading.Thread(target=self._batcher, name="u2seg-network", daemon=True)
        self._network.start()

    # ------------------------------------------------------------------ ways in
    def submit(self, item: Item, job: Job) -> Future[Result]:
        """Process one item; the Future's result is its :class:`Result` (errors included)."""
        future: Future[Result] = Future()
        self._start(_Flight(0, item, job, future.set_result))
        return future

    def run(self, items: Iterable[Item], job: Job, *, ordered: bool = True,
            report: Report | None = None) -> Iterator[Result]:
        """Stream ``items`` through the engine and yield their results (in input order when
        ``ordered``). At most ``window`` items are in flight or waiting to be consumed.
        ``report``, when given, is updated as results are yielded."""
        finished: queue.Queue[Result | tuple[int] | BaseException] = queue.Queue()
        slots = threading.Semaphore(self.window)
        stop = threading.Event()
        started = time.perf_counter()

        def feed() -> None:
            count = 0
            try:
                for index, item in enumerate(items):
                    while not slots.acquire(timeout=0.1):
                        if stop.is_set():
                            return
                    if stop.is_set():
                        return
                    self._start(_Flight(index, item, job, finished.put))
                    count += 1
            except BaseException as exc:  # noqa: BLE001 - a failing source ends the run with its error
                finished.put(exc)
                return
            finished.put((count,))

        feeder = threading.Thread(target=feed, name="u2seg-feed", daemon=True)
        feeder.start()
        waiting: dict[int, Result] = {}
        expected: int | None = None
        next_index = yielded = 0
        try:
            while expected is None or yielded < expected:
                message = finished.get()
                if isinstance(message, BaseException):
                    raise message
                if isinstance(message, tuple):
                    expected = message[0]
                    continue
                if not ordered:
                    ready = [message]
                else:
                    waiting[message.index] = message
                    ready = []
                    while next_index in waiting:
                        ready.append(waiting.pop(next_index))
                        next_index += 1
                for result in ready:
                    yielded += 1
                    slots.release()
                    if report is not None:
                        report.add(result)
                        report.seconds = time.perf_counter() - started
                    yield result
        finally:
            stop.set()

    def close(self) -> None:
        """Stop the network thread and the workers (items in flight are finished first)."""
        if self._closed:
            return
        self._closed = True
        self._ready.put(None)
        self._network.join()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ stages
    def _start(self, flight: _Flight) -> None:
        if self._closed:
            raise RuntimeError("the engine is closed")
        with self._lock:
            self._upstream += 1
        self._pool.submit(self._load, flight)

    def _load(self, flight: _Flight) -> None:
        try:
            _load(self.predictor, flight)
        except BaseException as exc:  # noqa: BLE001 - reported as this item's error line
            with self._lock:
                self._upstream -= 1
            self._fail(flight, exc)
            return
        with self._lock:
            self._upstream -= 1
            self._ready.put(flight)

    def _gather(self) -> list[_Flight] | None:
        """The next batch: the first ready item, then more until the batch is full, nothing more
        is being decoded, or ``max_wait`` has passed."""
        first = self._ready.get()
        if first is None:
            return None
        batch = [first]
        deadline = None if self.max_wait is None else time.monotonic() + self.max_wait
        while len(batch) < self.batch_size:
            try:
                more = self._ready.get_nowait()
            except queue.Empty:
                with self._lock:
                    coming = self._upstream > 0
                if not coming:
                    break
                timeout = 0.005 if deadline is None else min(0.005, deadline - time.monotonic())
                if timeout <= 0:
                    break
                try:
                    more = self._ready.get(timeout=timeout)
                except queue.Empty:
                    continue
            if more is None:  # closing: run what we have, then stop
                self._ready.put(None)
                break
            batch.append(more)
        return batch

    def _batcher(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            start = time.perf_counter()
            try:
                probs = self.predictor.infer([f.prepared for f in batch])
            except BaseException as exc:  # noqa: BLE001 - the batch's items fail, the engine goes on
                for flight in batch:
                    self._fail(flight, exc)
                continue
            share = (time.perf_counter() - start) / len(batch)
            for flight, p in zip(batch, probs):
                flight.timer.add("network", share)
                self._pool.submit(self._finish, flight, p)

    def _finish(self, flight: _Flight, probs: Any) -> None:
        try:
            result = _finish(self.predictor, flight, probs)
        except BaseException as exc:  # noqa: BLE001 - reported as this item's error line
            self._fail(flight, exc)
            return
        self.stages.add(flight.timer.seconds)
        flight.done(result)

    def _fail(self, flight: _Flight, exc: BaseException) -> None:
        flight.image = flight.prepared = None
        flight.done(_failure(flight, exc))
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc


# ---------------------------------------------------------------------- the stages themselves

def _load(predictor: Predictor, flight: _Flight) -> None:
    """Decode (and let the job refuse the image), then pre-process."""
    with flight.timer("decode"):
        source = flight.item.source
        if callable(source):
            source, flight.meta = source()
        flight.image = load_image(source, name=flight.item.name or None,
                                  max_pixels=getattr(flight.job, "max_pixels", None))
    admit = getattr(flight.job, "admit", None)
    if admit is not None:
        admit(flight.image)
    with flight.timer("preprocess"):
        flight.prepared = predictor.prepare(flight.image)


def _finish(predictor: Predictor, flight: _Flight, probs: Any) -> Result:
    result = finish_prediction(Prediction(flight.item, flight.image, flight.prepared, probs, predictor, flight.timer,
                                          flight.meta), flight.job, flight.index)
    flight.image = flight.prepared = flight.meta = None
    return result


def finish_prediction(prediction: Prediction, job: Job, index: int = 0) -> Result:
    """The job's finish, then the writing of the files it returns (atomically): the last stages,
    also for schedulers that run the earlier ones elsewhere (the Ray engine's actors)."""
    value = job.finish(prediction)
    written: tuple[Path, ...] = ()
    if isinstance(value, Files):
        with prediction.timer("write"):
            for path, data in value.contents.items():
                write_bytes_atomic(data, path)
        written, value = tuple(value.contents), None
    return Result(index, prediction.item, value, written, None, prediction.timer.seconds, size=prediction.image.size,
                  confidence=prediction.confidence(), model=prediction.model, meta=prediction.meta)


def _failure(flight: _Flight, exc: BaseException) -> Result:
    if not isinstance(exc, (U2SegError, OSError, ValueError)):  # not the input's fault: keep the trace
        log.debug("%s failed", flight.item.name or "an item", exc_info=exc)
    return Result(flight.index, flight.item, None, (), error_line(flight.item, exc), flight.timer.seconds, exc,
                  meta=flight.meta)


def run_one(predictor: Predictor, item: Item, job: Job) -> Any:
    """One item through the same stages, in the calling thread (one image in memory: no
    threads to start). Returns the job's value; errors are raised, not reported."""
    flight = _Flight(0, item, job, lambda result: None)
    _load(predictor, flight)
    start = time.perf_counter()
    probs = predictor.infer([flight.prepared])[0]
    flight.timer.add("network", time.perf_counter() - start)
    return _finish(predictor, flight, probs).value


@contextmanager
def _bar_cleared(bar: Any) -> Iterator[None]:
    """Clear the progress bar (when it shows) while callbacks may write, then redraw it; what
    ``tqdm.write`` does for one line, for any writes (tqdm's lock is re-entrant, so callbacks
    that use ``tqdm.write`` themselves are fine)."""
    if bar.disable:
        yield
        return
    with bar.external_write_mode(file=bar.fp):
        yield


def run_job(predictor: Predictor, items: Sequence[Item] | Iterable[Item], job: Job, *, batch_size: int = 1,
            workers: int | None = None, on_error: Callable[[str], None] | None = None,
            on_result: Callable[[Result], None] | None = None, progress: bool | None = None,
            total: int | None = None, ordered: bool = True) -> Report:
    """Run ``items`` through an engine of their own and return the :class:`Report`: the batch
    loop of ``u2seg remove``, ``predict``, ``eval``, ``visualize`` and the window's save-all.
    ``on_error`` gets each failure's line, ``on_result`` every result (in input order when
    ``ordered``); a progress bar shows on stderr for more than one item (``progress``).
    While the bar shows, ``on_error`` runs with the bar cleared and redrawn afterwards, so the
    line it prints (``print``, ``sys.stderr.write``, logging, ``tqdm.write``) stands on a line of
    its own instead of being glued to a bar fragment."""
    import sys

    from tqdm import tqdm

    if total is None and isinstance(items, Sized):
        total = len(items)
    show = (total or 0) > 1 if progress is None else progress
    report = Report()
    with tqdm(total=total, unit="img", disable=not show, file=sys.stderr, dynamic_ncols=True) as bar, \
            Engine(predictor, batch_size=batch_size, workers=workers, stages=report.stages) as engine:
        for result in engine.run(items, job, ordered=ordered, report=report):
            if result.error is not None and on_error is not None:
                with _bar_cleared(bar):
                    on_error(result.error)
            if on_result is not None:
                on_result(result)
            bar.update()
    return report
