"""The local weights cache: ``$U2SEG_HOME`` (default ``~/.cache/u2seg``).

Layout::

    $U2SEG_HOME/sources/<file>          the file as fetched (e.g. u2netp.onnx), checked by sha256
    $U2SEG_HOME/weights/<name>/         model.safetensors + config.json, converted once
    $U2SEG_PRETRAINED/<name>/           the same, read-only and looked at first (a container image
                                        keeps its weights there, outside the cache volume)

A second run reads the converted folder and needs no network. A cached file whose checksum no
longer matches is never used: it is fetched again, or reported when that is impossible.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from typing import TYPE_CHECKING

from ..errors import ChecksumError, FetchError, WeightsError, WeightsUnavailableError
from .folder import CONFIG_FILE, WEIGHTS_FILE, read_verified_config
from .registry import DEFAULT_WEIGHTS, PretrainedWeights, default_weights_for, get_weights

if TYPE_CHECKING:  # torch loads only when a network is built
    from torch import nn

__all__ = ["create_model", "u2seg_home", "pretrained_dirs", "weights_dir", "is_offline", "fetch_weights", "resolve_pretrained", "resolve_weights",
           "load_network"]

log = logging.getLogger(__name__)


def u2seg_home() -> Path:
    return Path(os.environ.get("U2SEG_HOME") or Path.home() / ".cache" / "u2seg").expanduser()


def pretrained_dirs() -> list[Path]:
    """Read-only folders of converted weights (``$U2SEG_PRETRAINED``, ``os.pathsep``-separated),
    looked at before the cache."""
    value = os.environ.get("U2SEG_PRETRAINED", "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def weights_dir(name: str) -> Path:
    """The folder of converted weights ``name``: the first ``$U2SEG_PRETRAINED`` folder that has
    them, else the cache's (where they are fetched to)."""
    for folder in pretrained_dirs():
        if (folder / name / CONFIG_FILE).is_file():
            return folder / name
    return u2seg_home() / "weights" / name


def is_offline() -> bool:
    """``U2SEG_OFFLINE=1`` forbids any network access (only the cache is used)."""
    return os.environ.get("U2SEG_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _cached(directory: Path) -> bool:
    """True when a verified converted copy exists; a corrupt one is removed, not used."""
    if not (directory / WEIGHTS_FILE).is_file() or not (directory / CONFIG_FILE).is_file():
        return False
    try:
        read_verified_config(directory)
    except (ChecksumError, WeightsError) as exc:
        log.warning("%s; fetching again", exc)
        (directory / CONFIG_FILE).unlink(missing_ok=True)
        return False
    return True


def fetch_weights(name: str, *, offline: bool | None = None) -> Path:
    """Return the cache folder of pretrained weights ``name``, fetching and converting if needed."""
    entry: PretrainedWeights = get_weights(name)
    target = weights_dir(name)
    if _cached(target):
        return target
    from ..models import create_model
    from .convert import load_weights_into, save_pretrained

    offline = is_offline() if offline is None else offline
    how = (f"pass a weights file with --weights PATH (.onnx, .pth or .safetensors), "
           f"or run 'u2seg weights fetch {name}' where {entry.sources[0].describe()} can be reached")
    if offline:
        raise WeightsUnavailableError(f"pretrained weights {name!r} are not cached in {target} and "
                                      f"U2SEG_OFFLINE is set; {how}")
    failures = []
    for source in entry.sources:
        raw = u2seg_home() / "sources" / source.filename
        try:
            raw = source.fetch(raw)
            break
        except FetchError as exc:
            failures.append(str(exc))
    else:
        raise WeightsUnavailableError(f"pretrained weights {name!r} are not cached in {target} and could "
                                      f"not be fetched ({failures[-1]}); {how}")
    model = create_model(entry.model, num_classes=entry.num_classes)
    load_weights_into(model, raw)
    save_pretrained(model, target, metadata=entry.metadata())
    log.info("cached %s weights in %s", name, target)
    return target


def create_model(name: str, *, pretrained: bool | str | Path = False, num_classes: int = 1,
                 in_channels: int = 3) -> "nn.Module":
    """Build model ``name`` (:func:`u2seg.models.create_model`) and load ``pretrained``: False,
    True (the registry's default weights for this model) or weights (a .pth, .onnx or
    .safetensors file, a u2seg folder, or a registered weights name). With weights whose head
    differs (another ``num_classes``), every tensor of matching shape is loaded and the rest are
    reported in the log."""
    from ..models import create_model as build
    from .convert import load_weights_into

    model = build(name, num_classes=num_classes, in_channels=in_channels)
    if pretrained is False or pretrained is None:
        return model
    load_weights_into(model, resolve_pretrained(name, pretrained))
    return model


def resolve_pretrained(model: str, pretrained: bool | str | Path) -> Path:
    """Turn ``create_model``'s ``pretrained`` argument into a local path (fetching if needed)."""
    if pretrained is True:
        return fetch_weights(default_weights_for(model).name)
    if isinstance(pretrained, (str, Path)):
        path = Path(pretrained).expanduser()
        if path.exists():
            return path
        try:  # a registry name is accepted too: create_model("u2netp", pretrained="u2netp")
            return fetch_weights(get_weights(str(pretrained)).name)
        except WeightsError:
            raise WeightsError(f"{pretrained}: no such weights file or registered weights name") from None
    raise TypeError(f"pretrained must be False, True or a path, not {type(pretrained).__name__}")


def resolve_weights(model: str | None = None, weights: str | Path | None = None) -> Path:
    """Where the weights for (model, weights) are, fetching registry weights if needed (no torch)."""
    if weights is not None:
        path = Path(weights).expanduser()
        return path if path.exists() else resolve_pretrained(model or DEFAULT_WEIGHTS, str(weights))
    return resolve_pretrained(model or DEFAULT_WEIGHTS, True)


def load_network(model: "str | nn.Module | None" = None, weights: str | Path | None = None) -> "nn.Module":
    """A ready network from a model name and/or weights (a file, a folder or a registry name).

    ``model`` alone loads its registry's pretrained default; ``weights`` alone builds the
    architecture they describe; neither gives the pretrained ``DEFAULT_WEIGHTS`` (``u2net``). A
    module given as ``model`` gets ``weights`` loaded into it.
    """
    from .convert import load_model, load_weights_into

    if model is not None and not isinstance(model, str):  # a module
        if weights is not None:
            load_weights_into(model, resolve_pretrained(getattr(model, "arch", ""), weights))
        return model
    return load_model(resolve_weights(model, weights), arch=model if weights is not None else (model or DEFAULT_WEIGHTS))
