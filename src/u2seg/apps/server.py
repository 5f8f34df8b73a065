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

Where things are: this module builds the app (:func:`create_app`) and runs it (:func:`serve`,
:func:`main`); :mod:`.service` holds the request parameters and the shared service (models,
engines, queue counters, pixel checks); :mod:`.routes` the endpoints, error handlers and web page.
"""

import ipaddress
import logging
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay lazy: `import u2seg.apps.server` must be cheap
    import argparse

    from fastapi import FastAPI

from .http_errors import ApiError
from .routes import add_image_routes, add_page, add_status_routes, install_error_handlers
from .service import (DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_PIXELS, DEFAULT_MAX_QUEUE, DEFAULT_MAX_UPLOAD_BYTES,
                      PredictorFactory, RemoveParams, Service, default_factory, parse_remove_params)
from .uploads import DEFAULT_UPLOAD_TIMEOUT
from .url_input import DEFAULT_URL_TIMEOUT, UrlGuard
from .. import __version__
from ..weights.registry import DEFAULT_WEIGHTS

# RemoveParams, parse_remove_params and ApiError live in .service and .http_errors; they are
# re-exported here because tests and callers import them from this module.
__all__ = ["create_app", "serve", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_MAX_PIXELS", "RemoveParams",
           "parse_remove_params", "ApiError"]

log = logging.getLogger(__name__)


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
    from fastapi import FastAPI

    from .front_door import install_front_door
    from .keys import KeyStore, Limiter
    from .observability import Metrics

    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers}")
    if (max_batch is not None and max_batch < 1) or batch_wait_ms < 0:
        raise ValueError("max_batch must be at least 1 and batch_wait_ms not negative")
    if max_upload_bytes < 1 or max_pixels < 1 or max_queue < 0:
        raise ValueError("max_upload_bytes and max_pixels must be positive and max_queue not negative")
    service = Service(predictor_factory or default_factory, max_workers=max_workers, max_queue=max_queue,
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

    install_error_handlers(app)
    install_front_door(app, keys=keys, limiter=limiter, metrics=metrics)
    add_image_routes(app, service, guard=guard, url_timeout=url_timeout, upload_timeout=upload_timeout)
    add_status_routes(app, service, metrics)
    add_page(app)
    return app


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
