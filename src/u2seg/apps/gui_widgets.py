"""Qt image helpers and the image view shared by the picture window (:mod:`.gui`) and the video
window (:mod:`.gui_video`): PIL ↔ QImage conversion and :class:`ImageView`."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QFrame, QLabel, QSizePolicy

__all__ = ["ImageView", "pil_to_qimage", "qimage_to_array"]


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
