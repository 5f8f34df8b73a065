"""What the service tells its operator: request ids, logs (text or JSON) and Prometheus metrics.

* Every request gets an id: the client's ``X-Request-ID`` when it is a short token, else a new
  one. It is answered in ``X-Request-ID`` and carried by every log line written while the request
  runs (a context variable, so it follows the request into worker threads started with
  ``contextvars``).
* ``--log-format json`` writes one JSON object per line (time, level, logger, message, request_id
  and the access line's fields); the default is text.
* ``/metrics``: requests by route and status, latency histogram, requests waiting and running,
  images processed by model, and images/s over the last minute. Each app has its own registry, so
  several apps in one process (tests) do not share counters.
"""

from __future__ import annotations

import collections
import contextvars
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

__all__ = ["REQUEST_ID", "request_id_for", "RequestIdFilter", "JsonFormatter", "configure_logging", "Metrics",
           "ACCESS_LOGGER"]

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("u2seg_request_id", default=None)
ACCESS_LOGGER = "u2seg.access"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id_for(header: str | None) -> str:
    """The client's request id when it is a harmless token (≤ 64 of ``A-Za-z0-9._:-``), else a
    new one: nothing a client sends reaches a log line unchecked."""
    if header and _CLIENT_ID.match(header):
        return header
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (``None`` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields passed with ``extra=`` are kept."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [{request_id}]" if request_id else line


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Send u2seg's and uvicorn's log lines to stderr, as text or JSON, each with its request id."""
    import sys

    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else _TextFormatter("%(levelname)s:     %(message)s"))
    numeric = getattr(logging, level.upper(), logging.INFO)
    for name in ("u2seg", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(numeric)
        logger.propagate = False


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    # Latency buckets for one image: from a cache-hot thumbnail to a big photo on a slow CPU.
    BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

    def __init__(self, waiting: Callable[[], float], running: Callable[[], float]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("u2seg_requests", "HTTP requests answered, by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("u2seg_request_duration_seconds", "Time from request to response, by route",
                                 ["route"], buckets=self.BUCKETS, registry=self.registry)
        self.images = Counter("u2seg_images", "Images processed, by model", ["model"], registry=self.registry)
        self.queue = Gauge("u2seg_queue_depth", "Requests waiting for a worker (uploads being read included)",
                           registry=self.registry)
        self.queue.set_function(waiting)
        self.running = Gauge("u2seg_requests_running", "Requests being processed", registry=self.registry)
        self.running.set_function(running)
        self.rate = Gauge("u2seg_images_per_second", "Images processed per second over the last minute",
                          registry=self.registry)
        self.rate.set_function(self.images_per_second)
        self._done: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def image_done(self, model: str) -> None:
        self.images.labels(model).inc()
        now = time.monotonic()
        with self._lock:
            self._done.append(now)
            self._trim(now)

    def images_per_second(self, window: float = 60.0) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now, window)
            return len(self._done) / window

    def _trim(self, now: float, window: float = 60.0) -> None:
        while self._done and self._done[0] < now - window:
            self._done.popleft()

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
