"""Training: config validation and --set overrides, a short real run (loss, logs, checkpoints,
best/, previews), exact resume after Ctrl-C, fine-tuning into a multi-class head, mIoU eval,
TensorBoard scalars.

Real models (u2netp) on tiny synthetic sets (64 px), batch 2, a few iterations."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import os
import signal
import sys

import pytest
import torch
import yaml

from u2seg.data.synth import make_synthetic_dataset
from u2seg.errors import U2SegError
from u2seg.train.checkpoints import latest_checkpoint
from u2seg.train.config import ConfigError, TrainConfig, load_config
from u2seg.train.logs import summary_writer
from u2seg.train.trainer import Trainer, train


@pytest.fixture(scope="module")
def binary_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return {"train": make_synthetic_dataset(root / "train", count=8, size=64, seed=0),
            "val": make_synthetic_dataset(root / "val", count=4, size=64, seed=1),
            "fixed": make_synthetic_dataset(root / "fixed", count=2, size=64, seed=2)}


@pytest.fixture(scope="module")
def multiclass_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    return {"train": make_synthetic_dataset(root / "train", count=6, size=64, seed=3, multiclass=True, num_classes=3),
            "val": make_synthetic_dataset(root / "val", count=4, size=64, seed=4, multiclass=True, num_classes=3)}


def _raw(train_root, val_root=None, out=None, **top):
    raw = {
        "model": {"name": "u2netp", "num_classes": 1},
        "data": {"train": {"format": "folder", "root": str(train_root),
                           "transform": {"name": "official_train", "size": 64, "crop": 56}}},
        "batch_size": 2, "iterations": 4, "log_interval": 1, "eval_interval": 0, "save_interval": 0,
        "output_dir": str(out) if out else "runs/x",
    }
    if val_root is not None:
        raw["data"]["val"] = {"format": "folder", "root": str(val_root),
                              "transform": {"name": "official_eval", "size": 56}}
    raw.update(top)
    return raw


def _write(tmp_path, raw, name="train.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _rows(out, kind="train"):
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _board(out):
    """The scalars in ``out/tensorboard``, as read by TensorBoard: {tag: [(step, value)]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


# -- config -----------------------------------------------------------------------------------

def test_config_defaults_are_the_official_optimizer(tmp_path, binary_data):
    cfg = load_config(_write(tmp_path, _raw(binary_data["train"])))
    assert isinstance(cfg, TrainConfig)
    o = cfg.optimizer
    assert (o.name, o.lr, o.betas, o.eps, o.weight_decay) == ("adam", 1e-3, (0.9, 0.999), 1e-8, 0.0)
    assert cfg.schedule.name == "constant" and cfg.precision == "fp32"


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(optimiser={"lr": 0.1}), "optimiser: unknown key in the top level; did you mean 'optimizer'?"),
    (lambda r: r["model"].update(nmae="u2net"), "model.nmae: unknown key in model; did you mean 'name'?"),
    (lambda r: r.update(batch_size="eight"), "batch_size: expected an integer, got string 'eight'"),
    (lambda r: r.update(deterministic="yes please"), "deterministic: expected a boolean"),
    (lambda r: r.update(optimizer={"betas": [0.9]}), "optimizer.betas: expected a list of 2"),
    (lambda r: r.pop("data"), "data: required key is missing"),
    (lambda r: r["data"]["train"].pop("root"), "data.train.root: required key is missing"),
    (lambda r: r.update(epochs=2), "give exactly one of them (both given)"),
    (lambda r: r.pop("iterations"), "give exactly one of them (neither given), or a time budget max_minutes"),
    (lambda r: r.update(max_minutes=0), "max_minutes: must be > 0, got 0"),
    (lambda r: r["data"]["train"].update(stages=[{"until": 0.6, "transform": "official_train"},
                                                 {"until": 0.3, "transform": "official_train"}]),
     "data.train.stages[1].until: fractions of the run must increase within (0, 1), got 0.3 after 0.6"),
    (lambda r: r["data"]["train"].update(stages=[{"until": 0.5, "transform": {"name": "oficial_train"}}]),
     "data.train.stages[0].transform.name: 'oficial_train' is not one of"),
    (lambda r: r["data"]["train"].update(stages=[{"until": 0.5}]), "data.train.stages[0].transform: required key"),
    (lambda r: r.update(precision="fp16"), "precision: 'fp16' is not one of fp32, bf16"),
    (lambda r: r["model"].update(name="u2net_p"), "did you mean 'u2netp'?"),
])
def test_config_errors_name_the_key(tmp_path, binary_data, edit, message):
    raw = _raw(binary_data["train"])
    edit(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_config_missing_dataset_folder(tmp_path, binary_data):
    with pytest.raises(ConfigError, match=r"data\.train\.root: .*nowhere: dataset folder not found"):
        load_config(_write(tmp_path, _raw(tmp_path / "nowhere")))
    raw = _raw(binary_data["train"])
    raw["data"]["train"]["masks_dir"] = "labels"
    with pytest.raises(ConfigError, match=r"data\.train\.masks_dir: .*labels: folder not found"):
        load_config(_write(tmp_path, raw))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_set_overrides(tmp_path, binary_data):
    path = _write(tmp_path, _raw(binary_data["train"]))
    cfg = load_config(path, ["optimizer.lr=1e-4", "iterations=7", "schedule.name=poly", "schedule.warmup_iters=2",
                             "loss.weights=[1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]", "data.val.root=" + str(binary_data["val"]),
                             "precision=bf16", "model.pretrained=false"])
    assert cfg.optimizer.lr == 1e-4 and cfg.iterations == 7
    assert cfg.schedule.name == "poly" and cfg.schedule.warmup_iters == 2
    assert cfg.loss.weights == [1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert cfg.data.val.root == str(binary_data["val"]) and cfg.data.val.format == "folder"
    assert cfg.precision == "bf16"
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        load_config(path, ["optimizer.learning_rate=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["iterations"])
    with pytest.raises(ConfigError, match="iterations: expected an integer"):
        load_config(path, ["iterations=many"])
    with pytest.raises(ConfigError, match="batch_size is a integer, not a section"):
        load_config(path, ["batch_size.x=1"])


# -- training -----------------------------------------------------------------------------------

def test_short_run_lowers_loss_and_writes_everything(tmp_path, binary_data):
    out = tmp_path / "run"
    raw = _raw(binary_data["fixed"], binary_data["val"], out, iterations=8, save_interval=4, keep_checkpoints=1,
               eval_interval=4, preview_interval=8, preview_count=2)
    raw["data"]["train"]["transform"] = {"name": "official_eval", "size": 56}  # the same batch every step
    result = train(load_config(_write(tmp_path, raw)), progress=False)

    rows = _rows(out)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[-1]["loss_total"] < 0.8 * rows[0]["loss_total"]
    assert result["step"] == 8 and result["loss"] == pytest.approx(rows[-1]["loss_total"])
    with (out / "metrics.csv").open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 8 and {"step", "lr", "img_per_s", "loss_total", "loss_d0", "loss_d6"} <= set(table[0])
    evals = _rows(out, "eval")
    assert [r["step"] for r in evals] == [4, 8]
    assert 0 <= result["val_maxF"] <= 1 and 0 <= result["val_MAE"] <= 1
    assert result["best"] == max(r["maxF"] for r in evals)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_8.pt"]  # keep_checkpoints=1
    state = torch.load(out / "checkpoints" / "step_8.pt", weights_only=False)
    assert state["step"] == 8 and {"python", "numpy", "torch"} <= set(state["rng"])
    assert {"model", "optimizer", "scheduler", "config"} <= set(state)
    best = json.loads((out / "best" / "config.json").read_text())
    assert best["model"] == "u2netp" and best["metric"] == "maxF" and best["step"] == result["best_step"]
    assert (out / "best" / "model.safetensors").is_file()
    from PIL import Image

    with Image.open(out / "previews" / "step_8.png") as im:
        assert im.size == (3 * 56, 2 * 56)  # image | label | prediction, one row per sample
    assert (out / "config.yaml").is_file() and (out / "final_metrics.json").is_file()
    with pytest.raises(U2SegError, match="holds checkpoints of an earlier run; continue it with --resume"):
        train(load_config(_write(tmp_path, raw)), progress=False)  # a fresh run never mixes with an old one


@pytest.mark.parametrize("how", ["sigint-during-step", "keyboardinterrupt-between-steps"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, binary_data, monkeypatch, how):
    def config(out):
        raw = _raw(binary_data["train"], out=out, iterations=6, deterministic=True, workers=0, seed=3,
                   schedule={"name": "poly", "warmup_iters": 2, "warmup_ratio": 0.1}, preview_interval=3,
                   preview_count=1, ema_decay=0.9)
        # smaller crops for the first half: the interruption at step 3 falls on the stage boundary
        raw["data"]["train"]["stages"] = [{"until": 0.5, "transform": {"name": "official_train", "size": 48,
                                                                        "crop": 40}}]
        return load_config(_write(tmp_path, raw, f"{out.name}.yaml"))

    straight = tmp_path / "straight"
    train(config(straight), progress=False)
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is given back

    resumed = tmp_path / "resumed"
    if how == "sigint-during-step":  # a real Ctrl-C in the middle of step 3: it finishes, saves, stops
        original = Trainer._forward

        def forward(self, images, net):
            if self.model.training and self.step == 2:
                os.kill(os.getpid(), signal.SIGINT)
            return original(self, images, net)

        monkeypatch.setattr(Trainer, "_forward", forward)
    else:  # KeyboardInterrupt raised after step 3 (during the preview)
        original = Trainer.preview

        def preview(self):
            original(self)
            if self.step == 3:
                raise KeyboardInterrupt

        monkeypatch.setattr(Trainer, "preview", preview)
    with pytest.raises(KeyboardInterrupt):
        train(config(resumed), progress=False)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert latest_checkpoint(resumed).name == "step_3.pt"  # saved by the Ctrl-C handler
    result = train(config(resumed), resume=True, progress=False)
    assert result["step"] == 6 and result["start_step"] == 3

    a = torch.load(straight / "checkpoints" / "step_6.pt", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "step_6.pt", weights_only=False)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["ema"]["updates"] == b["ema"]["updates"] == 6
    for key in a["ema"]["module"]:  # the weight average continues too
        assert torch.equal(a["ema"]["module"][key], b["ema"]["module"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert [r["step"] for r in _rows(resumed)] == list(range(1, 7))
    assert [r["loss_total"] for r in _rows(resumed)] == [r["loss_total"] for r in _rows(straight)]
    if importlib.util.find_spec("tensorboard") is not None:  # the resumed run adds to the same TensorBoard run
        assert _board(resumed)["train/loss_total"] == _board(straight)["train/loss_total"]
        assert [step for step, _ in _board(resumed)["train/loss_total"]] == list(range(1, 7))


def test_model_ema_follows_the_formula():
    from u2seg.train.ema import ModelEMA

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = ModelEMA(model, decay=0.25)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    decays = []
    for _ in range(4):
        with torch.no_grad():  # a "step": new weights, and BatchNorm statistics from a forward pass
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(2, 3, 8, 8))
        decays.append(ema.current_decay())
        ema.update(model)
        d = decays[-1]
        for key, value in model.state_dict().items():
            expected[key] = value.clone() if key.endswith("num_batches_tracked") else d * expected[key] + (1 - d) * value
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12, 0.25])  # the warm-up ramp, then the decay
    state = ema.module.state_dict()
    for key, value in expected.items():
        assert torch.allclose(state[key], value, atol=1e-6), key
    assert int(state["1.num_batches_tracked"]) == 4
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="decay must be in"):
        ModelEMA(model, decay=1.0)


def test_ema_weights_are_the_ones_evaluated_and_saved(tmp_path, binary_data):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    raw = _raw(binary_data["train"], binary_data["val"], out, iterations=4, ema_decay=0.9, optimizer={"lr": 3e-3})
    result = train(load_config(_write(tmp_path, raw)), progress=False)
    state = torch.load(out / "checkpoints" / "step_4.pt", weights_only=False)
    averaged, latest = state["ema"]["module"], state["model"]
    assert state["ema"]["updates"] == 4
    assert not torch.equal(averaged["stage1.rebnconvin.conv_s1.weight"], latest["stage1.rebnconvin.conv_s1.weight"])
    saved = load_file(str(out / "best" / "model.safetensors"))
    assert result["best_step"] == 4 and saved.keys() == averaged.keys()
    for key, value in saved.items():
        assert torch.equal(value, averaged[key]), key
    assert json.loads((out / "best" / "config.json").read_text())["ema_decay"] == 0.9
    with pytest.raises(ConfigError, match=r"ema_decay: must lie in \[0, 1\)"):
        load_config(_write(tmp_path, {**raw, "ema_decay": 1.0}))


@pytest.mark.parametrize("workers", [0, 1])
def test_transform_stages_switch_crops_on_schedule(tmp_path, binary_data, monkeypatch, workers):
    seen = []
    original = Trainer._forward

    def forward(self, images, net):
        if self.model.training:
            seen.append(tuple(images.shape[-2:]))
        return original(self, images, net)

    monkeypatch.setattr(Trainer, "_forward", forward)
    raw = _raw(binary_data["train"], out=tmp_path / "run", iterations=8, workers=workers)
    raw["data"]["train"]["stages"] = [
        {"until": 0.25, "transform": {"name": "official_train", "size": 40, "crop": 32}},
        {"until": 0.5, "transform": {"name": "official_train", "size": 56, "crop": 48}}]
    train(load_config(_write(tmp_path, raw)), progress=False)
    # steps 0-1 before 0.25 of the run, 2-3 before 0.5, then the configured 56 px crops
    assert seen == [(32, 32)] * 2 + [(48, 48)] * 2 + [(56, 56)] * 4
    assert [r["step"] for r in _rows(tmp_path / "run")] == list(range(1, 9))


def test_time_budget_stops_in_time_decays_over_the_clock_and_resumes(tmp_path, binary_data, caplog):
    out = tmp_path / "run"
    lr, floor, budget = 1e-3, 1e-5, 3.0
    raw = _raw(binary_data["train"], out=out, max_minutes=budget / 60, optimizer={"lr": lr},
               schedule={"name": "cosine", "warmup_iters": 2, "min_lr": floor})
    raw.pop("iterations")  # the budget alone ends the run
    result = train(load_config(_write(tmp_path, raw)), progress=False)
    rows = _rows(out)
    clocks = [r["run_seconds"] for r in rows]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 3
    assert clocks == sorted(clocks)
    # it stops when one more step would not fit (nothing else to keep free: no evaluation before the end)
    step = (clocks[-1] - clocks[0]) / (len(clocks) - 1)
    assert clocks[-2] < budget <= clocks[-1] + 3 * step
    assert result["iterations"] is None and result["step"] == len(rows)

    def cosine(clock):
        return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, clock / budget)))

    # after the warm-up, step k + 1's rate follows the clock at the end of step k
    for before, row in zip(rows[1:], rows[2:]):
        assert row["lr"] == pytest.approx(cosine(before["run_seconds"]), rel=1e-9)
    state = torch.load(latest_checkpoint(out), weights_only=False)
    assert state["step"] == len(rows) and state["run_seconds"] >= clocks[-1]

    raw["max_minutes"] = 2 * budget / 60  # a larger budget: --resume goes on where the clock stopped
    train(load_config(_write(tmp_path, raw)), resume=True, progress=False)
    more = _rows(out)[len(rows):]
    assert more[0]["step"] == len(rows) + 1 and more[0]["run_seconds"] > state["run_seconds"]
    assert more[-2]["run_seconds"] < 2 * budget <= more[-1]["run_seconds"] + 3 * step
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        train(load_config(_write(tmp_path, raw)), resume=True, progress=False)
    assert "nothing left to train (raise max_minutes to go on)" in caplog.text
    assert len(_rows(out)) == len(rows) + len(more)


