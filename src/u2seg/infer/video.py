"""Background removal for videos, animated images and raw frame streams, through the engine.

Frames are just another source and sink of :class:`~u2seg.infer.engine.Engine`: a decoder
thread feeds frames as items (at most the engine's window of them in memory, so a long 1080p
video runs in flat memory), the network batches them, workers bring each probability map to the
frame's size, and the consumer, which gets them in order, runs the temporal filter
(:mod:`u2seg.infer.temporal`), the refinement every front end shares
(:func:`~u2seg.infer.refine.refine`) and the encoder (:class:`~u2seg.video_write.VideoWriter`,
temporary file + rename).

Outputs per format (``--video-format``): ``webm``/``mov``/``webp``/``gif``/``png`` keep alpha (a
cutout, or a composite when ``bgcolor``/``background`` is given); ``mp4`` is opaque: the cutout over
``bgcolor``, ``background``, or else a blurred copy of the frame itself. ``only_mask`` writes the
matte (grey) in any of them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from ..errors import U2SegError, collapse_whitespace
from ..fileio import write_bytes_atomic
from ..image_encode import encode_image
from ..video_read import Frame, VideoReader
from ..video_write import AUDIO_FORMATS, VideoWriter
from .engine import Engine
from .files import Task
from .job_types import Item, Prediction
from .refine import RefineOptions, refine
from .temporal import TemporalFilter, TemporalOptions

if TYPE_CHECKING:
    from .predictor import Predictor

__all__ = ["FrameJob", "VideoInterrupted", "VideoResult", "default_video_format", "parse_raw_size", "remove_video",
           "remove_videos", "remove_raw_stream", "render_frame"]


class VideoInterrupted(U2SegError):
    """Ctrl-C (or another interruption) during a video: nothing was left under the output's name."""


@dataclass(frozen=True)
class VideoResult:
    output: Path | None
    frames: int
    seconds: float
    note: str | None = None

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def default_video_format(kind: str) -> str:
    """``webm`` for videos, ``webp`` for animated images (8-bit alpha, plays where GIFs do)."""
    return "webp" if kind == "animation" else "webm"


class FrameJob:
    """The engine's job for frames: the foreground probability at the frame's size (host
    ``float32 H×W``); the ordered consumer does the rest."""

    def finish(self, prediction: Prediction) -> np.ndarray:
        return np.asarray(prediction.predictor.to_host(prediction.foreground()), dtype=np.float32)


def _check_options(options: RefineOptions) -> None:
    if options.crop:
        raise U2SegError("--crop is not available for videos (every frame must keep the video's size)")


def _blurred(pixels: np.ndarray) -> np.ndarray:
    sigma = max(2.0, max(pixels.shape[:2]) / 60.0)
    return cv2.GaussianBlur(np.ascontiguousarray(pixels[..., :3]), (0, 0), sigma)


def render_frame(pixels: np.ndarray, prob: np.ndarray, options: RefineOptions, fmt: str) -> np.ndarray:
    """One output frame as an array: the matte (``H×W``) with ``only_mask``, else RGB(A); for
    ``mp4`` always opaque RGB (over ``bgcolor``, ``background`` or the frame blurred)."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if fmt == "mp4" and not options.only_mask and options.bgcolor is None and options.background is None:
        cut = np.asarray(refine(image, prob, options).output)
        alpha = cut[..., 3:4].astype(np.float32) / 255.0
        under = _blurred(pixels).astype(np.float32)
        return np.rint(cut[..., :3] * alpha + under * (1.0 - alpha)).astype(np.uint8)
    output = refine(image, prob, options).output
    array = np.asarray(output)
    if fmt == "mp4" and array.ndim == 3 and array.shape[2] == 4:  # a translucent colour: flatten it
        array = array[..., :3]
    return array


def _mode_of(array: np.ndarray) -> str:
    return "L" if array.ndim == 2 else ("RGBA" if array.shape[2] == 4 else "RGB")


def _frame_items(frames: Iterator[Frame]) -> Iterator[Item]:
    for frame in frames:
        yield Item(lambda f=frame: (f.pixels, f), f"frame {frame.index + 1}")


class _Encoder:
    """The writer on a thread of its own, so encoding a frame overlaps the filter and cutout of
    the next (PyAV's encoders release the GIL); at most ``depth`` frames wait, and an encoding
    error comes back to the consumer at the next :meth:`put` or :meth:`finish`."""

    def __init__(self, writer: VideoWriter, depth: int = 3) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._writer = writer
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="u2seg-encode")
        self._pending: deque = deque()
        self._depth = depth

    def put(self, pixels: np.ndarray, pts: int, duration: int | None) -> None:
        self._pending.append(self._pool.submit(self._writer.write, pixels, pts, duration))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def finish(self) -> None:
        """Wait for every frame to be encoded (raising the first error)."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)

    def stop(self) -> None:
        """Drop the frames not yet encoded and wait for the one being encoded (before an abort)."""
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)


