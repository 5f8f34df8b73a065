"""Desktop window (PySide6): open pictures, segment them in the background, look, save.

``u2seg gui [PATH ...] [--model NAME]`` (or :func:`run_gui`). The window shows the original,
the mask and the cutout side by side. The network runs in a worker thread, once per picture and
model; the threshold slider, matting, mask clean-up, edge decontamination and the background
colour re-render from the cached probability (:func:`u2seg.infer.refine.refine`, also in a
worker, so matting a large picture never freezes the window). Errors (an unreadable picture,
weights that cannot be loaded) appear in the window's message line and status bar.

Every dialog handler calls a plain method (:meth:`MainWindow.open_paths`,
:meth:`MainWindow.save_current`, :meth:`MainWindow.save_all`, :meth:`MainWindow.set_bgcolor`,
:meth:`MainWindow.set_model`), so the window can be driven without dialogs (tests, scripts).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtCore import QObject, QRunnable, QSize, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QAction, QColor, QImage, QKeySequence, QPainter, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QColorDialog,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ..errors import U2SegError
from ..infer.engine import Report
from ..infer.files import Plan, plan_pairs
from ..image_encode import OUTPUT_FORMATS, save_image
from ..image_io import IMAGE_EXTENSIONS, load_image
from ..infer.refine import RefineOptions, refine
from ..weights.registry import DEFAULT_WEIGHTS

__all__ = ["MainWindow", "run_gui", "models_with_weights", "pil_to_qimage", "qimage_to_array"]

log = logging.getLogger(__name__)

PredictorFactory = Callable[[str], Any]  # model name -> a Predictor (or an object that acts as one)


def models_with_weights() -> list[str]:
    """Registered architectures that have registered pretrained weights (``u2net``, ``u2netp``)."""
    from ..models import list_models
    from ..weights import list_weights

    have = {w.model for w in list_weights()}
    return [name for name in list_models() if name in have]


def _default_factory(model: str):
    from ..infer.sessions import get_predictor

    return get_predictor(model)


def _is_video(path: Path) -> bool:
    from ..video_read import is_video_file

    return is_video_file(path)


def _describe(exc: BaseException) -> str:
    """One line for the window: u2seg's own errors carry their message, others get the type."""
    if isinstance(exc, (U2SegError, OSError, ValueError)):
        text = str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


# --------------------------------------------------------------------------- images ↔ Qt


def pil_to_qimage(image: Image.Image) -> QImage:
    """A PIL image as a QImage that owns its pixels (safe to build in a worker thread)."""
    if image.mode == "L":
        data = np.ascontiguousarray(np.asarray(image))
        fmt = QImage.Format.Format_Grayscale8
        channels = 1
    elif image.mode == "RGBA":
        data = np.ascontiguousarray(np.asarray(image))
        fmt = QImage.Format.Format_RGBA8888
        channels = 4
    else:
        data = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        fmt = QImage.Format.Format_RGB888
        channels = 3
    h, w = data.shape[:2]
    return QImage(data.data, w, h, w * channels, fmt).copy()


def qimage_to_array(image: QImage) -> np.ndarray:
    """A QImage as ``H×W`` (grayscale) or ``H×W×4`` RGBA uint8 array (a copy)."""
    if image.format() == QImage.Format.Format_Grayscale8:
        gray = image
        channels = 1
    else:
        gray = image.convertToFormat(QImage.Format.Format_RGBA8888)
        channels = 4
    w, h, stride = gray.width(), gray.height(), gray.bytesPerLine()
    buffer = np.frombuffer(gray.constBits(), np.uint8, count=stride * h).reshape(h, stride)
    pixels = buffer[:, : w * channels].reshape(h, w, channels) if channels > 1 else buffer[:, :w]
    return pixels.copy()


def _checkerboard(size: QSize, cell: int = 10) -> QPixmap:
    tile = QPixmap(2 * cell, 2 * cell)
    tile.fill(QColor(255, 255, 255))
    painter = QPainter(tile)
    painter.fillRect(0, 0, cell, cell, QColor(204, 204, 204))
    painter.fillRect(cell, cell, cell, cell, QColor(204, 204, 204))
    painter.end()
    board = QPixmap(size)
    painter = QPainter(board)
    painter.drawTiledPixmap(0, 0, size.width(), size.height(), tile)
    painter.end()
    return board


