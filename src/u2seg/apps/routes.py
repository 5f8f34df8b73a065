"""The HTTP service's routes and error handlers, each group added to the app by one function that
:func:`u2seg.apps.server.create_app` calls: the JSON errors, ``/api/remove`` (POST and GET), the
status endpoints (``/metrics``, ``/api/models``, ``/healthz``) and the web page.
"""

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run time.
if TYPE_CHECKING:  # heavy imports stay lazy: `import u2seg.apps.server` must be cheap
    from fastapi import FastAPI

    from .observability import Metrics

from .http_errors import ApiError
from .service import Service, parse_remove_params
from .uploads import is_image_type, read_upload
from .url_input import UrlGuard, fetch_url
from .. import __version__
from ..errors import ImageReadError
from ..weights.registry import DEFAULT_WEIGHTS

__all__ = ["install_error_handlers", "add_image_routes", "add_status_routes", "add_page", "STATIC_DIR",
           "PAGE_CSP"]

# The routes' log lines keep the logger name they had before the split (the JSON log shows it).
log = logging.getLogger("u2seg.apps.server")

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The web page loads nothing but its own files.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


def install_error_handlers(app: "FastAPI") -> None:
    """Every error, ours or the framework's, answered as JSON ``{"detail": "..."}``."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

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


def add_image_routes(app: "FastAPI", service: Service, *, guard: UrlGuard, url_timeout: float,
                     upload_timeout: float) -> None:
    """``POST /api/remove`` (an upload or a ``url``) and ``GET /api/remove?url=``."""
    from fastapi import Request
    from fastapi.responses import Response

    from ..infer.options import http_parameters

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


def add_status_routes(app: "FastAPI", service: Service, metrics: "Metrics") -> None:
    """``GET /metrics``, ``GET /api/models`` and ``/healthz``."""
    from fastapi.responses import Response

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


def add_page(app: "FastAPI") -> None:
    """The web page at ``/`` and its files under ``/static``."""
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache",
                                     "Referrer-Policy": "no-referrer"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


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
