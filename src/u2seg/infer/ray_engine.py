"""Scale-out on Ray (``u2seg remove --engine ray``): the folder job of
:func:`~u2seg.infer.removal.remove_files` on a Ray cluster, with Ray Data.

    driver: list the inputs, decide with the manifest what to run, record ``started`` for each
      │     ray.data.from_items(rows)
      ▼
    tasks (CPU): read the file, hash it, decode, pre-process         → one pickled payload per row
      ▼
    actor pool: the network in batches (a GPU each when the cluster has them), then post-process,
      │         refine, encode and write the outputs atomically (in a thread pool)
      ▼
    driver: one record per image back → the manifest, ``--report``, progress, errors

The stages are the local engine's own functions (``load_image``, the Predictor's pre-processing,
``Predictor.infer``, :func:`~u2seg.infer.engine.finish_prediction` with a
:class:`~u2seg.infer.removal.RemovalJob`), so the outputs are byte-identical to the local
engine's for the same settings on the same kind of machine. Workers write the outputs, so on
several machines the output folder must be one that every machine sees (NFS, a mounted bucket).
Relative paths mean what they mean to the driver: tasks and actors work in the driver's folder
(where their machine has it), as Ray's workers otherwise start wherever Ray was started.
Only the driver writes the manifest: it records ``started`` for every image before the cluster
starts, so a job killed at any moment is resumed by running it again, as locally.

Ray is an optional extra (``pip install 'u2seg[ray]'``), imported only here.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import U2SegError
from ..image_io import load_image
from .engine import finish_prediction
from .files import Task, plan_outputs
from .job_types import Item, Prediction, Report, Result, Timer, error_line
from .manifest import MANIFEST_NAME, Manifest, read_with_facts, settings_digest
from .predictor import HostPreparer
from .records import ImageRecord
from .refine import RefineOptions
from .removal import RecordSinks, RemovalJob, Review, record_for
from .sessions import PredictorSpec

__all__ = ["remove_with_ray", "remove_files_ray", "RAY_MISSING"]

log = logging.getLogger(__name__)

RAY_MISSING = "--engine ray needs Ray: pip install 'u2seg[ray]'"
# Rows per decoding task: enough to amortise a task's start, few enough to keep every CPU busy.
DECODE_ROWS = 4


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data comes with the 'data' extra of ray
    except ImportError:
        raise U2SegError(RAY_MISSING) from None
    return ray


def remove_with_ray(inputs: str | Path | Sequence[str | Path], output: str | Path, *, model: str | None = None,
                    weights: str | Path | None = None, size: int | None = None, fmt: str = "png",
                    compression: int = 3, batch_size: int = 1, address: str | None = None,
                    actors: int | None = None, force: bool = False, retry_failed: bool = False,
                    overwrite: bool = False, progress: bool | None = False,
                    on_error: Callable[[str], None] | None = None, **options: Any) -> Report:
    """``u2seg remove INPUTS -o OUTPUT --engine ray`` from Python: plans the outputs, keeps the
    job's manifest in ``OUTPUT`` (a rerun does only what is missing, failed with
    ``retry_failed``, or changed) and runs the rest on Ray (``address``: see
    :func:`remove_files_ray`). ``options`` are :class:`~u2seg.infer.refine.RefineOptions`
    (``only_mask``, ``bgcolor`` …). Inputs that would share an output raise ``ValueError``.

    >>> report = remove_with_ray(["photos/"], "cutouts/", model="u2net", address="auto")  # doctest: +SKIP
    """
    refine = RefineOptions(**options)
    named = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(i) for i in inputs]
    output = Path(output)
    plan = plan_outputs(named, output, fmt=fmt, overwrite=True)
    if plan.conflicts:
        raise ValueError("; ".join(plan.conflicts))
    spec = PredictorSpec(model, weights, {"size": size} if size is not None else {})
    predictor = spec.build()
    manifest = Manifest(output / MANIFEST_NAME, settings_digest(predictor, refine, fmt, compression))
    run = manifest.decide(plan.tasks, force=force, retry_failed=retry_failed, overwrite=overwrite).run
    report = remove_files_ray(spec, run, refine, preparer=predictor.host_preparer(), fmt=fmt,
                              compression=compression, batch_size=batch_size, address=address, actors=actors,
                              manifest=manifest, progress=progress, on_error=on_error)
    report.failed.extend(f"{argument}: no such file, folder or match" for argument in plan.missing)
    return report


def remove_files_ray(spec: PredictorSpec, tasks: Sequence[Task], options: RefineOptions = RefineOptions(), *,
                     preparer: HostPreparer | None = None, fmt: str = "png", compression: int = 3,
                     batch_size: int = 1, workers: int | None = None, actors: int | None = None,
                     gpus: float | None = None, address: str | None = None,
                     on_error: Callable[[str], None] | None = None, progress: bool | None = None,
                     report: str | Path | None = None, review: Review | None = None,
                     manifest: Manifest | None = None,
                     on_record: Callable[[ImageRecord], None] | None = None) -> Report:
    """:func:`~u2seg.infer.removal.remove_files` on Ray: ``tasks`` are planned outputs, the
    Predictor is ``spec`` (each actor builds its own). Connects to ``address`` (``"auto"``, or
    ``"ray://HOST:10001"``), or uses the Ray this process already started, or else starts a local
    one (shut down at the end). ``preparer``: the Predictor's host pre-processing, run in the
    decoding tasks (``None``: the actors pre-process, e.g. on their GPU). ``actors``: predictor
    actors (default: one per GPU, else one per 4 CPUs); ``gpus``: GPUs per actor (default 1 when
    the cluster has GPUs); ``workers``: each actor's threads for the stages after the network."""
    if not tasks:
        return Report()
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        quiet = not logging.getLogger("u2seg").isEnabledFor(logging.INFO)
        ray.init(address=address, include_dashboard=False, log_to_driver=not quiet,
                 logging_level=logging.WARNING if quiet else logging.INFO)
    elif address is not None:
        log.info("Ray is already initialised in this process: --ray-address %s is not used", address)
    try:
        return _run(ray, spec, list(tasks), options, preparer=preparer, fmt=fmt, compression=compression,
                    batch_size=batch_size, workers=workers, actors=actors, gpus=gpus, on_error=on_error,
                    progress=progress, report=report, review=review, manifest=manifest, on_record=on_record)
    finally:
        if started_here:
            ray.shutdown()


