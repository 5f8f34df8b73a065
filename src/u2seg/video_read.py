"""Reading videos and animated images, frame by frame, in flat memory, and telling what a file is.

Decoding uses PyAV (``pip install 'u2seg[video]'``: its wheels carry FFmpeg, so no system ffmpeg
is involved), imported inside the functions that need it. Animated GIF / WebP / APNG are read
with Pillow (FFmpeg does not decode animated WebP, and Pillow composites the frames of all three
the way browsers show them).

:class:`VideoReader` yields :class:`Frame` objects: ``uint8`` RGB pixels (RGBA for animated images
with transparency), upright (the stream's rotation metadata applied, as players do), with each
frame's own ``pts`` and ``time_base``, so variable frame rates and the total duration survive.
Odd sizes are kept.

VP9 alpha: FFmpeg's own ``vp9`` decoder ignores the alpha plane (stored as Matroska
BlockAdditions); :class:`VideoReader` decodes VP9 with ``libvpx-vp9``, which returns
``yuva420p`` frames when the stream has alpha (``alpha=True``).

Writing is :mod:`u2seg.video_write`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageReadError, U2SegError, collapse_whitespace

__all__ = [
    "ANIMATED_EXTENSIONS", "VIDEO_EXTENSIONS", "Frame", "VideoInfo", "VideoReadError", "VideoReader", "check_av",
    "is_animated_image", "is_video_file", "probe_video",
]

#: Suffixes read as videos.
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"})
#: Suffixes that may hold an animated image (read as one when they have more than one frame).
ANIMATED_EXTENSIONS: frozenset[str] = frozenset({".gif", ".webp", ".png", ".apng"})


class VideoReadError(ImageReadError):
    """A video or animated image could not be read; the message starts with its name."""


def check_av() -> Any:
    """Import PyAV, or say how to install it."""
    try:
        import av
    except ImportError:
        raise U2SegError("videos need PyAV: pip install 'u2seg[video]'") from None
    return av


# --------------------------------------------------------------------------- what a file is


def is_animated_image(path: str | os.PathLike) -> bool:
    """True for a GIF, WebP or PNG (APNG) file with more than one frame. Reads the header only
    (WebP: the VP8X animation flag; PNG: an ``acTL`` chunk before the image data; GIF: a second
    image descriptor, found by Pillow)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATED_EXTENSIONS:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                return head[12:16] == b"VP8X" and bool(head[20] & 0x02)
            if head.startswith(b"\x89PNG\r\n\x1a\n"):
                return _png_is_animated(f)
            if head[:6] in (b"GIF87a", b"GIF89a"):
                from PIL import Image

                with Image.open(path) as im:
                    return bool(getattr(im, "is_animated", False))
    except (OSError, ValueError, struct.error, IndexError, SyntaxError):
        return False
    return False


def _png_is_animated(f: Any) -> bool:
    f.seek(8)
    while True:
        header = f.read(8)
        if len(header) < 8:
            return False
        length, kind = struct.unpack(">I4s", header)
        if kind == b"acTL":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        f.seek(length + 4, os.SEEK_CUR)


def is_video_file(path: str | os.PathLike) -> bool:
    """A video (by suffix) or an animated image (by content)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS or is_animated_image(path)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds: the upright frame size, the frame count (exact for animated images;
    the container's figure, or an estimate from duration × rate, for videos; None if unknown),
    the average rate, the duration in seconds, whether it has audio, the rotation applied, and
    ``kind`` ("video" or "animation"; animations have a ``loop`` count, 0 = forever)."""

    width: int
    height: int
    frames: int | None
    fps: Fraction | None
    duration: float | None
    has_audio: bool
    rotation: int = 0
    kind: str = "video"
    loop: int | None = None
    codec: str = ""
    alpha: bool = False


@dataclass
class Frame:
    """One decoded frame: ``pixels`` ``uint8 H×W×3`` (or ``×4``), shown from ``pts × time_base``
    seconds for ``duration × time_base`` seconds (None when the container does not say)."""

    index: int
    pixels: np.ndarray
    pts: int
    time_base: Fraction
    duration: int | None = None

    @property
    def time(self) -> float:
        return float(self.pts * self.time_base)


