"""Video masks: per-frame vs the temporal filter (flicker, accuracy), and frames/s at 1080p.

Clips come from :func:`u2seg.data.synth_video.synth_clip` (an object holding still, moving,
turning, scaling, partly leaving the frame over a photographic background, with sensor noise and
an exposure wobble per frame; masks exact). Each clip is encoded as H.264 (CRF 23, as footage
usually is) and decoded again, so the network sees compression noise too. The network runs once
per frame through the engine (``u2seg.infer.video.FrameJob``); the per-frame maps are the
``--temporal off`` output, and the same maps through :class:`u2seg.infer.temporal.TemporalFilter`
in order are the ``--temporal flow`` output (exactly what ``remove_video`` does).

Figures, over all frames of all clips:

* ``flicker``: mean |Δ mask| between consecutive frames over the pixels whose true mask did not
  change (0…1, shown ×1000); ``flicker_still`` leaves out, besides, pixels within 1 % of the
  frame's long side of a change of the true mask (a moving object's soft edge changes there in
  any correct mask);
* ``mae`` and ``maxF`` (β² = 0.3, the mean of per-frame F curves, as the SOD literature)
  against the exact masks;
* ``speed``: ``u2seg remove``'s own work on a 1080p clip (``remove_video`` to WebM with alpha,
  decode and encode included), frames/s with the filter on and off, and the filter's ms/frame.

    U2SEG_HOME=.cache/u2seg-test .venv/bin/python benchmarks/video.py --clips 6 --frames 48 --json video.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if "U2SEG_HOME" not in os.environ and (REPO / ".cache" / "u2seg-test").is_dir():
    os.environ["U2SEG_HOME"] = str(REPO / ".cache" / "u2seg-test")

from u2seg.data.synth_video import synth_clip  # noqa: E402
from u2seg.infer import Engine, Item, get_predictor  # noqa: E402
from u2seg.infer.temporal import TemporalFilter, TemporalOptions, flicker  # noqa: E402
from u2seg.infer.video import FrameJob, remove_video  # noqa: E402
from u2seg.metrics.sod import f_measure_curve  # noqa: E402
from u2seg.video_read import VideoReader  # noqa: E402
from u2seg.video_write import VideoWriter  # noqa: E402


def encoded_clip(index: int, width: int, height: int, frames: int, folder: Path, crf: int = 23
                 ) -> tuple[Path, list[np.ndarray]]:
    path = folder / f"clip{index}-{width}x{height}.mp4"
    truth = []
    with VideoWriter(path, "mp4", width=width, height=height, mode="RGB", time_base=Fraction(1, 25),
                     rate=Fraction(25), crf=crf) as writer:
        for f, (frame, mask) in enumerate(synth_clip(index, width=width, height=height, frames=frames)):
            writer.write(frame, f, 1)
            truth.append(mask)
    return path, truth


def network_maps(engine: Engine, path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    with VideoReader(path) as video:
        frames = [f.pixels for f in video]
    items = [Item(frame, f"frame {i}") for i, frame in enumerate(frames)]
    maps = []
    for result in engine.run(items, FrameJob()):
        if result.error:
            raise SystemExit(result.error)
        maps.append(result.value)
    return frames, maps


def scores(maps: list[np.ndarray], truth: list[np.ndarray], margin: int) -> dict:
    curve = np.mean([f_measure_curve(m, t > 127) for m, t in zip(maps, truth)], axis=0)
    return {"flicker_x1000": 1000 * flicker(maps, truth), "flicker_still_x1000": 1000 * flicker(maps, truth, margin=margin),
            "mae": float(np.mean([np.abs(m - t / 255.0).mean() for m, t in zip(maps, truth)])),
            "maxF": float(np.max(curve))}


def clip_maps(engine: Engine, index: int, width: int, height: int, frames: int, folder: Path,
              cache: Path | None, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(decoded frames, per-frame network maps, exact masks) of clip ``index``; with ``cache``, kept
    there between runs (the network's part does not change when the filter's settings do)."""
    stored = cache / f"clip{index}-{model}-{width}x{height}-{frames}.npz" if cache is not None else None
    if stored is not None and stored.is_file():
        data = np.load(stored)
        return data["frames"], data["maps"], data["truth"]
    path, truth = encoded_clip(index, width, height, frames, folder)
    pixels, maps = network_maps(engine, path)
    result = np.stack(pixels), np.stack(maps), np.stack(truth)
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(stored, frames=result[0], maps=result[1], truth=result[2])
    return result


