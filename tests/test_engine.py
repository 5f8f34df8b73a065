"""The streaming engine: order, per-item errors, back-pressure, batching, TTA in the folder path,
the server's way in (submit), and the device arithmetic run on CPU tensors."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from u2seg.infer.bench import FixedMapBackend
from u2seg.infer.engine import Engine, Item, run_job
from u2seg.infer.files import Task
from u2seg.infer.predictor import TTA, Predictor
from u2seg.infer.refine import RefineOptions
from u2seg.infer.removal import RemovalJob, remove_files, render


def _photos(astronaut: np.ndarray, coffee: np.ndarray, count: int) -> list[np.ndarray]:
    """Small crops of real photos, all of different sizes."""
    out = []
    for i in range(count):
        source = astronaut if i % 2 else coffee
        h, w = 40 + 7 * i, 56 + 5 * i
        out.append(np.ascontiguousarray(source[i:i + h, 2 * i:2 * i + w]))
    return out


@pytest.fixture(scope="module")
def mask_job() -> RemovalJob:
    return RemovalJob(RefineOptions(only_mask=True), fmt=None)


def test_results_in_input_order_with_errors_on_their_own_line(predictor, astronaut, coffee, mask_job, tmp_path):
    photos = _photos(astronaut, coffee, 12)
    missing = tmp_path / "missing.png"
    items = [Item(p, f"photo{i}") for i, p in enumerate(photos)]
    items.insert(3, Item(b"not an image at all", "garbage.jpg"))
    items.insert(8, Item(missing, str(missing)))
    with Engine(predictor, batch_size=4, workers=2) as engine:
        results = list(engine.run(items, mask_job))
    assert [r.item for r in results] == items
    failed = [r for r in results if not r.ok]
    assert [r.item.name for r in failed] == ["garbage.jpg", str(missing)]
    assert all("\n" not in r.error and r.error.startswith(r.item.name) for r in failed)
    good = [r for r in results if r.ok]
    for result, photo in zip(good, photos):
        expected = np.asarray(predictor.mask(photo))
        got = np.asarray(result.value)
        assert got.shape == photo.shape[:2]
        assert np.abs(got.astype(int) - expected).max() <= 1  # batched vs alone: the same masks
        assert set(result.seconds) >= {"decode", "preprocess", "network", "postprocess", "refine"}


def test_unordered_results_cover_every_item(predictor, astronaut, coffee, mask_job):
    items = [Item(p, f"p{i}") for i, p in enumerate(_photos(astronaut, coffee, 6))]
    with Engine(predictor, batch_size=2, workers=2) as engine:
        results = list(engine.run(items, mask_job, ordered=False))
    assert sorted(r.index for r in results) == list(range(6)) and all(r.ok for r in results)


class _Counting:
    """An item source that counts how far it has been read."""

    def __init__(self, count: int) -> None:
        self.count, self.pulled = count, 0
        self.lock = threading.Lock()

    def __iter__(self):
        pixels = np.full((24, 32, 3), 90, np.uint8)
        for i in range(self.count):
            with self.lock:
                self.pulled += 1
            yield Item(pixels, f"tiny{i}")


def test_back_pressure_keeps_memory_flat_over_2000_inputs():
    predictor = Predictor(backend=FixedMapBackend())
    source = _Counting(2000)
    job = RemovalJob(RefineOptions(), fmt="png")
    tracemalloc.start()
    try:
        with Engine(predictor, batch_size=4, workers=2) as engine:
            ahead, done, peaks = 0, 0, []
            for result in engine.run(source, job):
                assert result.ok, result.error
                done += 1
                ahead = max(ahead, source.pulled - done)
                if done in (200, 2000):
                    peaks.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert done == 2000
    assert ahead <= engine.window  # never more than the window between the source and the consumer
    assert peaks[1] - peaks[0] < 2 * 2**20  # no growth with the number of inputs (bytes still held)


def test_batches_never_exceed_the_batch_size(predictor, astronaut, coffee, mask_job):
    sizes: list[int] = []

    class Recording:
        def __getattr__(self, name):
            return getattr(predictor, name)

        def infer(self, prepared):
            sizes.append(len(prepared))
            return predictor.infer(prepared)

    items = [Item(p) for p in _photos(astronaut, coffee, 10)]
    report = run_job(Recording(), items, mask_job, batch_size=3, workers=2)
    assert report.processed == 10 and not report.failed
    assert sum(sizes) == 10 and max(sizes) <= 3
    assert report.stages.items == 10 and report.stages.per_image_ms()["network"] > 0


def test_tta_is_honoured_in_the_folder_path(pretrained_home, coffee, tmp_path):
    weights = pretrained_home / "weights" / "u2netp"
    flipped = Predictor(weights=weights, tta=TTA(flip=True))
    plain = Predictor(weights=weights)
    source = tmp_path / "coffee.png"
    Image.fromarray(coffee).save(source)
    tasks = [Task(source, tmp_path / "out" / "coffee.png")]
    report = remove_files(flipped, tasks, RefineOptions(only_mask=True), progress=False)
    assert report.written == [tasks[0].output] and not report.failed
    written = np.asarray(Image.open(tasks[0].output)).astype(int)
    assert np.abs(written - np.asarray(flipped.mask(coffee))).max() <= 1
    assert np.abs(written - np.asarray(plain.mask(coffee))).mean() > 0.05  # the mirror counted


def test_submit_serves_one_item_as_a_future(predictor, coffee, mask_job):
    with Engine(predictor, max_wait_ms=5) as engine:
        futures = [engine.submit(Item(coffee, "coffee"), mask_job), engine.submit(Item(b"", "empty"), mask_job)]
        good, bad = (f.result(60) for f in futures)
    assert good.ok and good.value.size == (coffee.shape[1], coffee.shape[0])
    assert not bad.ok and "empty" in bad.error and bad.exception is not None


def test_render_runs_the_same_stages_in_this_thread(predictor, coffee):
    cutout = render(predictor, coffee, RefineOptions(bgcolor=(255, 255, 255, 255)))
    assert cutout.mode == "RGB" and cutout.size == (coffee.shape[1], coffee.shape[0])


# ----------------------------------------------------------------- device arithmetic on CPU tensors


@pytest.fixture(scope="module")
def torch_predictors(pretrained_home):
    weights = pretrained_home / "weights" / "u2netp"
    host = Predictor(weights=weights, backend="torch", device="cpu", arithmetic="host")
    device = Predictor(weights=weights, backend="torch", device="cpu", arithmetic="device")
    return host, device


def test_device_arithmetic_matches_the_host_path(torch_predictors, astronaut, coffee):
    host, device = torch_predictors
    assert host.device_arithmetic is None and device.device_arithmetic is not None
    rgba = np.dstack([coffee, np.full(coffee.shape[:2], 200, np.uint8)])
    for picture in (astronaut, coffee, rgba):
        expected = host.predict(picture)
        got = device.predict(picture)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.abs(got - expected).mean() * 255 < 0.5 and np.abs(got - expected).max() * 255 < 8
        for options in (RefineOptions(), RefineOptions(only_mask=True, threshold=0.5),
                        RefineOptions(bgcolor=(0, 0, 255, 255), crop=True, crop_margin=3)):
            a = np.asarray(render(host, picture, options)).astype(int)
            b = np.asarray(render(device, picture, options)).astype(int)
            assert a.shape == b.shape
            assert np.abs(a - b).mean() < 1.0, options


def test_device_arithmetic_with_tta_and_batches(pretrained_home, astronaut, coffee):
    weights = pretrained_home / "weights" / "u2netp"
    tta = TTA(flip=True, scales=(0.75, 1.0))
    host = Predictor(weights=weights, backend="torch", device="cpu", arithmetic="host", tta=tta)
    device = Predictor(weights=weights, backend="torch", device="cpu", arithmetic="device", tta=tta)
    job = RemovalJob(RefineOptions(only_mask=True), fmt=None)
    items = [Item(astronaut, "a"), Item(coffee, "c")]
    with Engine(host, batch_size=2) as e1, Engine(device, batch_size=2) as e2:
        a = [np.asarray(r.value, dtype=int) for r in e1.run(items, job)]
        b = [np.asarray(r.value, dtype=int) for r in e2.run(items, job)]
    for x, y in zip(a, b):
        assert np.abs(x - y).mean() < 0.5


def _screen(text: str) -> list[str]:
    """What a terminal shows for ``text``: ``\\r`` returns to the start of the line and later
    characters overwrite earlier ones."""
    lines = []
    for raw in text.split("\n"):
        cells: list[str] = []
        for part in raw.split("\r"):
            for column, char in enumerate(part):
                if column < len(cells):
                    cells[column] = char
                else:
                    cells.append(char)
        lines.append("".join(cells).rstrip())
    return lines


@pytest.mark.parametrize("printer", ["print", "stderr.write", "tqdm.write"])
def test_error_lines_do_not_tear_the_progress_bar(astronaut, coffee, tmp_path, capsys, printer):
    """A folder job with a corrupt file and the bar on: each error line shows on a line of its
    own, whatever the caller's on_error prints with, and the bar goes on below it."""
    import sys

    from tqdm import tqdm

    folder = tmp_path / "in"
    folder.mkdir()
    for name, picture in (("a.png", astronaut), ("c.png", coffee)):
        Image.fromarray(picture[:64, :80]).save(folder / name)
    (folder / "broken.png").write_bytes((folder / "a.png").read_bytes()[:90])  # truncated
    (folder / "d.jpg").write_bytes(b"not an image at all")
    sources = sorted(folder.iterdir())
    tasks = [Task(path, tmp_path / "out" / f"{path.stem}.png") for path in sources]

    def on_error(line: str) -> None:
        message = f"u2seg: error: {line}"
        if printer == "print":
            print(message, file=sys.stderr)
        elif printer == "stderr.write":
            sys.stderr.write(message + "\n")
        else:
            tqdm.write(message, file=sys.stderr)

    predictor = Predictor(backend=FixedMapBackend())
    report = remove_files(predictor, tasks, workers=1, on_error=on_error, progress=True)
    assert len(report.failed) == 2 and len(report.written) == 2
    err = capsys.readouterr().err
    assert "%|" in err  # the bar was on
    shown = _screen(err)
    errors = [line for line in shown if "error:" in line]
    assert len(errors) == 2, shown
    for line, failure in zip(errors, report.failed):
        assert line == f"u2seg: error: {failure}", shown  # alone on its line: no bar fragment glued on
    assert shown[-1] == "" and "4/4" in shown[-2]  # the finished bar, after the errors
