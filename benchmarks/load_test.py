"""Load test of the HTTP service, on this machine only (loopback addresses; anything else is refused).

    .venv/bin/python benchmarks/load_test.py                      # starts a server, 4 clients × 40 requests
    .venv/bin/python benchmarks/load_test.py --clients 8 --requests 80 --workers 2
    .venv/bin/python benchmarks/load_test.py --url http://127.0.0.1:7000 --server-pid 12345
    .venv/bin/python benchmarks/load_test.py --soak               # the soak: benchmarks/soak.py

It starts ``python -m u2seg.apps.server`` on a free loopback port (unless ``--url`` is given), sends
one warm-up request per photo (not counted), then ``--requests`` requests from ``--clients`` concurrent
clients, alternating multipart and raw-body uploads of real photos that scikit-image ships, and
reports requests/s, latency p50/p95/max, errors by status, and the server's resident memory
(RSS) before and after the run and its peak during it (Linux /proc). The run is bounded in count
and in time (``--max-seconds``); it stops by itself. Goal: zero errors and flat memory.
"""

from __future__ import annotations

import argparse
import http.client
import io
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "immunohistochemistry")


def loopback_only(host: str) -> None:
    """Refuse any target that is not this machine's loopback interface."""
    name = host.strip("[]")
    if name.lower() == "localhost":
        return
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        sys.exit(f"load_test: refusing host {host!r}: give a loopback address (127.0.0.1, ::1 or localhost)")
    if not address.is_loopback:
        sys.exit(f"load_test: refusing non-loopback address {host}: this load test only targets this machine")


def photos() -> list[tuple[str, bytes, str]]:
    """(file name, encoded bytes, content type) of scikit-image's bundled photos, JPEG and PNG."""
    import numpy as np
    from PIL import Image
    from skimage import data

    out = []
    for i, name in enumerate(PHOTOS):
        array = np.asarray(getattr(data, name)())
        image = Image.fromarray(array)
        buffer = io.BytesIO()
        if i % 2 == 0:
            image.convert("RGB").save(buffer, "JPEG", quality=90)
            out.append((f"{name}.jpg", buffer.getvalue(), "image/jpeg"))
        else:
            image.save(buffer, "PNG")
            out.append((f"{name}.png", buffer.getvalue(), "image/png"))
    return out


