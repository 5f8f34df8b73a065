"""Metrics: SODMetrics against pysodmetrics and hand-computed cases, ConfusionMatrix against hand
computations and scikit-learn, and the JSON + plot report."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from u2seg.metrics import ConfusionMatrix, SODMetrics, f_measure_curve, mae, max_f_measure, write_report
from u2seg.metrics.sod import e_measure_curve, s_measure, weighted_f_measure

SCALARS = ("maxF", "meanF", "adpF", "wF", "MAE", "S", "maxE", "meanE", "adpE")


# -- data: ground-truth masks drawn here or from scikit-image, predictions derived from them ----

def _blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float64), (0, 0), sigma)


def _pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction float64 in [0, 1], ground truth bool) pairs, none touching an exact edge case."""
    from skimage import data

    rng = np.random.default_rng(0)
    horse = ~data.horse()  # the silhouette (True = horse), 328×400
    pairs = [(np.clip(np.roll(_blur(horse, 6), (5, -7), axis=(0, 1)), 0, 1), horse)]

    yy, xx = np.mgrid[:240, :320]
    ellipse = (yy - 110) ** 2 / 60 ** 2 + (xx - 170) ** 2 / 90 ** 2 < 1
    noisy = 0.8 * _blur(ellipse, 4) + rng.uniform(0, 0.2, ellipse.shape)
    pairs.append((np.clip(noisy, 0, 1), ellipse))

    two = np.zeros((200, 260), bool)  # two objects; the prediction finds one, shifted and dilated
    two[30:90, 40:120] = True
    two[120:180, 150:230] = True
    found = np.zeros_like(two)
    found[36:104, 46:130] = True
    pairs.append((np.clip(_blur(found, 3), 0, 1), two))

    disk = (yy[:180, :180] - 80) ** 2 + (xx[:180, :180] - 95) ** 2 < 45 ** 2
    pairs.append((np.clip(_blur(disk, 2) * 0.6 + 0.3 * _blur(~disk, 25), 0, 1), disk))  # low contrast
    return pairs


@pytest.fixture(scope="module")
def pairs():
    return _pairs()


def _pysod(pairs, *, normalize: bool):
    import py_sod_metrics as psm  # installed by `make test` (--no-deps: it pins an older numpy)
    fm = psm.FmeasureV2(metric_handlers={
        "f": psm.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3),
        "p": psm.PrecisionHandler(with_dynamic=True, with_adaptive=False),
        "r": psm.RecallHandler(with_dynamic=True, with_adaptive=False),
    })
    wfm, sm, em, mae_ = psm.WeightedFmeasure(), psm.Smeasure(), psm.Emeasure(), psm.MAE()
    for pred, gt in pairs:
        for metric in (fm, wfm, sm, em, mae_):
            metric.step(pred, gt, normalize=normalize)
    f = fm.get_results()
    e = em.get_results()["em"]
    return {  # their curves run from threshold 255 down to 0: flipped to ours (index t ↔ t/255)
        "f_curve": f["f"]["dynamic"][::-1], "precision": f["p"]["dynamic"][::-1],
        "recall": f["r"]["dynamic"][::-1], "e_curve": e["curve"][::-1],
        "maxF": f["f"]["dynamic"].max(), "meanF": f["f"]["dynamic"].mean(), "adpF": f["f"]["adaptive"],
        "wF": wfm.get_results()["wfm"], "MAE": mae_.get_results()["mae"], "S": sm.get_results()["sm"],
        "maxE": e["curve"].max(), "meanE": e["curve"].mean(), "adpE": e["adp"],
    }


def _ours(pairs, **kwargs):
    metrics = SODMetrics(**kwargs)
    for pred, gt in pairs:
        metrics.update(pred, gt)
    return metrics.results()


# -- SOD: agreement with pysodmetrics -------------------------------------------------------------

