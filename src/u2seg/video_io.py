"""Reading and writing videos and animated images, frame by frame, in flat memory.

Decoding and encoding use PyAV (``pip install 'u2seg[video]'``: its wheels carry FFmpeg, so no
system ffmpeg is involved), imported inside the functions that need it. Animated GIF / WebP /
APNG are read with Pillow (FFmpeg does not decode animated WebP, and Pillow composites the
frames of all three the way browsers show them).

* :class:`VideoReader` yields :class:`Frame` objects: ``uint8`` RGB pixels (RGBA for animated
  images with transparency), upright (the stream's rotation metadata applied, as players do),
  with each frame's own ``pts`` and ``time_base``, so variable frame rates and the total duration
  survive. Odd sizes are kept.
* :class:`VideoWriter` writes ``webm`` (VP9, ``yuva420p``: alpha that plays in browsers), ``mov``
  (ProRes 4444, ``yuva444p10le``: alpha for editors), ``mp4`` (H.264 ``yuv420p``, opaque; odd
  sizes are padded by one replicated row/column, which 4:2:0 needs), ``gif`` (256 colours, 1-bit
  transparency), ``webp`` (animated, lossless, 8-bit alpha) and ``png`` (a folder of numbered
  frames). Audio is copied from a source file where the container can hold it (re-encoded to
  Opus for WebM, AAC for MP4/MOV when the codec does not fit). Everything is written under a
  temporary name next to the target and renamed into place by :meth:`VideoWriter.close`;
  :meth:`VideoWriter.abort` removes it, so an interrupted run leaves nothing under the output's
  name.

VP9 alpha: FFmpeg's own ``vp9`` decoder ignores the alpha plane (stored as Matroska
BlockAdditions); :class:`VideoReader` decodes VP9 with ``libvpx-vp9``, which returns
``yuva420p`` frames when the stream has alpha (``alpha=True``).
"""

from __future__ import annotations

import os
import shutil
import struct
import uuid
from glob import escape as glob_escape
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageReadError, U2SegError
from .fileio import write_bytes_atomic

__all__ = [
    "ANIMATED_EXTENSIONS", "VIDEO_EXTENSIONS", "VIDEO_FORMATS", "Frame", "VideoError", "VideoInfo", "VideoReadError",
    "VideoReader", "VideoWriter", "check_av", "is_animated_image", "is_video_file", "probe_video",
]

#: Suffixes read as videos.
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"})
#: Suffixes that may hold an animated image (read as one when they have more than one frame).
ANIMATED_EXTENSIONS: frozenset[str] = frozenset({".gif", ".webp", ".png", ".apng"})
#: What :class:`VideoWriter` writes.
VIDEO_FORMATS: tuple[str, ...] = ("webm", "mov", "mp4", "gif", "webp", "png")
#: Formats whose containers can carry audio.
AUDIO_FORMATS = frozenset({"webm", "mov", "mp4"})

_AUDIO_COPY = {"webm": {"opus", "vorbis"}, "mp4": {"aac", "mp3", "opus", "alac", "flac", "ac3"},
               "mov": {"aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s24le", "pcm_f32le"}}
_AUDIO_ENCODER = {"webm": "libopus", "mp4": "aac", "mov": "aac"}
_CONTAINER = {"webm": "webm", "mov": "mov", "mp4": "mp4", "gif": "gif", "webp": "webp"}


class VideoError(U2SegError):
    """A video could not be written (one line)."""


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


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _av_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    text = _one_line(text).rstrip(":").strip()
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


# --------------------------------------------------------------------------- writing


