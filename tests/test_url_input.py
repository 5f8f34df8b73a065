"""``url`` inputs of the service, against image servers on 127.0.0.1 that the tests start: the
address guard (before any connection), redirects re-checked, size and time limits, nothing of the
client's request forwarded."""

from __future__ import annotations

import io
import ipaddress
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")

from http_helpers import assert_error  # noqa: E402
from u2seg.apps.keys import create_key  # noqa: E402
from u2seg.apps.url_input import UrlGuard, _is_public  # noqa: E402

LOOPBACK_ONLY = UrlGuard(allow=(ipaddress.ip_network("127.0.0.1/32"),))


class _Origin(BaseHTTPRequestHandler):
    """The routes the tests fetch; every request's headers are recorded."""

    image = b""
    seen: list[tuple[str, dict[str, str]]] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        route = self.path.split("?", 1)[0]
        if route == "/img.jpg":
            self._send(200, self.image, "image/jpeg")
        elif route == "/page.html":
            self._send(200, b"<html>not an image</html>", "text/html; charset=utf-8")
        elif route == "/to-img":
            self._redirect("/img.jpg")
        elif route == "/to-metadata":
            self._redirect("http://169.254.169.254/latest/meta-data/")
        elif route == "/to-localhost":
            self._redirect(f"http://localhost:{self.server.server_port}/img.jpg")
        elif route == "/loop":
            self._redirect("/loop")
        elif route == "/missing":
            self._send(404, b"no", "text/plain")
        elif route == "/forever":  # no length, bytes as fast as they go
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\xff" * 65536)
            except OSError:
                return
        elif route == "/trickle":  # a byte at a time, forever
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                return
        else:
            self._send(404, b"", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def small_jpeg(coffee: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(coffee[::4, ::4]).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def origin(small_jpeg):
    _Origin.image = small_jpeg
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_non_public_addresses_are_refused_before_any_connection(make_client, origin):
    client = make_client()   # the default guard: public addresses only
    port = origin.rsplit(":", 1)[1]
    _Origin.seen.clear()
    for host in ("127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]", "2130706433", "0.0.0.0",
                 "127.1", "[::ffff:7f00:1]"):
        response = client.get("/api/remove", params={"url": f"http://{host}:{port}/img.jpg"})
        assert_error(response, 403, "non-public address")
    assert _Origin.seen == []   # nothing reached the origin


def test_an_allowed_url_gives_the_same_cutout_as_an_upload(make_client, origin, small_jpeg):
    client = make_client(url_guard=LOOPBACK_ONLY)
    uploaded = client.post("/api/remove", content=small_jpeg, headers={"Content-Type": "image/jpeg"},
                           params={"only_mask": "true"})
    by_get = client.get("/api/remove", params={"url": origin + "/img.jpg", "only_mask": "true"})
    by_form = client.post("/api/remove", data={"url": origin + "/img.jpg", "only_mask": "true"})
    via_redirect = client.get("/api/remove", params={"url": origin + "/to-img", "om": "1"})
    for response in (uploaded, by_get, by_form, via_redirect):
        assert response.status_code == 200, response.text
    assert by_get.content == uploaded.content == by_form.content == via_redirect.content
    assert Image.open(io.BytesIO(by_get.content)).size == (150, 100)


def test_redirects_are_checked_like_the_first_url(make_client, origin):
    client = make_client(url_guard=LOOPBACK_ONLY)
    assert_error(client.get("/api/remove", params={"url": origin + "/to-metadata"}), 403, "169.254.169.254")
    # localhost resolves to 127.0.0.1 here (allowed), or to ::1 too (not allowed): either way checked.
    response = client.get("/api/remove", params={"url": origin + "/to-localhost"})
    assert response.status_code in (200, 403)
    assert_error(client.get("/api/remove", params={"url": origin + "/loop"}), 502, "redirects more than 5")


def test_size_and_time_limits_while_streaming(make_client, origin):
    client = make_client(url_guard=LOOPBACK_ONLY, max_upload_bytes=1_000_000, url_timeout=2.0)
    started = time.monotonic()
    assert_error(client.get("/api/remove", params={"url": origin + "/forever"}), 413, "over the limit")
    started = time.monotonic()
    assert_error(client.get("/api/remove", params={"url": origin + "/trickle"}), 504, "longer than 2 s")
    assert time.monotonic() - started < 8


@pytest.mark.parametrize("url, status, words", [
    ("ftp://example.com/a.jpg", 422, "http:// or https://"),
    ("file:///etc/passwd", 422, "http:// or https://"),
    ("/relative.jpg", 422, "http:// or https://"),
    ("http://user:secret@{host}/img.jpg", 422, "user name or password"),
    ("http://{host}/page.html", 415, "text/html"),
    ("http://{host}/missing", 502, "404"),
    ("http://exa mple.com/", 422, "spaces"),
    ("http://{host}:99999/", 422, "invalid url"),
    ("http://no-such-host.invalid/a.jpg", 502, "cannot resolve"),
])
def test_bad_urls_are_one_clear_line(make_client, origin, url, status, words):
    client = make_client(url_guard=LOOPBACK_ONLY)
    host = origin.split("//", 1)[1]
    target = url.replace("{host}", host).replace(f"{host}:99999", "127.0.0.1:99999")
    assert_error(client.get("/api/remove", params={"url": target}), status, words)


def test_url_requests_are_refused_without_url_or_with_both(make_client, origin, small_jpeg):
    client = make_client(url_guard=LOOPBACK_ONLY)
    assert_error(client.get("/api/remove"), 422, "'url'")
    both = client.post("/api/remove", data={"url": origin + "/img.jpg"},
                       files={"file": ("a.jpg", small_jpeg, "image/jpeg")})
    assert_error(both, 422, "not both")
    assert_error(client.post("/api/remove", data={"only_mask": "true"}), 422, "no image")


def test_nothing_of_the_clients_request_is_forwarded(make_client, origin, tmp_path):
    keys = tmp_path / "keys.jsonl"
    key = create_key(keys, "fetcher")
    client = make_client(url_guard=LOOPBACK_ONLY, api_keys=keys)
    _Origin.seen.clear()
    response = client.get("/api/remove", params={"url": origin + "/img.jpg"},
                          headers={"X-API-Key": key, "Cookie": "session=1", "X-Forwarded-For": "1.2.3.4",
                                   "Referer": "https://secret.example/"})
    assert response.status_code == 200
    ((path, headers),) = _Origin.seen
    assert path == "/img.jpg"
    assert not {"x-api-key", "authorization", "cookie", "x-forwarded-for", "referer"} & set(headers)
    assert key not in str(headers) and headers["user-agent"] == "u2seg-url-fetch"


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("100.64.0.1", False), ("169.254.169.254", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("240.0.0.1", False), ("255.255.255.255", False),
    ("::1", False), ("::", False), ("fe80::1", False), ("fc00::1", False), ("ff02::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("::ffff:8.8.8.8", True),
    ("2002:7f00:1::", False), ("2002:a00:1::", False),        # 6to4 of 127.0.0.1, 10.0.0.1
    ("64:ff9b::7f00:1", False), ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 127.0.0.1, 169.254.169.254
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),          # Teredo, client 127.0.0.1
])
def test_address_classes(address, public):
    assert _is_public(ipaddress.ip_address(address)) is public


def test_allow_private_urls_option():
    assert not UrlGuard.from_option(None).permits(ipaddress.ip_address("10.0.0.1"))
    assert UrlGuard.from_option([]).permits(ipaddress.ip_address("10.0.0.1"))
    guard = UrlGuard.from_option(["10.1.0.0/16"])
    assert guard.permits(ipaddress.ip_address("10.1.2.3"))
    assert guard.permits(ipaddress.ip_address("::ffff:10.1.2.3"))
    assert not guard.permits(ipaddress.ip_address("10.2.0.1"))
    assert guard.permits(ipaddress.ip_address("8.8.8.8"))
    with pytest.raises(ValueError, match="--allow-private-urls"):
        UrlGuard.from_option(["not-a-network"])
