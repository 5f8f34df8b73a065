"""The HTTP service: ``POST /api/remove`` (an upload or a ``url``), ``GET /api/remove?url=``,
``GET /api/models``, ``GET /healthz``, ``GET /metrics`` and a web page at ``/``.

    from u2seg.apps.server import create_app, serve
    serve()                                   # http://127.0.0.1:7000, one inference at a time
    app = create_app(max_workers=2, api_keys="keys.jsonl")   # an ASGI app for any server

Design:

* Models are built once per name, lazily on first use, and shared by every request. By default
  only weights already in the cache (``$U2SEG_HOME``) are offered: a request never downloads
  weights. :func:`serve` fetches the default weights when missing and loads the default model at
  start-up (building a backend may write its compiled export to ``$U2SEG_HOME/exports``; that
  then happens before the first request).
* Every request goes through the model's streaming engine (:mod:`u2seg.infer.engine`): decoding,
  refinement and encoding in its ``max_workers`` worker threads, the network in its own thread,
  which gathers concurrent requests into one batch (at most ``max_batch`` images, waiting at most
  ``batch_wait_ms`` for more while others are still decoding). At most ``max_workers`` requests
  are in the engine at once; others wait in a queue of at most ``max_queue`` (uploads being read
  count); past that they get 503 with ``Retry-After``, so memory stays bounded however many
  clients connect: at most ``(max_workers + max_queue) × max_upload_bytes`` of request bodies, and
  decoded images for ``max_workers`` requests only. The network runs one call at a time (its
  thread), so no backend is ever called from two threads at once.
* Around every request, the front door (:mod:`.front_door`): request id, API key and per-key
  limits (:mod:`.keys`), metrics and the access log (:mod:`.observability`).
* Uploads are read into memory within size and time limits (:mod:`.uploads`); ``url`` inputs are
  fetched behind an address guard (:mod:`.url_input`).
* Errors are JSON ``{"detail": "..."}``: 400 undecodable image or malformed request, 401 no or
  a wrong API key, 403 a url at a refused address, 408 a body too slow, 413 too many bytes or
  pixels, 415 not an image content type, 422 invalid parameter, 429 over a key's limit, 502/504 a
  url that cannot be fetched / took too long, 503 busy or model unavailable.

Parameters of ``POST /api/remove`` come as query parameters or form fields (a form field wins).
The names are rembg's long names, and rembg's HTTP short names are accepted as aliases:
``model``, ``only_mask`` (``om``), ``alpha_matting`` (``a``), ``alpha_matting_foreground_threshold``
(``af``), ``alpha_matting_background_threshold`` (``ab``), ``alpha_matting_erode_size`` (``ae``),
``post_process_mask`` (``ppm``), ``bgcolor`` (``bgc``), plus ``threshold``, ``decontaminate``,
``crop``, ``crop_margin``, ``format`` and ``url``.
"""

import asyncio
import contextvars
import functools
import io
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run time.
if TYPE_CHECKING:  # heavy imports stay lazy: `import u2seg.apps.server` must be cheap
    import argparse

    from fastapi import FastAPI

    from ..infer.predictor import Predictor

from .http_errors import ApiError, one_line
from .uploads import DEFAULT_UPLOAD_TIMEOUT, is_image_type, read_upload
from .url_input import DEFAULT_URL_TIMEOUT, UrlGuard, fetch_url
from ..weights.registry import DEFAULT_WEIGHTS

__all__ = ["create_app", "serve", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_MAX_PIXELS", "RemoveParams",
           "parse_remove_params"]

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024   # an encoded image
DEFAULT_MAX_PIXELS = 36_000_000                # 36 MP: 6000×6000, any current camera
DEFAULT_MAX_QUEUE = 32                         # requests waiting for a worker
DEFAULT_BATCH_WAIT_MS = 10.0                   # how long the network waits for concurrent requests
STATIC_DIR = Path(__file__).resolve().parent / "static"

# The web page loads nothing but its own files.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


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


