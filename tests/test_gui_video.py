"""The window's video part (offscreen Qt): open a clip, scrub with the mask, export with progress, cancel."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before Qt is loaded: no display needed

from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("av")
pytest.importorskip("PySide6")

from u2seg.apps.gui import MainWindow, qimage_to_array  # noqa: E402
from u2seg.data.synth_video import synth_clip  # noqa: E402
from u2seg.video_read import VideoReader  # noqa: E402
from u2seg.video_write import VideoWriter  # noqa: E402

TIMEOUT = 120_000


@pytest.fixture
def clip_path(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, "mp4", width=96, height=64, mode="RGB", time_base=Fraction(1, 25), rate=25) as writer:
        for i, (frame, _) in enumerate(synth_clip(2, width=96, height=64, frames=5)):
            writer.write(frame, i, 1)
    return path


@pytest.fixture
def small_predictor(pretrained_home):
    from u2seg.infer import Predictor

    return Predictor(weights=pretrained_home / "weights" / "u2netp", size=64)


def test_open_scrub_export_and_cancel(qtbot, tmp_path, clip_path, small_predictor):
    main = MainWindow(lambda model: small_predictor, model="u2netp")
    qtbot.addWidget(main)
    assert main.open_paths([clip_path]) == []  # a video goes to the video window, not the picture list
    video = main.video_window
    assert video is not None and video.isVisible()
    qtbot.waitUntil(lambda: video.preview is not None and not video.busy(), timeout=TIMEOUT)
    assert video.slider.maximum() == 4 and "96×64, 5 frames" in video.message
    assert video.format_combo.currentText() == "webm"
    video.slider.setValue(3)  # scrub: frame 4 and its mask
    qtbot.waitUntil(lambda: not video.busy() and 3 in video._masks, timeout=TIMEOUT)
    assert video.frame_label.text() == "frame 4"
    assert qimage_to_array(video.mask_view.image()).shape == (64, 96)

    out = tmp_path / "out.webm"
    video.export(out)
    qtbot.waitUntil(lambda: not video.busy(), timeout=TIMEOUT)
    assert video.exported == out and "Wrote" in video.message, video.message
    assert video.progress.value() == 5
    with VideoReader(out) as reader:
        frames = list(reader)
    assert len(frames) == 5 and frames[0].pixels.shape == (64, 96, 4)

    # Cancel: the worker stops at the next frame and nothing is left under the output's name.
    video.cancel_button.setEnabled(True)
    target = tmp_path / "cancelled.mov"
    video.export(target, "mov")
    video.cancel()
    qtbot.waitUntil(lambda: not video.busy(), timeout=TIMEOUT)
    assert "interrupted" in video.message and not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    video.close()
    assert np.isfinite(video.progress.value())