def test_tensorboard_scalars_match_the_metrics(tmp_path, binary_data):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    raw = _raw(binary_data["train"], binary_data["val"], out, iterations=3, log_interval=2)
    train(load_config(_write(tmp_path, raw)), progress=False)
    board = _board(out)
    assert {"train/loss_total", "train/loss_d0", "train/lr", "train/img_per_s", "val/maxF", "val/MAE",
            "val/loss"} <= set(board)
    assert not {"train/step", "train/time", "val/main", "val/best"} & set(board)
    rows = _rows(out)
    assert [r["step"] for r in rows] == [step for step, _ in board["train/loss_total"]] == [2, 3]
    assert [v for _, v in board["train/loss_total"]] == pytest.approx([r["loss_total"] for r in rows], rel=1e-6)
    (evaluation,) = _rows(out, "eval")
    ((step, max_f),) = board["val/maxF"]
    assert step == 3 and max_f == pytest.approx(evaluation["maxF"], rel=1e-6)


def test_tensorboard_not_installed_is_one_info_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were missing
    with caplog.at_level(logging.INFO, logger="u2seg"):
        assert summary_writer(tmp_path / "tensorboard", None) is None
    assert "pip install tensorboard" in caplog.text
    assert not (tmp_path / "tensorboard").exists()


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_freeze_bn_keeps_the_loaded_statistics_while_scale_and_shift_learn(tmp_path, binary_data, freeze_bn):
    from u2seg import create_model
    from u2seg.weights import save_pretrained

    torch.manual_seed(0)
    model = create_model("u2netp")
    with torch.no_grad():  # statistics unlike any batch's, as pretrained ones are
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    source = save_pretrained(model, tmp_path / "pretrained")
    loaded = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "run"
    # an evaluation in the middle: the layers must go back to frozen afterwards
    raw = _raw(binary_data["train"], binary_data["val"], out, iterations=4, eval_interval=2, save_interval=4,
               freeze_bn=freeze_bn, model={"name": "u2netp", "num_classes": 1, "pretrained": str(source)})
    train(load_config(_write(tmp_path, raw)), progress=False)
    trained = torch.load(out / "checkpoints" / "step_4.pt", weights_only=False)["model"]
    stats = [k for k in loaded if k.endswith(("running_mean", "running_var"))]
    affine = [k for k in loaded if k.endswith(".bn_s1.weight")]
    assert stats and affine
    assert all(torch.equal(trained[k], loaded[k]) for k in stats) == freeze_bn
    assert not any(torch.equal(trained[k], loaded[k]) for k in affine)   # scale and shift learn either way
    assert trained["stage1.rebnconvin.bn_s1.num_batches_tracked"] == (0 if freeze_bn else 4)


