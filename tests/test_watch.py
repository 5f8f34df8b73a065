"""``u2seg remove --watch``: a real watcher process, files written slowly by another process into
new sub-folders, each done once per content, stopped by SIGTERM after the images in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from u2seg.cli import main

REPO = Path(__file__).resolve().parents[1]

SLOW_WRITER = """
import sys, time
data = open(sys.argv[1], "rb").read()
step = max(1, len(data) // 12)
with open(sys.argv[2], "wb") as f:
    for i in range(0, len(data), step):
        f.write(data[i:i + step]); f.flush(); time.sleep(0.25)   # about 3 s in all
"""


def _wait_for(condition, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; watcher said:\n{log.read_text()}"
        time.sleep(0.2)


@pytest.fixture
def photos(tmp_path: Path, coffee: np.ndarray, astronaut: np.ndarray) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(coffee).save(folder / "cup.png")
    Image.fromarray(astronaut).save(folder / "astronaut.jpg", quality=90)
    return folder


def test_watch_takes_complete_files_once_and_stops_on_sigterm(pretrained_home, photos, tmp_path):
    watched, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "watch.log"
    watched.mkdir()
    env = {**os.environ, "U2SEG_HOME": str(pretrained_home), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as stderr:
        watcher = subprocess.Popen([sys.executable, "-m", "u2seg", "remove", "--watch", str(watched), "-o", str(out),
                                    "-m", "u2netp", "--settle", "1"], cwd=REPO, env=env, stderr=stderr,
                                   stdout=subprocess.DEVNULL)
    try:
        _wait_for(lambda: "watching" in log.read_text(), 120, "the watcher to start", log)
        # A new sub-folder, a PNG written slowly by another process, and a JPEG dropped at once.
        (watched / "new" / "sub").mkdir(parents=True)
        writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(photos / "cup.png"),
                                   str(watched / "new" / "sub" / "cup.png")])
        (watched / "astronaut.jpg").write_bytes((photos / "astronaut.jpg").read_bytes())
        assert writer.wait(60) == 0
        cup, astronaut = out / "new" / "sub" / "cup.png", out / "astronaut.png"
        _wait_for(lambda: cup.exists() and astronaut.exists(), 120, "both outputs", log)
        assert "error" not in log.read_text()            # the half-written PNG was never taken

        # The same content again (a new mtime): not redone.
        written = cup.stat().st_mtime_ns
        (watched / "new" / "sub" / "cup.png").write_bytes((photos / "cup.png").read_bytes())
        time.sleep(4)
        assert cup.stat().st_mtime_ns == written
        assert "skipping" not in log.read_text()
    finally:
        watcher.send_signal(signal.SIGTERM)
        code = watcher.wait(60)
    said = log.read_text()
    assert code == 0 and "stopped after" in said and "2 done, 0 failed" in said, said

    # The outputs are what a one-shot run makes.
    reference = tmp_path / "reference"
    assert main(["remove", str(photos / "cup.png"), "-o", str(reference), "-m", "u2netp"]) == 0
    assert cup.read_bytes() == (reference / "cup.png").read_bytes()
    assert Image.open(astronaut).mode == "RGBA"


def test_watch_needs_one_folder(use_pretrained_home, tmp_path, capsys):
    assert main(["remove", "--watch", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    assert "--watch takes one folder" in capsys.readouterr().err


def test_polling_without_watchdog_takes_a_slow_file_only_when_complete(monkeypatch, tmp_path, photos):
    """Without watchdog (no close events), a file is taken once its size and mtime settle."""
    import threading

    from u2seg.infer.manifest import Manifest
    from u2seg.infer.watch import watch_tasks

    monkeypatch.setitem(sys.modules, "watchdog.observers", None)   # import fails: polling
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    data = (photos / "cup.png").read_bytes()
    stop = threading.Event()
    tasks = watch_tasks(root, out, Manifest(tmp_path / "m.jsonl", "settings"), fmt="png", stop=stop,
                        settle=0.6, poll=0.1)

    def slow() -> None:
        with (root / "deep" / "cup.png").open("wb") as f:
            for i in range(0, len(data), len(data) // 8):
                f.write(data[i:i + len(data) // 8])
                f.flush()
                time.sleep(0.2)

    (root / "deep").mkdir()
    writer = threading.Thread(target=slow)
    writer.start()
    task = next(tasks)
    assert task.source == root / "deep" / "cup.png" and task.output == out / "deep" / "cup.png"
    assert not writer.is_alive() and task.source.stat().st_size == len(data)
    writer.join()
    stop.set()
    assert list(tasks) == []      # stops, and the same file is not taken twice
