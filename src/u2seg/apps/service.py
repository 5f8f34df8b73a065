"""What the HTTP service (:mod:`.server`) runs a request with: its parameters (:class:`RemoveParams`)
and :class:`Service`, the shared state behind the routes: one model and streaming engine per name,
built on first use; the bounded queue's counters; the request threads; the pixel checks.

The routes (:mod:`.routes`) admit a request, read its image and hand it to :meth:`Service.process`
in a request thread; the model's engine batches it with concurrent ones.
"""

import io
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay lazy: `import u2seg.apps.server` must be cheap
    from ..infer.predictor import Predictor

from .http_errors import ApiError, one_line

__all__ = ["Service", "RemoveParams", "parse_remove_params", "PredictorFactory", "default_factory",
           "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_QUEUE", "DEFAULT_BATCH_WAIT_MS"]

# The service's log lines keep the logger name they had before the split (the JSON log shows it).
log = logging.getLogger("u2seg.apps.server")

DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024   # an encoded image
DEFAULT_MAX_PIXELS = 36_000_000                # 36 MP: 6000×6000, any current camera
DEFAULT_MAX_QUEUE = 32                         # requests waiting for a worker
DEFAULT_BATCH_WAIT_MS = 10.0                   # how long the network waits for concurrent requests


# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class RemoveParams:
    model: str | None
    format: str
    only_mask: bool
    refine: Any  # u2seg.infer.refine.RefineOptions


def parse_remove_params(values: Mapping[str, str]) -> RemoveParams:
    """Validate ``POST /api/remove``'s options (already merged: query, then form fields) with the
    option table (:func:`u2seg.infer.options.parse_http`: names, aliases, types, ranges).

    Raises :class:`ApiError` 422 naming the parameter; unknown names are refused too, so a typo
    never passes silently.
    """
    from ..infer.options import OptionError, parse_http

    try:
        refine, fmt, model = parse_http(values)
    except OptionError as exc:
        raise ApiError(422, str(exc)) from None
    return RemoveParams(model=model, format=fmt, only_mask=refine.only_mask, refine=refine)


# --------------------------------------------------------------------------- the service

PredictorFactory = Callable[[str], "Predictor"]