def _run(ray: Any, spec: PredictorSpec, tasks: list[Task], options: RefineOptions, *, preparer, fmt, compression,
         batch_size, workers, actors, gpus, on_error, progress, report, review, manifest, on_record) -> Report:
    import sys

    from tqdm import tqdm

    resources = ray.cluster_resources()
    cluster_gpus = int(resources.get("GPU", 0))
    if gpus is None:
        gpus = 1.0 if cluster_gpus else 0.0
    if gpus:
        preparer = None  # the actors pre-process on their GPUs
    if actors is None:
        actors = max(1, int(cluster_gpus / gpus) if gpus else int(resources.get("CPU", 1)) // 4)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts images; Ray's would count blocks
    if not logging.getLogger("u2seg").isEnabledFor(logging.INFO):
        logging.getLogger("ray.data").setLevel(logging.ERROR)

    rows = [{"index": i, "source": str(task.source), "output": str(task.output)} for i, task in enumerate(tasks)]
    sinks = RecordSinks(report, manifest, on_record)
    if manifest is not None:
        manifest.claim(tasks)  # these outputs are this job's, recorded before any is written
    job = RemovalJob(options, fmt, compression, review=review)
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 1 + len(rows) // DECODE_ROWS)))
    # Different CPU requests keep Ray from fusing the tasks into the actors: decoding scales out
    # over every CPU of the cluster while the actors keep their networks loaded.
    folder = os.getcwd()
    dataset = dataset.map_batches(_decode_rows, fn_kwargs={"preparer": preparer, "max_pixels": job.max_pixels,
                                                           "folder": folder},
                                  batch_size=DECODE_ROWS, num_cpus=1)
    # Two calls at once per actor: one batch's network while the last one's images are finished.
    dataset = dataset.map_batches(
        _Remover, fn_constructor_kwargs={"spec": spec, "job": job, "workers": workers, "folder": folder},
        batch_size=max(1, batch_size), num_cpus=0.5, num_gpus=gpus or None,
        compute=ray.data.ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=2,
                                           enable_true_multi_threading=True))

    result_report = Report()
    start = time.perf_counter()
    show = len(tasks) > 1 if progress is None else progress
    try:
        with tqdm(total=len(tasks), unit="img", disable=not show, file=sys.stderr, dynamic_ncols=True) as bar:
            for row in dataset.iter_rows():
                record = ImageRecord.from_json(row["record"])
                written = [Path(path) for path in json.loads(row["written"])]
                _account(result_report, record, written)
                sinks.write(record)
                if record.error is not None and on_error is not None:
                    with bar.external_write_mode(file=bar.fp):
                        on_error(record.error)
                bar.update()
    finally:
        result_report.seconds = time.perf_counter() - start
        sinks.close()
    return result_report


