"""The picture window's adjusting (:mod:`.gui`): the refinement controls (from the option table)
and the background colour, and the re-render from the cached probability that every change
starts (:func:`u2seg.infer.refine.refine`, in a worker, so matting never freezes the window).

:class:`AdjustMixin` is a part of :class:`~u2seg.apps.gui.MainWindow`, kept apart because
adjusting is its own concept; it uses the window's state (``_segmented``, ``_rendered``,
``_bgcolor``, ``_render_pending``, ``_render_running``, ``_render_pool``, ``_jobs``, the views)
and methods (``show_error()``, ``_update_actions()``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
)

from ..infer.refine import RefineOptions, refine
from .gui_jobs import Rendered
from .gui_widgets import pil_to_qimage

__all__ = ["AdjustMixin"]


class AdjustMixin:
    """Refinement controls, background colour, re-rendering (see the module docstring)."""

    # ------------------------------------------------------------------ controls
    def _add_adjust_controls(self, controls: QHBoxLayout) -> None:
        """Make the refinement and colour controls and add them to the window's row of controls."""
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

    def options(self) -> RefineOptions:
        """The refinement the controls describe (the option table's controls, and the colour)."""
        values = {}
        for control in self._controls:
            slider = self.option_sliders.get(control.name, (None, None))[0]
            values[control.field] = control.value(self.option_boxes[control.name].isChecked(),
                                                  slider.value() if slider is not None else 0)
        return RefineOptions(**values, bgcolor=self._bgcolor)

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

        def work() -> Rendered:
            result = refine(segmented.image, segmented.prob, options)
            return Rendered(key, result.output, pil_to_qimage(result.mask), pil_to_qimage(result.output))

        self._render_running = True
        self._jobs.start(self._render_pool, work, self._render_ready, self._render_failed, context=key)

    def _render_done(self) -> None:
        self._render_running = False
        if self._render_pending:
            self._request_render()

    def _render_ready(self, result: Rendered) -> None:
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
