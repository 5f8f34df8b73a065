"""The desktop window's video part: open a video or animated image, scrub its frames with the
mask shown, export it (any ``--video-format``) in a worker thread with progress.

:class:`VideoWindow` decodes a preview of the clip once (in a worker: frames reduced to
``PREVIEW_SIDE`` pixels, at most ``MAX_PREVIEWS`` of them evenly spaced), segments the frame on
show in a worker (the same Predictor as the picture window), and exports through
:func:`u2seg.infer.video.remove_video` (the engine, the temporal filter, the main window's
refinement options) in a thread of its own, reporting frames done; *Cancel* stops it and leaves
nothing under the output's name. As in the picture window, every dialog handler calls a plain
method (:meth:`VideoWindow.open_video`, :meth:`VideoWindow.show_frame`, :meth:`VideoWindow.export`),
so tests drive it without dialogs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from ..errors import collapse_whitespace
from ..infer.refine import RefineOptions
from ..video_read import VideoInfo, VideoReader
from ..video_write import VIDEO_FORMATS
from .gui_widgets import ImageView, pil_to_qimage

__all__ = ["VideoWindow"]

PREVIEW_SIDE = 480
MAX_PREVIEWS = 300


@dataclass(frozen=True)
class Preview:
    info: VideoInfo
    frames: list[np.ndarray]     # RGB(A) previews
    indices: list[int]           # the clip's frame number of each


class _Signals(QObject):
    done = Signal(object)
    failed = Signal(str)
    progress = Signal(int)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[_Signals], Any]) -> None:
        super().__init__()
        self.fn = fn
        self.signals = _Signals()

    def run(self) -> None:
        try:
            result = self.fn(self.signals)
        except BaseException as exc:  # noqa: BLE001 - shown in the window (KeyboardInterrupt: a cancel)
            self.signals.failed.emit(collapse_whitespace(exc) or type(exc).__name__)
        else:
            self.signals.done.emit(result)


def read_preview(path: Path, side: int = PREVIEW_SIDE, limit: int = MAX_PREVIEWS) -> Preview:
    """Frames of ``path`` reduced to ``side`` pixels (long side), at most ``limit`` evenly spaced."""
    with VideoReader(path) as video:
        info = video.info
        step = max(1, -(-(info.frames or 1) // limit))
        frames, indices = [], []
        for frame in video:
            if frame.index % step:
                continue
            image = Image.fromarray(frame.pixels)
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
            frames.append(np.asarray(image))
            indices.append(frame.index)
    return Preview(info, frames, indices)


class VideoWindow(QMainWindow):
    """Scrub a clip (original | mask), export it with progress (see the module docstring)."""

    def __init__(self, predictor: Callable[[], Any], *, options: Callable[[], RefineOptions] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("u2seg — video")
        self._predictor = predictor
        self._options = options or RefineOptions
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(2)
        self._tasks: set[_Task] = set()
        self._cancel = threading.Event()
        self._masks: dict[int, np.ndarray] = {}
        self.preview: Preview | None = None
        self.path: Path | None = None
        self.exported: Path | None = None
        self.message = ""
        self._build()

    def _build(self) -> None:
        self.original_view = ImageView("Frame", "Open a video")
        self.mask_view = ImageView("Mask", "Mask")
        views = QHBoxLayout()
        views.addWidget(self.original_view, 1)
        views.addWidget(self.mask_view, 1)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(self.show_frame)
        self.frame_label = QLabel("")
        self.format_combo = QComboBox()
        self.format_combo.addItems(list(VIDEO_FORMATS))
        self.format_combo.setToolTip("webm and mov keep alpha for browsers and editors; mp4 is opaque")
        self.open_button = QPushButton("Open video…")
        self.open_button.clicked.connect(self._ask_open)
        self.export_button = QPushButton("Export…")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._ask_export)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m frames")
        self.status = QLabel("")
        controls = QHBoxLayout()
        for widget in (self.open_button, self.format_combo, self.export_button, self.cancel_button):
            controls.addWidget(widget)
        controls.addWidget(self.progress, 1)
        column = QVBoxLayout()
        column.addLayout(views, 1)
        row = QHBoxLayout()
        row.addWidget(self.slider, 1)
        row.addWidget(self.frame_label)
        column.addLayout(row)
        column.addLayout(controls)
        column.addWidget(self.status)
        central = QWidget()
        central.setLayout(column)
        self.setCentralWidget(central)
        self.resize(900, 480)

    # ------------------------------------------------------------------ workers
    def _run(self, fn: Callable[[_Signals], Any], done: Callable[[Any], None], failed: Callable[[str], None],
             progress: Callable[[int], None] | None = None) -> None:
        task = _Task(fn)
        task.setAutoDelete(False)
        self._tasks.add(task)
        task.signals.done.connect(lambda result: (self._tasks.discard(task), done(result)))
        task.signals.failed.connect(lambda message: (self._tasks.discard(task), failed(message)))
        if progress is not None:
            task.signals.progress.connect(progress)
        self._pool.start(task)

    def busy(self) -> bool:
        return bool(self._tasks)

    def wait_idle(self, timeout_ms: int = 60_000) -> bool:
        """Wait for the workers, delivering their signals (tests)."""
        from PySide6.QtCore import QCoreApplication, QElapsedTimer

        timer = QElapsedTimer()
        timer.start()
        while self._tasks and (timeout_ms < 0 or timer.elapsed() < timeout_ms):
            QCoreApplication.processEvents()
            self._pool.waitForDone(20)
        QCoreApplication.processEvents()
        return not self._tasks

    def _say(self, text: str) -> None:
        self.message = text
        self.status.setText(text)

    # ------------------------------------------------------------------ opening and scrubbing
    def open_video(self, path: str | Path) -> None:
        """Decode the preview (worker), then show the first frame."""
        self.path = Path(path)
        self.preview = None
        self._masks.clear()
        self.slider.setEnabled(False)
        self.export_button.setEnabled(False)
        self._say(f"Reading {self.path.name}…")
        self._run(lambda signals: read_preview(self.path), self._opened, self._say)

    def _opened(self, preview: Preview) -> None:
        self.preview = preview
        info = preview.info
        self.slider.blockSignals(True)
        self.slider.setRange(0, len(preview.frames) - 1)
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.slider.setEnabled(True)
        self.export_button.setEnabled(True)
        self.format_combo.setCurrentText("webp" if info.kind == "animation" else "webm")
        fps = f"{float(info.fps):.3g} frames/s" if info.fps else "variable rate"
        self._say(f"{self.path.name}: {info.width}×{info.height}, {info.frames} frames, {fps}"
                  + (", audio" if info.has_audio else ""))
        self.show_frame(0)

    def show_frame(self, position: int) -> None:
        """Show preview ``position`` and its mask (segmented in a worker, then kept)."""
        if self.preview is None or not 0 <= position < len(self.preview.frames):
            return
        pixels = self.preview.frames[position]
        self.original_view.set_image(pil_to_qimage(Image.fromarray(pixels)))
        self.frame_label.setText(f"frame {self.preview.indices[position] + 1}")
        mask = self._masks.get(position)
        if mask is not None:
            self.mask_view.set_image(pil_to_qimage(Image.fromarray(mask)))
            return
        self.mask_view.clear_image("…")

        def work(signals: _Signals) -> tuple[int, np.ndarray]:
            prob = self._predictor().predict(pixels)
            return position, np.rint(np.clip(prob, 0, 1) * 255).astype(np.uint8)

        self._run(work, self._masked, self._say)

    def _masked(self, result: tuple[int, np.ndarray]) -> None:
        position, mask = result
        self._masks[position] = mask
        if self.slider.value() == position:
            self.mask_view.set_image(pil_to_qimage(Image.fromarray(mask)))

    # ------------------------------------------------------------------ export
    def export(self, output: str | Path, fmt: str | None = None, *, temporal: str = "flow") -> None:
        """Write the clip to ``output`` as ``fmt`` (default: the combo box's) in a worker; the
        progress bar counts frames; :meth:`cancel` stops it (nothing is left under ``output``)."""
        from ..infer.engine import Engine
        from ..infer.video import remove_video

        if self.path is None:
            self._say("open a video first")
            return
        fmt = fmt or self.format_combo.currentText()
        source, options = self.path, self._options()
        if options.crop:
            options = RefineOptions(**{**options.__dict__, "crop": False})
        self._cancel.clear()
        self.exported = None
        total = self.preview.info.frames if self.preview is not None else None
        self.progress.setRange(0, total or 0)
        self.progress.setValue(0)
        self.export_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._say(f"Exporting to {output}…")

        def work(signals: _Signals) -> Any:
            def on_frame(frame, prob, pixels) -> None:  # noqa: ANN001
                signals.progress.emit(frame.index + 1)
                if self._cancel.is_set():
                    raise KeyboardInterrupt

            with Engine(self._predictor(), batch_size=2) as engine:
                return remove_video(engine, source, output, options=options, fmt=fmt, temporal=temporal,
                                    progress=False, on_frame=on_frame)

        self._run(work, self._exported, self._export_failed, self.progress.setValue)

    def cancel(self) -> None:
        self._cancel.set()

    def _exported(self, result: Any) -> None:
        self.exported = result.output
        self.export_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._say(f"Wrote {result.output}: {result.frames} frames, {result.frames_per_s:.1f} frames/s"
                  + (f" ({result.note})" if result.note else ""))

    def _export_failed(self, message: str) -> None:
        self.export_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._say(message)

    # ------------------------------------------------------------------ dialogs
    def _ask_open(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open video", "",
                                              "Videos and animations (*.mp4 *.m4v *.mov *.webm *.mkv *.avi *.gif "
                                              "*.webp *.png *.apng)")
        if path:
            self.open_video(path)

    def _ask_export(self) -> None:
        if self.path is None:
            return
        fmt = self.format_combo.currentText()
        suggestion = str(self.path.with_name(f"{self.path.stem}-cutout.{fmt}" if fmt != "png" else
                                             f"{self.path.stem}-cutout"))
        path, _ = QFileDialog.getSaveFileName(self, "Export video", suggestion)
        if path:
            self.export(path, fmt)

    def closeEvent(self, event) -> None:  # noqa: N802
        self.cancel()
        self._pool.waitForDone(10_000)
        super().closeEvent(event)