def test_sod_metrics_agree_with_pysodmetrics_float_inputs(pairs):
    ours, ref = _ours(pairs), _pysod(pairs, normalize=False)
    assert ours["images"] == len(pairs)
    for key in SCALARS:
        assert ours[key] == pytest.approx(ref[key], abs=1e-4), key
    # All but E agree to rounding: same thresholds (floor(255·p) ≥ t), same formulas.
    for key in ("maxF", "meanF", "adpF", "wF", "MAE", "S"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    for key in ("f_curve", "precision", "recall"):
        np.testing.assert_allclose(ours[key], ref[key], atol=1e-12, err_msg=key)
    # E: the enhanced-alignment sum over H·W here, over H·W − 1 there (the Matlab code).
    sizes = np.array([gt.size for _, gt in pairs], np.float64)
    per_image_ref = [_pysod([p], normalize=False)["e_curve"] for p in pairs]
    expected = np.mean([c * (n - 1 + np.spacing(1)) / n for c, n in zip(per_image_ref, sizes)], axis=0)
    np.testing.assert_allclose(ours["e_curve"], expected, atol=1e-12)
    assert ours["thresholds"][[0, 128, 255]] == pytest.approx([0, 128 / 255, 1])


def test_sod_metrics_agree_with_pysodmetrics_on_uint8_maps(pairs):
    # Saved 8-bit maps and masks, as the Matlab tools read them: pysodmetrics divides by 255 and
    # stretches each map to [0, 1]; SODMetrics(minmax=True) does the same with uint8 input.
    u8 = [(np.round(p * 200 + 20).astype(np.uint8), (g * 255).astype(np.uint8)) for p, g in pairs]
    ours, ref = _ours(u8, minmax=True), _pysod(u8, normalize=True)
    for key in SCALARS:
        assert ours[key] == pytest.approx(ref[key], abs=1e-4), key
    np.testing.assert_allclose(ours["f_curve"], ref["f_curve"], atol=1e-12)
    # without the stretch the maps differ, and so do the scores
    assert _ours(u8)["MAE"] != pytest.approx(ref["MAE"], abs=1e-4)


def test_e_measure_of_a_small_image_differs_from_matlab_by_n_over_n_minus_1():
    gt = np.zeros((10, 12), bool)
    gt[3:7, 2:9] = True
    pred = np.clip(_blur(gt, 1.2), 0, 1)
    ref = _pysod([(pred, gt)], normalize=False)
    n = gt.size
    np.testing.assert_allclose(e_measure_curve(pred, gt) * n, ref["e_curve"] * (n - 1 + np.spacing(1)), rtol=1e-12)
    ours = _ours([(gt.astype(np.float64), gt)])
    assert ours["maxE"] == pytest.approx(1.0, abs=1e-12)  # perfect map: 1 here, 120/119 = 1.0084 in pysodmetrics
    assert _pysod([(gt.astype(np.float64), gt)], normalize=False)["maxE"] == pytest.approx(120 / 119)


# -- SOD: hand-computed cases ----------------------------------------------------------------------

def _rect_gt():
    gt = np.zeros((20, 20), bool)
    gt[6:14, 5:13] = True  # 8×8 = 64 of 400 pixels: ρ = 0.16, ≥ 3 px from every border
    return gt


def test_perfect_prediction():
    gt = _rect_gt()
    r = _ours([(gt.astype(np.float64), gt), (gt.astype(np.float64), gt)])
    assert r["MAE"] == 0.0
    assert r["maxF"] == 1.0 and r["adpF"] == 1.0
    assert r["S"] == pytest.approx(1.0, abs=1e-12)
    assert r["maxE"] == pytest.approx(1.0, abs=1e-12) and r["adpE"] == pytest.approx(1.0, abs=1e-12)
    assert r["wF"] == pytest.approx(1.0, abs=1e-12)
    # meanF < 1: at threshold 0 every pixel is foreground (precision ρ, recall 1): F = 1.3ρ/(0.3ρ + 1)
    assert r["f_curve"][0] == pytest.approx(1.3 * 0.16 / (0.3 * 0.16 + 1))
    assert r["f_curve"][1:].tolist() == [1.0] * 255
    assert r["meanF"] == pytest.approx((255 + 0.208 / 1.048) / 256)
    assert r["precision"][200] == 1.0 and r["recall"][200] == 1.0


def test_all_zero_prediction_against_non_empty_gt():
    gt = _rect_gt()
    r = _ours([(np.zeros(gt.shape), gt)])
    rho = 0.16
    f0 = 1.3 * rho / (0.3 * rho + 1)  # = 0.208 / 1.048: threshold 0 takes everything
    assert r["MAE"] == pytest.approx(rho)
    assert r["maxF"] == pytest.approx(f0)
    assert r["meanF"] == pytest.approx(f0 / 256)  # F = 0 at thresholds 1/255 … 1
    assert r["adpF"] == pytest.approx(f0)  # adaptive threshold min(2·0, 1) = 0
    # E: pred constant (everything or nothing foreground) → alignment 0 → φ = 1/4 on every pixel
    assert r["maxE"] == pytest.approx(0.25) and r["meanE"] == pytest.approx(0.25) and r["adpE"] == pytest.approx(0.25)
    # S: object = 0·ρ + 1·(1 − ρ) = 0.84; region: all four quadrants mix object and background while
    # the map is flat → SSIM 0 each. S = 0.5 · 0.84 = 0.42.
    assert r["S"] == pytest.approx(0.42, abs=1e-12)
    # wF: errors are 1 on the object and spread (Gaussian) into an all-1 neighbourhood → recall 0
    assert r["wF"] == pytest.approx(0.0, abs=1e-12)
    ref = _pysod([(np.zeros(gt.shape), gt)], normalize=False)
    for key in ("maxF", "meanF", "adpF", "wF", "MAE", "S"):
        assert r[key] == pytest.approx(ref[key], abs=1e-12), key
    assert ref["maxE"] == pytest.approx(0.25 * 400 / 399)


def test_empty_ground_truth():
    gt = np.zeros((16, 16), bool)
    pred = np.full(gt.shape, 0.25)  # level floor(63.75) = 63: foreground at thresholds 0 … 63/255
    r = _ours([(pred, gt)])
    assert r["MAE"] == pytest.approx(0.25)
    assert r["maxF"] == r["meanF"] == r["adpF"] == 0.0  # no true positives possible: F defined as 0
    assert r["wF"] == 0.0
    assert r["S"] == pytest.approx(0.75)  # 1 − mean(pred)
    assert r["maxE"] == 1.0 and r["meanE"] == pytest.approx(192 / 256)  # φ = 1 − binary map
    assert r["adpE"] == 1.0  # threshold 0.5: nothing foreground
    perfect = _ours([(np.zeros(gt.shape), gt)])
    assert perfect["MAE"] == 0.0 and perfect["S"] == 1.0 and perfect["maxE"] == 1.0
    ref = _pysod([(pred, gt)], normalize=False)
    for key in ("maxF", "meanF", "adpF", "wF", "MAE", "S"):
        assert r[key] == pytest.approx(ref[key], abs=1e-12), key


def test_sod_functions_and_existing_helpers(pairs):
    pred, gt = pairs[0]
    assert s_measure(pred, gt) == pytest.approx(_ours([(pred, gt)])["S"])
    assert 0 < weighted_f_measure(pred, gt) < 1
    # mae / max_f_measure keep their behaviour (rint levels) for the export fidelity report
    assert mae(gt.astype(np.float64), gt) == 0.0 and max_f_measure(gt.astype(np.float64), gt) == pytest.approx(1.0)
    levels = np.array([[0.499, 0.1], [0.9, 0.0]])
    truth = np.array([[True, False], [True, False]])
    assert f_measure_curve(levels, truth)[127] == pytest.approx(1.0)  # rint(127.245) = 127 ≥ 127
    assert f_measure_curve(levels, truth)[128] < 1.0


def test_sod_input_handling():
    gt = _rect_gt()
    m = SODMetrics()
    with pytest.raises(ValueError, match="call update"):
        m.results()
    with pytest.raises(ValueError, match=r"prediction is 20×21 but ground truth is 20×20"):
        m.update(np.zeros((20, 21)), gt)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        m.update(np.full(gt.shape, 1.5), gt)
    with pytest.raises(ValueError, match="holds only 0 and 1"):
        m.update(np.zeros(gt.shape), gt.astype(np.uint8))
    with pytest.raises(ValueError, match="one H×W map"):
        m.update(np.zeros((1, 20, 20)), gt)
    # uint8 0..255 masks (foreground > 128) and uint8 maps (/255) are accepted
    m.update((gt * 255).astype(np.uint8), (gt * 255).astype(np.uint8))
    assert len(m) == 1 and m.results()["MAE"] == 0.0
    m.reset()
    assert len(m) == 0


# -- semantic --------------------------------------------------------------------------------------

def test_confusion_matrix_hand_computed_3x3():
    gt = np.array([[0, 0, 1], [1, 1, 2], [2, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 1, 2], [2, 0, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    r = cm.results()
    assert r["confusion_matrix"].tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 3]]  # rows: ground truth
    # TP (1, 3, 3), ground truth (2, 3, 4), predicted (2, 4, 3)
    np.testing.assert_allclose(r["IoU"], [1 / 3, 3 / 4, 3 / 4])
    assert r["mIoU"] == pytest.approx(11 / 18)
    assert r["pixel_accuracy"] == pytest.approx(7 / 9)
    np.testing.assert_allclose(r["class_accuracy"], [1 / 2, 1, 3 / 4])
    assert r["mean_accuracy"] == pytest.approx(3 / 4)
    np.testing.assert_allclose(r["Dice"], [1 / 2, 6 / 7, 6 / 7])
    assert r["mDice"] == pytest.approx(31 / 42)
    # p_o = 7/9, p_e = (2·2 + 3·4 + 4·3)/81 = 28/81 → κ = (63 − 28)/(81 − 28) = 35/53
    assert r["kappa"] == pytest.approx(35 / 53)
    assert r["pixels"] == 9 and r["num_classes"] == 3


def test_confusion_matrix_hand_computed_4x4_with_ignore_and_absent_classes():
    gt = np.array([[0, 0, 0, 255],
                   [0, 1, 1, 255],
                   [1, 1, 1, 1],
                   [0, 0, 1, 1]], dtype=np.uint8)
    pred = np.array([[0, 0, 2, 3],   # the 3 sits on an ignored pixel: class 3 is absent from both
                     [0, 1, 2, 0],
                     [1, 1, 1, 2],
                     [0, 1, 1, 1]], dtype=np.uint8)
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(pred, gt)
    r = cm.results()
    assert r["confusion_matrix"].tolist() == [[4, 1, 1, 0], [0, 6, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    # class 2: predicted only → IoU 0 (counts); class 3: nowhere → NaN (left out of the mean)
    np.testing.assert_allclose(r["IoU"], [2 / 3, 2 / 3, 0, np.nan])
    assert r["mIoU"] == pytest.approx(4 / 9)
    assert r["pixel_accuracy"] == pytest.approx(10 / 14)
    np.testing.assert_allclose(r["class_accuracy"], [2 / 3, 3 / 4, np.nan, np.nan])
    assert r["mean_accuracy"] == pytest.approx(17 / 24)
    np.testing.assert_allclose(r["Dice"], [0.8, 0.8, 0, np.nan])
    assert r["mDice"] == pytest.approx(8 / 15)
    assert r["kappa"] == pytest.approx(15 / 29)  # p_o = 5/7, p_e = (6·4 + 8·7)/14² = 20/49
    assert r["pixels"] == 14


def test_confusion_matrix_against_sklearn_random_labels():
    import sklearn.metrics as skm
    rng = np.random.default_rng(1)
    k = 5
    cm = ConfusionMatrix(k, ignore_index=255)
    all_gt, all_pred = [], []
    for _ in range(3):
        gt = rng.integers(0, k, (64, 48))
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, k, gt.shape))  # 60 % + chance
        gt[rng.random(gt.shape) < 0.1] = 255
        cm.update(pred, gt)
        keep = gt != 255
        all_gt.append(gt[keep])
        all_pred.append(pred[keep])
    y, p = np.concatenate(all_gt), np.concatenate(all_pred)
    r = cm.results()
    labels = list(range(k))
    np.testing.assert_array_equal(r["confusion_matrix"], skm.confusion_matrix(y, p, labels=labels))
    assert r["kappa"] == pytest.approx(skm.cohen_kappa_score(y, p), abs=1e-12)
    assert r["pixel_accuracy"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
    np.testing.assert_allclose(r["IoU"], skm.jaccard_score(y, p, labels=labels, average=None), atol=1e-12)
    np.testing.assert_allclose(r["Dice"], skm.f1_score(y, p, labels=labels, average=None), atol=1e-12)
    np.testing.assert_allclose(r["class_accuracy"], skm.recall_score(y, p, labels=labels, average=None), atol=1e-12)
    assert r["mean_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p), abs=1e-12)
    assert r["mIoU"] == pytest.approx(skm.jaccard_score(y, p, average="macro"), abs=1e-12)


def test_confusion_matrix_errors_and_merge():
    with pytest.raises(ValueError, match="is also a class"):
        ConfusionMatrix(3, ignore_index=1)
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="no pixels"):
        cm.results()
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(TypeError, match="integer class indices"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="ground truth holds class 7, outside 0 … 2 or the ignore index 255"):
        cm.update(np.zeros((2, 2), int), np.full((2, 2), 7))
    with pytest.raises(ValueError, match="prediction holds class -1"):
        cm.update(np.full((2, 2), -1), np.zeros((2, 2), int))
    cm.update(np.zeros((2, 2), int), np.zeros((2, 2), int))
    r = cm.results()
    assert r["mIoU"] == 1.0 and np.isnan(r["kappa"])  # one class everywhere: κ undefined (like sklearn)
    other = ConfusionMatrix(3)
    other.update(np.array([1, 2]), np.array([1, 1]))  # any shape (N×H×W batches too)
    assert cm.merge(other).results()["pixels"] == 6


# -- report ----------------------------------------------------------------------------------------

def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # decodes the whole file
        return im.size


def test_binary_report(pairs, tmp_path):
    results = _ours(pairs)
    paths = write_report(results, tmp_path / "eval", kind="binary")
    assert set(paths) == {"json", "pr_curve", "f_measure"}
    data = json.loads(paths["json"].read_text())
    assert data["kind"] == "binary" and data["images"] == len(pairs)
    for key in SCALARS:
        assert data[key] == pytest.approx(results[key], abs=1e-15)
    assert len(data["precision"]) == len(data["f_curve"]) == 256
    assert data["f_curve"][10] == pytest.approx(results["f_curve"][10])
    for name in ("pr_curve", "f_measure"):
        assert _png_size(paths[name]) == (600, 500)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["f_measure.png", "metrics.json", "pr_curve.png"]


def test_multiclass_report_nan_to_null(tmp_path):
    cm = ConfusionMatrix(4)
    cm.update(np.array([[0, 1], [2, 1]]), np.array([[0, 1], [1, 1]]))  # class 3 absent: IoU NaN
    results = cm.results()
    names = ["background", "person", "car", "bicycle"]
    paths = write_report(results, tmp_path, kind="multiclass", class_names=names)
    assert set(paths) == {"json", "class_iou"}
    text = paths["json"].read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["IoU"] == [1.0, pytest.approx(2 / 3), 0.0, None]
    assert data["class_accuracy"][2] is None and data["class_names"] == names
    assert data["mIoU"] == pytest.approx(results["mIoU"]) and data["confusion_matrix"][1] == [0, 2, 1, 0]
    width, height = _png_size(paths["class_iou"])
    assert width >= 600 and height == 500


def test_report_errors_and_json_only(tmp_path):
    with pytest.raises(ValueError, match="kind must be"):
        write_report({}, tmp_path, kind="regression")
    with pytest.raises(ValueError, match="lack precision, recall, f_curve"):
        write_report({"mIoU": 0.5}, tmp_path, kind="binary")
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        write_report({"IoU": np.zeros(3)}, tmp_path, kind="multiclass", class_names=["a", "b"])
    assert not list(tmp_path.iterdir())  # nothing written by a failed call
    paths = write_report({"IoU": np.array([0.5, np.inf]), "mIoU": np.float32(0.5)}, tmp_path,
                         kind="multiclass", plots=False)
    assert list(paths) == ["json"]
    assert json.loads(paths["json"].read_text()) == {"kind": "multiclass", "IoU": [0.5, None], "mIoU": 0.5}