class _Decoding:
    """The reader's frames as engine items, decoded in the engine's feeder thread; :meth:`stop`
    waits for a frame being decoded and ends the stream, so the reader can be closed safely while
    the feeder is still running (after an error or Ctrl-C in the consumer)."""

    def __init__(self, frames: Iterator[Frame]) -> None:
        self._frames = frames
        self._lock = threading.Lock()
        self._stopped = False
        self.decoded = 0

    def __iter__(self) -> Iterator[Item]:
        while True:
            with self._lock:
                if self._stopped:
                    return
                frame = next(self._frames, None)
            if frame is None:
                return
            self.decoded += 1
            yield Item(lambda f=frame: (f.pixels, f), f"frame {frame.index + 1}")

    def stop(self) -> None:
        with self._lock:
            self._stopped = True


def remove_video(engine: Engine, source: str | os.PathLike, output: str | os.PathLike, *,
                 options: RefineOptions = RefineOptions(), fmt: str | None = None, temporal: str = "flow",
                 temporal_options: TemporalOptions = TemporalOptions(), progress: bool = True,
                 name: str | None = None, on_frame: Callable[[Frame, np.ndarray, np.ndarray], None] | None = None
                 ) -> VideoResult:
    """Remove the background of every frame of ``source`` (a video or animated image) and write
    ``output`` as ``fmt`` (default :func:`default_video_format`), with the source's frame times,
    loop count and (where the format holds it) audio. ``temporal``: ``"flow"`` or ``"off"``.
    ``on_frame(frame, probability, output)`` sees every frame (tests, the window's preview).

    Errors: :class:`~u2seg.video_read.VideoReadError` (one line naming the file) for an unreadable,
    corrupt or truncated source, :class:`VideoInterrupted` on Ctrl-C; either way nothing is left
    under ``output``."""
    import time

    from tqdm import tqdm

    _check_options(options)
    if temporal not in ("off", "flow"):
        raise ValueError(f"temporal must be off or flow, got {temporal!r}")
    started = time.perf_counter()
    label = name or str(source)
    output = Path(output)
    writer: VideoWriter | None = None
    encoder: _Encoder | None = None
    done = 0
    with VideoReader(source, name=label) as video:
        info = video.info
        fmt = fmt or default_video_format(info.kind)
        filt = TemporalFilter(temporal_options) if temporal == "flow" else None
        audio = source if info.has_audio and fmt in AUDIO_FORMATS else None
        loop = info.loop if info.loop is not None else 0
        bar = tqdm(total=info.frames, unit="frame", desc=Path(label).name, disable=not progress, file=sys.stderr,
                   dynamic_ncols=True, leave=False)
        decoding = _Decoding(iter(video))
        try:
            for result in engine.run(decoding, FrameJob()):
                if result.error is not None:
                    raise U2SegError(f"{label}: {result.error}")
                frame: Frame = result.meta
                prob = result.value
                if filt is not None:
                    prob = filt(frame.pixels, prob)
                pixels = render_frame(frame.pixels, prob, options, fmt)
                if writer is None:
                    writer = VideoWriter(output, fmt, width=pixels.shape[1], height=pixels.shape[0],
                                         mode=_mode_of(pixels), time_base=frame.time_base, rate=info.fps,
                                         audio=audio, loop=loop)
                    encoder = _Encoder(writer)
                encoder.put(pixels, frame.pts, frame.duration)
                if on_frame is not None:
                    on_frame(frame, prob, pixels)
                done += 1
                bar.update()
            if writer is None:
                raise U2SegError(f"{label}: no frames")
            encoder.finish()
            writer.close()
        except KeyboardInterrupt:
            if writer is not None:
                encoder.stop()
                writer.abort()
            total = f" of {info.frames}" if info.frames else ""
            raise VideoInterrupted(f"{label}: interrupted after {done}{total} frames; nothing was written to "
                                   f"{output}") from None
        except BaseException:
            if writer is not None:
                encoder.stop()
                writer.abort()
            raise
        finally:
            decoding.stop()
            bar.close()
    note = None
    if info.has_audio and fmt not in AUDIO_FORMATS:
        note = f"{label}: its audio was left out ({fmt} cannot hold audio)"
    elif writer is not None and writer.audio_note:
        note = f"{label}: {writer.audio_note}"
    return VideoResult(output, done, time.perf_counter() - started, note)


