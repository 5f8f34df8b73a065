"""The HTTP service (u2seg.apps.server) through FastAPI's TestClient, with the real pretrained U²-Net-P."""

from __future__ import annotations

import io
import os
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 and warns about httpx; both work
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient  # noqa: E402

from http_helpers import assert_error  # noqa: E402
from u2seg.apps.server import create_app  # noqa: E402
from u2seg.errors import WeightsError  # noqa: E402

# --------------------------------------------------------------------------- fixtures


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def coffee_jpeg(coffee: np.ndarray) -> bytes:
    return _encode(coffee, "JPEG", quality=92)


@pytest.fixture(scope="module")
def astronaut_png(astronaut: np.ndarray) -> bytes:
    return _encode(astronaut, "PNG")


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def _post_file(client: TestClient, data: bytes, params: dict | None = None, *, fields: dict | None = None,
               content_type: str = "image/jpeg", filename: str = "coffee.jpg"):
    return client.post("/api/remove", params=params or {}, data=fields or {},
                       files={"file": (filename, data, content_type)})


def _post_raw(client: TestClient, data, params: dict | None = None, content_type: str = "image/jpeg"):
    return client.post("/api/remove", params=params or {}, content=data, headers={"Content-Type": content_type})


def _image(response) -> Image.Image:
    im = Image.open(io.BytesIO(response.content))
    im.load()
    return im


# --------------------------------------------------------------------------- 200


def test_multipart_upload_gives_an_rgba_png_cutout(client, coffee_jpeg):
    r = _post_file(client, coffee_jpeg)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-model"] == "u2netp"
    assert r.headers["cache-control"] == "no-store"
    im = _image(r)
    assert im.format == "PNG" and im.mode == "RGBA" and im.size == (600, 400)
    alpha = np.asarray(im.getchannel("A"))
    assert alpha[160:280, 200:360].mean() > 240  # the cup
    assert alpha[:60, 500:].mean() < 10           # the table top


