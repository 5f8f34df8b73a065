"""Evaluation, prediction and visualisation: test-time augmentation and class maps in the
Predictor, scoring saved masks (binary and multi-class, against hand-computed cases and
SODMetrics), scoring a model on a dataset, and the eval / predict / visualize commands.

Real data: synthetic sets made by the test, the real pretrained u2netp, and a 3-class U²-Net-P
with seeded random weights (what `u2seg predict` does with it is fully determined)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from u2seg.cli import main
from u2seg.data import FolderPairs
from u2seg.data.datasets import read_mask
from u2seg.data.synth import make_synthetic_dataset
from u2seg.errors import U2SegError
from u2seg.evaluation import evaluate_predictor, evaluate_saved
from u2seg.evaluation.visualize import write_triptychs
from u2seg.infer import Predictor
from u2seg.infer.colorize import colorize, overlay, side_by_side, voc_palette
from u2seg.infer.predictor import TTA
from u2seg.metrics import ConfusionMatrix, SODMetrics
from u2seg.models import create_model
from u2seg.weights import save_pretrained


@pytest.fixture(scope="module")
def binary_set(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("bin") / "set", count=6, size=96, seed=11)


@pytest.fixture(scope="module")
def class_set(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("cls") / "set", count=4, size=80, seed=12,
                                  multiclass=True, num_classes=3)


def _three_class_from_binary(binary: torch.nn.Module) -> torch.nn.Module:
    """A 3-class U²-Net-P whose fused logits are (0, z, −z − 2) for the pretrained model's
    foreground logit z: class 1 = foreground, 2 = sure background, 0 = unsure background. A real,
    deterministic semantic model with all three classes on photos."""
    model = create_model("u2netp", num_classes=3)
    state = {k: v for k, v in binary.state_dict().items() if not k.startswith(("side", "outconv"))}
    model.load_state_dict(state, strict=False)
    scale, shift = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0.0, 0.0, -2.0])
    with torch.no_grad():
        for i in range(1, 7):
            side, source = getattr(model, f"side{i}"), getattr(binary, f"side{i}")
            side.weight.copy_(scale[:, None, None, None] * source.weight)
            side.bias.copy_(scale * source.bias)
        model.outconv.weight.zero_()
        for k in range(3):
            for i in range(6):
                model.outconv.weight[k, i * 3 + k] = binary.outconv.weight[0, i]
        model.outconv.bias.copy_(scale * binary.outconv.bias + shift)
    return model


@pytest.fixture(scope="module")
def three_class_weights(tmp_path_factory, predictor):
    model = _three_class_from_binary(predictor.network)
    return save_pretrained(model, tmp_path_factory.mktemp("w3") / "u2netp-3", metadata={"input_size": [160, 160]})


@pytest.fixture(scope="module")
def three_class_predictor(three_class_weights):
    return Predictor(weights=three_class_weights, backend="torch")


# -- colours ---------------------------------------------------------------------------------------

def test_voc_palette_and_palette_png_keep_the_class_indices(tmp_path):
    palette = voc_palette()
    assert palette[0].tolist() == [0, 0, 0] and palette[1].tolist() == [128, 0, 0]
    assert palette[15].tolist() == [192, 128, 128]  # VOC's "person"
    labels = np.array([[0, 1, 2], [15, 20, 255]], np.uint8)
    path = tmp_path / "c.png"
    colorize(labels).save(path)
    assert Image.open(path).mode == "P"
    assert np.array_equal(read_mask(path, 21), labels)  # indices survive: eval can read them
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB"))[0, 1], [128, 0, 0])
    with pytest.raises(ValueError, match="H×W"):
        colorize(np.zeros((2, 2, 3), np.uint8))


def test_overlay_tints_only_classes_and_sheets_line_up():
    image = np.full((4, 6, 3), 100, np.uint8)
    labels = np.zeros((4, 6), np.uint8)
    labels[1:3, 2:4] = 1
    labels[0, 0] = 255
    out = overlay(image, labels, alpha=0.5)
    assert np.array_equal(out[labels != 1], image[labels != 1])  # background and ignore untouched
    assert out[1, 2].tolist() == [114, 50, 50]  # (100 + 128) / 2, (100 + 0) / 2
    sheet = side_by_side([image, np.zeros((2, 3), np.uint8), image], gap=2)
    assert sheet.shape == (4, 6 + 2 + 6 + 2 + 6, 3)  # the 2×3 panel scaled to 4 px high (6 wide)
    with pytest.raises(ValueError, match="class map"):
        overlay(image, labels[:2])


# -- the Predictor: TTA and class maps ---------------------------------------------------------------

def test_flip_tta_is_the_mean_of_the_image_and_its_mirror(predictor, coffee):
    image = Image.fromarray(coffee)
    flipped = Predictor(predictor.network, backend="torch", tta=TTA(flip=True))
    plain = Predictor(predictor.network, backend="torch")
    x = plain.preprocessing(image)[None]
    expected = (plain.backend.run(x) + plain.backend.run(np.ascontiguousarray(x[..., ::-1]))[..., ::-1]) / 2
    got = flipped.network_probabilities([image])
    assert np.abs(got - expected).max() < 1e-6
    assert np.abs(got - plain.network_probabilities([image])).max() > 1e-3  # the mirror really counted
    same = Predictor(predictor.network, backend="torch", tta=TTA(scales=(1.0,)))
    assert np.array_equal(same.network_probabilities([image]), plain.network_probabilities([image]))


def test_multiscale_tta_averages_at_the_base_size(predictor, coffee):
    image = Image.fromarray(coffee)
    multi = Predictor(predictor.network, backend="torch", tta=TTA(scales=(0.75, 1.0)))
    probs = multi.network_probabilities([image])
    assert probs.shape == (1, 1, 320, 320)
    assert 0.0 <= probs.min() and probs.max() <= 1.0
    mask = multi.predict(image)
    assert mask.shape == coffee.shape[:2]
    with pytest.raises(ValueError, match="scales"):
        TTA(scales=(0.0,))


def test_class_maps_are_the_argmax_of_resized_probabilities(three_class_predictor, coffee):
    import cv2

    image = Image.fromarray(coffee)
    classes = three_class_predictor.predict_classes(image)
    assert classes.shape == coffee.shape[:2] and classes.dtype == np.uint8
    probs = three_class_predictor.network_probabilities([image])[0]
    full = np.stack([cv2.resize(p, image.size, interpolation=cv2.INTER_LINEAR) for p in probs])
    expected = full.argmax(0)
    assert (classes == expected).mean() > 0.9999  # ties aside
    assert set(np.unique(classes)) == {0, 1, 2}


# -- scoring saved masks -----------------------------------------------------------------------------

def _write_grey(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)


def test_saved_binary_masks_score_like_sodmetrics(tmp_path, binary_set):
    gt_dir = binary_set / "masks"
    rng = np.random.default_rng(0)
    expected = SODMetrics()
    for path in sorted(gt_dir.glob("*.png")):
        gt = read_mask(path, 1)
        noisy = np.clip(gt * 200.0 + rng.normal(0, 40, gt.shape), 0, 255).astype(np.uint8)
        _write_grey(tmp_path / "pred" / path.name, noisy)
        expected.update(noisy.astype(np.float32) / 255, gt.astype(bool))
    result = evaluate_saved(tmp_path / "pred", gt_dir)
    want = expected.results()
    assert result.images == 6 and result.kind == "binary"
    for key in ("maxF", "MAE", "S", "maxE", "wF"):
        assert result.summary[key] == pytest.approx(want[key], abs=1e-9)
    perfect = evaluate_saved(gt_dir, gt_dir)
    assert perfect.summary["MAE"] == 0 and perfect.summary["maxF"] == pytest.approx(1.0)


def test_saved_masks_missing_or_resized(tmp_path, binary_set):
    gt_dir = binary_set / "masks"
    names = sorted(p.name for p in gt_dir.glob("*.png"))
    for name in names[1:]:
        gt = read_mask(gt_dir / name, 1) * 255
        _write_grey(tmp_path / "pred" / name, np.asarray(Image.fromarray(gt).resize((48, 48))))
    with pytest.raises(U2SegError, match=f"{names[0]}: no prediction"):
        evaluate_saved(tmp_path / "pred", gt_dir)
    _write_grey(tmp_path / "pred" / names[0], read_mask(gt_dir / names[0], 1) * 255)
    result = evaluate_saved(tmp_path / "pred", gt_dir)
    assert result.details["resized"] == len(names) - 1
    assert result.summary["maxF"] > 0.9  # half-size copies of the truth, scaled back


def test_saved_class_masks_hand_computed(tmp_path):
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]], np.uint8)
    for folder, labels in (("gt", gt), ("pred", pred)):
        (tmp_path / folder).mkdir()
        colorize(labels).save(tmp_path / folder / "a.png")
    result = evaluate_saved(tmp_path / "pred", tmp_path / "gt", num_classes=3, class_names=["bg", "x", "y"])
    # class 0: TP 1, FP 1 (gt 2 → 0), FN 1 (→ 1): 1/3; class 1: TP 3, FP 1: 3/4; class 2: TP 1, FN 1: 1/2
    assert result.summary["IoU"] == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert result.summary["mIoU"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert result.summary["pixel_accuracy"] == pytest.approx(5 / 7)  # the 255 pixel is not counted
    assert "x" in result.table() and "0.7500" in result.table()


# -- scoring a model ------------------------------------------------------------------------------------

def test_evaluate_predictor_equals_scoring_its_own_maps(predictor, binary_set):
    dataset = FolderPairs(binary_set)
    result = evaluate_predictor(predictor, dataset, batch_size=4)
    expected = SODMetrics()
    for i in range(len(dataset)):
        image, mask = dataset.load_pair(i)
        expected.update(predictor.predict(Image.fromarray(image)), mask.astype(bool))
    for key in ("maxF", "MAE", "S", "meanE"):
        assert result.summary[key] == pytest.approx(expected.results()[key], abs=1e-6)
    assert 0.3 < result.summary["maxF"] <= 1.0  # the pretrained model finds pasted objects


def test_evaluate_predictor_multiclass_and_class_mismatch(three_class_predictor, predictor, class_set):
    dataset = FolderPairs(class_set, num_classes=3)
    result = evaluate_predictor(three_class_predictor, dataset, batch_size=2)
    expected = ConfusionMatrix(3)
    for i in range(len(dataset)):
        image, mask = dataset.load_pair(i)
        expected.update(three_class_predictor.predict_classes(Image.fromarray(image)), mask)
    assert np.array_equal(result.results["confusion_matrix"], expected.matrix)
    assert result.class_names == ["background", "ellipse", "polygon"]  # from the set's dataset.json
    with pytest.raises(U2SegError, match="predicts 1 class"):
        evaluate_predictor(predictor, dataset)


# -- commands ------------------------------------------------------------------------------------------

def test_predict_then_eval_pred_dir_matches_direct_eval(tmp_path, binary_set, pretrained_home, capsys):
    weights = str(pretrained_home / "weights" / "u2netp")
    out = tmp_path / "pred"
    assert main(["predict", str(binary_set / "images"), "-o", str(out), "--weights", weights,
                 "--backend", "torch"]) == 0
    masks = sorted((out / "masks").glob("*.png"))
    assert len(masks) == 6 and len(list((out / "overlays").glob("*.png"))) == 6
    assert main(["eval", "--pred-dir", str(out / "masks"), "--gt-dir", str(binary_set / "masks"),
                 "--out", str(tmp_path / "r1"), "--no-progress"]) == 0
    saved = json.loads((tmp_path / "r1" / "metrics.json").read_text())
    assert main(["eval", "--data", str(binary_set), "--weights", weights, "--backend", "torch",
                 "--out", str(tmp_path / "r2"), "--no-progress"]) == 0
    direct = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert saved["summary"]["maxF"] == pytest.approx(direct["summary"]["maxF"], abs=0.01)  # 8-bit files
    assert saved["summary"]["MAE"] == pytest.approx(direct["summary"]["MAE"], abs=0.005)
    assert (tmp_path / "r2" / "pr_curve.png").is_file() and (tmp_path / "r2" / "f_measure.png").is_file()
    printed = capsys.readouterr().out
    assert "maxF" in printed and "report:" in printed
    # the report is never replaced silently; a second predict skips existing outputs
    assert main(["eval", "--pred-dir", str(out / "masks"), "--gt-dir", str(binary_set / "masks"),
                 "--out", str(tmp_path / "r1"), "--no-progress"]) == 2
    before = masks[0].stat().st_mtime_ns
    assert main(["predict", str(binary_set / "images"), "-o", str(out), "--weights", weights,
                 "--backend", "torch"]) == 0
    assert masks[0].stat().st_mtime_ns == before


def test_predict_semantic_writes_palette_masks_and_overlays(tmp_path, three_class_weights, three_class_predictor,
                                                            coffee):
    Image.fromarray(coffee).save(tmp_path / "coffee.jpg", quality=95)
    assert main(["predict", str(tmp_path / "coffee.jpg"), "-o", str(tmp_path / "out"), "--weights",
                 str(three_class_weights), "--backend", "torch"]) == 0
    mask = Image.open(tmp_path / "out" / "masks" / "coffee.png")
    assert mask.mode == "P" and mask.size == (coffee.shape[1], coffee.shape[0])
    classes = np.asarray(mask)
    expected = three_class_predictor.predict_classes(tmp_path / "coffee.jpg")
    assert np.array_equal(classes, expected)
    tinted = np.asarray(Image.open(tmp_path / "out" / "overlays" / "coffee.png").convert("RGB"))
    source = np.asarray(Image.open(tmp_path / "coffee.jpg").convert("RGB"))
    assert np.array_equal(tinted[classes == 0], source[classes == 0])
    assert not np.array_equal(tinted[classes == 1], source[classes == 1])


def test_eval_and_visualize_from_a_training_config(tmp_path, class_set, monkeypatch, capsys):
    import yaml

    from u2seg.train import train

    raw = {"model": {"name": "u2netp", "num_classes": 3},
           "data": {"train": {"root": str(class_set), "transform": {"name": "official_train", "size": 64, "crop": 56}},
                    "val": {"root": str(class_set), "transform": {"name": "official_eval", "size": 64}}},
           "batch_size": 2, "iterations": 2, "eval_interval": 0, "save_interval": 0, "output_dir": str(tmp_path / "run")}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["eval", str(config), "--no-progress"]) == 2  # no best/ yet: a clear error
    assert "no trained weights" in capsys.readouterr().err
    train(raw, progress=False)
    assert main(["eval", str(config), "--backend", "torch", "--no-progress", "--flip"]) == 0
    (report,) = (tmp_path / "run").glob("eval-val-*/metrics.json")
    data = json.loads(report.read_text())
    assert data["kind"] == "multiclass" and data["images"] == 4 and len(data["IoU"]) == 3
    assert data["tta"] == {"flip": True, "scales": [1.0]} and data["input_size"] == [64, 64]
    assert (report.parent / "class_iou.png").is_file()
    sheets = tmp_path / "sheets"
    assert main(["visualize", str(config), "-o", str(sheets), "--limit", "2", "--backend", "torch"]) == 0
    files = sorted(sheets.glob("*.png"))
    assert len(files) == 2
    sheet = np.asarray(Image.open(files[0]))
    assert sheet.shape == (80, 3 * 80 + 2 * 4, 3)
    assert main(["visualize", str(config), "-o", str(sheets), "--limit", "2", "--backend", "torch"]) == 2


def test_visualize_from_saved_predictions(tmp_path, binary_set):
    dataset = FolderPairs(binary_set)
    pred = tmp_path / "pred"
    for sample in dataset.samples:
        _write_grey(pred / f"{sample.name}.png", read_mask(sample.mask, 1) * 255)
    written = write_triptychs(dataset, tmp_path / "out", pred_dir=pred, limit=3)
    assert len(written) == 3
    sheet = np.asarray(Image.open(written[0]))
    label_panel = sheet[:, 96 + 4: 2 * 96 + 4]
    pred_panel = sheet[:, 2 * (96 + 4):]
    assert np.array_equal(label_panel, pred_panel)  # the truth was "predicted": identical panels
    (pred / f"{dataset.samples[0].name}.png").unlink()
    with pytest.raises(U2SegError, match="no prediction"):
        write_triptychs(dataset, tmp_path / "out2", pred_dir=pred)
