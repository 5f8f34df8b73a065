"""Confidence scores, --report/--review, the server's header and the u2netp+u2net cascade, with the
real pretrained weights on real photos and synthetic images with exact masks."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from u2seg.cli import main
from u2seg.infer.confidence import estimate_confidence
from u2seg.infer.records import ImageRecord


def test_the_score_follows_the_signals():
    clean = np.zeros((64, 64), np.float32)
    clean[16:48, 16:48] = 1.0
    assert estimate_confidence(clean).score > 0.99
    unsure = np.full((64, 64), 0.5, np.float32)
    assert estimate_confidence(unsure).score < 0.01
    soft = clean * 0.96 + 0.02   # 2 % unsure everywhere
    assert 0.2 < estimate_confidence(soft).score < estimate_confidence(clean).score
    empty = np.zeros((64, 64), np.float32)
    full = np.ones((64, 64), np.float32)
    assert estimate_confidence(empty).score <= 0.3 and estimate_confidence(full).score <= 0.3
    cut = np.zeros((64, 64), np.float32)
    cut[:, :32] = 1.0   # an object cut by the frame on three sides
    assert estimate_confidence(cut).score < estimate_confidence(clean).score
    flipped = estimate_confidence(clean, flip_disagreement=0.1)
    assert flipped.score < estimate_confidence(clean).score and flipped.flip_disagreement == 0.1


def test_the_score_ranks_masks_by_their_true_error(predictor):
    """On held-out synthetic images with exact masks, (1 − score) and the mask's MAE rise together
    (BENCHMARKS.md has the larger run)."""
    from scipy.stats import spearmanr

    from u2seg.data.synth import synth_sample
    from u2seg.infer.removal import remove

    scores, errors = [], []
    for i in range(40):
        sample = synth_sample(i, size=320, seed=9001)
        mask = remove(Image.fromarray(sample.image), predictor=predictor, only_mask=True)
        scores.append(mask.info["u2seg_confidence"]["score"])
        errors.append(float(np.abs(np.asarray(mask, np.float32) / 255 - (np.asarray(sample.mask) > 0)).mean()))
    rho = spearmanr([1 - s for s in scores], errors).statistic
    assert rho > 0.5, rho


@pytest.fixture
def photos(tmp_path: Path, coffee: np.ndarray) -> Path:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(coffee).save(folder / "coffee.jpg", quality=92)
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(folder / "sub" / "flat.png")  # no object at all
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def test_report_and_review(use_pretrained_home, photos, tmp_path, capsys):
    out, review, report = tmp_path / "out", tmp_path / "review", tmp_path / "report.jsonl"
    code = main(["remove", str(photos), "-o", str(out), "-m", "u2netp", "--report", str(report),
                 "--review", str(review)])
    assert code == 1  # the broken file
    records = {Path(r.input).name: r for r in map(ImageRecord.from_json, report.read_text().splitlines())}
    assert set(records) == {"coffee.jpg", "flat.png", "broken.jpg"}
    coffee, flat, broken = records["coffee.jpg"], records["flat.png"], records["broken.jpg"]
    assert coffee.status == "done" and coffee.size == [600, 400] and coffee.model == "u2netp"
    assert coffee.score > 0.7 and coffee.review is None and coffee.output == str(out / "coffee.png")
    assert {"decode", "network", "encode"} <= set(coffee.seconds)
    assert flat.score < 0.5 and flat.review == str(review / "sub" / "flat.png")
    assert (review / "sub" / "flat.png").read_bytes() == (out / "sub" / "flat.png").read_bytes()
    assert not (review / "coffee.png").exists()
    assert broken.status == "failed" and "not an image" in broken.error
    assert broken.output == str(out / "broken.png") and not (out / "broken.png").exists()  # what it was for
    assert "wrote 2 file(s)" in capsys.readouterr().err

    # A second run appends; --review-below moves the bar.
    assert main(["remove", str(photos / "coffee.jpg"), "-o", str(out), "-m", "u2netp", "--force",
                 "--report", str(report), "--review", str(review), "--review-below", "0.99"]) == 0
    lines = report.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["review"] == str(review / "coffee.png")


@pytest.mark.parametrize("argv, words", [
    (["--report", "r.jsonl", "-"], "need files"),
    (["--review-below", "0.3", "X", "-o", "out"], "needs --review"),
    (["--review", "rv", "--review-below", "1.5", "X", "-o", "out"], "between 0 and 1"),
])
def test_confidence_options_are_checked(use_pretrained_home, tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(["remove", *argv]) == 2
    assert words in capsys.readouterr().err


def test_flip_feeds_the_score(use_pretrained_home, photos, tmp_path):
    report = tmp_path / "r.jsonl"
    assert main(["remove", str(photos / "coffee.jpg"), "-o", str(tmp_path / "o"), "-m", "u2netp", "--flip",
                 "--report", str(report)]) == 0
    (record,) = map(ImageRecord.from_json, report.read_text().splitlines())
    assert 0 < record.confidence["flip_disagreement"] < 0.05


def test_server_answers_the_score(use_pretrained_home, predictor, coffee):
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

    from u2seg.apps.server import create_app

    def post(client, array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        return client.post("/api/remove", content=buffer.getvalue(), headers={"Content-Type": "image/png"})

    with TestClient(create_app(predictor_factory=lambda name: predictor, default_model="u2netp")) as client:
        good = float(post(client, coffee).headers["x-u2seg-confidence"])
        flat = float(post(client, np.full((100, 100, 3), 128, np.uint8)).headers["x-u2seg-confidence"])
    assert 0 <= flat < 0.5 < good <= 1


def test_cascade_runs_the_large_model_only_where_the_small_is_unsure(use_pretrained_home, u2net_onnx, tmp_path):
    """coffee: U²-Net-P is sure (kept); chelsea the cat: it is not (U²-Net redoes it)."""
    from skimage import data

    from u2seg.infer.removal import remove
    from u2seg.infer.sessions import get_predictor

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(data.coffee()).save(folder / "coffee.png")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.png")
    report = tmp_path / "r.jsonl"
    assert main(["remove", str(folder), "-o", str(tmp_path / "out"), "-m", "u2netp+u2net", "--only-mask",
                 "--report", str(report)]) == 0
    models = {Path(r.input).name: r.model for r in map(ImageRecord.from_json, report.read_text().splitlines())}
    assert models == {"coffee.png": "u2netp", "chelsea.png": "u2net"}
    for name, model in models.items():
        alone = remove(folder / name, predictor=get_predictor(model), only_mask=True)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / name)), np.asarray(alone)), name
    # Everything escalated with --cascade-below 1.
    report.unlink()
    assert main(["remove", str(folder), "-o", str(tmp_path / "all"), "-m", "u2netp+u2net", "--only-mask",
                 "--cascade-below", "1", "--report", str(report)]) == 0
    assert {r.model for r in map(ImageRecord.from_json, report.read_text().splitlines())} == {"u2net"}