def test_freeze_bn_and_sync_bn_are_refused_together(tmp_path, binary_data):
    raw = _raw(binary_data["train"], freeze_bn=True, sync_bn=True, device="cuda")
    with pytest.raises(ConfigError, match="sync_bn, freeze_bn: frozen BatchNorm statistics are not synchronised"):
        load_config(_write(tmp_path, raw))


def test_finetune_binary_checkpoint_into_three_classes(tmp_path, multiclass_data, caplog):
    from u2seg import create_model
    from u2seg.weights import save_pretrained

    torch.manual_seed(0)
    source = save_pretrained(create_model("u2netp"), tmp_path / "binary")
    out = tmp_path / "mc"
    raw = _raw(multiclass_data["train"], multiclass_data["val"], out, iterations=3, eval_interval=3,
               model={"name": "u2netp", "num_classes": 3, "pretrained": str(source)},
               loss={"dice_weight": 0.5})
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        result = train(load_config(_write(tmp_path, raw)), progress=False)

    heads = {k for k in create_model("u2netp").state_dict() if "side" in k or "outconv" in k}
    assert result["skipped"] and set(result["skipped"]) <= heads
    assert all(k.endswith(("weight", "bias")) for k in result["skipped"])
    assert len(result["skipped"]) == 14  # six side convs and the fusing conv, weight and bias each
    assert "skipped" in caplog.text or "start from scratch" in caplog.text
    assert 0 <= result["val_mIoU"] <= 1 and math.isfinite(result["val_pixel_accuracy"])
    evals = _rows(out, "eval")
    assert evals[-1]["mIoU"] == pytest.approx(result["val_mIoU"]) and len(evals[-1]["IoU"]) == 3
    best = json.loads((out / "best" / "config.json").read_text())
    assert best["num_classes"] == 3 and best["metric"] == "mIoU"
    assert {"loss_ce", "loss_dice"} <= set(_rows(out)[0])


