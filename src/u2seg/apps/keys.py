"""API keys for the service, and limits per key.

    u2seg keys create alice --file keys.jsonl      # prints the key once, as the last line
    u2seg serve --api-keys keys.jsonl --host 0.0.0.0

The keys file holds one JSON object per line: the key's name, the SHA-256 of the key (never the
key itself), when it was made, and optional limits (``requests_per_minute``, ``concurrent``). Keys
are 256 random bits, so an unsalted hash is enough: nobody can guess one from its hash. A
presented key is hashed and compared with every stored hash in constant time (no early exit), so
timing tells nothing about which bytes matched. The service rereads the file when it changes:
keys are added and revoked without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import U2SegError
from ..fileio import write_bytes_atomic

__all__ = ["KeyRecord", "KeysFileError", "KeyStore", "LimitExceeded", "Limiter", "create_key", "read_keys",
           "revoke_key", "KEY_PREFIX"]

KEY_PREFIX = "u2s_"                      # recognisable in logs and by secret scanners
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
RELOAD_INTERVAL_S = 1.0                  # how often the service looks at the file's mtime


class KeysFileError(U2SegError):
    """The keys file cannot be read, or a line of it is not a key record."""


@dataclass(frozen=True)
class KeyRecord:
    name: str
    sha256: str
    created: str = ""
    requests_per_minute: int | None = None
    concurrent: int | None = None

    def to_json(self) -> str:
        record = {"name": self.name, "sha256": self.sha256, "created": self.created}
        if self.requests_per_minute is not None:
            record["requests_per_minute"] = self.requests_per_minute
        if self.concurrent is not None:
            record["concurrent"] = self.concurrent
        return json.dumps(record, separators=(",", ":"))


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def _positive(value: object, what: str, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise KeysFileError(f"{where}: {what} must be a positive whole number, got {value!r}")
    return value


def read_keys(path: str | Path) -> list[KeyRecord]:
    """The records of a keys file (blank lines and ``#`` comments skipped); one clear line naming
    the file and line for anything else."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeysFileError(f"keys file {path} does not exist; make one with 'u2seg keys create NAME --file {path}'") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"cannot read keys file {path}: {exc}") from None
    records: list[KeyRecord] = []
    names: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            raise KeysFileError(f"{where}: not a JSON key record") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not isinstance(raw.get("sha256"), str):
            raise KeysFileError(f"{where}: a key record needs 'name' and 'sha256'")
        if not re.fullmatch(r"[0-9a-f]{64}", raw["sha256"]):
            raise KeysFileError(f"{where}: 'sha256' must be 64 lower-case hex digits")
        if raw["name"] in names:
            raise KeysFileError(f"{where}: key name {raw['name']!r} appears twice")
        names.add(raw["name"])
        records.append(KeyRecord(
            name=raw["name"], sha256=raw["sha256"], created=str(raw.get("created", "")),
            requests_per_minute=_positive(raw.get("requests_per_minute"), "requests_per_minute", where),
            concurrent=_positive(raw.get("concurrent"), "concurrent", where)))
    return records


def create_key(path: str | Path, name: str, *, requests_per_minute: int | None = None,
               concurrent: int | None = None) -> str:
    """Make a new key called ``name``, append its hash to ``path`` (created with mode 0600) and
    return the key: the only time it exists outside the client that keeps it."""
    path = Path(path)
    if not NAME_PATTERN.match(name):
        raise KeysFileError(f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
    for what, value in (("--rpm", requests_per_minute), ("--concurrent", concurrent)):
        if value is not None and value < 1:
            raise KeysFileError(f"{what} must be at least 1, got {value}")
    existing = read_keys(path) if path.exists() else []
    if any(record.name == name for record in existing):
        raise KeysFileError(f"{path} already has a key named {name!r}; revoke it first or choose another name")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = KeyRecord(name=name, sha256=_digest(key),
                       created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       requests_per_minute=requests_per_minute, concurrent=concurrent)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Appending one line keeps every other record untouched, even if two of these run at once.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        if out.tell() > 0 and not path.read_bytes().endswith(b"\n"):
            out.write("\n")
        out.write(record.to_json() + "\n")
    return key


def revoke_key(path: str | Path, name: str) -> None:
    """Remove the key ``name`` from ``path`` (the file is replaced atomically)."""
    path = Path(path)
    records = read_keys(path)
    if not any(record.name == name for record in records):
        raise KeysFileError(f"{path} has no key named {name!r}")
    text = "".join(record.to_json() + "\n" for record in records if record.name != name)
    write_bytes_atomic(text.encode("utf-8"), path)


class KeyStore:
    """The keys of a keys file, reread when the file changes (checked at most once a second).

    A file that turns unreadable while the service runs keeps the last good keys (and is logged);
    one that is missing or malformed at start-up is an error.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records = read_keys(self.path)
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()
        self.last_error: str | None = None

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def records(self) -> list[KeyRecord]:
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= RELOAD_INTERVAL_S:
                self._checked = now
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    try:
                        self._records = read_keys(self.path)
                        self.last_error = None
                    except KeysFileError as exc:
                        self.last_error = str(exc)
                    self._stamp = stamp
            return self._records

    def authenticate(self, presented: str | None) -> KeyRecord | None:
        """The record of the presented key, or ``None``: every stored hash is compared, in
        constant time, whatever matches."""
        if not presented:
            return None
        digest = _digest(presented)
        found = None
        for record in self.records():
            if hmac.compare_digest(digest, record.sha256):
                found = record
        return found


class LimitExceeded(Exception):
    """Over a key's limit: answer 429 with ``Retry-After: retry_after`` (whole seconds)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Usage:
    tokens: float
    updated: float
    running: int = 0


@dataclass
class Limiter:
    """Requests per minute (a token bucket: bursts up to the minute's allowance, refilled evenly)
    and concurrent requests, per key. A key's own limits win over these defaults; ``None`` is no
    limit."""

    requests_per_minute: int | None = None
    concurrent: int | None = None
    _usage: dict[str, _Usage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def limits(self, record: KeyRecord) -> tuple[int | None, int | None]:
        return (record.requests_per_minute or self.requests_per_minute, record.concurrent or self.concurrent)

    @contextmanager
    def hold(self, record: KeyRecord, now: float | None = None) -> Iterator[None]:
        """Count one request of ``record`` while the block runs; :class:`LimitExceeded` if over."""
        rpm, concurrent = self.limits(record)
        if rpm is None and concurrent is None:
            yield
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            usage = self._usage.setdefault(record.name, _Usage(tokens=float(rpm or 0), updated=now))
            if concurrent is not None and usage.running >= concurrent:
                raise LimitExceeded(f"key {record.name!r} already has {concurrent} request(s) running", 1)
            if rpm is not None:
                usage.tokens = min(float(rpm), usage.tokens + (now - usage.updated) * rpm / 60.0)
                usage.updated = now
                if usage.tokens < 1.0:
                    wait = (1.0 - usage.tokens) * 60.0 / rpm
                    raise LimitExceeded(f"key {record.name!r} is over its limit of {rpm} requests per minute",
                                        max(1, math.ceil(wait)))
                usage.tokens -= 1.0
            usage.running += 1
        try:
            yield
        finally:
            with self._lock:
                usage.running -= 1