def _account(report: Report, record: ImageRecord, written: list[Path]) -> None:
    report.processed += 1
    report.written.extend(written)
    if record.error is not None:
        report.failed.append(record.error)
    report.stages.add(record.seconds)


# ----------------------------------------------------------------------------- in the tasks

def _work_in(folder: str) -> None:
    """Work in the driver's folder ``folder`` where this machine has it, so that relative input
    and output paths (and ``--review``'s) name the same files as for the driver."""
    if os.getcwd() != folder and os.path.isdir(folder):
        os.chdir(folder)


def _decode_rows(batch: dict[str, Any], *, preparer: HostPreparer | None, max_pixels: int | None,
                 folder: str) -> dict[str, Any]:
    """Read, hash, decode and pre-process each row's file: one pickled payload each (the decoded
    image keeps its ICC profile; a failure is the payload's error line)."""
    _work_in(folder)
    payloads = []
    for index, source, output in zip(batch["index"], batch["source"], batch["output"]):
        item = Item(str(source), str(source), Path(str(output)))
        timer = Timer()
        facts: dict[str, Any] = {}
        try:
            with timer("decode"):
                data, facts = read_with_facts(str(source))
                image = load_image(data, name=str(source), max_pixels=max_pixels)
            prepared = None
            if preparer is not None:
                with timer("preprocess"):
                    prepared = preparer(image)
            payload = {"image": image, "prepared": prepared}
        except Exception as exc:  # noqa: BLE001 - this image's error line; the others go on
            payload = {"error": error_line(item, exc)}
        payload.update(index=int(index), item=item, facts=facts, seconds=timer.seconds)
        payloads.append(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    return {"payload": payloads}


# ----------------------------------------------------------------------------- in the actors

class _Remover:
    """One predictor actor: the network on each batch (one batch at a time), then the last stages
    of each image in a thread pool while the next batch's network runs (``max_concurrency=2``)."""

    def __init__(self, spec: PredictorSpec, job: RemovalJob, workers: int | None, folder: str) -> None:
        _work_in(folder)
        self.predictor = spec.build()
        self.job = job
        self.network = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=workers or 2, thread_name_prefix="u2seg-finish")

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        payloads = [pickle.loads(p) for p in batch["payload"]]
        results: list[Result | None] = [None] * len(payloads)
        ready, timers = [], {}
        for n, payload in enumerate(payloads):
            timer = Timer()
            for stage, seconds in payload["seconds"].items():
                timer.add(stage, seconds)
            timers[n] = timer
            if "error" in payload:
                results[n] = Result(payload["index"], payload["item"], error=payload["error"], seconds=timer.seconds,
                                    meta=payload["facts"])
                continue
            try:
                if payload["prepared"] is None or self.predictor.device_arithmetic is not None:
                    with timer("preprocess"):
                        payload["prepared"] = self.predictor.prepare(payload["image"])
                ready.append(n)
            except Exception as exc:  # noqa: BLE001
                results[n] = Result(payload["index"], payload["item"], error=error_line(payload["item"], exc),
                                    seconds=timer.seconds, meta=payload["facts"])
        if ready:
            start = time.perf_counter()
            try:
                with self.network:
                    probs = self.predictor.infer([payloads[n]["prepared"] for n in ready])
            except Exception as exc:  # noqa: BLE001 - the batch's images fail, the job goes on
                for n in ready:
                    results[n] = Result(payloads[n]["index"], payloads[n]["item"],
                                        error=error_line(payloads[n]["item"], exc), meta=payloads[n]["facts"])
                ready, probs = [], []
            share = (time.perf_counter() - start) / max(len(ready), 1)
            futures = {}
            for n, p in zip(ready, probs):
                timers[n].add("network", share)
                payload = payloads[n]
                prediction = Prediction(payload["item"], payload["image"], payload["prepared"], p, self.predictor,
                                        timers[n], payload["facts"])
                futures[n] = self.pool.submit(finish_prediction, prediction, self.job, payload["index"])
            for n, future in futures.items():
                try:
                    results[n] = future.result()
                except Exception as exc:  # noqa: BLE001
                    results[n] = Result(payloads[n]["index"], payloads[n]["item"],
                                        error=error_line(payloads[n]["item"], exc), seconds=timers[n].seconds,
                                        meta=payloads[n]["facts"])
        records, written = [], []
        review = self.job.review
        for result in results:
            assert result is not None
            records.append(record_for(result, review).to_json())
            written.append(json.dumps([str(path) for path in result.written]))
        return {"record": records, "written": written}
