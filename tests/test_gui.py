"""The desktop window (PySide6, driven by pytest-qt on the offscreen platform, real weights)."""

from __future__ import annotations

import os
import re

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before Qt is loaded: no display needed

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from u2seg.apps.gui import MainWindow, models_with_weights, qimage_to_array, run_gui  # noqa: E402
from u2seg.errors import WeightsUnavailableError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "screenshots" / "gui.png"
TIMEOUT = 60_000  # ms; a segmentation takes well under a second on 2 cores


class CountingFactory:
    """Builds predictors like the real window does, but hands out the session's u2netp
    Predictor for ``u2netp`` and counts the network runs."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.built: list[str] = []
        self.runs = 0

    def __call__(self, model: str):
        self.built.append(model)
        if model != "u2netp":
            from u2seg.infer import Predictor

            return Predictor(model)  # the real thing (unet has no registered weights)
        factory = self

        class Counting:
            """The Predictor, counting the images its network sees (one picture's segmentation
            or the engine's batches)."""

            def predict(self, image):
                factory.runs += 1
                return factory.predictor.predict(image)

            def predict_with_confidence(self, image):
                factory.runs += 1
                return factory.predictor.predict_with_confidence(image)

            def infer(self, prepared):
                factory.runs += len(prepared)
                return factory.predictor.infer(prepared)

            def __getattr__(self, name):
                return getattr(factory.predictor, name)

        return Counting()


@pytest.fixture
def factory(predictor, use_pretrained_home):
    return CountingFactory(predictor)


@pytest.fixture
def window(qtbot, factory):
    win = MainWindow(factory, model="u2netp")  # the fast model; the default is u2net
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.wait_idle(30_000)


@pytest.fixture
def photos(tmp_path, coffee, astronaut):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(coffee).save(folder / "coffee.jpg", quality=95)
    Image.fromarray(astronaut).save(folder / "sub" / "astronaut.png")
    return folder


def wait_ready(qtbot, win: MainWindow) -> None:
    qtbot.waitUntil(lambda: not win.busy and (win.current_output is not None or win.message), timeout=TIMEOUT)


def shown(view) -> np.ndarray:
    image = view.image()
    assert image is not None, f"{view.title} view is empty"
    return qimage_to_array(image)


def test_segment_threshold_background_and_screenshot(qtbot, window, factory, photos):
    assert window.open_paths([photos / "coffee.jpg"]) == [photos / "coffee.jpg"]
    wait_ready(qtbot, window)
    assert window.message == ""
    assert factory.runs == 1 and factory.built == ["u2netp"]
    assert re.search(r"coffee.jpg: 600×400, u2netp, confidence 0\.[5-9]\d", window.statusBar().currentMessage())
    original = shown(window.original_view)
    assert original.shape == (400, 600, 4)
    mask = shown(window.mask_view)
    assert mask.shape == (400, 600)
    assert mask[150:250, 250:350].mean() > 240  # the cup
    assert mask[:30, :30].mean() < 5 and mask[-30:, -30:].mean() < 5  # the table in the corners
    assert len(np.unique(mask)) > 10  # soft edges
    cutout = shown(window.cutout_view)
    assert cutout[5, 5, 3] == 0 and cutout[200, 300, 3] == 255
    assert window.save_action.isEnabled()

    # Threshold slider: binary mask, re-rendered from the cached probability.
    window.threshold_slider.setValue(70)
    assert window.threshold_box.isChecked() and window.options().threshold == 0.7
    qtbot.waitUntil(lambda: not window.busy and len(np.unique(shown(window.mask_view))) == 2, timeout=TIMEOUT)
    assert set(np.unique(shown(window.mask_view))) == {0, 255}
    assert set(np.unique(np.asarray(window.current_output)[..., 3])) == {0, 255}
    assert factory.runs == 1

    # Background colour, then back to transparent.
    window.set_bgcolor((255, 0, 0))
    qtbot.waitUntil(lambda: not window.busy and window.current_output.mode == "RGB", timeout=TIMEOUT)
    assert tuple(np.asarray(window.current_output)[5, 5]) == (255, 0, 0)
    assert tuple(shown(window.cutout_view)[5, 5]) == (255, 0, 0, 255)
    window.set_bgcolor(None)
    qtbot.waitUntil(lambda: not window.busy and window.current_output.mode == "RGBA", timeout=TIMEOUT)

    # The soft result for the picture of the window.
    window.threshold_box.setChecked(False)
    qtbot.waitUntil(lambda: not window.busy and len(np.unique(shown(window.mask_view))) > 10, timeout=TIMEOUT)
    assert factory.runs == 1
    window.resize(1280, 620)
    qtbot.wait(50)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert window.grab().save(str(SCREENSHOT))
    assert Image.open(SCREENSHOT).size[0] >= 1000


def test_save_one_and_save_all(qtbot, window, factory, photos, tmp_path):
    listed = window.open_paths([photos])
    assert [p.name for p in listed] == ["coffee.jpg", "astronaut.png"]
    assert window.file_list.count() == 2
    wait_ready(qtbot, window)

    # save one: the current output, written where asked; never onto an opened picture
    target = window.save_current(tmp_path / "out" / "cup")
    assert target == tmp_path / "out" / "cup.png"
    saved = Image.open(target)
    assert saved.mode == "RGBA" and saved.size == (600, 400)
    assert np.array_equal(np.asarray(saved), np.asarray(window.current_output))
    before = (photos / "sub" / "astronaut.png").read_bytes()
    assert window.save_current(photos / "sub" / "astronaut.png") is None
    assert "opened picture" in window.message
    assert (photos / "sub" / "astronaut.png").read_bytes() == before

    # save all, with a background colour: sub-folders kept, the second picture segmented on the way
    window.set_bgcolor((0, 0, 0))
    qtbot.waitUntil(lambda: not window.busy, timeout=TIMEOUT)
    out = tmp_path / "all"
    window.save_all(out)
    qtbot.waitUntil(lambda: window.last_save_report is not None and not window.busy, timeout=TIMEOUT)
    report = window.last_save_report
    assert report.failed == [] and sorted(report.written) == [out / "coffee.png", out / "sub" / "astronaut.png"]
    astro = Image.open(out / "sub" / "astronaut.png")
    assert astro.mode == "RGB" and astro.size == (512, 512)
    assert factory.runs == 3  # coffee when shown, then both through the engine

    # into the pictures' own folder: astronaut.png would land on itself and is refused
    window.save_all(photos)
    qtbot.waitUntil(lambda: window.last_save_report is not None and not window.busy, timeout=TIMEOUT)
    report = window.last_save_report
    assert report.written == [photos / "coffee.png"]
    assert len(report.failed) == 1 and "is an input" in report.failed[0]
    assert "is an input" in window.message
    assert (photos / "sub" / "astronaut.png").read_bytes() == before
    # again: the existing output is kept unless overwriting is asked for
    stamp = (photos / "coffee.png").stat().st_mtime_ns
    window.save_all(photos)
    qtbot.waitUntil(lambda: window.last_save_report is not None and not window.busy, timeout=TIMEOUT)
    assert window.last_save_report.written == [] and (photos / "coffee.png").stat().st_mtime_ns == stamp
    assert any("exists, kept" in line for line in window.last_save_report.failed)


def test_errors_appear_in_the_window(qtbot, window, photos, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is no JPEG at all")
    window.open_paths([bad])
    qtbot.waitUntil(lambda: window.message != "", timeout=TIMEOUT)
    assert "broken.jpg" in window.message and "not an image" in window.message
    assert window.message_label.isVisible() and "broken.jpg" in window.statusBar().currentMessage()
    assert window.current_output is None and not window.save_action.isEnabled()

    window.open_paths([tmp_path / "nowhere.png"])
    assert "no such file or folder" in window.message

    # a model without pretrained weights: the Predictor's error, in the window
    window.open_paths([photos / "coffee.jpg"])
    wait_ready(qtbot, window)
    assert window.message == ""
    window.set_model("unet")
    qtbot.waitUntil(lambda: window.message != "", timeout=TIMEOUT)
    assert "no pretrained weights are registered for model 'unet'" in window.message
    assert window.current_output is None
    window.set_model("u2netp")  # back: the cached probability, no error
    wait_ready(qtbot, window)
    assert window.message == "" and window.current_output is not None


def test_weights_unavailable_is_shown(qtbot, photos):
    def offline(model):
        raise WeightsUnavailableError(f"{model}: weights are not cached and U2SEG_OFFLINE=1 forbids fetching them")

    win = MainWindow(offline)
    qtbot.addWidget(win)
    assert win.model == "u2net"  # the default model, as for `u2seg remove`
    win.open_paths([photos / "coffee.jpg"])
    qtbot.waitUntil(lambda: win.message != "", timeout=TIMEOUT)
    assert "U2SEG_OFFLINE=1" in win.message and "u2net:" in win.message
    assert win.original_view.image() is None


def test_drop_a_folder_and_model_choice(qtbot, window, photos):
    assert [window.model_combo.itemText(i) for i in range(window.model_combo.count())] == models_with_weights()
    assert "u2netp" in models_with_weights()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(photos))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert window.file_list.count() == 2
    wait_ready(qtbot, window)
    window.select(1)
    qtbot.waitUntil(lambda: not window.busy and window.current_path == photos / "sub" / "astronaut.png"
                    and window.current_output is not None, timeout=TIMEOUT)
    assert window.current_output.size == (512, 512)


def test_run_gui(qtbot, factory, photos):
    assert run_gui(["--no-such-option"]) == 2

    def close_when_ready():
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
        if windows and all(not w.busy and w.current_output is not None for w in windows):
            for w in windows:
                w.close()
        else:
            QTimer.singleShot(50, close_when_ready)

    QTimer.singleShot(50, close_when_ready)
    assert run_gui([str(photos / "coffee.jpg"), "-m", "u2netp"], predictor_factory=factory) == 0
    assert factory.runs == 1
