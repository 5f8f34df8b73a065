"""``u2seg remove --engine ray``: the same folder job on a local Ray started by the test
(``ray.init(num_cpus=2)``), byte-identical to the local engine, with the driver's manifest."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from u2seg.cli import main
from u2seg.infer.manifest import MANIFEST_NAME, read_manifest

ray = pytest.importorskip("ray", reason="the Ray extra: pip install 'u2seg[ray]' (make test installs it)")


@pytest.fixture(scope="module")
def cluster(pretrained_home: Path):
    # The workers inherit the environment at start-up: the test home must be set before.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("U2SEG_HOME", str(pretrained_home))
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from skimage import data

    folder = tmp_path_factory.mktemp("in")
    names = ("coffee", "astronaut", "chelsea", "rocket", "camera")
    for i in range(7):
        image = Image.fromarray(np.asarray(getattr(data, names[i % len(names)])())).convert("RGB")
        image = image.resize((150 + 10 * i, 110 + 6 * i))
        (folder / "sub").mkdir(exist_ok=True)
        image.save(folder / ("sub" if i % 2 else ".") / f"img{i}.{'jpg' if i % 3 == 0 else 'png'}")
    (folder / "broken.png").write_bytes(b"not an image at all")
    return folder


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME}


def _latest(folder: Path) -> dict[str, dict]:
    records, torn = read_manifest(folder / MANIFEST_NAME)
    assert not torn
    return {r.output: r for r in records}


def test_ray_engine_matches_the_local_engine_byte_for_byte(cluster, inputs, tmp_path, capsys):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert main(["remove", str(inputs), "-o", str(local), "-m", "u2netp", "--workers", "2"]) == 1  # broken.png
    report = tmp_path / "report.jsonl"
    code = main(["remove", str(inputs), "-o", str(on_ray), "-m", "u2netp", "--engine", "ray", "--batch-size", "3",
                 "--report", str(report)])
    assert code == 1
    err = capsys.readouterr().err
    assert "broken.png: not an image" in err and "wrote 7 file(s)" in err

    expected = _outputs(local)
    assert len(expected) == 7 and (local / "sub" / "img1.png").exists()
    assert _outputs(on_ray) == expected   # same files, same bytes; nothing else in OUT (no temporaries)

    latest = _latest(on_ray)
    done = [r for r in latest.values() if r.status == "done"]
    assert len(done) == 7 and latest[str(on_ray / "broken.png")].status == "failed"
    for record in done:  # the facts the tasks read, for the next run's decisions
        source = Path(record.input)
        assert record.input_bytes == source.stat().st_size and len(record.input_sha256) == 64
        assert record.model == "u2netp" and 0 <= record.score <= 1 and record.seconds["network"] > 0
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(lines) == 8 and {line["status"] for line in lines} == {"done", "failed"}

    # A rerun has nothing left to do but the failure, which it leaves alone.
    before = (on_ray / MANIFEST_NAME).read_bytes()
    assert main(["remove", str(inputs), "-o", str(on_ray), "-m", "u2netp", "--engine", "ray"]) == 1
    assert "7 file(s) already done" in capsys.readouterr().err
    assert (on_ray / MANIFEST_NAME).read_bytes() == before


def test_a_run_cut_short_is_finished_by_the_rerun(cluster, inputs, tmp_path, capsys):
    """The driver records ``started`` before the cluster writes anything: outputs it never got
    ``done`` records for (a driver killed mid-run) are this job's, so a rerun redoes them."""
    out = tmp_path / "out"
    assert main(["remove", str(inputs), "-o", str(out), "-m", "u2netp", "--engine", "ray"]) == 1
    full = _outputs(out)
    manifest = out / MANIFEST_NAME
    lines = manifest.read_bytes().splitlines(keepends=True)
    started = [line for line in lines if b'"status":"started"' in line]
    assert len(started) == 8
    # As if killed after two images: every "started" line, two "done" lines, a torn third.
    done = [line for line in lines if b'"status":"done"' in line]
    manifest.write_bytes(b"".join(started + done[:2]) + done[2][:40])
    (out / "sub" / "img1.png").unlink()   # whichever it was, it is redone
    assert main(["remove", str(inputs), "-o", str(out), "-m", "u2netp", "--engine", "ray"]) == 1
    err = capsys.readouterr().err
    assert "cut short" in err and "wrote 5 file(s)" in err
    assert _outputs(out) == full


