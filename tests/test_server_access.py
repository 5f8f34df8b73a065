"""Who may use the service and what it tells its operator: API keys, per-key limits, request ids,
metrics, JSON logs and the upload deadline; against real servers on 127.0.0.1 (and a real
``u2seg serve`` process for the logs)."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")

from http_helpers import assert_error, serve_app  # noqa: E402
from u2seg.apps.keys import KeysFileError, KeyStore, Limiter, LimitExceeded, create_key, read_keys, revoke_key  # noqa: E402
from u2seg.apps.server import create_app  # noqa: E402
from u2seg.cli import main as cli_main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_jpeg(coffee: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(coffee[::4, ::4]).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def keys_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "keys.jsonl"
    return path, create_key(path, "alice")


def _remove(client, data: bytes, headers: dict | None = None):
    return client.post("/api/remove", content=data, headers={"Content-Type": "image/jpeg", **(headers or {})})


# --------------------------------------------------------------------------- keys


def test_keys_cli_prints_the_key_once_and_the_file_holds_only_its_hash(tmp_path, capsys):
    keys = tmp_path / "secrets" / "keys.jsonl"
    assert cli_main(["keys", "create", "ci-bot", "--file", str(keys), "--rpm", "30"]) == 0
    out, err = capsys.readouterr()
    key = out.strip().splitlines()[-1]
    assert re.fullmatch(r"u2s_[A-Za-z0-9_-]{43}", key)
    assert "shown only now" in err
    text = keys.read_text()
    assert key not in text and key[4:] not in text
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    (record,) = read_keys(keys)
    assert record.name == "ci-bot" and record.requests_per_minute == 30 and record.concurrent is None

    assert cli_main(["keys", "create", "ci-bot", "--file", str(keys)]) == 2          # same name
    assert "already has a key named 'ci-bot'" in capsys.readouterr().err
    assert cli_main(["keys", "create", "bad name!", "--file", str(keys)]) == 2
    assert "invalid key name" in capsys.readouterr().err
    assert cli_main(["keys", "create", "second", "--file", str(keys)]) == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert second != key
    assert cli_main(["keys", "list", "--file", str(keys)]) == 0
    listing = capsys.readouterr().out
    assert "ci-bot" in listing and "rpm 30" in listing and "second" in listing and key not in listing
    assert cli_main(["keys", "revoke", "ci-bot", "--file", str(keys)]) == 0
    assert [r.name for r in read_keys(keys)] == ["second"]


@pytest.mark.parametrize("line, words", [
    ("not json", "not a JSON key record"),
    ('{"name": "a"}', "needs 'name' and 'sha256'"),
    ('{"name": "a", "sha256": "xyz"}', "64 lower-case hex"),
    ('{"name": "a", "sha256": "' + "0" * 64 + '", "concurrent": 0}', "concurrent must be a positive"),
])
def test_a_malformed_keys_file_is_one_clear_line(tmp_path, line, words):
    path = tmp_path / "keys.jsonl"
    path.write_text("# comment\n\n" + line + "\n")
    with pytest.raises(KeysFileError, match=re.escape(words)) as info:
        read_keys(path)
    assert f"{path}:3" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(KeysFileError, match="does not exist"):
        create_app(api_keys=tmp_path / "missing.jsonl")


def test_every_endpoint_but_health_and_the_page_needs_a_key(make_client, keys_file, small_jpeg):
    path, key = keys_file
    client = make_client(api_keys=path)
    for method, url in (("GET", "/api/models"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"),
                        ("POST", "/api/remove"), ("GET", "/api/remove?url=http://example.com/a.jpg")):
        response = client.request(method, url)
        assert_error(response, 401, "API key is required")
        assert response.headers["www-authenticate"].startswith("Bearer")
    for url in ("/healthz", "/", "/static/app.js", "/static/style.css"):
        assert client.get(url).status_code == 200, url

    assert_error(_remove(client, small_jpeg, {"X-API-Key": "u2s_" + "A" * 43}), 401, "invalid API key")
    assert_error(_remove(client, small_jpeg, {"Authorization": "Bearer " + key[:-1]}), 401, "invalid API key")
    assert_error(_remove(client, small_jpeg, {"Authorization": "Basic " + key}), 401, "required")
    for headers in ({"X-API-Key": key}, {"Authorization": "Bearer " + key}, {"authorization": "bearer " + key}):
        response = _remove(client, small_jpeg, headers)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert client.get("/metrics", headers={"X-API-Key": key}).status_code == 200


def test_keys_are_reread_when_the_file_changes(make_client, keys_file, small_jpeg):
    path, alice = keys_file
    client = make_client(api_keys=path)
    assert client.get("/api/models", headers={"X-API-Key": alice}).status_code == 200
    bob = create_key(path, "bob")
    revoke_key(path, "alice")
    deadline = time.monotonic() + 10
    while client.get("/api/models", headers={"X-API-Key": alice}).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.2)
    assert client.get("/api/models", headers={"X-API-Key": bob}).status_code == 200
    # A file broken while serving keeps the last good keys (and says so).
    path.write_text("garbage\n")
    time.sleep(1.2)
    assert client.get("/api/models", headers={"X-API-Key": bob}).status_code == 200
    assert "not a JSON key record" in client.app.state.keys.last_error


def test_key_comparison_checks_every_record():
    """Constant time: authenticate() looks at every record whatever matches (no early exit)."""
    import hmac

    from u2seg.apps import keys as keys_module

    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append(1)
        return real(a, b)

    store = KeyStore.__new__(KeyStore)
    records = [keys_module.KeyRecord(name=f"k{i}", sha256=keys_module._digest(f"key{i}")) for i in range(5)]
    store.records = lambda: records  # type: ignore[method-assign]
    keys_module.hmac.compare_digest = counting
    try:
        assert store.authenticate("key0").name == "k0"
        assert len(calls) == 5
        calls.clear()
        assert store.authenticate("nope") is None and len(calls) == 5
    finally:
        keys_module.hmac.compare_digest = real


# --------------------------------------------------------------------------- limits


def test_requests_per_minute_per_key_answers_429_with_retry_after(make_client, tmp_path, small_jpeg):
    path = tmp_path / "keys.jsonl"
    limited = create_key(path, "limited", requests_per_minute=3)
    free = create_key(path, "free")
    client = make_client(api_keys=path, key_requests_per_minute=1000)
    statuses = [client.get("/api/models", headers={"X-API-Key": limited}).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    response = client.get("/api/models", headers={"X-API-Key": limited})
    assert_error(response, 429, "3 requests per minute")
    assert 1 <= int(response.headers["retry-after"]) <= 20
    # Other keys are not affected.
    assert all(client.get("/api/models", headers={"X-API-Key": free}).status_code == 200 for _ in range(5))


def test_token_bucket_refills_evenly():
    from u2seg.apps.keys import KeyRecord

    limiter = Limiter(requests_per_minute=60)
    record = KeyRecord(name="k", sha256="0" * 64)
    t = 1000.0
    for _ in range(60):
        with limiter.hold(record, now=t):
            pass
    with pytest.raises(LimitExceeded) as info:
        with limiter.hold(record, now=t):
            pass
    assert info.value.retry_after == 1
    with limiter.hold(record, now=t + 1.01):   # one per second comes back
        pass
    with pytest.raises(LimitExceeded):
        with limiter.hold(record, now=t + 1.02):
            pass


def test_concurrent_requests_per_key_answer_429(use_pretrained_home, predictor, tmp_path, small_jpeg):
    path = tmp_path / "keys.jsonl"
    key = create_key(path, "one-at-a-time", concurrent=1)
    started, release = threading.Event(), threading.Event()

    def slow_factory(name):
        started.set()
        release.wait(30)
        return predictor

    app = create_app(predictor_factory=slow_factory, api_keys=path, max_workers=2, default_model="u2netp")
    with serve_app(app) as url:
        results = {}

        def first():
            results["first"] = httpx.post(url + "/api/remove", content=small_jpeg, timeout=60,
                                          headers={"Content-Type": "image/jpeg", "X-API-Key": key})

        thread = threading.Thread(target=first)
        thread.start()
        assert started.wait(30)
        second = httpx.post(url + "/api/remove", content=small_jpeg, timeout=60,
                            headers={"Content-Type": "image/jpeg", "X-API-Key": key})
        assert_error(second, 429, "already has 1 request(s) running")
        assert second.headers["retry-after"] == "1"
        release.set()
        thread.join(60)
        assert results["first"].status_code == 200
        third = httpx.post(url + "/api/remove", content=small_jpeg, timeout=60,
                           headers={"Content-Type": "image/jpeg", "X-API-Key": key})
        assert third.status_code == 200


# --------------------------------------------------------------------------- ids, metrics, deadline


def test_request_ids_are_echoed_or_made(make_client, small_jpeg):
    client = make_client()
    made = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in made)
    assert client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b"}).headers["x-request-id"] == "trace-42.a:b"
    for hostile in ("a" * 65, "x\r\nInjected: 1", "<script>", "a b"):
        answered = client.get("/api/models", headers={"X-Request-ID": hostile}).headers["x-request-id"]
        assert answered != hostile and re.fullmatch(r"[0-9a-f]{32}", answered)
    assert "x-request-id" in _remove(client, b"garbage").headers          # errors too
    assert "x-request-id" in client.get("/nowhere").headers


def test_metrics_count_requests_latency_queue_and_images(make_client, small_jpeg):
    client = make_client()
    for _ in range(2):
        assert _remove(client, small_jpeg).status_code == 200
    assert _remove(client, b"garbage").status_code == 400
    client.get("/nowhere/" + "x" * 50)
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(r'u2seg_requests_total\{method="POST",route="/api/remove",status="200"\} 2\.0', text)
    assert re.search(r'u2seg_requests_total\{method="POST",route="/api/remove",status="400"\} 1\.0', text)
    assert 'route="other"' in text and "xxxxx" not in text          # unknown paths share one label
    assert re.search(r'u2seg_request_duration_seconds_count\{route="/api/remove"\} 3\.0', text)
    assert re.search(r'u2seg_images_total\{model="u2netp"\} 2\.0', text)
    assert re.search(r"^u2seg_queue_depth 0\.0$", text, re.M)
    rate = float(re.search(r"^u2seg_images_per_second (\S+)$", text, re.M).group(1))
    assert rate == pytest.approx(2 / 60)


def test_a_slow_upload_gets_408_and_does_not_block_others(use_pretrained_home, predictor, small_jpeg):
    app = create_app(predictor_factory=lambda name: predictor, upload_timeout=1.5, default_model="u2netp")
    with serve_app(app) as url:
        port = int(url.rsplit(":", 1)[1])
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /api/remove HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 100000\r\n\r\n")
        started = time.monotonic()
        # While it trickles, another client is served at once.
        assert httpx.post(url + "/api/remove", content=small_jpeg, headers={"Content-Type": "image/jpeg"},
                          timeout=30).status_code == 200
        answer = b""
        slow.settimeout(0.5)
        while not answer.endswith(b"}") and time.monotonic() - started < 15:
            try:
                slow.sendall(b"x")
            except OSError:
                pass
            try:
                chunk = slow.recv(4096)
            except (TimeoutError, socket.timeout):
                continue
            if not chunk:
                break
            answer += chunk
        slow.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert 1.4 < time.monotonic() - started < 10
        assert b"did not arrive within 1.5 s" in answer


# --------------------------------------------------------------------------- a real process, JSON logs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_process_with_keys_writes_json_logs_with_request_ids(use_pretrained_home, keys_file, small_jpeg):
    path, key = keys_file
    port = _free_port()
    env = {**os.environ, "U2SEG_HOME": str(use_pretrained_home), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "u2seg", "serve", "--port", str(port), "--api-keys", str(path), "-m", "u2netp",
         "--log-format", "json", "--key-rpm", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.3)
        assert httpx.get(url + "/api/models").status_code == 401
        ok = httpx.post(url + "/api/remove", content=small_jpeg, timeout=60,
                        headers={"Content-Type": "image/jpeg", "X-API-Key": key, "X-Request-ID": "req-ok-1"})
        assert ok.status_code == 200 and ok.headers["x-request-id"] == "req-ok-1"
        bad = httpx.post(url + "/api/remove", content=b"garbage", timeout=60,
                         headers={"Content-Type": "image/jpeg", "X-API-Key": key, "X-Request-ID": "req-bad-2"})
        assert bad.status_code == 400
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    records = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is JSON
    assert records, err
    for record in records:
        assert {"time", "level", "logger", "message", "request_id"} <= set(record)
    access = {r["request_id"]: r for r in records if r["logger"] == "u2seg.access"}
    assert access["req-ok-1"]["status"] == 200 and access["req-ok-1"]["key"] == "alice"
    assert access["req-ok-1"]["path"] == "/api/remove" and access["req-ok-1"]["seconds"] > 0
    assert access["req-bad-2"]["status"] == 400
    assert any(r["status"] == 401 and r["key"] is None for r in access.values())
    assert key not in err


def test_binding_beyond_loopback_without_keys_warns(use_pretrained_home):
    """The warning comes before uvicorn starts; the port is taken, so the server then exits."""
    env = {**os.environ, "U2SEG_HOME": str(use_pretrained_home)}
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "u2seg", "serve", "--host", "0.0.0.0", "--port", str(port),
                                 "-m", "u2netp"],
                                capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert result.returncode != 0
    assert "without API keys" in result.stderr and "u2seg keys create" in result.stderr