def _has_alpha(pix_fmt: str | None) -> bool:
    return bool(pix_fmt) and pix_fmt.startswith(("yuva", "gbrap", "ya", "rgba", "bgra", "argb", "abgr", "rgb32", "bgr32"))


def _av_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    text = collapse_whitespace(text).rstrip(":").strip()
    return text[:1].lower() + text[1:] if text else type(exc).__name__


class VideoReader:
    """Frames of a video or animated image, decoded one at a time (see the module docstring).

    ``with VideoReader(path) as video: info = video.info; for frame in video: ...``. Errors are
    :class:`VideoReadError` with one line naming the file: not a video, no video stream,
    corrupt data, or a truncated file (fewer frames than the container declares)."""

    def __init__(self, path: str | os.PathLike, *, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or str(path)
        self._container: Any = None
        self._image: Any = None
        if not self.path.is_file():
            raise VideoReadError(f"{self.name}: no such file")
        if self.path.stat().st_size == 0:
            raise VideoReadError(f"{self.name}: empty file")
        if self.path.suffix.lower() in ANIMATED_EXTENSIONS and self.path.suffix.lower() not in VIDEO_EXTENSIONS:
            self.info = self._open_animation()
        else:
            self.info = self._open_video()

    # ------------------------------------------------------------------ animations (Pillow)
    def _open_animation(self) -> VideoInfo:
        from PIL import Image

        try:
            self._image = Image.open(self.path)
            frames = int(getattr(self._image, "n_frames", 1))
            total_ms = 0
            for i in range(frames):
                self._image.seek(i)
                self._image.load()  # WebP reads a frame's duration when decoding it
                total_ms += self._frame_ms()
            self._image.seek(0)
        except Exception as exc:  # Pillow raises many types on bad input
            self.close()
            raise VideoReadError(f"{self.name}: not a readable animated image ({_av_reason(exc)})") from exc
        width, height = self._image.size
        duration = total_ms / 1000.0
        fps = Fraction(frames * 1000, total_ms).limit_denominator(1001) if total_ms else None
        alpha = self._image.mode in ("RGBA", "LA", "PA") or "transparency" in self._image.info
        loop = self._image.info.get("loop")
        return VideoInfo(width, height, frames, fps, duration, False, 0, "animation",
                         int(loop) if loop is not None else None, self.path.suffix.lower().lstrip("."), alpha)

    def _frame_ms(self) -> int:
        duration = self._image.info.get("duration")
        try:
            ms = int(round(float(duration)))
        except (TypeError, ValueError):
            ms = 0
        return ms if ms > 0 else 100  # browsers show 0-delay frames for about 100 ms

    def _animation_frames(self) -> Iterator[Frame]:
        pts = 0
        for i in range(self.info.frames or 0):
            try:
                self._image.seek(i)
                frame = self._image.convert("RGBA" if self.info.alpha else "RGB")
                pixels = np.asarray(frame)
            except Exception as exc:
                raise VideoReadError(f"{self.name}: frame {i + 1} cannot be decoded ({_av_reason(exc)})") from exc
            ms = self._frame_ms()
            yield Frame(i, pixels, pts, Fraction(1, 1000), ms)
            pts += ms

    # ------------------------------------------------------------------ videos (PyAV)
    def _open_video(self) -> VideoInfo:
        av = check_av()
        try:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise VideoReadError(f"{self.name}: not a readable video ({_av_reason(exc)})") from None
        except (OSError, ValueError) as exc:
            raise VideoReadError(f"{self.name}: not a readable video ({_av_reason(exc)})") from None
        if not self._container.streams.video:
            self.close()
            raise VideoReadError(f"{self.name}: no video stream")
        stream = self._container.streams.video[0]
        self._stream = stream
        codec = stream.codec_context.name
        self._decoder = None
        alpha = False
        if codec == "vp9":  # FFmpeg's vp9 decoder drops the alpha plane; libvpx keeps it
            alpha = str(stream.metadata.get("alpha_mode", stream.metadata.get("ALPHA_MODE", "0"))) == "1"
            if alpha:
                self._decoder = av.codec.CodecContext.create("libvpx-vp9", "r")
        else:
            alpha = _has_alpha(stream.codec_context.pix_fmt)
        if self._decoder is None:
            stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            self.close()
            raise VideoReadError(f"{self.name}: the video stream has no frame size (corrupt header)")
        # The rotation is the display matrix of the frames (PyAV shows no stream side data): the
        # first frame is decoded now, which also refuses a file whose data is broken from the start.
        if self._decoder is not None:
            self._decoded = (f for packet in self._container.demux(stream) for f in self._decoder.decode(packet))
        else:
            self._decoded = self._container.decode(stream)
        try:
            self._first = next(self._decoded, None)
        except av.error.FFmpegError as exc:
            self.close()
            raise VideoReadError(f"{self.name}: corrupt video data ({_av_reason(exc)})") from None
        if self._first is None:
            self.close()
            raise VideoReadError(f"{self.name}: no frame could be decoded (corrupt or truncated video)")
        rotation = int(round((getattr(self._first, "rotation", 0) or 0) / 90.0)) * 90 % 360
        if rotation % 180:
            width, height = height, width
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = Fraction(fps) if fps else None
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / 1_000_000
        frames = int(stream.frames) if stream.frames else None
        if frames is None and duration and fps:
            frames = max(1, round(duration * fps))
        self._declared_frames = int(stream.frames) if stream.frames else None
        return VideoInfo(width, height, frames, fps, duration, bool(self._container.streams.audio), rotation,
                         "video", None, codec, alpha)

    def _video_frames(self) -> Iterator[Frame]:
        av = check_av()
        stream = self._stream
        index = 0
        last_pts = None
        def decoded() -> Iterator[Any]:
            first, self._first = self._first, None
            if first is not None:
                yield first
            yield from self._decoded

        try:
            for frame in decoded():
                if frame.pts is None:
                    pts = 0 if last_pts is None else last_pts + 1
                else:
                    pts = int(frame.pts)
                if last_pts is not None and pts <= last_pts:  # broken timestamps: keep them increasing
                    pts = last_pts + 1
                last_pts = pts
                rotation = self.info.rotation // 90
                pixels = frame.to_ndarray(format="rgba" if self.info.alpha else "rgb24")
                if rotation:
                    pixels = np.ascontiguousarray(np.rot90(pixels, k=rotation))
                duration = int(frame.duration) if getattr(frame, "duration", None) else None
                time_base = frame.time_base or stream.time_base
                yield Frame(index, pixels, pts, Fraction(time_base), duration)
                index += 1
        except av.error.FFmpegError as exc:
            raise VideoReadError(f"{self.name}: corrupt video data after {index} frame(s) "
                                 f"({_av_reason(exc)})") from None
        if index == 0:
            raise VideoReadError(f"{self.name}: no frame could be decoded (corrupt or truncated video)")
        declared = self._declared_frames
        if declared and index < declared * 0.98 - 1:
            raise VideoReadError(f"{self.name}: truncated video: {index} of {declared} frames could be decoded")
        if not declared and self.info.duration and self.info.fps:
            end = float((last_pts or 0) * Fraction(stream.time_base)) - float(
                (stream.start_time or 0) * Fraction(stream.time_base))
            if end + 3 / float(self.info.fps) < self.info.duration * 0.95:
                raise VideoReadError(f"{self.name}: truncated video: frames end at {end:.2f} s of "
                                     f"{self.info.duration:.2f} s")

    # ------------------------------------------------------------------ common
    def __iter__(self) -> Iterator[Frame]:
        return self._animation_frames() if self._image is not None else self._video_frames()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._image is not None:
            self._image.close()
            self._image = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """The :class:`VideoInfo` of a file (nothing decoded)."""
    with VideoReader(path) as video:
        return video.info
