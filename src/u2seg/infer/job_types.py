"""What travels through a job of the engine (:mod:`u2seg.infer.engine`), and what a job is.

An :class:`Item` goes in; a :class:`Job`'s ``finish`` gets its :class:`Prediction` and returns a
value or :class:`Files` to write; a :class:`Result` comes out (with :func:`error_line` when it
failed) and adds up in a run's :class:`Report`. :class:`Timer` times an item's stages
(:data:`STAGES`), :class:`StageTimes` sums them over a run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ImageReadError, U2SegError, collapse_whitespace
from .confidence import Confidence, estimate_confidence, foreground_probabilities

if TYPE_CHECKING:
    from PIL import Image

    from .predictor import Predictor, Prepared

__all__ = ["Item", "Files", "Result", "Prediction", "Job", "Report", "StageTimes", "Timer", "STAGES",
           "error_line"]

#: The stages timed for every item, in pipeline order.
STAGES = ("decode", "preprocess", "network", "postprocess", "refine", "encode", "write")


@dataclass(frozen=True)
class Item:
    """One input: ``source`` is a path, bytes, a PIL image or an array, or a function that
    returns ``(image, meta)`` (datasets: the label comes with the image, read in a worker);
    ``name`` labels it in error lines; ``output`` is where a file-writing job puts its result."""

    source: Any
    name: str = ""
    output: Path | None = None

    @classmethod
    def of(cls, source: Any, output: Path | None = None) -> Item:
        name = str(source) if isinstance(source, (str, Path)) else ""
        return cls(source, name, output)


@dataclass(frozen=True)
class Files:
    """Encoded outputs of one item, to be written atomically: ``{path: bytes}``."""

    contents: Mapping[Path, bytes]


@dataclass
class Result:
    index: int
    item: Item
    value: Any = None           # what the job's finish returned (None once Files are written)
    written: tuple[Path, ...] = ()
    error: str | None = None    # one line
    seconds: dict[str, float] = field(default_factory=dict)
    exception: BaseException | None = field(default=None, repr=False)
    size: tuple[int, int] | None = None         # the image's (width, height)
    confidence: Confidence | None = None        # how much to trust the mask (u2seg.infer.confidence)
    model: str | None = None                    # the model that made it (a cascade's may vary)
    meta: Any = None                            # what a callable source returned beside the image

    @property
    def ok(self) -> bool:
        return self.error is None


class StageTimes:
    """Seconds per stage summed over items (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.items = 0

    def add(self, seconds: Mapping[str, float]) -> None:
        with self._lock:
            for stage, value in seconds.items():
                self.seconds[stage] = self.seconds.get(stage, 0.0) + value
            self.items += 1

    def per_image_ms(self) -> dict[str, float]:
        with self._lock:
            n = max(self.items, 1)
            return {stage: 1000.0 * value / n for stage, value in self.seconds.items()}


class Timer:
    """An item's seconds per stage: ``with timer("refine"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@dataclass
class Prediction:
    """What a job's ``finish`` gets: the decoded image and the network's probabilities
    (``K×h×w`` at the network's size, TTA averaged), with the Predictor that made them."""

    item: Item
    image: Image.Image
    prepared: Prepared
    probs: Any
    predictor: Predictor
    timer: Timer
    meta: Any = None  # what a callable source returned beside the image
    _confidence: Confidence | None = field(default=None, repr=False)

    def foreground(self) -> Any:
        """The foreground probability at the image's size (timed as post-processing): a float32
        ``H×W`` array, or a device tensor when the Predictor keeps its arithmetic on the device."""
        with self.timer("postprocess"):
            return self.predictor.postprocess(self.probs, self.image.size)

    def confidence(self) -> Confidence:
        """How much to trust the mask, from the network's own map (computed once; cheap: at the
        network's size)."""
        if self._confidence is None:
            foreground = foreground_probabilities(self.predictor.to_host(self.probs))
            self._confidence = estimate_confidence(foreground, flip_disagreement=self.prepared.flip_disagreement)
        return self._confidence

    @property
    def model(self) -> str | None:
        """The model that made the probabilities (a cascade records which of its two ran)."""
        return self.prepared.model or self.predictor.model_name


class Job(Protocol):
    """What to make of each prediction (one object per run, called from worker threads).
    A job may also define ``admit(image)``, called right after decoding, which raises to
    refuse an image (e.g. over a pixel limit) before any more work is spent on it."""

    def finish(self, prediction: Prediction) -> Any: ...


# A job may also have ``max_pixels``: the engine's decoder then refuses larger images from their
# header, before decoding them (``load_image``'s ``max_pixels``, raising ``PixelLimitError``).


@dataclass
class Report:
    """What a run did: files written, one line per failure, images per second, stage times."""

    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    processed: int = 0
    seconds: float = 0.0
    stages: StageTimes = field(default_factory=StageTimes)

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: Result) -> None:
        self.processed += 1
        self.written.extend(result.written)
        if result.error is not None:
            self.failed.append(result.error)


def error_line(item: Item, exc: BaseException) -> str:
    """The one line that reports ``item``'s failure (naming the input once)."""
    if isinstance(exc, ImageReadError) or getattr(exc, "input_name", None):
        return collapse_whitespace(exc)  # already names the file
    label = item.name or "image"
    if isinstance(exc, (U2SegError, OSError, ValueError)):
        return f"{label}: {collapse_whitespace(exc)}"
    return f"{label}: {type(exc).__name__}: {collapse_whitespace(exc)}"
