"""Exported files derived from a model's weights, cached under ``$U2SEG_HOME/exports``.

Keyed by a hash of the weights (and what shapes the file), so a backend compiles a model once per
machine, not once per process, and a change of weights can never reuse a stale export.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..weights.cache import u2seg_home

__all__ = ["weights_fingerprint", "cached_export"]

log = logging.getLogger(__name__)
EXPORT_VERSION = 1  # bump when the exported graphs change


def weights_fingerprint(model: nn.Module) -> str:
    digest = hashlib.sha256(f"{getattr(model, 'arch', type(model).__name__)}|v{EXPORT_VERSION}|{torch.__version__}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_export(model: nn.Module, kind: str, build: Callable[[Path], Path], *, suffix: str = ".onnx") -> Path:
    """Return ``$U2SEG_HOME/exports/<arch>-<fingerprint>-<kind><suffix>``, building it if missing."""
    arch = getattr(model, "arch", type(model).__name__.lower())
    path = u2seg_home() / "exports" / f"{arch}-{weights_fingerprint(model)}-{kind}{suffix}"
    if not path.is_file():
        log.info("building %s export: %s", kind, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        build(path)
    return path
