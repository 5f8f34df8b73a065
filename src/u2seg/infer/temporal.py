"""Temporal stability for video masks: a motion-compensated filter of the probability maps.

A network that sees one frame at a time gives masks that shimmer at the edges and blink on
uncertain regions, because every frame's sensor noise and compression differ. :class:`TemporalFilter`
keeps a filtered probability map and, for each new frame:

1. estimates optical flow from the new frame back to the previous one (OpenCV's DIS flow on
   grey frames reduced to ``work_side`` pixels on the long side) and warps the previous filtered
   map (and frame) along it;
2. measures how far to trust the warp: the photometric error between the frame and the warped
   previous frame (occlusions, new objects and scene cuts warp badly), the disagreement between
   the flow back and the flow forward (they should cancel out; they do not along moving edges,
   where a misplaced warp would drag the old edge along), and points that came from outside
   the picture;
3. blends: ``f = a·p + (1 − a)·warped``, where the current map's weight ``a`` is ``min_weight``
   where the warp is trusted and the network is unsure, and grows to 1 where the warp is
   untrusted or where the network is sure *and* disagrees with the history (a real change);
4. hysteresis on uncertain pixels: each pixel keeps a foreground/background state (warped
   along with the map) that flips only when the filtered value leaves the band ``[low, high]``;
   a value inside the band that crossed 0.5 against its state is held at 0.5 (``hysteresis``:
   how far it is pulled back), so a region near 0.5 stops blinking across the threshold while
   values on their own side keep their softness.

The full-resolution output is the frame's own map plus the (smooth) correction computed at the
working size, so edges stay as sharp as the network's. A scene cut (most of the frame
untrusted) restarts the filter. Pure NumPy and OpenCV; one instance per video, frames in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["TEMPORAL_MODES", "TemporalFilter", "TemporalOptions", "flicker"]

#: ``--temporal`` values: ``off`` (each frame alone) or ``flow`` (this filter).
TEMPORAL_MODES = ("off", "flow")


@dataclass(frozen=True)
class TemporalOptions:
    work_side: int = 384        # long side (pixels) at which flow and the filter run
    min_weight: float = 0.25    # the current map's weight where the history is fully trusted
    sigma: float = 10.0         # photometric error (grey levels) at which trust falls to 1/e
    low: float = 0.35           # hysteresis band
    high: float = 0.65
    hysteresis: float = 1.0     # how far a value that crossed 0.5 against its state is pulled back to 0.5
    cut_below: float = 0.3      # mean trust under which a frame counts as a scene cut
    consistency: float = 1.0    # forward-backward flow disagreement (px) at which trust falls to 1/e; 0: off

    def __post_init__(self) -> None:
        if self.work_side < 16:
            raise ValueError(f"work_side must be ≥ 16, got {self.work_side}")
        if not 0.0 < self.min_weight <= 1.0:
            raise ValueError(f"min_weight must be within (0, 1], got {self.min_weight}")
        if not 0.0 <= self.low < 0.5 < self.high <= 1.0:
            raise ValueError(f"the hysteresis band must hold 0.5: low {self.low}, high {self.high}")
        if not 0.0 <= self.hysteresis <= 1.0:
            raise ValueError(f"hysteresis must be within 0..1, got {self.hysteresis}")


class TemporalFilter:
    """``filtered = filter(frame, prob)`` for each frame in order (see the module docstring).
    ``frame``: ``uint8 H×W×3`` (or ×4, or grey ``H×W``); ``prob``: float ``H×W`` in [0, 1] at the
    frame's size. Returns a new float32 ``H×W`` map."""

    def __init__(self, options: TemporalOptions = TemporalOptions()) -> None:
        self.options = options
        self._flow = cv2.DISOpticalFlow_create(_preset("FAST"))
        self.reset()

    def reset(self) -> None:
        self._grey: np.ndarray | None = None
        self._state: np.ndarray | None = None    # filtered map at the working size
        self._side: np.ndarray | None = None     # hysteresis state (float 0/1) at the working size
        self._size: tuple[int, int] | None = None
        self.cuts = 0
        self.frames = 0

    def _work_size(self, width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, self.options.work_side / max(width, height))
        return max(8, round(width * scale)), max(8, round(height * scale))

    def __call__(self, frame: np.ndarray, prob: np.ndarray) -> np.ndarray:
        o = self.options
        prob = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)
        height, width = prob.shape
        if frame.shape[:2] != prob.shape:
            raise ValueError(f"frame is {frame.shape[1]}×{frame.shape[0]}, the map {width}×{height}")
        work = self._work_size(width, height)
        full = work == (width, height)
        grey = _grey(frame)
        if not full:
            grey = cv2.resize(grey, work, interpolation=cv2.INTER_AREA)
        p = prob if full else cv2.resize(prob, work, interpolation=cv2.INTER_AREA)
        self.frames += 1
        if self._grey is None or self._size != (width, height):
            return self._start(grey, p, prob, width, height)

        flow = self._flow.calc(grey, self._grey, None)  # current → previous
        w, h = work
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
        warped = cv2.remap(self._state, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        side = cv2.remap(self._side, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        grey_warped = cv2.remap(self._grey, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        error = cv2.blur(np.abs(grey.astype(np.float32) - grey_warped.astype(np.float32)), (5, 5))
        trust = np.exp(-np.square(error / o.sigma))
        inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        trust[~inside] = 0.0
        if o.consistency > 0:  # the flow back and the flow forward should cancel out
            forward = self._flow.calc(self._grey, grey, None)
            back = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            gap = np.hypot(flow[..., 0] + back[..., 0], flow[..., 1] + back[..., 1])
            trust *= np.exp(-np.square(gap / o.consistency))
        if float(trust.mean()) < o.cut_below:  # a scene cut: start again
            self.cuts += 1
            return self._start(grey, p, prob, width, height)

        certain = np.abs(2.0 * p - 1.0)
        disagree = np.abs(p - warped)
        keep = trust * (1.0 - o.min_weight) * (1.0 - certain * disagree)
        filtered = p + keep * (warped - p)  # = (1 − keep)·p + keep·warped

        state = np.where(filtered > o.high, 1.0, np.where(filtered < o.low, 0.0, (side > 0.5).astype(np.float32)))
        # Inside the band a value may not cross 0.5 against its state: it is pulled back toward 0.5
        # (``hysteresis`` of the way); values on their state's side are left as they are.
        held = np.where(state > 0.5, np.maximum(filtered, 0.5), np.minimum(filtered, 0.5))
        out = (filtered + o.hysteresis * (held - filtered)).astype(np.float32)

        self._grey, self._state, self._side = grey, out, state.astype(np.float32)
        if full:
            return np.clip(out, 0.0, 1.0)
        correction = cv2.resize(out - p, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.clip(prob + correction, 0.0, 1.0)

    def _start(self, grey: np.ndarray, p: np.ndarray, prob: np.ndarray, width: int, height: int) -> np.ndarray:
        self._grey, self._state = grey, p.astype(np.float32)
        self._side = (p > 0.5).astype(np.float32)
        self._size = (width, height)
        return prob.copy()


def _preset(name: str) -> int:
    """A DIS preset under either of OpenCV's spellings (4.x and 5.x differ)."""
    for attr in (f"DISOPTICAL_FLOW_PRESET_{name}", f"DISOpticalFlow_PRESET_{name}", f"DISOPTICALFLOW_PRESET_{name}"):
        if hasattr(cv2, attr):
            return int(getattr(cv2, attr))
    return {"ULTRAFAST": 0, "FAST": 1, "MEDIUM": 2}[name]


def _grey(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        return np.ascontiguousarray(frame, dtype=np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2GRAY)


def flicker(masks: list[np.ndarray] | np.ndarray, truth: list[np.ndarray] | np.ndarray, *, margin: int = 0) -> float:
    """Mean |Δ mask| between consecutive frames over the pixels whose true mask did not change
    (0…1 scale; masks may be uint8 0…255 or float 0…1). ``margin`` > 0 also leaves out pixels
    within ``margin`` pixels of a change of the true mask: the soft edge of a moving object
    changes there in any correct mask, flicker or not."""
    total, count = 0.0, 0
    previous = previous_truth = None
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8) if margin > 0 else None
    for mask, true in zip(masks, truth):
        m = np.asarray(mask, dtype=np.float32)
        m = m / 255.0 if np.asarray(mask).dtype == np.uint8 else m
        t = np.asarray(true)
        if previous is not None:
            same = t == previous_truth
            if kernel is not None:
                same = cv2.erode(same.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
            total += float(np.abs(m - previous)[same].sum())
            count += int(same.sum())
        previous, previous_truth = m, t
    return total / count if count else 0.0
