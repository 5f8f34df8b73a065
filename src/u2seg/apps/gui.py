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

The window's parts: :mod:`.gui_adjust` (refinement controls, background colour, re-render),
:mod:`.gui_save` (saving), :mod:`.gui_jobs` (the workers), :mod:`.gui_widgets` (the image view,
PIL ↔ Qt); :mod:`.gui_video` is the video window.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from PySide6.QtCore import Qt, QThreadPool
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ..image_io import IMAGE_EXTENSIONS, load_image
from ..weights.registry import DEFAULT_WEIGHTS
from .gui_adjust import AdjustMixin
from .gui_jobs import JobBoard, Rendered, Segmented
from .gui_save import SaveReport, SavingMixin
from .gui_video import VideoWindow
from .gui_widgets import ImageView, pil_to_qimage, qimage_to_array

# pil_to_qimage and qimage_to_array live in .gui_widgets; named here too, where callers import them
__all__ = ["MainWindow", "run_gui", "models_with_weights", "pil_to_qimage", "qimage_to_array"]

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


# --------------------------------------------------------------------------- the window


class MainWindow(AdjustMixin, SavingMixin, QMainWindow):
    """Open → segment (worker) → look (original | mask | cutout) → adjust → save."""

    PROB_CACHE = 16  # probability maps kept (per picture and model)

    def __init__(self, predictor_factory: PredictorFactory | None = None, *, model: str | None = None) -> None:
        super().__init__()
        self._factory: PredictorFactory = predictor_factory or _default_factory
        self._predictors: dict[str, Any] = {}
        self._probs: OrderedDict[tuple[str, Path], Segmented] = OrderedDict()
        self._places: dict[Path, Path] = {}  # picture -> relative output path (suffix replaced)
        self._entries: list[Path] = []  # the pictures listed
        self._current: Path | None = None
        self._segmented: Segmented | None = None  # the current picture's, once ready
        self._rendered: Rendered | None = None
        self._bgcolor: tuple[int, int, int, int] | None = None
        self._jobs = JobBoard(self)  # the workers in flight and what to call when each ends
        self._segmenting: set[tuple[Path, str]] = set()  # (picture, model) in the worker
        self.video_window: VideoWindow | None = None  # made when a video is opened
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

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Model:"))
        controls.addWidget(self.model_combo)
        controls.addSpacing(12)
        self._add_adjust_controls(controls)
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

    def open_video(self, path: str | Path) -> VideoWindow:
        """Open a video or animated image in the video window (scrub with the mask shown, export
        with progress; the model and refinement options are this window's). Returns that window."""
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

        def work() -> Segmented:
            image = load_image(path)
            prob, confidence = self._predictor(model).predict_with_confidence(image)
            return Segmented(path, model, image, prob, confidence.score)

        self._segmenting.add((path, model))
        self._jobs.start(self._segment_pool, work, self._segmentation_ready, self._segmentation_failed,
                         context=(path, model))

    def _segmentation_ready(self, result: Segmented) -> None:
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

    def wait_idle(self, timeout_ms: int = -1) -> bool:
        """Block until the worker pools are empty (signals still need the event loop)."""
        return self._segment_pool.waitForDone(timeout_ms) and self._render_pool.waitForDone(timeout_ms)

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