def test_raw_body_and_webp(client, coffee_jpeg):
    r = _post_raw(client, coffee_jpeg, {"format": "webp"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/webp"
    im = _image(r)
    assert im.format == "WEBP" and im.mode == "RGBA" and im.size == (600, 400)


def test_only_mask_is_an_L_png_the_size_of_the_input(client, coffee_jpeg, predictor):
    r = _post_file(client, coffee_jpeg, fields={"only_mask": "true"})
    assert r.status_code == 200, r.text
    mask = _image(r)
    assert mask.format == "PNG" and mask.mode == "L" and mask.size == (600, 400)
    m = np.asarray(mask)
    assert m[160:280, 200:360].mean() > 240 and m[:60, 500:].mean() < 10
    # The same mask as the library's, on the same decoded image.
    expected = np.rint(predictor.predict(coffee_jpeg) * 255)
    assert np.abs(m.astype(int) - expected).max() <= 1


def test_rembg_short_names_and_query_parameters(client, coffee_jpeg):
    long_form = _post_file(client, coffee_jpeg, fields={"only_mask": "1"})
    short_query = _post_file(client, coffee_jpeg, params={"om": "true"})
    assert long_form.status_code == short_query.status_code == 200
    assert long_form.content == short_query.content
    assert _image(short_query).mode == "L"


def test_threshold_bgcolor_and_crop(client, coffee_jpeg):
    mask = np.asarray(_image(_post_raw(client, coffee_jpeg, {"only_mask": "on", "threshold": "0.5"})))
    assert set(np.unique(mask)) <= {0, 255}
    on_white = _image(_post_file(client, coffee_jpeg, fields={"bgcolor": "255,255,255,255"}))
    assert on_white.size == (600, 400)
    assert on_white.convert("RGBA").getchannel("A").getextrema() == (255, 255)
    assert on_white.convert("RGB").getpixel((595, 5)) == (255, 255, 255)
    hex_colour = _image(_post_file(client, coffee_jpeg, fields={"bgc": "#ff0000"}))
    assert hex_colour.convert("RGB").getpixel((595, 5)) == (255, 0, 0)
    cropped = _image(_post_file(client, coffee_jpeg, fields={"crop": "true", "crop_margin": "4"}))
    assert cropped.width < 600 and cropped.height < 400


@pytest.mark.slow
def test_alpha_matting_and_post_processing(client, coffee):
    """rembg's names for matting; the first matting call in a fresh environment compiles numba code."""
    small = _encode(np.asarray(Image.fromarray(coffee).resize((300, 200))), "PNG")
    plain = np.asarray(_image(_post_raw(client, small, content_type="image/png")).getchannel("A"))
    r = _post_raw(client, small, {"a": "true", "af": "230", "ab": "20", "ae": "5", "ppm": "1"},
                  content_type="image/png")
    assert r.status_code == 200, r.text
    matted = _image(r)
    assert matted.mode == "RGBA" and matted.size == (300, 200)
    alpha = np.asarray(matted.getchannel("A"))
    assert not np.array_equal(alpha, plain)
    assert alpha[80:140, 100:180].mean() > 240 and alpha[:30, 250:].mean() < 10


# --------------------------------------------------------------------------- errors


def test_undecodable_image_is_400(client):
    assert_error(_post_raw(client, b"not an image at all", content_type="image/png"), 400, "not an image")
    assert_error(_post_file(client, b"\x89PNG\r\n\x1a\n truncated", content_type="image/png",
                             filename="C:\\photos\\holiday.png"), 400, "holiday.png")
    assert_error(_post_raw(client, b""), 400, "empty")


def test_malformed_multipart_is_400(client):
    r = client.post("/api/remove", content=b"--xyz\r\nno headers here",
                    headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code in (400, 422), r.text
    assert_error(client.post("/api/remove", content=b"x", headers={"Content-Type": "multipart/form-data"}),
                  400, "boundary")


def test_too_many_bytes_is_413_by_content_length(make_client, coffee_jpeg):
    client = make_client(max_upload_bytes=10_000)
    assert_error(_post_raw(client, coffee_jpeg), 413, "limit")
    assert_error(_post_file(client, coffee_jpeg * 10), 413, "limit")  # over the multipart allowance too


def test_too_many_bytes_is_413_while_reading_a_chunked_body(make_client, coffee_jpeg):
    """No Content-Length (chunked): the bytes are counted as they arrive."""
    client = make_client(max_upload_bytes=10_000)

    def chunks():
        for i in range(0, len(coffee_jpeg), 4096):
            yield coffee_jpeg[i:i + 4096]

    r = client.post("/api/remove", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_error(r, 413, "limit")
    # A multipart file part over the limit inside a body within the multipart allowance.
    r = _post_file(client, coffee_jpeg[:30_000])
    assert_error(r, 413, "limit")


def test_too_many_pixels_is_413(make_client, coffee_jpeg):
    client = make_client(max_pixels=200_000)  # coffee is 600×400 = 240,000
    assert_error(_post_file(client, coffee_jpeg), 413, "240,000 pixels")


def test_huge_declared_size_is_413_before_decoding(client):
    # 8000×8000 = 64 MP (default limit 36 MP) in a few kilobytes: refused from the header.
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, "PNG")
    assert len(bomb.getvalue()) < 100_000
    assert_error(_post_raw(client, bomb.getvalue(), content_type="image/png"), 413, "pixels")


def test_wrong_content_type_is_415(client, coffee_jpeg):
    assert_error(_post_raw(client, b"hello", content_type="text/plain"), 415, "text/plain")
    assert_error(client.post("/api/remove", json={"file": "x"}), 415, "application/json")
    assert_error(_post_file(client, b"hello", content_type="text/plain", filename="a.txt"), 415, "text/plain")
    # A url-encoded form carries options (and 'url'), not an image.
    assert_error(client.post("/api/remove", data={"only_mask": "1"}), 422, "no image")


@pytest.mark.parametrize(("params", "words"), [
    ({"bgcolor": "255,255"}, ["bgcolor"]),
    ({"bgcolor": "300,0,0"}, ["bgcolor"]),
    ({"bgc": "red"}, ["bgcolor"]),
    ({"threshold": "1.5"}, ["threshold"]),
    ({"threshold": "abc"}, ["threshold"]),
    ({"format": "gif"}, ["format"]),
    ({"only_mask": "maybe"}, ["only_mask"]),
    ({"af": "300"}, ["alpha_matting_foreground_threshold"]),
    ({"ab": "250", "af": "200"}, ["alpha_matting_background_threshold"]),
    ({"ae": "-1"}, ["alpha_matting_erode_size"]),
    ({"crop_margin": "x"}, ["crop_margin"]),
    ({"treshold": "0.5"}, ["unknown parameter", "treshold"]),
    ({"model": "nope"}, ["unknown model", "u2netp"]),
    ({"only_mask": "1", "bgcolor": "0,0,0"}, ["only_mask", "bgcolor"]),
])
def test_invalid_parameters_are_422(client, coffee_jpeg, params, words):
    assert_error(_post_file(client, coffee_jpeg, params=params), 422, *words)


def test_invalid_form_field_is_422(client, coffee_jpeg):
    assert_error(_post_file(client, coffee_jpeg, fields={"threshold": "-0.1"}), 422, "threshold")


def test_model_that_fails_to_load_is_503(make_client, coffee_jpeg):
    def broken(name):
        raise WeightsError(f"pretrained weights {name!r} are corrupt")

    client = make_client(predictor_factory=broken)
    assert_error(_post_file(client, coffee_jpeg), 503, "unavailable", "corrupt")


# --------------------------------------------------------------------------- other endpoints


def test_the_default_model_is_u2net_and_every_cached_model_is_offered(use_pretrained_home, u2net_onnx, predictor):
    from u2seg.apps.server import build_arg_parser

    assert build_arg_parser().parse_args([]).model == "u2net"  # `u2seg serve`; -m u2netp is the fast one
    with TestClient(create_app(predictor_factory=lambda name: predictor)) as client:
        info = client.get("/api/models").json()
    assert info["default"] == "u2net" and [m["name"] for m in info["models"]] == ["u2net", "u2netp"]


def test_models_health_openapi_and_page(client, coffee_jpeg):
    info = client.get("/api/models").json()
    assert info["default"] == "u2netp"
    names = [m["name"] for m in info["models"]]  # every cached model: u2netp, and u2net where cached
    assert "u2netp" in names and set(names) <= {"u2net", "u2netp"}
    model = info["models"][names.index("u2netp")]
    assert model["input_size"] == [320, 320] and model["loaded"] is False
    assert info["limits"]["max_upload_bytes"] > 0 and info["limits"]["max_pixels"] > 0

    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["models_loaded"] == []
    assert _post_file(client, coffee_jpeg).status_code == 200
    assert client.get("/healthz").json()["models_loaded"] == ["u2netp"]
    assert client.get("/api/models").json()["models"][names.index("u2netp")]["loaded"] is True

    spec = client.get("/openapi.json").json()
    remove = spec["paths"]["/api/remove"]["post"]
    assert set(remove["requestBody"]["content"]) == {"multipart/form-data", "image/*"}
    names = {p["name"] for p in remove["parameters"]}
    assert {"only_mask", "alpha_matting", "bgcolor", "threshold", "format", "model"} <= names
    assert "/api/models" in spec["paths"] and "/healthz" in spec["paths"]
    assert client.get("/docs").status_code == 200
    assert client.head("/healthz").status_code == 200 and client.head("/").status_code == 200

    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace('href="/docs"', "")  # nothing loaded from elsewhere
    for asset in ("/static/app.js", "/static/style.css", "/static/favicon.svg"):
        assert client.get(asset).status_code == 200, asset


# --------------------------------------------------------------------------- concurrency


class CountingPredictor:
    """The real predictor, counting the network calls (the engine's batches) and how many run
    at the same time."""

    def __init__(self, inner, hold: float = 0.0) -> None:
        self.inner = inner
        self.hold = hold
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.batches: list[int] = []

    @property
    def calls(self) -> int:
        return sum(self.batches)

    def infer(self, prepared):
        with self.lock:
            self.active += 1
            self.batches.append(len(prepared))
            self.peak = max(self.peak, self.active)
        try:
            if self.hold:
                time.sleep(self.hold)  # widen the window in which requests would overlap
            return self.inner.infer(prepared)
        finally:
            with self.lock:
                self.active -= 1

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_requests_all_succeed_within_the_worker_limit(make_client, predictor, coffee_jpeg, workers):
    counting = CountingPredictor(predictor, hold=0.1)
    built = []

    def factory(name):
        built.append(name)
        time.sleep(0.2)  # a slow first load: concurrent first requests must still build it once
        return counting

    client = make_client(predictor_factory=factory, max_workers=workers)
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda i: _post_file(client, coffee_jpeg, fields={"only_mask": "1"}), range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert len({r.content for r in responses}) == 1
    assert built == ["u2netp"]  # built once, even though the first requests arrived together
    assert counting.calls == 6
    health = client.get("/healthz").json()
    assert health["peak_running"] == workers  # requests processed at once: never more, and the limit is used
    assert health["served"] == 6 and health["running"] == 0 and health["waiting"] == 0
    # The network: one call at a time (the engine's thread), batches within the worker limit.
    assert counting.peak == 1 and max(counting.batches) <= workers


def test_concurrent_requests_share_network_batches(make_client, predictor, coffee_jpeg, astronaut_png):
    """Requests that arrive together are gathered into one network call, and each still gets
    exactly the answer it gets alone."""
    alone = {name: _post_file(make_client(), data, fields={"only_mask": "1"}).content
             for name, data in (("coffee", coffee_jpeg), ("astronaut", astronaut_png))}
    counting = CountingPredictor(predictor, hold=0.3)
    client = make_client(predictor_factory=lambda name: counting, max_workers=4, batch_wait_ms=200)
    uploads = [("coffee", coffee_jpeg), ("astronaut", astronaut_png)] * 4
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda u: _post_file(client, u[1], fields={"only_mask": "1"}), uploads))
    assert [r.status_code for r in responses] == [200] * 8
    assert [r.content for r in responses] == [alone[name] for name, _ in uploads]
    assert counting.calls == 8 and max(counting.batches) > 1 and max(counting.batches) <= 4
    assert len(counting.batches) < 8  # fewer network calls than requests


def test_full_queue_answers_503(make_client, predictor, coffee_jpeg):
    release = threading.Event()

    class Blocking(CountingPredictor):
        def infer(self, prepared):
            release.wait(30)
            return super().infer(prepared)

    client = make_client(predictor_factory=lambda name: Blocking(predictor), max_workers=1, max_queue=0)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_post_file, client, coffee_jpeg)
        deadline = time.monotonic() + 10
        while client.get("/healthz").json()["running"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        busy = _post_file(client, coffee_jpeg)
        release.set()
        assert first.result(30).status_code == 200
    assert_error(busy, 503, "busy")
    assert busy.headers["retry-after"] == "1"


# --------------------------------------------------------------------------- nothing on disk


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_recording: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _recording is None or event != "open":
        return
    path, mode, flags = args
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
    if writing:
        _recording.append(f"{path} {mode or flags}")


sys.addaudithook(_audit)  # stays installed (hooks cannot be removed); does nothing unless recording


def test_requests_write_nothing_to_disk(make_client, tmp_path, monkeypatch, astronaut):
    global _recording
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(workdir)
    # Over 1 MiB: Starlette's own form parser would spool this to a temporary file.
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    big_png = _encode(noise, "PNG")
    assert len(big_png) > 1024 * 1024
    astronaut_png = _encode(astronaut, "PNG")
    client = make_client()
    assert _post_file(client, astronaut_png, content_type="image/png").status_code == 200  # warm-up (imports)

    _recording = []
    try:  # the hook sees writes, from any thread, temporary files included
        threading.Thread(target=lambda: tempfile.TemporaryFile().close()).start()
        time.sleep(0.2)
        assert _recording, "the audit hook saw no write"
    finally:
        _recording = None

    _recording = []
    try:
        responses = [
            _post_file(client, big_png, content_type="image/png", filename="noise.png"),
            _post_raw(client, big_png, {"format": "webp"}, content_type="image/png"),
            _post_file(client, astronaut_png, fields={"only_mask": "1", "post_process_mask": "1"},
                       content_type="image/png"),
            _post_raw(client, b"garbage", content_type="image/png"),
        ]
        writes = list(_recording)
    finally:
        _recording = None
    assert [r.status_code for r in responses] == [200, 200, 200, 400]
    assert writes == []
    assert list(scratch.iterdir()) == [] and list(workdir.iterdir()) == []
