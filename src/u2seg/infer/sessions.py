"""The one cache of Predictors: ``remove()``, the CLI, the HTTP service and the window share it.

A Predictor holds a loaded (often compiled) network, so building one costs seconds; each set of
settings is built once per process, even when several threads ask at once, and the least
recently used are dropped beyond ``MAX_PREDICTORS``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cascade import DEFAULT_CASCADE_BELOW, Cascade, parse_cascade
from .predictor import Predictor

__all__ = ["get_predictor", "clear_predictors", "PredictorSpec", "MAX_PREDICTORS"]

MAX_PREDICTORS = 4

_cache: OrderedDict[tuple, Predictor] = OrderedDict()
_lock = threading.Lock()
_building: dict[tuple, threading.Lock] = {}


@dataclass(frozen=True)
class PredictorSpec:
    """The arguments of :func:`get_predictor`, kept to build the same Predictor elsewhere: the
    CLI builds its own from it, and each of the Ray engine's actors builds one in its process."""

    model: str | None = None
    weights: str | Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Predictor:
        return get_predictor(self.model, weights=self.weights, **self.settings)


def get_predictor(model: str | None = None, *, weights: str | Path | None = None, offline: bool = False,
                  **settings: Any) -> Predictor:
    """The shared Predictor for these settings (``Predictor``'s keyword arguments), built on
    first use. ``offline=True`` takes the registry's weights ``model`` only from the cache
    (the HTTP service: a request never downloads). Settings that cannot be hashed (calibration
    images, a ready backend) get a Predictor of their own, not cached."""
    pair = parse_cascade(model)
    if pair is not None:  # "small+large": two cached Predictors behind one Cascade
        if weights is not None:
            raise ValueError("a cascade (-m small+large) takes registry weights, not --weights")
        below = settings.pop("cascade_below", None)
        small, large = (get_predictor(name, offline=offline, **settings) for name in pair)
        return Cascade(small, large, DEFAULT_CASCADE_BELOW if below is None else below)  # type: ignore[return-value]
    settings.pop("cascade_below", None)
    if offline and weights is None and model is not None:
        from ..weights import fetch_weights

        weights, model = fetch_weights(model, offline=True), None  # a weights name, not an architecture
    # Registry weights are looked up under $U2SEG_HOME: another home is another Predictor.
    where = str(weights) if weights is not None else os.environ.get("U2SEG_HOME", "")
    key = (model, where, tuple(sorted(settings.items())))
    try:
        hash(key)
    except TypeError:
        return Predictor(model, weights=weights, **settings)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        building = _building.setdefault(key, threading.Lock())
    with building:  # one build per key; other keys build in parallel
        with _lock:
            if key in _cache:
                return _cache[key]
        predictor = Predictor(model, weights=weights, **settings)
        with _lock:
            _cache[key] = predictor
            _building.pop(key, None)
            while len(_cache) > MAX_PREDICTORS:
                _cache.popitem(last=False)
        return predictor


def clear_predictors() -> None:
    """Forget every cached Predictor (tests, or to free memory)."""
    with _lock:
        _cache.clear()
