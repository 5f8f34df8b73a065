"""Soak test of the HTTP service (``load_test.py --soak`` runs this): a bounded mix of valid images,
garbage, truncated images, oversized bodies, bad parameters, clients that vanish mid-upload and
slow clients that send a byte a second, against a server started here on 127.0.0.1.

    .venv/bin/python benchmarks/load_test.py --soak                 # 2,000 requests
    .venv/bin/python benchmarks/soak.py --requests 400 --json out.json

Phases: warm-up (one request per photo); a baseline of ``--baseline`` requests of the same mix
from the same clients with nobody slow (it also brings the server's memory to its working
level); then the soak, with ``--slow-clients`` slow clients trickling all the while. Reports
statuses by kind, 5xx count, failed valid requests, p50/p95/p99 of valid requests (soak vs
baseline: slow clients must not hold the others up) and the server's memory after the baseline
and after the soak. Goals: zero 5xx, no failed valid request, memory growth ≤ 5 %, valid p50
during the soak within 1.25× the baseline's. Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from load_test import Client, free_port, percentile, photos, remove_request, rss_bytes, start_server, wait_healthy

MIB = 1024 * 1024
# kind → share of the soak's requests
MIX = {"valid": 0.55, "garbage": 0.12, "truncated": 0.06, "oversized": 0.08, "bad_params": 0.09,
       "disconnect": 0.05, "wrong_type": 0.05}
EXPECTED = {"valid": {200}, "garbage": {400}, "truncated": {400}, "oversized": {413}, "bad_params": {422},
            "wrong_type": {415}, "disconnect": {None}, "slow": {408}}


def small_photos(side: int) -> list[tuple[str, bytes, str]]:
    """The load test's photos, shrunk so that 2,000 requests fit in minutes on 2 cores."""
    from PIL import Image

    out = []
    for name, data, ctype in photos():
        image = Image.open(io.BytesIO(data))
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG" if ctype == "image/jpeg" else "PNG")
        out.append((name, buffer.getvalue(), ctype))
    return out