def _cached_weight_names() -> list[str]:
    """Registered weights whose converted copy is in the cache (a cheap check: no file is read)."""
    from ..weights import list_weights, weights_dir
    from ..weights.convert import CONFIG_FILE, WEIGHTS_FILE

    names = []
    for entry in list_weights():
        folder = weights_dir(entry.name)
        if (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file():
            names.append(entry.name)
    return names


def default_factory(name: str) -> "Predictor":
    """The cached pretrained weights ``name`` from the shared Predictor cache; never downloads
    (a request must not write to disk)."""
    from ..infer.sessions import get_predictor

    return get_predictor(name, offline=True)


class Service:
    """The state every request of one app shares (``app.state.service``); see :func:`.server.create_app`
    for what the limits mean."""

    def __init__(self, factory: PredictorFactory, *, max_workers: int, max_queue: int, max_upload_bytes: int,
                 max_pixels: int, models: Sequence[str] | None, default_model: str, max_batch: int | None = None,
                 batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS) -> None:
        self.factory = factory
        self.max_workers = max_workers
        self.max_queue = max_queue
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.max_batch = max_batch or max_workers
        self.batch_wait_ms = batch_wait_ms
        self.fixed_models = list(models) if models is not None else None
        self.default_model = default_model
        # Request threads only wait for the engine; there are max_workers of them, so at most that
        # many images are decoded at once, and concurrent ones share the network's batches.
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="u2seg-request")
        self.predictors: dict[str, Predictor] = {}
        self.engines: dict[str, Any] = {}   # model name -> u2seg.infer.engine.Engine
        self.lock = threading.Lock()
        self.model_locks: dict[str, threading.Lock] = {}   # one model build at a time, per name
        self.in_flight = 0  # requests queued or running; touched on the event loop only
        self.running = 0   # touched under self.lock
        self.peak_running = 0
        self.served = 0
        self.metrics: Any = None   # u2seg.apps.observability.Metrics, set by create_app

    def waiting(self) -> int:
        """Requests admitted but not yet running (uploads being read included)."""
        return max(self.in_flight - self.running, 0)

    # models ---------------------------------------------------------------
    def available(self) -> list[str]:
        names = self.fixed_models if self.fixed_models is not None else _cached_weight_names()
        with self.lock:
            loaded = list(self.predictors)
        return sorted(set(names) | set(loaded))

    def default(self, available: Sequence[str]) -> str | None:
        if self.default_model in available:
            return self.default_model
        return available[0] if available else None

    def predictor(self, name: str) -> "Predictor":
        """The shared predictor for ``name``, built on first use (once, even under concurrency)."""
        return self.engine(name).predictor

    def engine(self, name: str) -> Any:
        """The engine that serves model ``name``: its network thread gathers concurrent requests
        into batches of up to ``max_batch`` (waiting at most ``batch_wait_ms`` for more)."""
        from ..infer.engine import Engine

        with self.lock:
            if name in self.engines:
                return self.engines[name]
            lock = self.model_locks.setdefault(name, threading.Lock())
        with lock:
            with self.lock:
                if name in self.engines:
                    return self.engines[name]
            started = time.perf_counter()
            predictor = self.factory(name)
            log.info("loaded model %s in %.1f s", name, time.perf_counter() - started)
            engine = Engine(predictor, batch_size=self.max_batch, workers=self.max_workers,
                            max_wait_ms=self.batch_wait_ms)
            with self.lock:
                self.engines[name] = engine
                self.predictors[name] = predictor
            return engine

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            engines = list(self.engines.values())
        for engine in engines:
            engine.close()

    # one request, in a request thread --------------------------------------
    def process(self, data: bytes, params: RemoveParams, model: str, label: str = "upload"
                ) -> tuple[bytes, float | None, str]:
        """The encoded output, its confidence score and the model that made it (a cascade's
        small or large one)."""
        from ..errors import ImageReadError, WeightsError
        from ..infer.job_types import Item
        from ..infer.removal import PixelLimitError, RemovalJob

        with self.lock:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        try:
            try:
                engine = self.engine(model)
            except WeightsError as exc:
                raise ApiError(503, f"model {model!r} is unavailable: {one_line(str(exc))}") from None
            job = RemovalJob(params.refine, params.format, max_pixels=self.max_pixels)
            result = engine.submit(Item(data, label), job).result()
            exc = result.exception
            if exc is None:
                if self.metrics is not None:
                    self.metrics.image_done(model)
                made_by = result.model if "+" in model and result.model else model  # a cascade: which ran
                return result.value, result.confidence.score if result.confidence is not None else None, made_by
            if isinstance(exc, ImageReadError):
                raise ApiError(400, str(exc))
            if isinstance(exc, PixelLimitError):
                raise ApiError(413, str(exc))
            if isinstance(exc, ValueError):  # WebP's 16383 px limit
                raise ApiError(422, one_line(str(exc)))
            raise exc
        finally:
            with self.lock:
                self.running -= 1
                self.served += 1

    def check_pixels(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise ApiError(413, f"image of {width}×{height} = {width * height:,} pixels is over the limit "
                                f"of {self.max_pixels:,} pixels")

    def check_header(self, data: bytes) -> None:
        """Refuse an image whose header declares too many pixels before decoding a single one."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                size = im.size
        except Image.DecompressionBombError:
            raise ApiError(413, f"image is over the limit of {self.max_pixels:,} pixels") from None
        except Exception:  # noqa: BLE001 - not for Pillow: load_image tries OpenCV and reports
            return
        self.check_pixels(*size)
