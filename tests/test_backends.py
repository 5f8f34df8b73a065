"""Every backend agrees with PyTorch; exports verify; precision choices fail clearly."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from u2seg.errors import U2SegError
from u2seg.export import ExportResult, export_model, verify_export
from u2seg.infer import Predictor, Preprocessing, load_image
from u2seg.infer.backends import available_backends, create_backend


@pytest.fixture(scope="module")
def network(predictor):
    return predictor.network


@pytest.fixture(scope="module")
def inputs(coffee, astronaut):
    pre = Preprocessing()
    return np.stack([pre(load_image(coffee)), pre(load_image(astronaut))])


@pytest.fixture(scope="module")
def reference(network, inputs):
    return create_backend(network, backend="torch").run(inputs)


def test_all_three_backends_are_installed():
    assert available_backends() == ["torch", "onnxruntime", "openvino"]


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_fp32_backends_agree_with_torch(use_pretrained_home, network, inputs, reference, name):
    backend = create_backend(network, backend=name)
    assert backend.name == name and backend.precision == "fp32"
    out = backend.run(inputs)
    assert out.shape == reference.shape == (2, 1, 320, 320)
    assert np.abs(out - reference).max() <= 1e-4
    single = backend.run(inputs[1:])  # batch sizes vary between calls
    assert np.abs(single - reference[1:]).max() <= 1e-4


def _mask_mae(a: np.ndarray, b: np.ndarray) -> float:
    def stretch(x):
        return (x - x.min()) / max(float(x.max() - x.min()), 1e-12)

    return float(np.mean([np.abs(stretch(x[0]) - stretch(y[0])).mean() * 255 for x, y in zip(a, b)]))


@pytest.mark.parametrize("name", ["torch", "openvino"])
def test_bf16_is_close_to_fp32_or_refused(use_pretrained_home, network, inputs, reference, name):
    if not torch.cpu._is_avx512_bf16_supported():
        with pytest.raises(U2SegError, match="bf16"):
            create_backend(network, backend=name, precision="bf16")
        return
    out = create_backend(network, backend=name, precision="bf16").run(inputs)
    assert 0 < _mask_mae(out, reference) < 8  # in 1/255; BENCHMARKS.md has the full table


def test_unsupported_combinations_are_clear(network):
    with pytest.raises(U2SegError, match="bf16"):
        create_backend(network, backend="onnxruntime", precision="bf16")
    with pytest.raises(U2SegError, match="int8"):
        create_backend(network, backend="torch", precision="int8")
    with pytest.raises(ValueError, match="backend"):
        create_backend(network, backend="tensorrt")
    with pytest.raises(ValueError, match="precision"):
        create_backend(network, precision="fp8")


def test_auto_takes_the_fastest_installed(use_pretrained_home, network):
    assert create_backend(network).name == "openvino"


def test_predictor_masks_agree_across_backends(use_pretrained_home, predictor, coffee):
    base = predictor.predict(coffee)
    for name in ("torch", "onnxruntime"):
        other = Predictor(predictor.network, backend=name).predict(coffee)
        assert np.abs(other - base).max() < 1e-3


# --------------------------------------------------------------------------------------- export


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("openvino", ".xml"), ("torchscript", ".pt")])
def test_exports_verify_against_pytorch(tmp_path, network, fmt, suffix):
    result = export_model(network, tmp_path / f"model{suffix}", fmt=fmt)
    assert isinstance(result, ExportResult) and result.path.is_file()
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4 and result.ok
    if fmt == "openvino":
        assert result.path.with_suffix(".bin").is_file()


def test_onnx_export_has_dynamic_batch_and_size(tmp_path, network):
    path = export_model(network, tmp_path / "m.onnx", verify=False).path
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.zeros((3, 3, 97, 131), np.float32)})[0]
    assert out.shape == (3, 1, 97, 131)


def test_verification_catches_a_wrong_export(tmp_path, network):
    path = export_model(network, tmp_path / "m.onnx", verify=False).path
    other = type(network)(network.config)  # same architecture, random weights
    assert verify_export(other.eval(), path, "onnx") > 1e-2


def test_rembg_export_is_the_official_layout(tmp_path, network, inputs, reference):
    path = export_model(network, tmp_path / "rembg.onnx", rembg=True).path
    model = onnx.load(str(path))
    assert len(model.graph.output) == 7 and model.opset_import[0].version == 11
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = session.run(None, {session.get_inputs()[0].name: inputs[:1]})
    # What rembg's u2net_custom session reads: the first output's channel 0.
    assert np.abs(outs[0][:, 0] - reference[:1, 0]).max() <= 1e-4


def test_export_command(tmp_path, use_pretrained_home, capsys):
    from u2seg.cli import main

    assert main(["export", str(tmp_path / "u2netp.onnx"), "-m", "u2netp"]) == 0
    out = capsys.readouterr().out
    assert "verified against PyTorch" in out and "ok" in out
    assert main(["export", str(tmp_path / "x.pt"), "--format", "torchscript", "--rembg", "-m", "u2netp"]) == 2
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "x.onnx"), "--format", "tflite"])


def test_int8_export_reports_fidelity_on_held_out_images(tmp_path, network, coffee, astronaut, capsys):
    from PIL import Image

    from u2seg.cli import main

    folder = tmp_path / "calib"
    folder.mkdir()
    for i, image in enumerate([coffee, astronaut, coffee[::-1], astronaut[:, ::-1]]):
        Image.fromarray(image).save(folder / f"{i}.png")
    weights = tmp_path / "w"
    from u2seg.weights import save_pretrained
    save_pretrained(network, weights)
    assert main(["export", str(tmp_path / "int8.onnx"), "--weights", str(weights), "--precision", "int8",
                 "--calibration", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "held-out image(s)" in out
    model = onnx.load(str(tmp_path / "int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    # The layer with outlier weights stays fp32 (its weight is a plain initializer); others are int8.
    initializers = {t.name for t in model.graph.initializer}
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    assert convs["/model/stage2d/rebnconv1d/conv_s1/Conv"].input[1] in initializers
    assert convs["/model/stage1/rebnconvin/conv_s1/Conv"].input[1] not in initializers


def test_int8_backend_stays_close_to_fp32(use_pretrained_home, network, inputs, reference):
    out = create_backend(network, backend="openvino", precision="int8").run(inputs)
    assert _mask_mae(out, reference) < 8


@pytest.mark.parametrize("name", ["torch", "onnxruntime", "openvino"])
def test_backends_run_from_several_threads(use_pretrained_home, network, inputs, reference, name):
    from concurrent.futures import ThreadPoolExecutor

    backend = create_backend(network, backend=name)
    assert backend.thread_safe
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: backend.run(inputs[i % 2:i % 2 + 1]), range(8)))
    for i, out in enumerate(results):
        assert np.abs(out - reference[i % 2:i % 2 + 1]).max() <= 1e-4
