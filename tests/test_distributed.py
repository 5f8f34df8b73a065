"""Several processes (DistributedDataParallel, gloo on the CPU): how the ranks split the global
batch, a real two-process ``torchrun -m u2seg train`` (one log row per step, the ranks end with
the same parameters, a plain checkpoint), resuming its checkpoint in one process, and the errors.

The two-process run: u2netp on 8 synthetic 64 px images, batch 2 per process, 3 steps."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from u2seg.data.synth import make_synthetic_dataset
from u2seg.errors import U2SegError
from u2seg.train.config import ConfigError, load_config
from u2seg.train.distributed import Distributed, parameter_checksum
from u2seg.train.sampler import StepSampler, sample_seed
from u2seg.train.trainer import train

_TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _rows(out, kind="train"):
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# -- the sampler ------------------------------------------------------------------------------

@pytest.mark.parametrize("world", [2, 3])
def test_ranks_partition_the_single_process_global_batch(world):
    n, batch, seed, start, total = 7, 2, 5, 1, 6  # 7 samples: global batches straddle epochs
    single = list(StepSampler(n, batch * world, seed, start, total))
    ranks = [list(StepSampler(n, batch, seed, start, total, rank=r, world_size=world)) for r in range(world)]
    assert all(len(r) == total - start for r in ranks)
    for i, expected in enumerate(single):
        parts = [r[i] for r in ranks]
        assert all(len(p) == batch for p in parts)
        assert [item for p in parts for item in p] == expected  # the union, in rank order
        seeds = [s for p in parts for _, s in p]  # one seed per sample position
        assert len(set(seeds)) == len(seeds)  # no position on two ranks
    step, rank = start + 2, world - 1  # rank r of W takes positions step·B·W + r·B + j
    first = step * batch * world + rank * batch
    assert [s for _, s in ranks[rank][2]] == [sample_seed(seed, p) for p in range(first, first + batch)]


# -- errors -----------------------------------------------------------------------------------

def test_environment_and_device_errors(monkeypatch):
    for name in _TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    assert not Distributed.from_env().enabled
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(U2SegError, match="RANK, MASTER_ADDR, MASTER_PORT not set: .*torchrun --nproc-per-node"):
        Distributed.from_env()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    d = Distributed.from_env()
    assert (d.rank, d.world_size, d.local_rank, d.enabled, d.is_main) == (1, 2, 1, True, False)
    assert d.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(U2SegError, match="under torchrun each process takes cuda:LOCAL_RANK"):
        d.resolve_device("cuda:1")
    if not torch.cuda.is_available():
        assert d.resolve_device("auto") == torch.device("cpu")


def test_sync_bn_needs_cuda(tmp_path, monkeypatch):
    for name in _TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    root = make_synthetic_dataset(tmp_path / "train", count=2, size=32, seed=0)
    raw = {"data": {"train": {"root": str(root)}}, "iterations": 1, "sync_bn": True, "device": "cpu",
           "output_dir": str(tmp_path / "run")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError, match="sync_bn: SyncBatchNorm needs CUDA"):
        load_config(path)
    if not torch.cuda.is_available():  # device auto on a machine without CUDA: found out at the start
        with pytest.raises(U2SegError, match="sync_bn: SyncBatchNorm needs CUDA, the device is cpu"):
            train(load_config(path, ["device=auto"]), progress=False)


# -- a real two-process run -------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """`torchrun --nproc-per-node 2 -m u2seg -v train CONFIG --no-progress`: (folder, config, process)."""
    root = tmp_path_factory.mktemp("ddp")
    raw = {
        "model": {"name": "u2netp", "num_classes": 1},
        "data": {"train": {"root": str(make_synthetic_dataset(root / "train", count=8, size=64, seed=0)),
                           "transform": {"name": "official_train", "size": 64, "crop": 48}},
                 "val": {"root": str(make_synthetic_dataset(root / "val", count=4, size=64, seed=1)),
                         "transform": {"name": "official_eval", "size": 48}}},
        "batch_size": 2, "iterations": 3, "log_interval": 1, "eval_interval": 0, "save_interval": 0,
        "output_dir": str(root / "run"),
    }
    config = root / "c.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small machine
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), "-m", "u2seg", "-v", "train", str(config), "--no-progress"]
    process = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=root, check=False)
    return root, config, process


def test_two_processes_train_one_model(ddp_run):
    from u2seg import create_model

    root, _, process = ddp_run
    assert process.returncode == 0, process.stderr[-4000:]
    out = root / "run"
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]  # rank 0 alone logs: one row per step
    assert all(math.isfinite(r["loss_total"]) and r["img_per_s"] > 0 for r in rows)
    assert [r["step"] for r in _rows(out, "eval")] == [3]
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["step"] == 3 and final["loss"] == pytest.approx(rows[-1]["loss_total"])
    assert 0 <= final["val_maxF"] <= 1 and (out / "best" / "model.safetensors").is_file()

    state = torch.load(out / "checkpoints" / "step_3.pt", weights_only=False)
    assert state["step"] == 3 and state["world_size"] == 2
    assert not any(k.startswith("module.") for k in state["model"])
    model = create_model("u2netp")
    model.load_state_dict(state["model"])  # strict: a plain one-process model takes it as it is

    # each rank logs a checksum of its final parameters: DDP kept them equal, and equal to the checkpoint
    checksums = dict(re.findall(r"rank (\d) of 2: parameter checksum (\w+)", process.stderr))
    assert checksums == {"0": parameter_checksum(model), "1": parameter_checksum(model)}, process.stderr[-4000:]
    assert "different parameters" not in process.stderr
    torch.manual_seed(0)
    assert checksums["0"] != parameter_checksum(create_model("u2netp"))  # it trained


@pytest.fixture
def one_thread():
    """One intra-op thread: on a small, busy machine several threads only wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_resume_two_process_checkpoint_in_one_process(ddp_run, tmp_path, monkeypatch, caplog, one_thread):
    root, config, process = ddp_run
    assert process.returncode == 0, process.stderr[-4000:]
    for name in _TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "run"
    shutil.copytree(root / "run", out)
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        result = train(load_config(config, [f"output_dir={out}", "iterations=5"]), resume=True, progress=False)
    assert result["step"] == 5 and result["start_step"] == 3 and math.isfinite(result["loss"])
    assert "global batch of 4 (batch_size × processes), this run uses 2" in caplog.text
    assert [r["step"] for r in _rows(out)] == [1, 2, 3, 4, 5]
    assert torch.load(out / "checkpoints" / "step_5.pt", weights_only=False)["world_size"] == 1