def test_python_function_for_ray_users(cluster, inputs, tmp_path):
    from u2seg.infer.ray_engine import remove_with_ray

    errors: list[str] = []
    report = remove_with_ray([inputs / "sub"], tmp_path / "masks", model="u2netp", only_mask=True,
                             on_error=errors.append)
    assert not errors and report.processed == 3 and len(report.written) == 3
    local = tmp_path / "local"
    main(["remove", str(inputs / "sub"), "-o", str(local), "-m", "u2netp", "--only-mask"])
    assert _outputs(tmp_path / "masks") == _outputs(local)
    mask = Image.open(tmp_path / "masks" / "img1.png")
    assert mask.mode == "L" and mask.size == (160, 116)
    again = remove_with_ray([inputs / "sub"], tmp_path / "masks", model="u2netp", only_mask=True)
    assert again.processed == 0


def test_ray_options_need_the_ray_engine(tmp_path, capsys):
    assert main(["remove", str(tmp_path), "-o", str(tmp_path / "o"), "--ray-address", "auto"]) == 2
    assert "--ray-address and --ray-actors need --engine ray" in capsys.readouterr().err
    assert main(["remove", "-", "--engine", "ray"]) == 2
    assert "--engine ray runs folder jobs" in capsys.readouterr().err


def test_inputs_given_as_fsspec_urls(cluster, inputs, tmp_path, capsys):
    """``s3://``, ``gs://`` … through fsspec; ``file://`` here: the same outputs as from the path,
    and a rerun finds them done (the URL's size and mtime, as the tasks read them)."""
    url = (inputs / "sub").as_uri()
    assert url.startswith("file://")
    by_path, by_url = tmp_path / "path", tmp_path / "url"
    assert main(["remove", str(inputs / "sub"), "-o", str(by_path), "-m", "u2netp"]) == 0
    assert main(["remove", url, "-o", str(by_url), "-m", "u2netp", "--engine", "ray"]) == 0
    assert _outputs(by_url) == _outputs(by_path) and len(_outputs(by_url)) == 3
    assert all(r.input.startswith("file://") for r in _latest(by_url).values())
    capsys.readouterr()
    assert main(["remove", url, "-o", str(by_url), "-m", "u2netp", "--engine", "ray"]) == 0
    assert "3 file(s) already done" in capsys.readouterr().err


def test_review_copies_and_relative_paths_on_ray(cluster, inputs, tmp_path, monkeypatch):
    """``--review``: the workers write the copies too, and the driver's records name them. The paths
    are relative: Ray's workers start in the folder Ray started in (here the test's first folder,
    not ``tmp_path``), yet inputs, outputs and review copies name the driver's files, and the
    manifest names them as the local engine's does."""
    import shutil

    shutil.copytree(inputs / "sub", tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    assert main(["remove", "in", "-o", "out", "-m", "u2netp", "--engine", "ray",
                 "--review", "review", "--review-below", "1.0"]) == 0
    out, review = tmp_path / "out", tmp_path / "review"
    copies = sorted(p.relative_to(review) for p in review.rglob("*.png"))
    assert copies == sorted(p.relative_to(out) for p in out.rglob("*.png")) and len(copies) == 3
    records = _latest(out)
    assert sorted(records) == ["out/img1.png", "out/img3.png", "out/img5.png"]
    assert sorted(r.input for r in records.values()) == ["in/img1.png", "in/img3.jpg", "in/img5.png"]
    for record in records.values():
        assert record.status == "done" and Path(record.review).read_bytes() == Path(record.output).read_bytes()