def remove_videos(predictor: Predictor, tasks: Iterable[Task], options: RefineOptions = RefineOptions(), *,
                  temporal: str = "flow", overwrite: bool = False, batch_size: int = 1, workers: int | None = None,
                  progress: bool = True, on_error: Callable[[str], None] | None = None,
                  on_note: Callable[[str], None] | None = None) -> tuple[int, int]:
    """``u2seg remove`` for planned videos and animated images (see
    :func:`~u2seg.infer.files.split_videos`): one engine, one video at a time, each written in its
    output's suffix's format. An existing output is skipped unless ``overwrite``. A video that
    fails goes to ``on_error`` (one line naming the file) and the others go on; ``on_note`` gets
    the other lines as they are shown: skips, ``note: …`` lines (audio) and each video's frames and
    rate. Ctrl-C raises :class:`VideoInterrupted` (nothing left under that output's name).
    Returns (outputs written, failures)."""
    def note(line: str) -> None:
        if on_note is not None:
            on_note(line)

    failed = written = 0
    with Engine(predictor, batch_size=batch_size, workers=workers) as engine:
        for task in tasks:
            if task.output.exists() and not overwrite:
                note(f"skipping {task.source}: {task.output} exists (use --overwrite to replace)")
                continue
            fmt = task.output.suffix.lstrip(".")
            try:
                result = remove_video(engine, task.source, task.output, options=options, fmt=fmt,
                                      temporal=temporal, progress=progress, name=str(task.source))
            except VideoInterrupted:
                raise
            except (U2SegError, OSError) as exc:  # one line naming the file; the others go on
                if on_error is not None:
                    on_error(collapse_whitespace(exc))
                failed += 1
                continue
            if result.note:
                note(f"note: {result.note}")
            note(f"{task.source} -> {result.output}: {result.frames} frames, {result.frames_per_s:.1f} frames/s")
            written += 1
    return written, failed


# --------------------------------------------------------------------------- raw streams


def parse_raw_size(text: str) -> tuple[int, int]:
    """``"640x360"`` → ``(640, 360)``."""
    try:
        width, height = (int(part) for part in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise U2SegError(f"--raw takes WIDTHxHEIGHT, e.g. 640x360; got {text!r}") from None
    if width < 1 or height < 1 or width * height > 100_000_000:
        raise U2SegError(f"--raw: a frame of {width}x{height} is out of range")
    return width, height


def _raw_frames(stream: IO[bytes], width: int, height: int) -> Iterator[Frame]:
    size = width * height * 3
    index = 0
    while True:
        data = _read_exactly(stream, size)
        if not data:
            return
        if len(data) < size:
            raise U2SegError(f"<stdin>: the stream ended inside frame {index + 1} ({len(data)} of {size} bytes; "
                             f"is it rgb24 at {width}x{height}?)")
        pixels = np.frombuffer(data, np.uint8).reshape(height, width, 3)
        yield Frame(index, pixels, index, Fraction(1, 25), 1)
        index += 1


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def remove_raw_stream(engine: Engine, width: int, height: int, stream: IO[bytes], output: str | os.PathLike | None,
                      out_stream: IO[bytes] | None = None, *, options: RefineOptions = RefineOptions(),
                      temporal: str = "flow", temporal_options: TemporalOptions = TemporalOptions()) -> int:
    """Raw ``rgb24`` frames of ``width×height`` from ``stream`` (what ``ffmpeg -f rawvideo -pix_fmt
    rgb24 -`` writes): PNG frames into the folder ``output`` (``000001.png`` …, each written
    atomically), or raw frames to ``out_stream`` (``rgba``; ``gray`` with ``only_mask``).
    Returns the number of frames."""
    _check_options(options)
    filt = TemporalFilter(temporal_options) if temporal == "flow" else None
    folder = Path(output) if output is not None else None
    count = 0
    for result in engine.run(_frame_items(_raw_frames(stream, width, height)), FrameJob()):
        if result.error is not None:
            raise U2SegError(f"<stdin>: {result.error}")
        frame: Frame = result.meta
        prob = result.value if filt is None else filt(frame.pixels, result.value)
        pixels = render_frame(frame.pixels, prob, options, "png")
        if folder is not None:
            write_bytes_atomic(encode_image(Image.fromarray(np.ascontiguousarray(pixels)), "png"),
                               folder / f"{frame.index + 1:06d}.png")
        else:
            assert out_stream is not None
            if pixels.ndim == 3 and pixels.shape[2] == 3:
                pixels = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
            out_stream.write(np.ascontiguousarray(pixels).tobytes())
            out_stream.flush()
        count += 1
    return count

