"""Exported files derived from a model's weights, cached under ``$U2SEG_HOME/exports``.

Keyed by a fingerprint of the weights (their recorded sha256 when they came from a u2seg folder,
else a hash of the tensors), the head size, the export code's version and torch's, so a backend
compiles a model once per machine, not once per process, and changed weights never reuse a stale
export. A fingerprint from a folder's sha256 needs no torch: a cached export starts without it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..weights.cache import u2seg_home

if TYPE_CHECKING:
    from torch import nn

__all__ = ["EXPORT_VERSION", "fingerprint", "model_fingerprint", "export_path", "cached_export"]

log = logging.getLogger(__name__)
EXPORT_VERSION = 1  # bump when the exported graphs change


def _torch_version() -> str:
    try:
        return version("torch")
    except PackageNotFoundError:
        return "none"


def fingerprint(weights_sha256: str, num_classes: int) -> str:
    text = f"{weights_sha256}|{num_classes}|export v{EXPORT_VERSION}|torch {_torch_version()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_fingerprint(model: "nn.Module") -> str:
    recorded = (getattr(model, "weights_config", None) or {}).get("sha256")
    if recorded is None:
        digest = hashlib.sha256()
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
        recorded = digest.hexdigest()
    return fingerprint(recorded, int(getattr(model, "num_classes", 1)))


def export_path(arch: str | None, fingerprint: str, kind: str, suffix: str = ".onnx") -> Path:
    return u2seg_home() / "exports" / f"{arch or 'model'}-{fingerprint}-{kind}{suffix}"


def cached_export(model: "nn.Module", kind: str, build: Callable[[Path], Any], *, suffix: str = ".onnx") -> Path:
    """Return the export of ``model`` for ``kind``, building it with ``build(path)`` if missing."""
    path = export_path(getattr(model, "arch", None), model_fingerprint(model), kind, suffix)
    if not path.is_file():
        log.info("building %s export: %s", kind, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        build(path)
    return path
