"""How much to trust a mask, from cheap signals of the network's own output (no second model).

* **softness**: the mean of ``4·p·(1−p)`` over the probability map at the network's size. For a
  calibrated map, the expected absolute error of pixel ``p`` is ``2·p·(1−p)``, so this is (twice)
  the error the network itself expects; clean masks keep it near 0.
* **flip disagreement** (with ``--tta flip``): the mean ``|p − mirror(p of the mirrored image)|``:
  where the network changes its mind under a flip, it is guessing.
* **empty or full**: no foreground, or nothing but foreground, is rarely what was wanted.
* **cut by the border**: the share of the image's frame covered by foreground; an object cut by
  the frame is often a background region taken for the object.

They combine into a score in [0, 1] (1: nothing suspicious). Spearman correlations with the true
per-image error are in BENCHMARKS.md (``benchmarks/confidence.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Confidence", "estimate_confidence", "foreground_probabilities", "DEFAULT_REVIEW_BELOW"]

DEFAULT_REVIEW_BELOW = 0.5      # --review writes results scoring under this
SOFTNESS_SCALE = 8.0            # score = exp(-8·softness): 0.02 → 0.85, 0.1 → 0.45, 0.2 → 0.2
FLIP_SCALE = 10.0
EMPTY_OR_FULL_FACTOR = 0.3
BORDER_WEIGHT = 0.15        # weak: photos legitimately crop objects (0.5 cost 0.05 of ρ on the synthetic set)


@dataclass(frozen=True)
class Confidence:
    score: float
    softness: float
    foreground: float             # share of pixels over 0.5
    border: float                 # share of the frame's pixels over 0.5
    flip_disagreement: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {"score": round(self.score, 4), "softness": round(self.softness, 4),
                "foreground": round(self.foreground, 4), "border": round(self.border, 4),
                "flip_disagreement": None if self.flip_disagreement is None else round(self.flip_disagreement, 4)}


def foreground_probabilities(probs: np.ndarray) -> np.ndarray:
    """The foreground map of ``K×h×w`` network probabilities (K=1: sigmoid; else all but class 0)."""
    probs = np.asarray(probs, dtype=np.float32)
    return probs[0] if probs.shape[0] == 1 else 1.0 - probs[0]


def estimate_confidence(foreground: np.ndarray, *, flip_disagreement: float | None = None) -> Confidence:
    """The confidence of one mask from its foreground probabilities (``h×w`` in [0, 1], at the
    network's size: cheap, and independent of the photo's resolution)."""
    p = np.clip(np.asarray(foreground, dtype=np.float32), 0.0, 1.0)
    softness = float(np.mean(4.0 * p * (1.0 - p)))
    solid = p > 0.5
    share = float(solid.mean())
    frame = np.concatenate([solid[0], solid[-1], solid[1:-1, 0], solid[1:-1, -1]])
    border = float(frame.mean()) if frame.size else 0.0
    score = math.exp(-SOFTNESS_SCALE * softness)
    if flip_disagreement is not None:
        score *= math.exp(-FLIP_SCALE * flip_disagreement)
    if share < 0.01 or share > 0.98:
        score *= EMPTY_OR_FULL_FACTOR
    score *= 1.0 - BORDER_WEIGHT * border
    return Confidence(score=min(max(score, 0.0), 1.0), softness=softness, foreground=share, border=border,
                      flip_disagreement=flip_disagreement)