def raw_request(host: str, port: int, head: bytes, body: bytes, timeout: float, *, send: int | None = None,
                pace: float = 0.0) -> int | None:
    """Send ``head`` then ``body`` (only ``send`` bytes of it, ``pace`` seconds apart per byte when
    set) on a new connection; the answer's status, or ``None`` when we hung up first."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(head)
        part = body if send is None else body[:send]
        try:
            if pace:
                for i in range(len(part)):
                    sock.sendall(part[i:i + 1])
                    time.sleep(pace)
            else:
                sock.sendall(part)
        except OSError:
            pass  # the server answered and closed (408, 413): read what it said
        if send is not None and not pace:
            return None  # vanish mid-upload
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return None
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="soak requests, over all clients")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--slow-clients", type=int, default=4)
    parser.add_argument("--baseline", type=int, default=300,
                        help="requests of the same mix before the soak, without slow clients")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--side", type=int, default=192, help="longest side of the photos sent")
    parser.add_argument("--upload-timeout", type=float, default=8.0)
    parser.add_argument("--max-upload-mb", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 20_000 or not 1 <= args.clients <= 32 or not 0 <= args.slow_clients <= 16:
        parser.error("--requests 1…20000, --clients 1…32, --slow-clients 0…16")

    host, port = "127.0.0.1", free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"u2seg-soak-{port}.log"
    server = start_server(port, args.workers, log, ["--upload-timeout", str(args.upload_timeout),
                                                      "--max-upload-mb", str(args.max_upload_mb)])
    print(f"server: pid {server.pid}, http://{host}:{port}, log {log}", file=sys.stderr)
    images = small_photos(args.side)
    rng = random.Random(args.seed)
    limit = int(args.max_upload_mb * MIB)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=args.requests)
    try:
        probe = Client(host, port, 60)
        wait_healthy(probe, time.monotonic() + 120, server)
        for i, photo in enumerate(images):  # warm-up
            path, body, headers = remove_request(photo, i, "png")
            status, payload = probe.request("POST", path, body, headers)
            if status != 200:
                raise SystemExit(f"soak: warm-up failed: {status} {payload[:200]!r}")

        def valid(client: Client, i: int) -> tuple[int, float]:
            path, body, headers = remove_request(images[i % len(images)], i, "png")
            t0 = time.perf_counter()
            status, _ = client.request("POST", path, body, headers)
            return status, time.perf_counter() - t0

        probe.close()
        lock = threading.Lock()
        results: Counter[tuple[str, int | None]] = Counter()
        latencies: list[float] = []
        next_index = [0]
        limit_index = [0]
        stop = threading.Event()

        def record(kind: str, status: int | None) -> None:
            with lock:
                results[(kind, status)] += 1

        def one(client: Client, i: int) -> None:
            kind = kinds[i]
            name, data, ctype = images[i % len(images)]
            if kind == "valid":
                status, seconds = valid(client, i)
                if status == 200:
                    with lock:
                        latencies.append(seconds)
                record(kind, status)
            elif kind == "garbage":
                record(kind, client.request("POST", "/api/remove", rng.randbytes(rng.randint(1, 5000)),
                                            {"Content-Type": "image/jpeg"})[0])
            elif kind == "truncated":
                cut = data[: max(8, len(data) // rng.randint(2, 10))]
                record(kind, client.request("POST", "/api/remove", cut, {"Content-Type": ctype})[0])
            elif kind == "oversized":
                big = os.urandom(limit + 1024)
                record(kind, client.request("POST", "/api/remove", big, {"Content-Type": "image/jpeg"})[0])
                client.close()  # the server may close after a 413 on a body it did not read
            elif kind == "bad_params":
                record(kind, client.request("POST", "/api/remove?threshold=7&format=gif", data,
                                            {"Content-Type": ctype})[0])
            elif kind == "wrong_type":
                record(kind, client.request("POST", "/api/remove", b"{}", {"Content-Type": "application/json"})[0])
            elif kind == "disconnect":
                head = (f"POST /api/remove HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n").encode()
                record(kind, raw_request(host, port, head, data, 30, send=len(data) // 2))

        def take() -> int | None:
            with lock:
                if next_index[0] >= limit_index[0]:
                    return None
                next_index[0] += 1
                return next_index[0] - 1

        def worker() -> None:
            client = Client(host, port, 120)
            try:
                while (i := take()) is not None:
                    try:
                        one(client, i)
                    except OSError as exc:
                        record(kinds[i], None if kinds[i] == "disconnect" else -1)
                        print(f"soak: {kinds[i]} request {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
                        client.close()
            finally:
                client.close()

        def slow_worker() -> None:
            head = (f"POST /api/remove HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: 100000\r\n\r\n").encode()
            while not stop.is_set():
                try:
                    record("slow", raw_request(host, port, head, b"\xff" * 100000, 60, send=10_000, pace=1.0))
                except OSError:
                    record("slow", -1)

        peak = [0]
        quarters: dict[int, float] = {}   # RSS (MiB) when 25/50/75 % of the soak's requests were answered

        def sample() -> None:
            while not stop.wait(0.2):
                now = rss_bytes(server.pid)
                if now:
                    peak[0] = max(peak[0], now["VmRSS"])
                    with lock:
                        answered = sum(c for (k, _), c in results.items() if k != "slow")
                    for q in (25, 50, 75):
                        if q not in quarters and answered >= args.requests * q / 100:
                            quarters[q] = round(now["VmRSS"] / MIB, 1)

        def run_clients(count: int) -> float:
            limit_index[0] += count
            started = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - started

        # Baseline: the same clients and mix, nobody slow; it also brings memory to its working level.
        kinds[:0] = rng.choices(list(MIX), weights=list(MIX.values()), k=args.baseline)
        run_clients(args.baseline)
        baseline = latencies[:]
        latencies.clear()
        baseline_results = results.copy()
        results.clear()
        rss_before = rss_bytes(server.pid)

        slow = [threading.Thread(target=slow_worker, daemon=True) for _ in range(args.slow_clients)]
        sampler = threading.Thread(target=sample, daemon=True)
        for t in [*slow, sampler]:
            t.start()
        time.sleep(0.5)  # the slow clients are connected before the others start
        wall = run_clients(args.requests)
        stop.set()
        for t in slow:
            t.join(args.upload_timeout + 5)
        rss_after = rss_bytes(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()

    by_kind: dict[str, dict[str, int]] = {}
    unexpected = 0
    for (kind, status), count in sorted(results.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        by_kind.setdefault(kind, {})[str(status)] = count
        if status not in EXPECTED[kind]:
            unexpected += count
    five_xx = sum(c for (_, s), c in (results + baseline_results).items() if s is not None and s >= 500)
    failed_valid = sum(c for (k, s), c in results.items() if k == "valid" and s != 200)
    growth = (rss_after["VmRSS"] - rss_before["VmRSS"]) / rss_before["VmRSS"] if rss_before and rss_after else None
    # A leak keeps growing; a warm-up (allocator arenas, the first batch of two) steps up once.
    half = quarters.get(50)
    late_growth = (rss_after["VmRSS"] / MIB - half) / half if half and rss_after else None
    p50_ratio = percentile(latencies, 0.5) / percentile(baseline, 0.5) if latencies and baseline else None
    summary = {
        "requests": next_index[0] - args.baseline, "baseline_requests": args.baseline, "wall_s": round(wall, 1), "clients": args.clients,
        "slow_clients": args.slow_clients, "statuses_by_kind": by_kind, "unexpected_statuses": unexpected,
        "5xx": five_xx, "failed_valid": failed_valid,
        "valid_latency_s": {q: round(percentile(latencies, v), 3) for q, v in (("p50", .5), ("p95", .95), ("p99", .99))},
        "baseline_latency_s": {q: round(percentile(baseline, v), 3) for q, v in (("p50", .5), ("p95", .95))},
        "valid_p50_vs_baseline": round(p50_ratio, 2) if p50_ratio else None,
        "server_rss_mib": {"after_baseline": round(rss_before["VmRSS"] / MIB, 1) if rss_before else None,
                           "after_soak": round(rss_after["VmRSS"] / MIB, 1) if rss_after else None,
                           "at_25_50_75_pct": [quarters.get(q) for q in (25, 50, 75)],
                           "peak": round(peak[0] / MIB, 1), "growth_pct": round(100 * growth, 2) if growth is not None else None,
                           "growth_second_half_pct": round(100 * late_growth, 2) if late_growth is not None else None},
        "workers": args.workers, "photo_side": args.side, "cpus": os.cpu_count(),
    }
    goals = {"zero_5xx": five_xx == 0, "no_failed_valid": failed_valid == 0,
             "memory_growth_le_5pct": growth is not None and growth <= 0.05,
             "memory_flat_in_second_half": late_growth is not None and late_growth <= 0.05,
             "slow_clients_do_not_block": p50_ratio is not None and p50_ratio <= 1.25}
    summary["goals"] = goals
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if all(goals.values()) and unexpected == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
