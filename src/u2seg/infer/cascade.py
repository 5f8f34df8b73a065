"""A cascade of two models (``-m u2netp+u2net``): the small one for every image, the large one only
for the images whose confidence (:mod:`u2seg.infer.confidence`) is under ``below``.

Both models must share one pre-processing recipe (input size, mean/std, resampling), so the
small model's prepared inputs go to the large one as they are, and the engine batches the whole
cascade like one Predictor. Each image's ``Prepared.model`` says which model made its mask
(reports and ``X-Model`` show it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .confidence import estimate_confidence, foreground_probabilities
from .predictor import Predictor, Prepared

__all__ = ["Cascade", "DEFAULT_CASCADE_BELOW", "parse_cascade"]

DEFAULT_CASCADE_BELOW = 0.8   # BENCHMARKS.md: the large model for about a quarter of photos


def parse_cascade(model: str | None) -> tuple[str, str] | None:
    """``"small+large"`` → ``("small", "large")``; anything else → ``None``."""
    if not model or "+" not in model:
        return None
    small, _, large = model.partition("+")
    if not small or not large or "+" in large:
        raise ValueError(f"a cascade is two models joined by '+', e.g. u2netp+u2net, not {model!r}")
    return small, large


class Cascade:
    """Behaves as a :class:`Predictor` (the engine, ``remove()`` and the server use it as one):
    everything but :meth:`infer` is the small model's."""

    def __init__(self, small: Predictor, large: Predictor, below: float = DEFAULT_CASCADE_BELOW) -> None:
        if small.preprocessing != large.preprocessing:
            raise ValueError(f"a cascade needs one pre-processing for both models: {small.model_name} has "
                             f"{small.preprocessing}, {large.model_name} {large.preprocessing}")
        if (small.device_arithmetic is None) != (large.device_arithmetic is None):
            raise ValueError("a cascade needs both models on the same device")
        if not 0.0 <= below <= 1.0:
            raise ValueError(f"the cascade's threshold must be between 0 and 1, got {below:g}")
        self.small, self.large, self.below = small, large, below
        self.model_name = f"{small.model_name}+{large.model_name}"

    def infer(self, prepared: Sequence[Prepared]) -> list:
        probs = self.small.infer(prepared)
        again = []
        for i, (p, item) in enumerate(zip(probs, prepared)):
            item.model = self.small.model_name
            score = estimate_confidence(foreground_probabilities(self.small.to_host(p)),
                                        flip_disagreement=item.flip_disagreement).score
            if score < self.below:
                again.append(i)
        if again:
            for i, p in zip(again, self.large.infer([prepared[i] for i in again])):
                probs[i] = p
                prepared[i].model = self.large.model_name
        return probs

    def __getattr__(self, name: str) -> Any:  # prepare, postprocess, foreground, to_host, backend, …
        return getattr(self.small, name)