class VideoWriter:
    """Encode frames into ``path`` as ``fmt`` (one of :data:`VIDEO_FORMATS`; ``png`` makes the
    folder ``path``), atomically: see the module docstring.

    ``mode`` is the frames' kind: ``"RGBA"`` (alpha kept where the format has it), ``"RGB"`` or
    ``"L"`` (a matte). ``time_base`` is that of the frames' ``pts``; ``audio`` a file whose first
    audio stream is copied (formats that hold audio only); ``loop`` the loop count of animated
    outputs (0: forever). ``crf``: the quality of webm (default 30) and mp4 (default 18); lower is
    better and larger."""

    def __init__(self, path: str | os.PathLike, fmt: str, *, width: int, height: int, mode: str = "RGBA",
                 time_base: Fraction = Fraction(1, 25), rate: Fraction | None = None,
                 audio: str | os.PathLike | None = None, loop: int | None = 0, threads: int | None = None,
                 crf: int | None = None) -> None:
        if fmt not in VIDEO_FORMATS:
            raise ValueError(f"unknown video format {fmt!r}; choose one of: {', '.join(VIDEO_FORMATS)}")
        if mode not in ("RGBA", "RGB", "L"):
            raise ValueError(f"mode must be RGBA, RGB or L, got {mode!r}")
        self.path = Path(path)
        self.fmt, self.mode, self.width, self.height = fmt, mode, int(width), int(height)
        self.time_base = Fraction(time_base)
        self.crf = crf
        self.frames = 0
        self._closed = False
        self._last_pts: int | None = None
        self._last_duration: int | None = None
        self._first_pts: int | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(self.path)
        self.tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp"
        self._container = None
        self._audio_in = None
        self.audio_note: str | None = None
        self._loop = loop
        self._webp: Any = None
        if fmt == "png":
            self.tmp.mkdir()
            return
        if fmt == "gif":  # Pillow: FFmpeg's GIF encoder has no "restore to background" disposal
            self._gif_frames: list[Any] = []
            return
        if fmt == "webp":  # libwebp through Pillow: exact per-frame durations, the last one included
            self._webp = _pillow_webp_encoder(self.width, self.height, loop)
            if self._webp is not None:
                return
        av = check_av()
        try:
            self._open(av, rate, loop, threads)
            if audio is not None and fmt in AUDIO_FORMATS:
                self._open_audio(av, Path(audio))
        except BaseException:
            self.abort()
            raise

    def _open(self, av: Any, rate: Fraction | None, loop: int | None, threads: int | None) -> None:
        fmt = self.fmt
        options: dict[str, str] = {}
        if fmt in ("gif", "webp") and loop is not None:
            options["loop"] = str(int(loop))
        if fmt in ("mp4", "mov"):
            options["movflags"] = "+faststart"  # the index first: players start before the whole file is in
        self._container = av.open(str(self.tmp), "w", format=_CONTAINER[fmt], options=options)
        threads = threads or max(1, min(8, os.cpu_count() or 1))
        alpha = self.mode == "RGBA"
        rate = Fraction(rate) if rate else None
        if fmt == "webm":
            codec, pix = "libvpx-vp9", "yuva420p" if alpha else "yuv420p"
            opts = {"crf": str(self.crf if self.crf is not None else 30), "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1",
                    "threads": str(threads), "lag-in-frames": "0"}
        elif fmt == "mov":
            codec, pix = "prores_ks", "yuva444p10le" if alpha else "yuv444p10le"
            opts = {"profile": "4", "vendor": "apl0", "threads": str(threads)}
            if alpha:
                opts["alpha_bits"] = "16"
        elif fmt == "mp4":
            codec, pix = "libx264", "yuv420p"
            # No B-frames: with them, MP4's track duration comes from shifted decoding times, which
            # loses up to two frames' worth at a variable frame rate.
            opts = {"crf": str(self.crf if self.crf is not None else 18), "preset": "veryfast", "bf": "0",
                    "threads": str(threads)}
        elif fmt == "gif":
            codec, pix, opts = "gif", "pal8", {}
        else:  # webp: lossless, 8-bit alpha
            codec, pix, opts = "libwebp_anim", "bgra", {"lossless": "1", "compression_level": "3"}
        stream = self._container.add_stream(codec, rate=rate, options=opts)
        even = fmt == "mp4"
        stream.width = self.width + (self.width % 2 if even else 0)
        stream.height = self.height + (self.height % 2 if even else 0)
        stream.pix_fmt = pix
        stream.codec_context.time_base = self.time_base
        if fmt == "mov":
            stream.time_base = self.time_base
        if fmt == "mp4":
            stream.codec_context.color_range = 1  # limited (tv) range, what players expect
        self._stream = stream
        self._pix = pix

    def _open_audio(self, av: Any, source: Path) -> None:
        try:
            self._audio_in = av.open(str(source), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError):
            self._audio_in = None
            return
        if not self._audio_in.streams.audio:
            self._audio_in.close()
            self._audio_in = None
            return
        in_audio = self._audio_in.streams.audio[0]
        name = in_audio.codec_context.name
        self._audio_copy = name in _AUDIO_COPY[self.fmt]
        if self._audio_copy:
            self._audio_out = self._container.add_stream_from_template(in_audio)
        else:
            encoder = _AUDIO_ENCODER[self.fmt]
            rate = 48000 if encoder == "libopus" else (in_audio.codec_context.sample_rate or 48000)
            layout = in_audio.codec_context.layout.name if in_audio.codec_context.layout else "stereo"
            if in_audio.codec_context.channels > 2:
                layout = "stereo"
            self._audio_out = self._container.add_stream(encoder, rate=rate, layout=layout)
            self.audio_note = f"audio re-encoded from {name} to {encoder.removeprefix('lib')} ({self.fmt} cannot hold {name})"
            self._resampler = None
        self._audio_stream_in = in_audio
        self._audio_packets = self._audio_in.demux(in_audio)
        self._audio_done = False

    def _pump_audio(self, until: float | None) -> None:
        """Mux the source's audio up to ``until`` seconds (None: all of it), so audio and video
        packets interleave without the muxer buffering a whole track."""
        if self._audio_in is None or self._audio_done:
            return
        av = check_av()
        tb = Fraction(self._audio_stream_in.time_base)
        try:
            for packet in self._audio_packets:
                if packet.dts is None and packet.size == 0:
                    continue
                if self._audio_copy:
                    if packet.dts is None:
                        continue
                    packet.stream = self._audio_out
                    self._container.mux(packet)
                else:
                    for frame in packet.decode():
                        self._encode_audio(frame)
                if until is not None and packet.pts is not None and float(packet.pts * tb) > until:
                    return
        except av.error.FFmpegError:
            self.audio_note = "the source's audio is damaged; it was cut where it broke"
        if not self._audio_copy:
            self._encode_audio(None)
        self._audio_done = True

    def _encode_audio(self, frame: Any) -> None:
        av = check_av()
        ctx = self._audio_out.codec_context
        if self._resampler is None:
            self._resampler = av.AudioResampler(format=ctx.format, layout=ctx.layout, rate=ctx.sample_rate,
                                                frame_size=ctx.frame_size or None)
        frames = self._resampler.resample(frame)
        for f in frames:
            for packet in self._audio_out.encode(f):
                self._container.mux(packet)
        if frame is None:
            for packet in self._audio_out.encode(None):
                self._container.mux(packet)

    # ------------------------------------------------------------------ frames
    def write(self, pixels: np.ndarray, pts: int | None = None, duration: int | None = None) -> None:
        """Add one frame: ``uint8`` ``H×W`` (mode L) or ``H×W×3|4``; ``pts`` in ``time_base``
        units (default: one after the last)."""
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + (self._last_duration or 1)
        pixels = np.asarray(pixels)
        if pixels.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {pixels.shape[1]}×{pixels.shape[0]}, the video {self.width}×{self.height}")
        if self.fmt == "png":
            self._write_png(pixels)
        elif self.fmt == "gif":
            if self._gif_frames and self._last_pts is not None:  # the previous frame lasts until this one
                self._gif_frames[-1].info["duration"] = max(10, round(1000 * (pts - self._last_pts) * self.time_base))
            self._gif_frames.append(_gif_frame(pixels, round(1000 * (duration or 1) * self.time_base)))
        elif self._webp is not None:
            self._add_webp(pixels, pts)
        else:
            self._write_frame(pixels, int(pts), duration)
        self._last_pts, self._last_duration = int(pts), duration
        self.frames += 1

    def _write_png(self, pixels: np.ndarray) -> None:
        from PIL import Image

        from .image_encode import encode_image

        image = Image.fromarray(np.ascontiguousarray(pixels))
        write_bytes_atomic(encode_image(image, "png"), self.tmp / f"{self.frames + 1:06d}.png")

    def _frame(self, pixels: np.ndarray) -> Any:
        av = check_av()
        fmt = self.fmt
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2) if fmt in ("webm", "mp4", "mov", "webp", "gif") else pixels
        if fmt == "mp4":
            rgb = pixels[..., :3]
            if rgb.shape[0] % 2 or rgb.shape[1] % 2:
                rgb = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
            return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self.mode == "RGBA" and pixels.shape[2] == 4:
            return av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgba")
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels[..., :3]), format="rgb24")

    def _write_frame(self, pixels: np.ndarray, pts: int, duration: int | None) -> None:
        frame = self._frame(pixels)
        if self.fmt == "mp4":
            frame.color_range = 1
        frame.pts = pts
        frame.time_base = self.time_base
        if duration:
            try:
                frame.duration = duration
            except (AttributeError, TypeError):
                pass
        if self._audio_in is not None:
            self._pump_audio(float(pts * self.time_base) + 0.5)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    # ------------------------------------------------------------------ the end
    def close(self) -> Path:
        """Finish the file and rename it into place (replacing an older one); returns the path."""
        if self._closed:
            return self.path
        try:
            if self.fmt == "gif":
                self._save_gif()
                os.replace(self.tmp, self.path)
            elif self._webp is not None:
                self._save_webp()
                os.replace(self.tmp, self.path)
            elif self.fmt != "png":
                if self.frames == 0:
                    raise VideoError(f"{self.path}: no frames to write")
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
                self._pump_audio(None)
                self._close_containers()
                with open(self.tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(self.tmp, self.path)
            else:
                if self.path.exists():
                    old = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex[:8]}.old"
                    os.replace(self.path, old)
                    os.replace(self.tmp, self.path)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def _ms(self, pts: int) -> int:
        return round(1000 * (pts - (self._first_pts or 0)) * self.time_base)

    def _add_webp(self, pixels: np.ndarray, pts: int) -> None:
        from PIL import Image

        if self.frames == 0:
            self._first_pts = pts
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        image = Image.fromarray(np.ascontiguousarray(pixels))
        self._webp.add(image.getim(), self._ms(pts), True, 50, 100, 3)  # lossless, effort, alpha, method

    def _save_webp(self) -> None:
        if self.frames == 0:
            raise VideoError(f"{self.path}: no frames to write")
        end = self._ms(self._last_pts or 0) + round(1000 * (self._last_duration or 1) * self.time_base)
        self._webp.add(None, end, True, 50, 100, 0)
        data = self._webp.assemble(b"", b"", b"")
        if data is None:
            raise VideoError(f"{self.path}: the WebP encoder returned nothing")
        with open(self.tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._webp = None

    def _save_gif(self) -> None:
        if not self._gif_frames:
            raise VideoError(f"{self.path}: no frames to write")
        first, rest = self._gif_frames[0], self._gif_frames[1:]
        options: dict[str, Any] = {"save_all": True, "append_images": rest, "optimize": False,
                                   "disposal": 2 if self.mode == "RGBA" else 1}
        if self._loop is not None:
            options["loop"] = int(self._loop)
        with open(self.tmp, "wb") as f:
            first.save(f, format="GIF", **options)
            f.flush()
            os.fsync(f.fileno())
        self._gif_frames = []

    def _close_containers(self) -> None:
        for attr in ("_container", "_audio_in"):
            container = getattr(self, attr)
            if container is not None:
                setattr(self, attr, None)
                container.close()

    def abort(self) -> None:
        """Drop what was written: nothing is left under the output's name or the temporary one."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close_containers()
        except Exception:  # closing a half-written container may fail; the file goes anyway
            pass
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            try:
                self.tmp.unlink()
            except OSError:
                pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _remove_stale_temporaries(path: Path) -> None:
    """Remove what a killed run (SIGKILL, power loss) left next to ``path``: ``.NAME.XXXXXXXX.tmp``."""
    for stale in path.parent.glob(f".{glob_escape(path.name)}.????????.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            try:
                stale.unlink()
            except OSError:
                pass


def _pillow_webp_encoder(width: int, height: int, loop: int | None) -> Any:
    """Pillow's (≥ 11) incremental animated-WebP encoder, or None where it differs (then FFmpeg's
    libwebp_anim writes the file: the same frames, the last one shown for the average duration)."""
    try:
        from PIL import Image, _webp

        encoder = _webp.WebPAnimEncoder((width, height), 0, int(loop or 0), False, 0, 17, False, False)
        probe = _webp.WebPAnimEncoder((2, 2), 0, 0, False, 0, 17, False, False)
        probe.add(Image.new("RGBA", (2, 2)).getim(), 0, True, 50, 100, 0)
        return encoder
    except Exception:  # an older or newer Pillow: another signature
        return None


def _gif_frame(pixels: np.ndarray, ms: int) -> Any:
    """A palette frame for Pillow's GIF writer: 255 colours by median cut, index 255 transparent
    where alpha < 128 (GIF has 1-bit transparency); ``ms`` its delay."""
    from PIL import Image

    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    rgb = Image.fromarray(np.ascontiguousarray(pixels[..., :3]))
    quantised = rgb.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    if pixels.shape[2] == 4:
        indices = np.array(quantised, dtype=np.uint8)
        indices[pixels[..., 3] < 128] = 255
        palette = quantised.getpalette()[: 255 * 3]
        quantised = Image.fromarray(indices, mode="P")
        quantised.putpalette(palette + [0, 0, 0] * (256 - len(palette) // 3))
        quantised.info["transparency"] = 255
    quantised.info["duration"] = max(10, int(ms))
    return quantised
