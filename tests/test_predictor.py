import numpy as np
import pytest
from PIL import Image

import u2seg
from u2seg.infer import Predictor, Preprocessing, RefineOptions, probability_to_mask, refine_output
from u2seg.infer.postprocess import parse_color


def test_pretrained_mask_is_high_on_the_cup_and_low_in_the_corners(predictor, coffee):
    prob = predictor.predict(coffee)
    assert prob.shape == coffee.shape[:2] and prob.dtype == np.float32
    assert prob[150:250, 250:350].mean() > 0.95  # the cup
    for corner in (prob[:40, :40], prob[:40, -40:], prob[-40:, :40], prob[-40:, -40:]):
        assert corner.mean() < 0.02
    assert prob.min() >= 0 and prob.max() <= 1


def test_default_pipeline_is_the_official_one(predictor):
    pre = predictor.preprocessing
    assert pre.size == (320, 320) and pre.input_norm == "max" and pre.resample == "lanczos"
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    assert predictor.output_norm == "minmax"


def test_preprocessing_divides_by_the_image_max_and_standardises():
    image = Image.fromarray(np.full((10, 20, 3), 100, np.uint8))
    x = Preprocessing(size=(8, 6))(image)
    assert x.shape == (3, 6, 8) and x.dtype == np.float32
    expected = (1.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[:, 0, 0], expected, rtol=1e-6)
    black = Preprocessing()(Image.new("RGB", (5, 5)))
    assert np.isfinite(black).all()
    unit = Preprocessing(size=(8, 6), input_norm="unit")(image)
    np.testing.assert_allclose(unit[:, 0, 0], (100 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-5)


@pytest.mark.parametrize("bad", [dict(input_norm="zscore"), dict(resample="cubic-ish"), dict(size=(0, 3))])
def test_preprocessing_rejects_bad_options(bad):
    with pytest.raises(ValueError):
        Preprocessing(**bad)


def test_odd_inputs(predictor, astronaut):
    tiny = predictor.predict(np.zeros((1, 1, 3), np.uint8))
    assert tiny.shape == (1, 1) and np.isfinite(tiny).all()
    gray = predictor.predict(Image.fromarray(astronaut).convert("L"))
    assert gray.shape == astronaut.shape[:2]
    constant = predictor.predict(np.full((50, 70, 3), 128, np.uint8))
    assert constant.shape == (50, 70) and np.isfinite(constant).all()


def test_batch_equals_single(predictor, coffee, astronaut):
    many = predictor.predict_many([coffee, astronaut])
    np.testing.assert_allclose(many[0], predictor.predict(coffee), atol=1e-5)
    np.testing.assert_allclose(many[1], predictor.predict(astronaut), atol=1e-5)
    assert predictor.predict_many([]) == []


def test_threshold_and_size_options(pretrained_home, coffee):
    weights = pretrained_home / "weights" / "u2netp"
    binary = Predictor(weights=weights, threshold=0.5).predict(coffee)
    assert set(np.unique(binary)) <= {0.0, 1.0}
    small = Predictor(weights=weights, size=160)
    assert small.preprocessing.size == (160, 160)
    prob = small.predict(coffee)
    assert prob[150:250, 250:350].mean() > 0.9  # still finds the cup at half resolution
    with pytest.raises(ValueError):
        Predictor(weights=weights, threshold=1.5)
    raw = Predictor(weights=weights, output_norm="none").predict(coffee)
    assert raw.max() <= 1.0 and not np.array_equal(raw, Predictor(weights=weights).predict(coffee))


def test_predictor_accepts_a_module(predictor, coffee):
    same = Predictor(predictor.network, backend="torch")
    assert same.backend.name == "torch"
    np.testing.assert_allclose(same.predict(coffee), predictor.predict(coffee), atol=1e-4)


def test_cutout_keeps_colours_and_uses_mask_as_alpha(predictor, coffee):
    cut = predictor.cutout(coffee)
    assert cut.mode == "RGBA" and cut.size == (coffee.shape[1], coffee.shape[0])
    rgba = np.asarray(cut)
    visible = rgba[..., 3] > 0
    np.testing.assert_array_equal(rgba[visible, :3], coffee[visible])  # straight, not premultiplied
    assert (rgba[~visible, :3] == 0).all()  # invisible colour is zeroed (smaller, faster PNGs)
    np.testing.assert_array_equal(rgba[..., 3], np.asarray(predictor.mask(coffee)))
    on_green = predictor.cutout(coffee, bgcolor=(0, 255, 0, 255))
    assert on_green.mode == "RGB"  # an opaque background leaves nothing transparent
    assert tuple(np.asarray(on_green)[0, 0]) == (0, 255, 0)  # a background corner


def test_cutout_multiplies_an_existing_alpha():
    image = Image.new("RGBA", (4, 4), (10, 20, 30, 128))
    out = refine_output(image, np.ones((4, 4), np.float32), RefineOptions())
    assert np.asarray(out)[..., 3].max() == 128


def test_masks_round_and_colours_validate():
    mask = probability_to_mask(np.array([[0.0, 0.5, 1.0, 1.2]], np.float32))
    assert list(np.asarray(mask)[0]) == [0, 128, 255, 255]
    assert parse_color([1, 2, 3]) == (1, 2, 3, 255)
    for bad in ([1, 2], [0, 0, 256], [-1, 0, 0, 0]):
        with pytest.raises(ValueError):
            parse_color(bad)


def test_top_level_remove(use_pretrained_home, coffee):
    cut = u2seg.remove(coffee, model="u2netp")
    mask = u2seg.remove(coffee, model="u2netp", only_mask=True)
    assert cut.mode == "RGBA" and mask.mode == "L" and mask.size == cut.size
    np.testing.assert_array_equal(np.asarray(cut)[..., 3], np.asarray(mask))


def test_a_module_given_with_weights_gets_them(pretrained_home, predictor, coffee):
    from u2seg import create_model

    untrained = create_model("u2netp")
    loaded = Predictor(untrained, weights=pretrained_home / "weights" / "u2netp", backend="torch")
    np.testing.assert_allclose(loaded.predict(coffee), predictor.predict(coffee), atol=1e-4)