def rss_bytes(pid: int) -> dict[str, int] | None:
    """Current (VmRSS) and peak (VmHWM) resident memory of ``pid``, from /proc."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):  # one reconnect: the server may close an idle keep-alive connection
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def remove_request(photo: tuple[str, bytes, str], index: int, fmt: str) -> tuple[str, bytes, dict[str, str]]:
    """Even requests: multipart with form fields; odd ones: raw body with query parameters."""
    name, data, ctype = photo
    if index % 2 == 0:
        boundary = f"u2segload{index:08d}"
        fields = {"format": fmt}
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return "/api/remove", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return f"/api/remove?format={fmt}", data, {"Content-Type": ctype}


def start_server(port: int, workers: int, log: Path, extra: list[str] | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("U2SEG_OFFLINE", "1")  # the benchmark never downloads: the weights must be cached
    command = [sys.executable, "-m", "u2seg.apps.server", "--host", "127.0.0.1", "--port", str(port),
               "--model", "u2netp", "--workers", str(workers), "--log-level", "warning", *(extra or [])]
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=REPO)


def wait_healthy(client: Client, deadline: float, server: subprocess.Popen | None) -> None:
    while True:
        try:
            status, _ = client.request("GET", "/healthz")
            if status == 200:
                return
        except OSError:
            client.close()
        if server is not None and server.poll() is not None:
            raise SystemExit(f"load_test: the server exited with status {server.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit("load_test: the server did not become healthy in time")
        time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--soak" in argv:  # the soak has its own options: benchmarks/soak.py --help
        import soak

        argv.remove("--soak")
        return soak.main(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an already running server (loopback only); default: start one")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's pid, for its memory")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=40, help="total, over all clients")
    parser.add_argument("--workers", type=int, default=1, help="the started server's --workers")
    parser.add_argument("--format", choices=("png", "webp"), default="png")
    parser.add_argument("--max-seconds", type=float, default=600, help="stop sending after this long")
    parser.add_argument("--timeout", type=float, default=120, help="per request, seconds")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 10_000:
        parser.error("--clients must be 1…64 and --requests 1…10000")

    server: subprocess.Popen | None = None
    if args.url:
        url = urllib.parse.urlsplit(args.url)
        if url.scheme != "http" or not url.hostname:
            parser.error("--url must look like http://127.0.0.1:PORT")
        host, port = url.hostname, url.port or 80
        loopback_only(host)
        pid = args.server_pid
    else:
        host, port = "127.0.0.1", free_port()
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"u2seg-load-test-{port}.log"
        server = start_server(port, args.workers, log)
        pid = server.pid
        print(f"server: pid {pid}, http://{host}:{port}, {args.workers} worker(s), log {log}", file=sys.stderr)

    images = photos()
    try:
        probe = Client(host, port, args.timeout)
        wait_healthy(probe, time.monotonic() + 120, server)
        # Warm-up, not counted: one request per photo (model load, first-time allocations per size).
        cold = None
        for i, photo in enumerate(images):
            started = time.perf_counter()
            path, body, headers = remove_request(photo, i, args.format)
            status, payload = probe.request("POST", path, body, headers)
            cold = time.perf_counter() - started if cold is None else cold
            if status != 200:
                raise SystemExit(f"load_test: warm-up request failed: {status} {payload[:200]!r}")
        probe.close()
        rss_before = rss_bytes(pid) if pid else None

        lock = threading.Lock()
        next_index = [0]
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        peak_rss = [rss_before["VmRSS"] if rss_before else 0]
        stop_at = time.monotonic() + args.max_seconds
        done = threading.Event()

        def take() -> int | None:
            with lock:
                if next_index[0] >= args.requests or time.monotonic() > stop_at:
                    return None
                next_index[0] += 1
                return next_index[0] - 1

        def worker() -> None:
            client = Client(host, port, args.timeout)
            try:
                while (i := take()) is not None:
                    path, body, headers = remove_request(images[i % len(images)], i, args.format)
                    t0 = time.perf_counter()
                    try:
                        status, payload = client.request("POST", path, body, headers)
                    except OSError as exc:
                        with lock:
                            errors[type(exc).__name__] += 1
                        client.close()
                        continue
                    elapsed = time.perf_counter() - t0
                    with lock:
                        if status == 200 and payload[:4] in (b"\x89PNG", b"RIFF"):
                            latencies.append(elapsed)
                        else:
                            errors[str(status)] += 1
            finally:
                client.close()

        def sample_memory() -> None:
            while not done.wait(0.1):
                sample = rss_bytes(pid) if pid else None
                if sample:
                    peak_rss[0] = max(peak_rss[0], sample["VmRSS"])

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        t_start = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_start
        done.set()
        sampler.join()
        rss_after = rss_bytes(pid) if pid else None
        health_status, health = Client(host, port, 10).request("GET", "/healthz")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()

    mib = 1024 * 1024
    summary = {
        "clients": args.clients, "requests": next_index[0], "ok": len(latencies),
        "errors": dict(errors), "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2) if wall else None,
        "latency_s": {"p50": round(percentile(latencies, 0.50), 3), "p95": round(percentile(latencies, 0.95), 3),
                      "max": round(max(latencies), 3) if latencies else None},
        "first_request_s": round(cold or 0.0, 2),
        "server_rss_mib": None if not rss_before or not rss_after else {
            "before": round(rss_before["VmRSS"] / mib, 1), "after": round(rss_after["VmRSS"] / mib, 1),
            "peak_during": round(peak_rss[0] / mib, 1),
            "growth": round((rss_after["VmRSS"] - rss_before["VmRSS"]) / mib, 1)},
        "server_workers": json.loads(health).get("workers") if health_status == 200 else None,
        "images": [name for name, _, _ in images], "format": args.format, "cpus": os.cpu_count(),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if not errors and len(latencies) == next_index[0] else 1


if __name__ == "__main__":
    sys.exit(main())
