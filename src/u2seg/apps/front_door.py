"""The one middleware every request passes: request id, API key, per-key limits, metrics, access log
and security headers.

It answers 401 and 429 itself (before any endpoint runs, so nothing is read from a refused
client), and it is the only place that decides which paths are public: ``/healthz`` and the web
page's own files, so that a browser can load the page and ask for a key.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .keys import KeyStore, LimitExceeded, Limiter
from .observability import ACCESS_LOGGER, REQUEST_ID, Metrics, request_id_for

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["install_front_door", "route_label", "presented_key", "PUBLIC_PATHS"]

PUBLIC_PATHS = ("/healthz", "/", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)
ROUTES = ("/api/remove", "/api/models", "/healthz", "/metrics", "/", "/docs", "/openapi.json", "/redoc")

access_log = logging.getLogger(ACCESS_LOGGER)


def route_label(path: str) -> str:
    """A bounded label for metrics: the known routes, ``/static`` or ``other``."""
    if path in ROUTES:
        return path
    if path.startswith(PUBLIC_PREFIXES):
        return "/static"
    return "other"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def presented_key(headers: Any) -> str | None:
    """The key from ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def install_front_door(app: FastAPI, *, keys: KeyStore | None, limiter: Limiter, metrics: Metrics) -> None:
    from fastapi import Request
    from fastapi.responses import JSONResponse

    def refuse(status: int, message: str, headers: dict[str, str]) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status, headers=headers)

    @app.middleware("http")
    async def front_door(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        request_id = request_id_for(request.headers.get("x-request-id"))
        token = REQUEST_ID.set(request_id)
        path = request.url.path
        status = 500
        key_name = None
        try:
            if keys is not None and not is_public(path):
                record = keys.authenticate(presented_key(request.headers))
                if record is None:
                    status = 401
                    missing = presented_key(request.headers) is None
                    response = refuse(401, "an API key is required: send 'Authorization: Bearer KEY' or "
                                           "'X-API-Key: KEY'" if missing else "invalid API key",
                                      {"WWW-Authenticate": 'Bearer realm="u2seg"'})
                else:
                    key_name = record.name
                    try:
                        with limiter.hold(record):
                            response = await call_next(request)
                    except LimitExceeded as exc:
                        response = refuse(429, str(exc), {"Retry-After": str(exc.retry_after)})
            else:
                response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = request_id
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            if path.startswith("/api/"):
                response.headers.setdefault("Cache-Control", "no-store")
            return response
        finally:
            seconds = time.perf_counter() - started
            metrics.observe(request.method, route_label(path), status, seconds)
            client = request.client.host if request.client else None
            access_log.info("%s %s %d %.3f s", request.method, path, status, seconds,
                            extra={"method": request.method, "path": path, "status": status,
                                   "seconds": round(seconds, 4), "client": client, "key": key_name})
            REQUEST_ID.reset(token)
