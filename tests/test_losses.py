"""DeepSupervisionLoss: the official U²-Net loss (Σ BCELoss over seven sigmoids), multi-class
cross-entropy with an ignore index, soft Dice/IoU terms, weights and error messages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from u2seg.train import DeepSupervisionLoss, soft_dice_iou

LN2, LN3, LN9 = math.log(2), math.log(3), math.log(9)


def _outputs(n: int, shape, *, seed: int = 0, dtype=torch.float64, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g, dtype=dtype).mul_(3).requires_grad_(requires_grad)
                 for _ in range(n))


# -- binary: the official loss ----------------------------------------------------------------

@pytest.mark.parametrize("soft", [False, True])
def test_binary_equals_official_bce_on_sigmoids(soft):
    outputs = _outputs(7, (2, 1, 9, 11), requires_grad=True)
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 1, 9, 11, generator=g, dtype=torch.float64)
    target = target if soft else (target > 0.5).to(torch.float64)

    total, parts = DeepSupervisionLoss("binary")(outputs, target)
    official = [torch.nn.BCELoss()(torch.sigmoid(x), target) for x in outputs]  # size_average=True
    assert total.item() == pytest.approx(sum(o.item() for o in official), rel=1e-12)
    for i, o in enumerate(official):
        assert parts[f"d{i}"] == pytest.approx(o.item(), rel=1e-12)

    grads = torch.autograd.grad(total, outputs)
    official_grads = torch.autograd.grad(sum(official), outputs)
    for a, b in zip(grads, official_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_binary_float32_equals_official_bce():
    outputs = _outputs(7, (3, 1, 16, 16), dtype=torch.float32)
    target = (torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2)) > 0.3)  # N×H×W, bool
    total, _ = DeepSupervisionLoss("binary")(outputs, target)
    official = sum(torch.nn.BCELoss()(torch.sigmoid(x), target[:, None].float()) for x in outputs)
    assert total.item() == pytest.approx(official.item(), rel=1e-5)


def test_binary_hand_computed_2x2():
    # logits 0, ln 3, −ln 3, ln 9 → probabilities 0.5, 0.75, 0.25, 0.9; targets 1, 1, 0, 1.
    # Per-pixel BCE: −ln 0.5 = ln 2, −ln 0.75 = ln(4/3), −ln(1 − 0.25) = ln(4/3), −ln 0.9 = ln(10/9);
    # mean = (ln 2 + 2 ln(4/3) + ln(10/9)) / 4 = ln(320/81) / 4 = 0.34346796028…
    logits = torch.tensor([[[[0.0, LN3], [-LN3, LN9]]]], dtype=torch.float64)
    target = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]], dtype=torch.float64)
    one = 0.34346796028033333
    assert math.log(320 / 81) / 4 == pytest.approx(one, abs=1e-15)

    total, parts = DeepSupervisionLoss("binary")((logits,) * 7, target)
    assert total.item() == pytest.approx(7 * one, abs=1e-12)  # the official sum over d0 … d6
    assert parts["d0"] == pytest.approx(one, abs=1e-12)
    assert parts["bce"] == parts["total"] == pytest.approx(7 * one, abs=1e-12)

    weights = (2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5)  # PaddleSeg-style coef
    total, parts = DeepSupervisionLoss("binary", weights=weights)((logits,) * 7, target)
    assert total.item() == pytest.approx(7.5 * one, abs=1e-12)
    assert parts["d6"] == pytest.approx(one, abs=1e-12)  # parts per output are unweighted


def test_binary_ignore_index_excludes_pixels():
    outputs = _outputs(7, (2, 1, 6, 6))
    g = torch.Generator().manual_seed(3)
    target = (torch.rand(2, 6, 6, generator=g) > 0.5).to(torch.uint8)
    target[0, :2] = 255  # "don't care" band
    valid = target != 255
    total, _ = DeepSupervisionLoss("binary")(outputs, target)
    expected = sum(F.binary_cross_entropy_with_logits(x[:, 0][valid], target[valid].double()) for x in outputs)
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)


def test_binary_dice_and_iou_hand_computed():
    # All logits 0 → p = 0.5 on 4 pixels; one foreground pixel. With smooth s = 1:
    # I = 0.5, Σp = 2, Σg = 1: Dice = (2·0.5 + 1)/(2 + 1 + 1) = 1/2, IoU = (0.5 + 1)/(2 + 1 − 0.5 + 1) = 3/7.
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    loss = DeepSupervisionLoss("binary", dice_weight=1.0, iou_weight=2.0)
    total, parts = loss((logits,), target)
    assert parts["bce"] == pytest.approx(LN2, abs=1e-6)
    assert parts["dice"] == pytest.approx(1 - 1 / 2, abs=1e-6)
    assert parts["iou"] == pytest.approx(2 * (1 - 3 / 7), abs=1e-6)
    assert total.item() == pytest.approx(LN2 + 1 / 2 + 8 / 7, abs=1e-6)
    assert parts["total"] == pytest.approx(parts["bce"] + parts["dice"] + parts["iou"], abs=1e-6)


# -- multi-class -------------------------------------------------------------------------------

def test_multiclass_hand_computed_with_ignore():
    # Pixel A: logits (ln 2, 0, 0), class 0 → −ln(2/4) = ln 2. Pixel B: (0, 0, 0), class 2 → ln 3.
    # Pixel C: ignored. Mean over the two counted pixels: (ln 2 + ln 3)/2 = ln 6 / 2 = 0.89587973…
    logits = torch.tensor([[[[LN2, 0.0, 5.0]], [[0.0, 0.0, -5.0]], [[0.0, 0.0, 0.0]]]], dtype=torch.float64)
    target = torch.tensor([[[0, 2, 255]]])
    total, parts = DeepSupervisionLoss("multiclass")((logits,), target)
    assert total.item() == pytest.approx(0.8958797346140275, abs=1e-12)
    assert parts["ce"] == pytest.approx(math.log(6) / 2, abs=1e-12)


def test_multiclass_equals_cross_entropy_sum():
    outputs = _outputs(7, (2, 4, 8, 10))
    g = torch.Generator().manual_seed(4)
    target = torch.randint(0, 4, (2, 8, 10), generator=g)
    target[1, 3:5] = 255
    total, parts = DeepSupervisionLoss("multiclass")(outputs, target)
    expected = [F.cross_entropy(x, target, ignore_index=255) for x in outputs]
    assert total.item() == pytest.approx(sum(e.item() for e in expected), rel=1e-12)
    assert set(parts) == {*(f"d{i}" for i in range(7)), "ce", "total"}
    assert all(isinstance(v, float) for v in parts.values())


def test_multiclass_dice_iou_hand_computed_with_ignore():
    # 2 classes, logits 0 → softmax 0.5 everywhere; target [[255, 0], [0, 1]] (first pixel ignored).
    # class 0: I = 1, Σp = 1.5, Σg = 2 → Dice (2+1)/(3.5+1) = 2/3, IoU (1+1)/(3.5−1+1) = 4/7
    # class 1: I = 0.5, Σp = 1.5, Σg = 1 → Dice (1+1)/(2.5+1) = 4/7, IoU (0.5+1)/(2.5−0.5+1) = 1/2
    logits = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    target = torch.tensor([[[255, 0], [0, 1]]])
    _, parts = DeepSupervisionLoss("multiclass", dice_weight=1.0, iou_weight=1.0)((logits,), target)
    assert parts["ce"] == pytest.approx(LN2, abs=1e-12)
    assert parts["dice"] == pytest.approx(1 - (2 / 3 + 4 / 7) / 2, abs=1e-12)  # 8/21
    assert parts["iou"] == pytest.approx(1 - (4 / 7 + 1 / 2) / 2, abs=1e-12)


def test_soft_dice_iou_perfect_and_empty_class():
    truth = torch.zeros(1, 2, 3, 3)
    truth[:, 0] = 1  # class 1 absent and not predicted: smooth makes it a perfect 1
    dice, iou = soft_dice_iou(truth.clone(), truth)
    assert dice.item() == pytest.approx(1.0) and iou.item() == pytest.approx(1.0)


def test_all_pixels_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    total, parts = DeepSupervisionLoss("multiclass", dice_weight=1.0)((logits,), torch.full((1, 4, 4), 255))
    assert total.item() == pytest.approx(0.0) and math.isfinite(parts["total"])
    total.backward()
    assert torch.isfinite(logits.grad).all()


# -- real models -----------------------------------------------------------------------------

def test_with_u2netp_outputs_backward():
    import u2seg

    torch.manual_seed(0)
    model = u2seg.create_model("u2netp", num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    outputs = model(x)
    target = torch.randint(0, 3, (2, 32, 32))
    total, parts = DeepSupervisionLoss("multiclass", dice_weight=0.5)(outputs, target)
    assert [f"d{i}" for i in range(7)] == list(parts)[:7]
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.outconv.weight.grad.abs().sum() > 0 and model.side6.weight.grad.abs().sum() > 0


def test_with_binary_u2netp_and_one_output_unet():
    import u2seg

    torch.manual_seed(0)
    target = (torch.rand(2, 1, 32, 32) > 0.5).float()
    outputs = u2seg.create_model("u2netp")(torch.randn(2, 3, 32, 32))
    total, parts = DeepSupervisionLoss("binary")(outputs, target)
    official = sum(torch.nn.BCELoss()(torch.sigmoid(o), target) for o in outputs)
    assert total.item() == pytest.approx(official.item(), rel=1e-5)

    (logits,) = outputs[:1]  # a U-Net returns a 1-tuple; a bare tensor works too
    t1, p1 = DeepSupervisionLoss("binary", weights=[1.0])((logits,), target)
    t2, _ = DeepSupervisionLoss("binary")(logits, target)
    assert t1.item() == t2.item() == pytest.approx(parts["d0"], rel=1e-6)
    assert set(p1) == {"d0", "bce", "total"}


# -- errors ----------------------------------------------------------------------------------

def test_weights_must_match_number_of_outputs():
    outputs = _outputs(7, (1, 1, 4, 4))
    with pytest.raises(ValueError, match="3 loss weights for 7 model outputs"):
        DeepSupervisionLoss("binary", weights=[1, 1, 1])(outputs, torch.zeros(1, 4, 4))


@pytest.mark.parametrize("kwargs, message", [
    ({"weights": []}, "weights is empty"),
    ({"weights": [1.0, -1.0]}, "finite and ≥ 0"),
    ({"weights": [0.0, 0.0]}, "all 0"),
    ({"dice_weight": -0.5}, "dice_weight"),
    ({"iou_weight": float("nan")}, "iou_weight"),
])
def test_bad_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepSupervisionLoss("binary", **kwargs)


def test_bad_mode():
    with pytest.raises(ValueError, match="mode must be"):
        DeepSupervisionLoss("regression")


def test_shape_errors_binary():
    loss = DeepSupervisionLoss("binary")
    outputs = _outputs(7, (2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"target is 2×8×6 .* outputs are 2×8×8"):
        loss(outputs, torch.zeros(2, 8, 6))
    with pytest.raises(ValueError, match=r"target is 1×8×8"):
        loss(outputs, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="binary target must have one channel"):
        loss(outputs, torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="binary mode needs outputs with 1 channel, got 3"):
        loss(_outputs(7, (2, 3, 8, 8)), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*divide 0\.\.255 masks by 255"):
        loss(outputs, torch.full((2, 8, 8), 128.0))
    with pytest.raises(ValueError, match="output d3 has shape"):
        loss(outputs[:3] + (torch.zeros(2, 1, 4, 4),) + outputs[4:], torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="N×C×H×W"):
        loss((torch.zeros(8, 8),), torch.zeros(2, 8, 8))


def test_shape_errors_multiclass():
    loss = DeepSupervisionLoss("multiclass")
    outputs = _outputs(7, (2, 3, 8, 8))
    with pytest.raises(ValueError, match="integer class indices"):
        loss(outputs, torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="class 3, outside 0 … 2"):
        loss(outputs, torch.full((2, 8, 8), 3))
    with pytest.raises(ValueError, match="N×H×W class indices"):
        loss(outputs, torch.zeros(2, 3, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="target is 2×7×8"):
        loss(outputs, torch.zeros(2, 7, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="≥ 2 channels"):
        loss(_outputs(7, (2, 1, 8, 8)), torch.zeros(2, 8, 8, dtype=torch.long))