class ImageView(QLabel):
    """Shows one image scaled to fit (aspect kept), on a checkerboard where it is transparent."""

    def __init__(self, title: str, placeholder: str = "") -> None:
        super().__init__()
        self.title = title
        self._placeholder = placeholder
        self._image: QImage | None = None
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(160, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setText(placeholder)
        self.setStyleSheet("QLabel { color: #777; }")

    def image(self) -> QImage | None:
        """The full-resolution image on show (None when empty)."""
        return self._image

    def set_image(self, image: QImage | None) -> None:
        self._image = image
        self._refresh()

    def clear_image(self, text: str | None = None) -> None:
        self._image = None
        self.clear()
        self.setText(self._placeholder if text is None else text)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().resizeEvent(event)
        self._refresh()

    def _refresh(self) -> None:
        if self._image is None or self._image.isNull():
            self.clear()
            self.setText(self._placeholder)
            return
        area = self.contentsRect().size()
        if area.width() < 2 or area.height() < 2:
            return
        scaled = QPixmap.fromImage(self._image).scaled(area, Qt.AspectRatioMode.KeepAspectRatio,
                                                      Qt.TransformationMode.SmoothTransformation)
        if self._image.hasAlphaChannel():
            board = _checkerboard(scaled.size())
            painter = QPainter(board)
            painter.drawPixmap(0, 0, scaled)
            painter.end()
            scaled = board
        self.setPixmap(scaled)


# --------------------------------------------------------------------------- workers


class _JobSignals(QObject):
    done = Signal(int, object)
    failed = Signal(int, str)


class _Job(QRunnable):
    """Runs ``fn()`` in a pool thread and reports ``done(id, result)`` or ``failed(id, message)``;
    the window's slots receive them in the GUI thread (queued connections)."""

    def __init__(self, job_id: int, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.job_id = job_id
        self.fn = fn
        self.signals = _JobSignals()

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # every error becomes a message in the window
            log.debug("worker failed:\n%s", traceback.format_exc())
            self.signals.failed.emit(self.job_id, _describe(exc))
        else:
            self.signals.done.emit(self.job_id, result)


@dataclass(frozen=True)
class _Segmented:
    path: Path
    model: str
    image: Image.Image
    prob: np.ndarray
    confidence: float | None = None


@dataclass(frozen=True)
class _Rendered:
    key: tuple
    output: Image.Image
    mask_q: QImage
    output_q: QImage


# What "save all" did: the engine's report (written files; one line per failure, planning problems
# first: conflicts, existing files kept).
SaveReport = Report


# --------------------------------------------------------------------------- the window


class MainWindow(QMainWindow):
    """Open → segment (worker) → look (original | mask | cutout) → adjust → save."""

    PROB_CACHE = 16  # probability maps kept (per picture and model)

    def __init__(self, predictor_factory: PredictorFactory | None = None, *, model: str | None = None) -> None:
        super().__init__()
        self._factory: PredictorFactory = predictor_factory or _default_factory
        self._predictors: dict[str, Any] = {}
        self._probs: OrderedDict[tuple[str, Path], _Segmented] = OrderedDict()
        self._places: dict[Path, Path] = {}  # picture -> relative output path (suffix replaced)
        self._entries: list[Path] = []  # the pictures listed
        self._current: Path | None = None
        self._segmented: _Segmented | None = None  # the current picture's, once ready
        self._rendered: _Rendered | None = None
        self._bgcolor: tuple[int, int, int, int] | None = None
        self._jobs: dict[int, tuple] = {}  # id -> (job, on_done, on_failed, context)
        self._job_counter = 0
        self._segmenting: set[tuple[Path, str]] = set()  # (picture, model) in the worker
        self.video_window = None  # apps.gui_video.VideoWindow, made when a video is opened
        self._render_pending = False
        self._render_running = False
        self.last_save_report: SaveReport | None = None
        self._segment_pool = QThreadPool(self)
        self._segment_pool.setMaxThreadCount(1)  # one network run at a time
        self._render_pool = QThreadPool(self)
        self._render_pool.setMaxThreadCount(1)  # renders in request order (stale ones are dropped)

        self.setWindowTitle("u2seg — background removal")
        self.setAcceptDrops(True)
        self.resize(1280, 760)
        self._build(model)
        self._update_actions()
        self.statusBar().showMessage("Open a picture or a folder (or drop them here).")

    # ------------------------------------------------------------------ layout
    def _build(self, model: str | None) -> None:
        open_image = QAction("&Open image…", self, shortcut=QKeySequence.StandardKey.Open)
        open_image.triggered.connect(self._ask_open_files)
        open_folder = QAction("Open &folder…", self, shortcut=QKeySequence("Ctrl+Shift+O"))
        open_folder.triggered.connect(self._ask_open_folder)
        self.save_action = QAction("&Save…", self, shortcut=QKeySequence.StandardKey.Save)
        self.save_action.triggered.connect(self._ask_save_current)
        self.save_all_action = QAction("Save &all…", self, shortcut=QKeySequence("Ctrl+Shift+S"))
        self.save_all_action.triggered.connect(self._ask_save_all)
        open_video = QAction("Open &video…", self)
        open_video.triggered.connect(self._ask_open_video)
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        menu = self.menuBar().addMenu("&File")
        for action in (open_image, open_folder, open_video, self.save_action, self.save_all_action):
            menu.addAction(action)
        menu.addSeparator()
        menu.addAction(quit_action)
        toolbar = self.addToolBar("File")
        toolbar.setMovable(False)
        for action in (open_image, open_folder, self.save_action, self.save_all_action):
            toolbar.addAction(action)

        # left: the list of pictures
        self.file_list = QListWidget()
        self.file_list.setMinimumWidth(150)
        self.file_list.currentRowChanged.connect(self._row_changed)

        # centre: three views
        self.original_view = ImageView("Original", "Original")
        self.mask_view = ImageView("Mask", "Mask")
        self.cutout_view = ImageView("Cutout", "Cutout")
        views = QWidget()
        row = QHBoxLayout(views)
        row.setContentsMargins(0, 0, 0, 0)
        for view in (self.original_view, self.mask_view, self.cutout_view):
            column = QVBoxLayout()
            caption = QLabel(f"<b>{view.title}</b>")
            caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
            column.addWidget(caption)
            column.addWidget(view, 1)
            row.addLayout(column, 1)

        # bottom: controls
        self.model_combo = QComboBox()
        names = models_with_weights()
        self.model_combo.addItems(names)
        if model is None and DEFAULT_WEIGHTS in names:
            model = DEFAULT_WEIGHTS
        if model is not None:
            if model not in names:
                self.model_combo.addItem(model)
            self.model_combo.setCurrentText(model)
        self.model_combo.setToolTip("Models with pretrained weights")
        self.model_combo.currentTextChanged.connect(self.set_model)

        # refinement controls, from the option table: a check box each; the threshold's switches a slider
        from ..infer.options import gui_controls

        self._controls = gui_controls()
        self.option_boxes: dict[str, QCheckBox] = {}
        self.option_sliders: dict[str, tuple[QSlider, QLabel]] = {}
        for control in self._controls:
            box = QCheckBox(control.label)
            box.setToolTip(control.tooltip)
            box.toggled.connect(self._options_changed)
            self.option_boxes[control.name] = box
            if control.kind == "slider":
                slider = QSlider(Qt.Orientation.Horizontal)
                slider.setRange(control.minimum, control.maximum)
                slider.setValue(control.start)
                slider.setMinimumWidth(140)
                slider.setToolTip(control.tooltip)
                self.option_sliders[control.name] = (slider, QLabel(control.text(control.start)))
        self.threshold_box = self.option_boxes["threshold"]
        self.threshold_slider, self.threshold_label = self.option_sliders["threshold"]
        self.threshold_slider.valueChanged.connect(self._slider_moved)
        self.matting_box = self.option_boxes["alpha_matting"]
        self.clean_box = self.option_boxes["post_process_mask"]
        self.decontaminate_box = self.option_boxes["decontaminate"]

        self.color_button = QPushButton("Background…")
        self.color_button.clicked.connect(self._ask_bgcolor)
        self.transparent_button = QPushButton("Transparent")
        self.transparent_button.clicked.connect(lambda: self.set_bgcolor(None))
        self.color_swatch = QLabel()
        self.color_swatch.setFixedSize(22, 22)
        self.color_swatch.setFrameShape(QFrame.Shape.Box)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Model:"))
        controls.addWidget(self.model_combo)
        controls.addSpacing(12)
        for name, (slider, label) in self.option_sliders.items():  # sliders first, then the check boxes
            controls.addWidget(self.option_boxes[name])
            controls.addWidget(slider)
            controls.addWidget(label)
            controls.addSpacing(12)
        for control in self._controls:
            if control.kind == "check":
                controls.addWidget(self.option_boxes[control.name])
        controls.addSpacing(12)
        controls.addWidget(self.color_button)
        controls.addWidget(self.color_swatch)
        controls.addWidget(self.transparent_button)
        controls.addStretch(1)

        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label.setStyleSheet("QLabel { color: #b00020; }")
        self.message_label.hide()

        centre = QWidget()
        column = QVBoxLayout(centre)
        column.addWidget(views, 1)
        column.addLayout(controls)
        column.addWidget(self.message_label)
        splitter = QSplitter()
        splitter.addWidget(self.file_list)
        splitter.addWidget(centre)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([190, 1090])
        self.setCentralWidget(splitter)
        self._show_bgcolor()

    # ------------------------------------------------------------------ state
    @property
    def model(self) -> str:
        return self.model_combo.currentText()

    @property
    def current_path(self) -> Path | None:
        return self._current

    @property
    def busy(self) -> bool:
        """True while a worker is running or a re-render is queued."""
        return bool(self._jobs) or self._render_pending

    @property
    def current_output(self) -> Image.Image | None:
        """The rendered output for the current picture and settings (None until ready)."""
        return self._rendered.output if self._rendered is not None else None

    @property
    def message(self) -> str:
        """The error line shown in the window ('' when none)."""
        return "" if self.message_label.isHidden() else self.message_label.text()

    def options(self) -> RefineOptions:
        """The refinement the controls describe (the option table's controls, and the colour)."""
        values = {}
        for control in self._controls:
            slider = self.option_sliders.get(control.name, (None, None))[0]
            values[control.field] = control.value(self.option_boxes[control.name].isChecked(),
                                                  slider.value() if slider is not None else 0)
        return RefineOptions(**values, bgcolor=self._bgcolor)

    def show_error(self, text: str) -> None:
        self.message_label.setText(text)
        self.message_label.show()
        self.statusBar().showMessage(text)

    def _clear_error(self) -> None:
        self.message_label.clear()
        self.message_label.hide()

    def _update_actions(self) -> None:
        self.save_action.setEnabled(self._rendered is not None)
        self.save_all_action.setEnabled(bool(self._entries))

    # ------------------------------------------------------------------ opening
    def open_paths(self, paths: Sequence[str | Path]) -> list[Path]:
        """Open files and folders (searched recursively for pictures); list and show the first.
        Returns the pictures listed."""
        self._clear_error()
        entries: list[tuple[Path, Path]] = []  # (picture, its place under an output folder)
        missing: list[str] = []
        videos = 0
        for raw in paths:
            path = Path(raw)
            if path.is_file() and _is_video(path):  # a video or an animated image: the video window
                self.open_video(path)
                videos += 1
            elif path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
                if not found:
                    missing.append(f"{path}: no pictures in this folder")
                entries.extend((p, p.relative_to(path)) for p in found)
            elif path.is_file():
                entries.append((path, Path(path.name)))
            else:
                missing.append(f"{path}: no such file or folder")
        seen: set[Path] = set()
        unique = [(p, rel) for p, rel in entries if not (p.resolve() in seen or seen.add(p.resolve()))]
        if not unique:
            if missing or not videos:
                self.show_error("; ".join(missing) or "nothing to open")
            return []
        self._entries = [p for p, _ in unique]
        self._places = dict(unique)
        self.file_list.blockSignals(True)
        self.file_list.clear()
        for p, rel in unique:
            item = QListWidgetItem(str(rel))
            item.setToolTip(str(p))
            self.file_list.addItem(item)
        self.file_list.setCurrentRow(0)
        self.file_list.blockSignals(False)
        self.file_list.setVisible(len(unique) > 1)
        self._row_changed(0)
        if missing:
            self.show_error("; ".join(missing))
        self._update_actions()
        return list(self._entries)

    def open_video(self, path: str | Path):
        """Open a video or animated image in the video window (scrub with the mask shown, export
        with progress; the model and refinement options are this window's). Returns that window."""
        from .gui_video import VideoWindow

        if self.video_window is None:
            self.video_window = VideoWindow(lambda: self._predictor(self.model), options=self.options)
        self.video_window.show()
        self.video_window.open_video(path)
        return self.video_window

    def _ask_open_video(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open video", "",
                                              "Videos and animations (*.mp4 *.m4v *.mov *.webm *.mkv *.avi *.gif "
                                              "*.webp *.png *.apng)")
        if path:
            self.open_video(path)

    def select(self, index: int) -> None:
        """Show the ``index``-th listed picture."""
        self.file_list.setCurrentRow(index)

    def _row_changed(self, row: int) -> None:
        if 0 <= row < len(self._entries):
            self._show(self._entries[row])

    def _show(self, path: Path) -> None:
        self._current = path
        self._segmented = None
        self._rendered = None
        self._clear_error()
        for view in (self.original_view, self.mask_view, self.cutout_view):
            view.clear_image()
        self._update_actions()
        cached = self._probs.get((self.model, path))
        if cached is not None:
            self._segmentation_ready(cached)
        elif (path, self.model) not in self._segmenting:  # else its result is on the way
            self._segment(path, self.model)

    def set_model(self, name: str) -> None:
        """Use model ``name`` (built by the predictor factory in a worker; errors are shown)."""
        if self.model_combo.currentText() != name:
            self.model_combo.blockSignals(True)
            if self.model_combo.findText(name) < 0:
                self.model_combo.addItem(name)
            self.model_combo.setCurrentText(name)
            self.model_combo.blockSignals(False)
        if self._current is not None:
            self._show(self._current)
        else:
            self._clear_error()

    # ------------------------------------------------------------------ segmentation (worker)
    def _predictor(self, model: str):
        predictor = self._predictors.get(model)
        if predictor is None:
            predictor = self._factory(model)
            self._predictors[model] = predictor
        return predictor

    def _segment(self, path: Path, model: str) -> None:
        self.statusBar().showMessage(f"Segmenting {path.name} with {model}…")

        def work() -> _Segmented:
            image = load_image(path)
            prob, confidence = self._predictor(model).predict_with_confidence(image)
            return _Segmented(path, model, image, prob, confidence.score)

        self._segmenting.add((path, model))
        self._start(self._segment_pool, work, self._segmentation_ready, self._segmentation_failed,
                    context=(path, model))

    def _segmentation_ready(self, result: _Segmented) -> None:
        self._segmenting.discard((result.path, result.model))
        self._probs[(result.model, result.path)] = result
        self._probs.move_to_end((result.model, result.path))
        while len(self._probs) > self.PROB_CACHE:
            self._probs.popitem(last=False)
        if result.path != self._current or result.model != self.model:
            return  # the user moved on; kept in the cache
        self._segmented = result
        self.original_view.set_image(pil_to_qimage(result.image))
        w, h = result.image.size
        trust = f", confidence {result.confidence:.2f}" if result.confidence is not None else ""
        self.statusBar().showMessage(f"{result.path.name}: {w}×{h}, {result.model}{trust}")
        self._request_render()

    def _segmentation_failed(self, message: str, context: tuple) -> None:
        path, model = context
        self._segmenting.discard(context)
        if path == self._current and model == self.model:
            self.mask_view.clear_image("—")
            self.cutout_view.clear_image("—")
            self.show_error(message)

    # ------------------------------------------------------------------ rendering (worker)
    def _slider_moved(self, value: int) -> None:
        self.threshold_label.setText(next(c for c in self._controls if c.name == "threshold").text(value))
        if not self.threshold_box.isChecked():
            self.threshold_box.setChecked(True)  # triggers a render through toggled
        else:
            self._options_changed()

    def _options_changed(self, *_: object) -> None:
        if self._segmented is not None:
            self._request_render()

    def _request_render(self) -> None:
        """Re-render from the cached probability; requests made while a render runs are merged."""
        if self._segmented is None:
            return
        if self._render_running:
            self._render_pending = True
            return
        self._render_pending = False
        segmented, options = self._segmented, self.options()
        key = (segmented.model, segmented.path, options)
        if options.alpha_matting:
            first = "pymatting" not in sys.modules
            self.statusBar().showMessage(
                f"Alpha matting {segmented.path.name}…"
                + (" (the first use compiles pymatting: up to a minute)" if first else ""))

        def work() -> _Rendered:
            result = refine(segmented.image, segmented.prob, options)
            return _Rendered(key, result.output, pil_to_qimage(result.mask), pil_to_qimage(result.output))

        self._render_running = True
        self._start(self._render_pool, work, self._render_ready, self._render_failed, context=key)

    def _render_done(self) -> None:
        self._render_running = False
        if self._render_pending:
            self._request_render()

    def _render_ready(self, result: _Rendered) -> None:
        current = self._segmented
        if current is not None and result.key[:2] == (current.model, current.path):
            self._rendered = result
            self.mask_view.set_image(result.mask_q)
            self.cutout_view.set_image(result.output_q)
            if result.key[2].alpha_matting:
                self.statusBar().showMessage(f"{current.path.name}: alpha matting done")
            self._update_actions()
        self._render_done()

    def _render_failed(self, message: str, context: tuple) -> None:
        current = self._segmented
        if current is not None and context[:2] == (current.model, current.path):
            self.show_error(message)
        self._render_done()

    # ------------------------------------------------------------------ jobs
    def _start(self, pool: QThreadPool, fn: Callable[[], Any], on_done: Callable[[Any], None],
               on_failed: Callable[[str, Any], None], *, context: Any = None) -> None:
        self._job_counter += 1
        job = _Job(self._job_counter, fn)
        self._jobs[job.job_id] = (job, on_done, on_failed, context)
        job.signals.done.connect(self._job_done)
        job.signals.failed.connect(self._job_failed)
        pool.start(job)

    @Slot(int, object)
    def _job_done(self, job_id: int, result: object) -> None:
        entry = self._jobs.pop(job_id, None)
        if entry is not None:
            entry[1](result)

    @Slot(int, str)
    def _job_failed(self, job_id: int, message: str) -> None:
        entry = self._jobs.pop(job_id, None)
        if entry is not None:
            entry[2](message, entry[3])

    def wait_idle(self, timeout_ms: int = -1) -> bool:
        """Block until the worker pools are empty (signals still need the event loop)."""
        return self._segment_pool.waitForDone(timeout_ms) and self._render_pool.waitForDone(timeout_ms)

    # ------------------------------------------------------------------ background colour
    def set_bgcolor(self, color: Sequence[int] | None) -> None:
        """Composite over ``color`` (R, G, B[, A]); None: transparent."""
        self._bgcolor = None if color is None else RefineOptions(bgcolor=tuple(color)).bgcolor
        self._show_bgcolor()
        self._options_changed()

    def _show_bgcolor(self) -> None:
        if self._bgcolor is None:
            self.color_swatch.setStyleSheet(
                "QLabel { background: qlineargradient(x1:0, y1:0, x2:1, y2:1, stop:0 #fff, stop:0.49 #fff, "
                "stop:0.5 #ccc, stop:1 #ccc); }")
            self.color_swatch.setToolTip("Transparent")
        else:
            r, g, b, a = self._bgcolor
            self.color_swatch.setStyleSheet(f"QLabel {{ background: rgba({r}, {g}, {b}, {a}); }}")
            self.color_swatch.setToolTip(f"Background {r} {g} {b} {a}")

    def _ask_bgcolor(self) -> None:
        start = QColor(*self._bgcolor) if self._bgcolor else QColor(255, 255, 255)
        color = QColorDialog.getColor(start, self, "Background colour",
                                      QColorDialog.ColorDialogOption.ShowAlphaChannel)
        if color.isValid():
            self.set_bgcolor((color.red(), color.green(), color.blue(), color.alpha()))

    # ------------------------------------------------------------------ saving
    def save_current(self, path: str | Path) -> Path | None:
        """Save the current output (PNG or WebP, from the suffix; none → .png). Never writes over
        an opened picture. Returns the path written, or None (the error is shown)."""
        if self._rendered is None or self._current is None:
            self.show_error("nothing to save yet")
            return None
        target = Path(path)
        if target.suffix.lower().lstrip(".") not in OUTPUT_FORMATS:
            target = target.with_name(target.name + ".png")
        inputs = {p.resolve() for p in self._entries}
        if target.resolve() in inputs:
            self.show_error(f"{target}: that is an opened picture; choose another name")
            return None
        try:
            save_image(self._rendered.output, target)
        except (OSError, ValueError) as exc:
            self.show_error(f"{target}: {_describe(exc)}")
            return None
        self._clear_error()
        self.statusBar().showMessage(f"Saved {target}")
        return target

    def save_all(self, folder: str | Path, *, fmt: str = "png", overwrite: bool = False,
                 wait: bool = False) -> None:
        """Save every listed picture's output into ``folder`` with the current settings
        (``<name>.png``; folders keep their sub-folders). Runs in a worker; pictures are never
        overwritten, and existing outputs only with ``overwrite``. The outcome is shown in the
        window and kept in :attr:`last_save_report`."""
        if not self._entries:
            self.show_error("nothing to save: open pictures first")
            return
        plan = self.plan_saves(folder, fmt=fmt, overwrite=overwrite)
        problems = list(plan.conflicts) + [f"{t.output}: exists, kept" for t in plan.existing]
        model, options = self.model, self.options()
        self.statusBar().showMessage(f"Saving {len(plan.tasks)} pictures to {folder}…")
        self.last_save_report = None

        def work() -> SaveReport:
            from ..infer.engine import Item, run_job
            from ..infer.removal import RemovalJob

            report = SaveReport(failed=list(problems))
            items = [Item(task.source, str(task.source), task.output) for task in plan.tasks]
            if items:  # the engine: decoding, network and encoding overlap, in input order
                done = run_job(self._predictor(model), items, RemovalJob(options, fmt), progress=False)
                report.written.extend(done.written)
                report.failed.extend(done.failed)
            return report

        # the network pool: one thread uses the predictor
        self._start(self._segment_pool, work, self._saved_all, self._save_all_failed)

    def plan_saves(self, folder: str | Path, *, fmt: str = "png", overwrite: bool = False) -> Plan:
        """Where :meth:`save_all` would write: ``folder/<name>.<fmt>`` for a picture opened as a
        file, ``folder/<sub-folders>/<name>.<fmt>`` for one found in an opened folder. Two
        pictures that would share an output, or an output that is an opened picture, are
        conflicts (not written); existing outputs are listed apart unless ``overwrite``."""
        pairs = [(picture, self._places[picture].with_suffix("")) for picture in self._entries]
        return plan_pairs(pairs, Path(folder), fmt=fmt, overwrite=overwrite)

    def _saved_all(self, report: SaveReport) -> None:
        self.last_save_report = report
        text = f"Saved {len(report.written)} pictures"
        if report.failed:
            self.show_error(f"{text}; {len(report.failed)} not saved: " + "; ".join(report.failed))
        else:
            self._clear_error()
            self.statusBar().showMessage(text)

    def _save_all_failed(self, message: str, _context: Any) -> None:
        self.last_save_report = SaveReport(failed=[message])
        self.show_error(message)

    # ------------------------------------------------------------------ dialogs
    def _ask_open_files(self) -> None:
        patterns = " ".join(f"*{ext}" for ext in sorted(IMAGE_EXTENSIONS))
        files, _ = QFileDialog.getOpenFileNames(self, "Open pictures", "", f"Pictures ({patterns});;All files (*)")
        if files:
            self.open_paths(files)

    def _ask_open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of pictures")
        if folder:
            self.open_paths([folder])

    def _ask_save_current(self) -> None:
        if self._current is None:
            return
        suggestion = str(self._current.with_name(self._current.stem + "-cutout.png"))
        path, _ = QFileDialog.getSaveFileName(self, "Save the output", suggestion, "PNG (*.png);;WebP (*.webp)")
        if path:
            self.save_current(path)

    def _ask_save_all(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save all outputs into a folder")
        if not folder:
            return
        plan = self.plan_saves(folder)
        overwrite = False
        if plan.existing:
            answer = QMessageBox.question(
                self, "Replace files?", f"{len(plan.existing)} outputs already exist in {folder}. Replace them?")
            overwrite = answer == QMessageBox.StandardButton.Yes
        self.save_all(folder, overwrite=overwrite)

    # ------------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)

    def closeEvent(self, event) -> None:  # noqa: N802
        self.wait_idle(30_000)
        super().closeEvent(event)


# --------------------------------------------------------------------------- entry point


def run_gui(argv: list[str] | None = None, *, predictor_factory: PredictorFactory | None = None) -> int:
    """``u2seg gui [PATH ...] [--model NAME]``: open the window (and the pictures named);
    returns the exit status when the window closes (2 for a usage error)."""
    parser = argparse.ArgumentParser(prog="u2seg gui", description="Open the u2seg desktop window.")
    parser.add_argument("paths", nargs="*", help="pictures or folders to open")
    parser.add_argument("--model", "-m", default=None,
                        help=f"model name (default {DEFAULT_WEIGHTS}; -m u2netp is the fast one)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    app = QApplication.instance() or QApplication(["u2seg"])
    window = MainWindow(predictor_factory, model=args.model)
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    window.show()
    if args.paths:
        window.open_paths([str(Path(p).resolve()) if Path(p).exists() else p for p in args.paths])
    return int(app.exec())