def test_train_command_runs_the_config(tmp_path, capsys):
    """`u2seg train CONFIG --set ...` end to end on a tiny synthetic set."""
    from u2seg.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(
        "model: {name: u2netp, num_classes: 1}\n"
        "data:\n"
        f"  train: {{format: folder, root: {tmp_path / 'train'}, synthetic: {{count: 4, size: 48, seed: 0}},\n"
        "          transform: {name: official_train, size: 40, crop: 32}}\n"
        f"  val: {{format: folder, root: {tmp_path / 'val'}, synthetic: {{count: 2, size: 48, seed: 1}},\n"
        "        transform: {name: official_eval, size: 32}}\n"
        "batch_size: 2\niterations: 2\neval_interval: 2\n"
        f"output_dir: {tmp_path / 'run'}\n")
    assert main(["train", str(config), "--set", "iterations=3", "--no-progress"]) == 0
    assert (tmp_path / "run" / "best" / "config.json").is_file()
    import json
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 3 and 0.0 <= printed["val_maxF"] <= 1.0
    assert main(["train", str(config), "--set", "iterationz=3"]) == 2  # unknown key: one clear error
    assert "iterations" in capsys.readouterr().err


def test_data_check_command_names_bad_files(tmp_path, capsys):
    from PIL import Image

    from u2seg.cli import main
    from u2seg.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "ds", count=3, size=32, seed=0)
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{name: u2netp}}\ndata:\n  train: {{format: folder, root: {root}}}\n"
                      f"iterations: 1\noutput_dir: {tmp_path / 'run'}\n")
    assert main(["data", "check", str(config)]) == 0
    assert "train: 3 samples, 0 problem(s)" in capsys.readouterr().out
    first_mask = sorted((root / "masks").iterdir())[0]
    Image.new("L", (17, 9)).save(first_mask)  # wrong size
    (root / "images" / "orphan.jpg").write_bytes((sorted((root / "images").iterdir())[0]).read_bytes())
    assert main(["data", "check", str(config)]) == 1
    err = capsys.readouterr().err
    assert first_mask.stem in err and "orphan" in err


