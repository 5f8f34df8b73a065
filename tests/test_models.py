import json

import pytest
import torch

from conftest import REFERENCE
from u2seg import create_model, list_models
from u2seg.models import RSU, RSU4F, U2Net


@pytest.mark.parametrize("name", ["u2net", "u2netp"])
def test_state_dict_matches_official_names_shapes_and_order(name):
    reference = json.loads((REFERENCE / f"official_keys_{name}.json").read_text())
    ours = {k: list(v.shape) for k, v in create_model(name).state_dict().items()}
    assert len(reference) == 798
    assert list(ours) == list(reference)
    assert ours == reference


@pytest.mark.parametrize("name, millions", [("u2net", 44.0), ("u2netp", 1.13), ("unet", 32.1)])
def test_parameter_counts(name, millions):
    count = sum(p.numel() for p in create_model(name).parameters())
    assert round(count / 1e6, 2 if millions < 10 else 1) == millions


def test_rsu_blocks_are_configured_not_copied():
    for depth in (4, 5, 6, 7):
        block = RSU(depth, 8, 4, 8)
        convs = [n for n, _ in block.named_children() if n.startswith("rebnconv")]
        # in, 1..L, (L-1)d..1d
        assert len(convs) == 1 + depth + depth - 1
        assert block.get_submodule(f"rebnconv{depth}").conv_s1.dilation == (2, 2)
    dil = [m.conv_s1.dilation[0] for m in RSU4F(8, 4, 8).children()]
    assert dil == [1, 1, 2, 4, 8, 4, 2, 1]


@pytest.mark.parametrize("name", ["u2netp", "u2net", "unet"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 97, 131)])
def test_forward_returns_logits_at_input_size(name, shape):
    n, h, w = shape
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        outputs = model(torch.randn(n, 3, h, w))
    assert isinstance(outputs, tuple)
    assert len(outputs) == (1 if name == "unet" else 7)
    for out in outputs:
        assert out.shape == (n, 3, h, w)
        assert torch.isfinite(out).all()


def test_forward_in_training_mode_and_backward():
    model = create_model("u2netp").train()
    outputs = model(torch.randn(2, 3, 64, 48))
    loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(o, torch.zeros_like(o)) for o in outputs)
    loss.backward()
    assert model.stage1.rebnconvin.conv_s1.weight.grad is not None
    # logits, not probabilities: values outside [0, 1] are expected
    assert any((o < 0).any() for o in outputs)


def test_multiclass_heads_follow_paddleseg():
    model = create_model("u2netp", num_classes=5, in_channels=1)
    sd = model.state_dict()
    assert sd["side1.weight"].shape == (5, 64, 3, 3)
    assert sd["outconv.weight"].shape == (5, 30, 1, 1)
    assert sd["stage1.rebnconvin.conv_s1.weight"].shape == (64, 1, 3, 3)


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError) as err:
        create_model("u3net")
    for name in list_models():
        assert name in str(err.value)
    assert set(list_models()) >= {"u2net", "u2netp", "unet"}


def test_invalid_sizes_are_rejected():
    with pytest.raises(ValueError):
        create_model("u2netp", num_classes=0)
    with pytest.raises(ValueError):
        RSU(2, 3, 4, 5)


def test_model_is_u2net_instance_with_arch():
    model = create_model("u2netp")
    assert isinstance(model, U2Net) and model.arch == "u2netp"