def _default_factory(name: str) -> "Predictor":
    """The cached pretrained weights ``name`` from the shared Predictor cache; never downloads
    (a request must not write to disk)."""
    from ..infer.sessions import get_predictor

    return get_predictor(name, offline=True)


class _Service:
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
        from ..infer.engine import Item
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


def create_app(*, predictor_factory: PredictorFactory | None = None, max_workers: int = 1,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_queue: int = DEFAULT_MAX_QUEUE, models: Sequence[str] | None = None,
               default_model: str = DEFAULT_WEIGHTS, max_batch: int | None = None,
               batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS, api_keys: str | Path | None = None,
               key_requests_per_minute: int | None = None, key_concurrent: int | None = None,
               url_guard: UrlGuard | None = None, url_timeout: float = DEFAULT_URL_TIMEOUT,
               upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT) -> "FastAPI":
    """The ASGI application.

    Args:
        predictor_factory: ``name -> Predictor``, called once per model name on first use; default:
            the cached pretrained weights of that name (never downloaded from a request).
        max_workers: images processed at the same time (decode + inference + encode).
        max_upload_bytes: largest accepted encoded image.
        max_pixels: largest accepted image (width × height), checked on the header and after decoding.
        max_queue: requests that may wait for a worker; more get 503 with ``Retry-After``.
        models: the model names offered; default: the registered weights found in the cache.
        default_model: used when a request names none (falls back to the first available).
        max_batch: most images per network call, gathered from concurrent requests (default
            ``max_workers``); ``batch_wait_ms``: how long the network waits for them.
        api_keys: a keys file (:mod:`u2seg.apps.keys`): every endpoint but ``/healthz`` and the
            page's files then needs a key; ``key_requests_per_minute`` and ``key_concurrent`` are
            the limits of keys that set none (``None``: no limit).
        url_guard: which addresses ``url`` inputs may come from (default: public ones only);
            ``url_timeout``: seconds for a whole fetch.
        upload_timeout: seconds for a whole request body (408 past it).
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .. import __version__
    from ..errors import ImageReadError
    from ..infer.options import http_parameters
    from .front_door import install_front_door
    from .keys import KeyStore, Limiter
    from .observability import Metrics

    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers}")
    if (max_batch is not None and max_batch < 1) or batch_wait_ms < 0:
        raise ValueError("max_batch must be at least 1 and batch_wait_ms not negative")
    if max_upload_bytes < 1 or max_pixels < 1 or max_queue < 0:
        raise ValueError("max_upload_bytes and max_pixels must be positive and max_queue not negative")
    service = _Service(predictor_factory or _default_factory, max_workers=max_workers, max_queue=max_queue,
                       max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, models=models,
                       default_model=default_model, max_batch=max_batch, batch_wait_ms=batch_wait_ms)
    keys = KeyStore(api_keys) if api_keys is not None else None
    limiter = Limiter(key_requests_per_minute, key_concurrent)
    metrics = Metrics(waiting=service.waiting, running=lambda: service.running)
    service.metrics = metrics
    guard = url_guard or UrlGuard()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        service.close()

    app = FastAPI(
        title="u2seg", version=__version__, lifespan=lifespan,
        description="Background removal with U²-Net, on this machine. Images are processed in memory "
                    "and never stored.",
    )
    app.state.service = service
    app.state.keys = keys

    def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status, headers=dict(headers or {}))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = ["{}: {}".format(".".join(str(p) for p in e.get("loc", ())), e.get("msg", "")) for e in exc.errors()]
        return error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error while handling %s %s", request.method, request.url.path)
        return error(500, "internal server error")

    install_front_door(app, keys=keys, limiter=limiter, metrics=metrics)

    # -------------------------------------------------------------- API
    remove_responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {"image/png": {}, "image/webp": {}},
              "description": "The cutout or the mask; `X-U2seg-Confidence` says how much to trust it (0-1)."},
        400: {"description": "Undecodable image or malformed request."},
        413: {"description": "Too many bytes or too many pixels."},
        408: {"description": "The request body took too long."},
        415: {"description": "Not an image content type."},
        422: {"description": "Invalid parameter."},
        503: {"description": "Busy (queue full) or model unavailable."},
    }
    form_properties: dict[str, Any] = {"file": {"type": "string", "format": "binary",
                                                "description": "The image (any format Pillow or OpenCV reads)."}}
    parameters = http_parameters()  # (name, type, description), from the option table
    form_properties.update({name: {"type": typ, "description": desc} for name, typ, desc in parameters})
    form_properties["url"] = {"type": "string", "description": "http(s) address of the image, instead of 'file'"}
    remove_openapi = {
        "parameters": [{"name": name, "in": "query", "required": False, "schema": {"type": typ},
                        "description": desc} for name, typ, desc in parameters],
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object",
                                               "properties": form_properties}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        }},
    }

    def query_of(request: Request) -> dict[str, str]:
        query = dict(request.query_params)
        if len(query) != len(request.query_params.multi_items()):
            raise ApiError(422, "a query parameter is given twice")
        return query

    async def answer(request: Request, read: Callable[[], Any]) -> Response:
        """Admit the request, get the image and its options from ``read()`` (an awaitable of
        ``(data, options, label)``), run it and answer the cutout."""
        started = time.perf_counter()
        # Counted from the start, upload included: at most workers + queue bodies are in memory.
        if service.in_flight >= service.max_workers + service.max_queue:
            raise ApiError(503, "the server is busy; try again shortly", {"Retry-After": "1"})
        service.in_flight += 1
        try:
            data, options, label = await read()
            params = parse_remove_params(options)
            available = service.available()
            model = params.model or service.default(available)
            if model is None:
                raise ApiError(503, "no model weights are available; fetch some with "
                                   f"'u2seg weights fetch {DEFAULT_WEIGHTS}'")
            if model not in available and not _is_available_cascade(model, available):
                raise ApiError(422, f"unknown model {model!r}; available: {', '.join(available)} "
                                    f"(or a cascade of two, e.g. u2netp+u2net)")
            if not data:
                raise ApiError(400, "empty image")
            service.check_header(data)
            loop = asyncio.get_running_loop()
            # The request's context (its id) goes with it into the worker thread's log lines.
            run = functools.partial(contextvars.copy_context().run, service.process, data, params, model, label)
            body, score, made_by = await loop.run_in_executor(service.executor, run)
        except ImageReadError as exc:
            raise ApiError(400, str(exc)) from None
        finally:
            service.in_flight -= 1
        media = "image/webp" if params.format == "webp" else "image/png"
        headers = {"X-Model": made_by, "X-Process-Time": f"{time.perf_counter() - started:.3f}"}
        if score is not None:
            headers["X-U2seg-Confidence"] = f"{score:.3f}"
        return Response(body, media_type=media, headers=headers)

    async def fetch(url: str) -> bytes:
        """The image at ``url``, behind the address guard, in a thread (blocking sockets)."""
        loop = asyncio.get_running_loop()
        run = functools.partial(contextvars.copy_context().run, fetch_url, url, guard=guard,
                                max_bytes=service.max_upload_bytes, timeout=url_timeout)
        data, mime = await loop.run_in_executor(None, run)
        if mime and not is_image_type(mime):
            raise ApiError(415, f"url gives {mime!r}, not an image")
        return data

    @app.post("/api/remove", summary="Remove the background of an image", response_class=Response,
              responses=remove_responses, openapi_extra=remove_openapi)
    async def remove_background(request: Request) -> Response:
        """Send the image as multipart field ``file`` or as the raw body (``Content-Type: image/*``),
        or its address as form field ``url``; get back a PNG or WebP: an RGBA cutout, or the mask
        with ``only_mask``."""
        query = query_of(request)

        async def read() -> tuple[bytes, dict[str, str], str]:
            data, fields, filename = await read_upload(request, service.max_upload_bytes, timeout=upload_timeout)
            options = {**query, **fields}
            url = options.pop("url", None)
            if data is not None and url is not None:
                raise ApiError(422, "send either an image (field 'file') or 'url', not both")
            if data is None:
                if url is None:
                    raise ApiError(422, "no image: send it as multipart field 'file', or its address as 'url'")
                return await fetch(url), options, "url"
            return data, options, _label(filename)

        return await answer(request, read)

    @app.get("/api/remove", summary="Remove the background of the image at a URL", response_class=Response,
             responses={**remove_responses, 403: {"description": "The URL's host is at a non-public address."},
                        502: {"description": "The URL could not be fetched."},
                        504: {"description": "Fetching the URL took too long."}},
             openapi_extra={"parameters": [{"name": "url", "in": "query", "required": True,
                                            "schema": {"type": "string"},
                                            "description": "http(s) address of the image"}]
                            + remove_openapi["parameters"]})
    async def remove_by_url(request: Request) -> Response:
        """``GET /api/remove?url=https://...``: the image is fetched by the server (public addresses
        only, unless the server allows more), with the same options as ``POST``."""
        query = query_of(request)

        async def read() -> tuple[bytes, dict[str, str], str]:
            url = query.pop("url", None)
            if not url:
                raise ApiError(422, "give the image's address as query parameter 'url' (or POST the image)")
            return await fetch(url), query, "url"

        return await answer(request, read)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type.split(";")[0],
                        headers={"Content-Type": content_type})

    @app.get("/api/models", summary="Models with weights available")
    async def api_models() -> dict[str, Any]:
        from ..weights import get_weights

        available = service.available()
        entries = []
        for name in available:
            with service.lock:
                predictor = service.predictors.get(name)
            item: dict[str, Any] = {"name": name, "loaded": predictor is not None}
            try:
                w = get_weights(name)
                item.update(architecture=w.model, input_size=list(w.input_size), description=w.description,
                            license=w.license)
            except Exception:  # noqa: BLE001 - a name the factory serves but the registry lacks
                pass
            if predictor is not None:
                item["input_size"] = list(predictor.preprocessing.size)
                item["architecture"] = predictor.model_name or item.get("architecture")
            entries.append(item)
        return {"default": service.default(available), "models": entries,
                "limits": {"max_upload_bytes": service.max_upload_bytes, "max_pixels": service.max_pixels,
                           "max_workers": service.max_workers}}

    @app.head("/healthz", include_in_schema=False)
    async def healthz_head() -> Response:
        return Response(status_code=200)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, Any]:
        with service.lock:
            loaded, running, served = sorted(service.predictors), service.running, service.served
            peak = service.peak_running
        return {"status": "ok", "version": __version__, "models_loaded": loaded, "workers": service.max_workers,
                "running": running, "peak_running": peak, "waiting": service.waiting(),
                "served": served}

    # -------------------------------------------------------------- the web page
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache",
                                     "Referrer-Policy": "no-referrer"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _is_available_cascade(model: str, available: Sequence[str]) -> bool:
    from ..infer.cascade import parse_cascade

    try:
        pair = parse_cascade(model)
    except ValueError:
        return False
    return pair is not None and all(name in available for name in pair)


def _label(filename: str | None) -> str:
    """How an upload is named in error messages: its base name, short and printable."""
    if not filename:
        return "upload"
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c if c.isprintable() else "?" for c in name)[:100]
    return name or "upload"


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(host: str = "127.0.0.1", port: int = 7000, *, log_level: str = "info", log_format: str = "text",
          fetch_default: bool = True, preload: bool = True, **app_options: Any) -> None:
    """Run the service with uvicorn until interrupted (Ctrl-C).

    Binds to ``127.0.0.1`` unless told otherwise; binding to another address without
    ``api_keys`` is logged as a warning (anyone who can reach it can use it). With
    ``fetch_default`` and the default factory, the default model's weights are fetched at start-up
    when missing (never from a request); with ``preload`` the default model is loaded before the
    first request instead of on it (other models load on first use). Log lines are text or JSON
    (``log_format``), each with its request id; the access log is ours (uvicorn's is off), so it
    has the id too. ``app_options`` go to :func:`create_app`.
    """
    import uvicorn

    from ..errors import WeightsError
    from .observability import configure_logging

    configure_logging(log_level, log_format)
    if not is_loopback(host) and app_options.get("api_keys") is None:
        log.warning("binding to %s without API keys: anyone who can reach this address can use the service; "
                    "make keys with 'u2seg keys create NAME --file KEYS' and pass --api-keys KEYS", host)
    if fetch_default and app_options.get("predictor_factory") is None and app_options.get("models") is None:
        from ..weights import fetch_weights

        name = app_options.get("default_model", DEFAULT_WEIGHTS)
        try:
            fetch_weights(name)
        except WeightsError as exc:
            log.warning("%s", exc)
    app = create_app(**app_options)
    if preload:  # load the default model now: the first request is fast, and no request builds caches
        service = app.state.service
        name = service.default(service.available())
        if name is not None:
            try:
                service.predictor(name)
            except WeightsError as exc:
                log.warning("%s", exc)
    shown = f"[{host}]" if ":" in host else host
    keys = app.state.keys
    log.info("u2seg web page: http://%s:%d/  (API docs: /docs; metrics: /metrics%s)", shown, port,
             f"; API keys from {keys.path}" if keys is not None else "")
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False, access_log=False,
                log_config=None)


def main(argv: Sequence[str] | None = None) -> None:
    """``u2seg serve [--host H] [--port P] [--workers N] [--api-keys KEYS] ...`` (also
    ``python -m u2seg.apps.server``)."""
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    for name in ("key_rpm", "key_concurrency"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        guard = UrlGuard.from_option(args.allow_private_urls)
    except ValueError as exc:
        parser.error(str(exc))
    serve(args.host, args.port, log_level=args.log_level, log_format=args.log_format, default_model=args.model,
          max_workers=args.workers,
          max_batch=args.batch_size, batch_wait_ms=args.batch_wait_ms,
          max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
          upload_timeout=args.upload_timeout, api_keys=args.api_keys, key_requests_per_minute=args.key_rpm,
          key_concurrent=args.key_concurrency, url_guard=guard, url_timeout=args.url_timeout)


def build_arg_parser() -> "argparse.ArgumentParser":
    """``u2seg serve``'s options."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="u2seg serve",
        description="Run the u2seg HTTP service and web page (what `u2seg serve` runs).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=7000, help="default 7000")
    parser.add_argument("--model", "-m", default=DEFAULT_WEIGHTS,
                        help="model for requests that name none, loaded at start (default %(default)s; "
                             "-m u2netp is the fast one); every cached model stays available")
    parser.add_argument("--workers", type=int, default=1, help="images processed at once (default 1)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="most images per network call, from concurrent requests (default: --workers)")
    parser.add_argument("--batch-wait-ms", type=float, default=DEFAULT_BATCH_WAIT_MS, metavar="MS",
                        help="how long the network waits for concurrent requests (default %(default)s)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_BYTES / 2**20,
                        help="largest accepted upload in MiB (default %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="largest accepted image, width × height (default %(default)s)")
    parser.add_argument("--upload-timeout", type=float, default=DEFAULT_UPLOAD_TIMEOUT, metavar="S",
                        help="seconds for a whole request body; slower clients get 408 (default %(default)s)")
    access = parser.add_argument_group("access")
    access.add_argument("--api-keys", metavar="KEYS",
                        help="keys file (u2seg keys create NAME --file KEYS): every endpoint but /healthz and "
                             "the page's files then needs 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
    access.add_argument("--key-rpm", type=int, metavar="N",
                        help="requests per minute per key, for keys that set none (default: no limit)")
    access.add_argument("--key-concurrency", type=int, metavar="N",
                        help="requests at once per key, for keys that set none (default: no limit)")
    access.add_argument("--allow-private-urls", nargs="*", metavar="CIDR",
                        help="let 'url' inputs reach non-public addresses: all of them (no value) or these "
                             "networks (e.g. 10.1.0.0/16); default: public addresses only")
    access.add_argument("--url-timeout", type=float, default=DEFAULT_URL_TIMEOUT, metavar="S",
                        help="seconds for fetching a 'url' input (default %(default)s)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    parser.add_argument("--log-format", default="text", choices=("text", "json"),
                        help="log lines as text or one JSON object each (default %(default)s)")
    return parser


if __name__ == "__main__":
    main()