def quality(engine: Engine, clips: int, frames: int, width: int, height: int, options: TemporalOptions,
            folder: Path, cache: Path | None = None, model: str = "") -> dict:
    margin = max(1, round(0.01 * max(width, height)))
    every: dict[str, list] = {"off": [], "flow": []}
    truth_all: list[np.ndarray] = []
    per_clip = []
    for index in range(clips):
        pixels, maps, truth = clip_maps(engine, index, width, height, frames, folder, cache, model)
        filt = TemporalFilter(options)
        smoothed = [filt(p, m) for p, m in zip(pixels, maps)]
        per_clip.append({"clip": index, "off": scores(maps, truth, margin), "flow": scores(smoothed, truth, margin)})
        print(json.dumps(per_clip[-1]), file=sys.stderr)
        every["off"].append(maps)
        every["flow"].append(smoothed)
        truth_all.append(truth)

    def pooled(mode: str) -> dict:
        flat_maps = [m for clip in every[mode] for m in clip]
        flat_truth = [t for clip in truth_all for t in clip]
        curves = [f_measure_curve(m, t > 127) for m, t in zip(flat_maps, flat_truth)]
        return {"flicker_x1000": 1000 * float(np.mean([flicker(m, t) for m, t in zip(every[mode], truth_all)])),
                "flicker_still_x1000": 1000 * float(np.mean([flicker(m, t, margin=margin)
                                                             for m, t in zip(every[mode], truth_all)])),
                "mae": float(np.mean([np.abs(m - t / 255.0).mean() for m, t in zip(flat_maps, flat_truth)])),
                "maxF": float(np.max(np.mean(curves, axis=0)))}

    off, flow = pooled("off"), pooled("flow")
    return {"clips": clips, "frames": frames, "size": [width, height], "margin_px": margin, "off": off, "flow": flow,
            "flicker_ratio": flow["flicker_x1000"] / off["flicker_x1000"],
            "flicker_still_ratio": flow["flicker_still_x1000"] / off["flicker_still_x1000"],
            "mae_ratio": flow["mae"] / off["mae"], "per_clip": per_clip}


def speed(engine: Engine, frames: int, folder: Path) -> dict:
    path, _ = encoded_clip(0, 1920, 1080, frames, folder)
    warm, _ = encoded_clip(1, 1920, 1080, 2 * engine.batch_size, folder)  # loads and compiles the network first
    remove_video(engine, warm, folder / "warm-up.webm", fmt="webm", progress=False)
    figures = {}
    for mode in ("off", "flow"):
        start = time.perf_counter()
        result = remove_video(engine, path, folder / f"out-{mode}.webm", fmt="webm", temporal=mode, progress=False)
        seconds = time.perf_counter() - start
        figures[mode] = {"frames": result.frames, "seconds": round(seconds, 2), "frames_per_s": round(result.frames / seconds, 3)}
    with VideoReader(path) as video:
        pixels = [f.pixels for f in video]
    filt = TemporalFilter()
    prob = np.full(pixels[0].shape[:2], 0.5, np.float32)
    start = time.perf_counter()
    for p in pixels:
        filt(p, prob)
    figures["filter_ms_per_frame"] = round(1000 * (time.perf_counter() - start) / len(pixels), 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--speed-frames", type=int, default=24, help="frames of the 1080p clip (0: no speed run)")
    parser.add_argument("--speed-model", default="u2net", help="model of the 1080p run (default u2net, the default)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--cache", type=Path, metavar="DIR",
                        help="keep the clips' network maps here between runs (to compare filter settings)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report: dict = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "model": args.model}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with Engine(get_predictor(args.model), batch_size=args.batch_size) as engine:
            report["quality"] = quality(engine, args.clips, args.frames, args.width, args.height, TemporalOptions(),
                                        folder, args.cache, args.model)
        q = report["quality"]
        print(f"{args.model}: flicker ×1000 {q['off']['flicker_x1000']:.2f} → {q['flow']['flicker_x1000']:.2f} "
              f"({100 * q['flicker_ratio']:.0f} %), still {q['off']['flicker_still_x1000']:.2f} → "
              f"{q['flow']['flicker_still_x1000']:.2f} ({100 * q['flicker_still_ratio']:.0f} %), MAE "
              f"{q['off']['mae']:.4f} → {q['flow']['mae']:.4f} ({100 * (q['mae_ratio'] - 1):+.1f} %), maxF "
              f"{q['off']['maxF']:.4f} → {q['flow']['maxF']:.4f}")
        if args.speed_frames:
            with Engine(get_predictor(args.speed_model), batch_size=args.batch_size) as engine:
                report["speed_1080p"] = {"model": args.speed_model, **speed(engine, args.speed_frames, folder)}
            s = report["speed_1080p"]
            print(f"1080p {args.speed_model}: {s['off']['frames_per_s']} frames/s per-frame, "
                  f"{s['flow']['frames_per_s']} frames/s with the filter ({s['filter_ms_per_frame']} ms/frame)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
