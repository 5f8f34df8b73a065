"""Folder jobs keep a manifest: reruns do only what is missing, failed or changed, never replace a
file the job did not write, and a run killed with SIGKILL at any moment then rerun gives the same
bytes as an uninterrupted one (real processes, real kills)."""

from __future__ import annotations

import json
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
from u2seg.infer.manifest import MANIFEST_NAME, read_manifest, summarise

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from skimage import data

    folder = tmp_path_factory.mktemp("in")
    names = ("coffee", "astronaut", "chelsea", "rocket", "camera", "immunohistochemistry")
    for i in range(18):
        array = np.asarray(getattr(data, names[i % len(names)])())
        image = Image.fromarray(array).convert("RGB").resize((160 + 8 * i, 120 + 4 * i))
        if i % 3:
            image.save(folder / f"img{i:02d}.png")
        else:  # a sub-folder and JPEGs too
            (folder / "sub").mkdir(exist_ok=True)
            image.save(folder / "sub" / f"img{i:02d}.jpg", quality=90)
    return folder


def _run(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "u2seg", "remove", *args, "-m", "u2netp"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != MANIFEST_NAME}


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory, pretrained_home) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference")
    env = {**os.environ, "U2SEG_HOME": str(pretrained_home)}
    process = _run(str(inputs), "-o", str(out), "--workers", "2", env=env)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    outputs = _outputs(out)
    assert len(outputs) == 18
    return outputs


@pytest.mark.parametrize("kill_after, batch", [(1, 1), (7, 3), (13, 2)])
def test_kill_9_then_rerun_gives_the_uninterrupted_bytes(inputs, reference, tmp_path, pretrained_home,
                                                          kill_after, batch):
    out = tmp_path / "out"
    env = {**os.environ, "U2SEG_HOME": str(pretrained_home)}
    process = _run(str(inputs), "-o", str(out), "--batch-size", str(batch), env=env)
    manifest = out / MANIFEST_NAME
    deadline = time.monotonic() + 300
    while process.poll() is None:
        written = manifest.read_text().count('"status":"done"') if manifest.exists() else 0
        if written >= kill_after:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    interrupted = _outputs(out)
    assert 0 < len(interrupted) < 18 or kill_after >= 13

    rerun = _run(str(inputs), "-o", str(out), "--batch-size", "1", "--workers", "1", env=env)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert _outputs(out) == reference                       # byte for byte, whatever the batching
    leftovers = [p.name for p in out.rglob("*") if p.is_file() and p.suffix != ".png" and p.name != MANIFEST_NAME]
    assert leftovers == []                                  # no temporary or lock files
    records, torn = read_manifest(manifest)
    assert not torn and records
    summary = summarise(manifest)
    assert summary["done"] == 18 and summary["failed"] == 0 and summary["in progress or interrupted"] == 0


def test_reruns_skip_what_is_done_and_redo_what_changed(inputs, tmp_path, use_pretrained_home, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("img01.png", "img02.png"):
        (src / name).write_bytes((inputs / name).read_bytes())
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["remove", str(src), "-o", str(out), "-m", "u2netp"]) == 1
    first = _outputs(out)
    assert set(first) == {"img01.png", "img02.png"}
    capsys.readouterr()

    assert main(["remove", str(src), "-o", str(out), "-m", "u2netp"]) == 1     # nothing to do but the failure
    err = capsys.readouterr().err
    assert "2 file(s) already done" in err and "1 file(s) failed before" in err

    # Touched but identical: still done. Changed content: redone.
    os.utime(src / "img01.png")
    Image.open(inputs / "img04.png").save(src / "img02.png")
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["remove", str(src), "-o", str(out), "-m", "u2netp"]) == 1
    assert "1 file(s) already done" in capsys.readouterr().err
    assert (out / "img01.png").stat().st_mtime_ns == mtimes["img01.png"]
    assert (out / "img02.png").read_bytes() != first["img02.png"]

    # Other settings: everything redone. --retry-failed: the failure is tried again.
    assert main(["remove", str(src), "-o", str(out), "-m", "u2netp", "--only-mask"]) == 1
    assert Image.open(out / "img01.png").mode == "L"
    capsys.readouterr()
    assert main(["remove", str(src), "-o", str(out), "-m", "u2netp", "--only-mask", "--retry-failed"]) == 1
    assert "broken.png" in capsys.readouterr().err

    summary = json.loads(subprocess.run([sys.executable, "-m", "u2seg", "jobs", "status", str(out), "--json"],
                                        capture_output=True, text=True, check=True, cwd=REPO).stdout)
    assert summary["done"] == 2 and summary["failed"] == 1 and summary["outputs"] == 3


def test_files_the_job_did_not_write_are_never_replaced(inputs, tmp_path, use_pretrained_home, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "img01.png").write_bytes((inputs / "img01.png").read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "img01.png").write_bytes(b"precious")
    for extra in ([], ["--force"]):
        assert main(["remove", str(src), "-o", str(out), "-m", "u2netp", *extra]) == 0
        assert (out / "img01.png").read_bytes() == b"precious"
        assert "not written by this job" in capsys.readouterr().err
    assert main(["remove", str(src), "-o", str(out), "-m", "u2netp", "--overwrite"]) == 0
    assert Image.open(out / "img01.png").mode == "RGBA"
    # Now the job owns it: --force redoes it without --overwrite.
    before = (out / "img01.png").stat().st_mtime_ns
    assert main(["remove", str(src), "-o", str(out), "-m", "u2netp", "--force"]) == 0
    assert (out / "img01.png").stat().st_mtime_ns != before


def test_a_torn_last_line_is_reported_and_dropped(inputs, tmp_path, use_pretrained_home, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "img01.png").write_bytes((inputs / "img01.png").read_bytes())
    out = tmp_path / "out"
    assert main(["remove", str(src), "-o", str(out), "-m", "u2netp"]) == 0
    manifest = out / MANIFEST_NAME
    with manifest.open("a") as f:
        f.write('{"input": "in/img01.png", "status": "do')       # a crash in the middle of a line
    (out / ".img01.png.abcd1234.tmp").write_bytes(b"half")       # and of an atomic write
    capsys.readouterr()
    assert main(["remove", str(src), "-o", str(out), "-m", "u2netp"]) == 0
    assert "cut short" in capsys.readouterr().err
    records, torn = read_manifest(manifest)
    assert not torn and all(r.status in ("started", "done") for r in records)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "img01.png"]
