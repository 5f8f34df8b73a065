"""Writing videos and animated images, frame by frame: :class:`VideoWriter`.

Encoding uses PyAV (``pip install 'u2seg[video]'``), imported inside the functions that need it;
GIF and (where Pillow's encoder fits) animated WebP are written with Pillow
(:mod:`u2seg.video_animated`).

:class:`VideoWriter` writes ``webm`` (VP9, ``yuva420p``: alpha that plays in browsers), ``mov``
(ProRes 4444, ``yuva444p10le``: alpha for editors), ``mp4`` (H.264 ``yuv420p``, opaque; odd sizes
are padded by one replicated row/column, which 4:2:0 needs), ``gif`` (256 colours, 1-bit
transparency), ``webp`` (animated, lossless, 8-bit alpha) and ``png`` (a folder of numbered
frames). Audio is copied from a source file where the container can hold it (re-encoded to Opus
for WebM, AAC for MP4/MOV when the codec does not fit). Everything is written under a temporary
name next to the target and renamed into place by :meth:`VideoWriter.close`;
:meth:`VideoWriter.abort` removes it, so an interrupted run leaves nothing under the output's name.

Reading is :mod:`u2seg.video_read`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from fractions import Fraction
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np

from .errors import U2SegError
from .fileio import write_bytes_atomic
from .video_animated import gif_frame, pillow_webp_encoder, save_gif
from .video_read import check_av

__all__ = ["AUDIO_FORMATS", "VIDEO_FORMATS", "VideoError", "VideoWriter"]

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
            self._webp = pillow_webp_encoder(self.width, self.height, loop)
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
            self._gif_frames.append(gif_frame(pixels, round(1000 * (duration or 1) * self.time_base)))
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
        save_gif(self._gif_frames, self.tmp, alpha=self.mode == "RGBA", loop=self._loop)
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