def test_precision_auto_picks_bf16_only_on_bf16_hardware(tmp_path, binary_data, caplog):
    from u2seg.train.build import use_bf16

    cpu = torch.device("cpu")
    assert use_bf16("fp32", cpu) is False and use_bf16("bf16", cpu) is True
    has_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert use_bf16("auto", cpu) == has_bf16
    raw = _raw(binary_data["train"], out=tmp_path / "run", precision="auto", iterations=1)
    with caplog.at_level(logging.INFO, logger="u2seg.train.trainer"):
        result = train(raw, progress=False)
    assert math.isfinite(result["loss"])
    assert f"precision auto: {'bf16' if has_bf16 else 'fp32'} on cpu" in caplog.text
    with pytest.raises(ConfigError, match="precision"):
        load_config(_write(tmp_path, {**raw, "precision": "fp16"}), check_paths=False)


def test_weights_carry_their_recipe_to_every_front_end(tmp_path, caplog, coffee):
    """Trained at 64 px without a validation set: best/ records the training transform's resize
    size and normalisation, and remove, the Predictor and the server run at 64 px unasked."""
    import json
    import logging
    import warnings

    from PIL import Image

    from u2seg.cli import main
    from u2seg.infer import Predictor

    config = tmp_path / "c.yaml"
    config.write_text(
        "model: {name: u2netp, num_classes: 1}\n"
        "data:\n"
        f"  train: {{format: folder, root: {tmp_path / 'train'}, synthetic: {{count: 4, size: 80, seed: 0}},\n"
        "          transform: {name: official_train, size: 64, crop: 56}}\n"
        "batch_size: 2\niterations: 3\n"
        f"output_dir: {tmp_path / 'run'}\n")
    assert main(["train", str(config), "--no-progress"]) == 0
    best = tmp_path / "run" / "best"
    saved = json.loads((best / "config.json").read_text())
    assert saved["input_size"] == [64, 64] and len(saved["mean"]) == 3 and saved["input_norm"] == "max"
    assert Predictor(weights=best).preprocessing.size == (64, 64)

    image = tmp_path / "cup.png"
    Image.fromarray(coffee).save(image)
    with caplog.at_level(logging.INFO):
        assert main(["-v", "remove", str(image), "-o", str(tmp_path / "out"), "-w", str(best)]) == 0
    assert "input 64×64" in caplog.text

    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

    from u2seg.apps.server import create_app
    from u2seg.infer.sessions import get_predictor

    app = create_app(predictor_factory=lambda name: get_predictor(weights=best), models=["mine"], default_model="mine")
    with TestClient(app) as client:
        assert client.post("/api/remove", content=image.read_bytes(), headers={"Content-Type": "image/png"}).status_code == 200
        (entry,) = client.get("/api/models").json()["models"]
    assert entry["input_size"] == [64, 64]
