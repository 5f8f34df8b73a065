"""The training loop: ``train(config) -> final metrics``.

- Data: the config's datasets, checked with ``check_dataset`` before the first step. Batches are
  a pure function of (seed, step): sample ``p`` of the run (``p = step·batch + j``) is item
  ``perm_e[p mod n]`` of epoch ``e = p // n``'s permutation, augmented with a seed derived from
  (seed, p). A resumed run therefore sees exactly the batches the uninterrupted run would have.
- Model: ``create_model``; ``pretrained`` weights load with ``load_weights_into`` (a head of
  another ``num_classes`` is skipped and reported in the log and in the result's ``skipped``).
- Loss ``DeepSupervisionLoss`` (binary for ``num_classes == 1``, else multiclass), Adam (the
  official settings by default), LambdaLR schedule (warm-up, then constant / poly / cosine).
- ``output_dir``: ``config.yaml``, ``metrics.jsonl`` (training rows, and ``"kind": "eval"`` rows),
  ``metrics.csv`` (training rows), ``checkpoints/step_N.pt`` (the last ``keep_checkpoints``),
  ``best/`` (``save_pretrained`` by maxF, binary, or mIoU, multiclass), ``previews/step_N.png``
  (image | label | prediction), ``tensorboard/`` (the same scalars, when ``tensorboard`` is
  installed and the config's ``tensorboard`` is on).
- ``resume=True`` continues from the latest checkpoint in ``output_dir/checkpoints``, a path from
  that checkpoint. Ctrl-C saves a checkpoint, then re-raises ``KeyboardInterrupt``.
- ``max_minutes``: a time budget on the run's clock (``run_seconds``: wall time of setup (data
  checks), training, evaluation and checkpoints, summed over resumed sessions). Poly/cosine decay follow the clock
  (``clock / budget``, or the further of that and the step count when ``iterations`` is set too),
  and the run stops when another step plus the final evaluation, preview and checkpoint (1.25 ×
  the longest such pause so far) would not fit in the budget. The rate then depends on the
  machine's speed: such runs are not reproducible step for step.
- ``ema_decay``: evaluation, previews and ``best/`` use an exponential moving average of the
  weights (``ema.py``); checkpoints hold both.

Several processes (``torchrun --nproc-per-node N -m u2seg train CONFIG``; WORLD_SIZE > 1 in the
environment) train one model with DistributedDataParallel: backend gloo on the CPU, nccl on CUDA
(process ``LOCAL_RANK`` takes ``cuda:LOCAL_RANK``).

- ``batch_size`` is per process; the global batch is ``batch_size × world_size`` and one step is
  one synchronous update. Rank ``r`` takes positions ``p = step·B·W + r·B + j`` of the sample
  sequence above, so the ranks' batches of a step are disjoint and together are exactly the batch a
  single process with ``batch_size = B·W`` would see. ``epochs`` count global batches.
- Rank 0 alone writes (logs, progress bar, TensorBoard, checkpoints, previews, ``best/``,
  ``final_metrics.json``, ``config.yaml``) and evaluates, while the other ranks wait at a barrier
  (validation sets are small). Logged losses are the means over all ranks, ``img_per_s`` counts
  the images of all ranks.
- Checkpoints hold the plain model's weights (no ``module.`` prefix): they resume in one process
  or in several. On resume every rank loads the same checkpoint and takes rank 0's RNG states;
  the data order continues exactly when the global batch is the same.
- Ctrl-C (torchrun passes it to every rank): the ranks agree after each step, finish it, rank 0
  saves a checkpoint. ``sync_bn`` converts BatchNorm to SyncBatchNorm (CUDA only).
- At the end every rank logs a checksum of its parameters (INFO); rank 0 warns if they differ.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import U2SegError
from ..fileio import write_bytes_atomic
from .config import DatasetConfig, TrainConfig, _under, config_from_dict, config_to_dict
from .ema import ModelEMA

__all__ = ["build_dataset", "build_schedule", "latest_checkpoint", "train"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
_NOT_SCALARS = frozenset({"kind", "step", "time", "train_seconds", "run_seconds", "main", "best"})  # log rows → TensorBoard


# --------------------------------------------------------------------------------------------
# building blocks


def build_dataset(d: DatasetConfig, num_classes: int):
    """A dataset from its config (making the synthetic set first when asked for)."""
    from ..data import FileList, FolderPairs, VOCSegmentation, build_transform

    root = Path(d.root).expanduser()
    if d.synthetic is not None and not root.exists():
        from ..data.synth import make_synthetic_dataset

        log.info("making the synthetic dataset %s (%d images of %d px)", root, d.synthetic.count, d.synthetic.size)
        make_synthetic_dataset(root, count=d.synthetic.count, size=d.synthetic.size, seed=d.synthetic.seed,
                               multiclass=num_classes > 1, num_classes=max(num_classes, 2))
    transform = build_transform(d.transform)
    if d.format == "folder":
        if d.images_dir is None and d.masks_dir is None:
            return FolderPairs(root, num_classes=num_classes, transform=transform)
        images = _under(root, d.images_dir) if d.images_dir else root / "images"
        masks = _under(root, d.masks_dir) if d.masks_dir else root / "masks"
        return FolderPairs(images, masks, num_classes=num_classes, transform=transform)
    if d.format == "filelist":
        return FileList(root, d.list_file, separator=d.separator, num_classes=num_classes, transform=transform)
    return VOCSegmentation(root, d.split or "train", num_classes=num_classes, transform=transform)


def build_schedule(config: TrainConfig, total: int | None, clock: Callable[[], float] | None = None):
    """The learning-rate factor (of ``optimizer.lr``) at step ``t`` (0-based).

    After the warm-up, poly and cosine decay over the steps (``total``) or, with ``max_minutes``,
    over the time budget: progress is ``clock() / budget`` (``clock``: seconds into the run), or
    the further of the two when both are set."""
    s, lr = config.schedule, config.optimizer.lr
    floor = s.min_lr / lr
    warm = s.warmup_iters
    budget = config.max_minutes * 60 if config.max_minutes else None
    if budget is not None and clock is None:
        raise ValueError("a schedule over max_minutes needs the run's clock")

    def factor(t: int) -> float:
        if warm and t < warm:
            return s.warmup_ratio + (1 - s.warmup_ratio) * t / warm
        if s.name == "constant":
            return 1.0
        progress = 0.0
        if total is not None:
            progress = (t - warm) / max(1, total - warm)
        if budget is not None:
            progress = max(progress, clock() / budget)
        progress = min(1.0, progress)
        if s.name == "poly":
            return floor + (1 - floor) * (1 - progress) ** s.power
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _build_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    o = config.optimizer
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def _use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast for ``precision: bf16``, and for ``auto`` where the hardware has bf16 units
    (CUDA GPUs that support it; CPUs with AVX-512 bf16 or AMX). Elsewhere bf16 is emulated and
    slower than fp32, so ``auto`` picks fp32."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise U2SegError(f"device {name!r}: CUDA is not available on this machine")
    return torch.device(name)


def _sample_seed(seed: int, position: int) -> int:
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


class _StepSampler:
    """Batches of (index, augmentation seed) for steps start … total−1, a function of the seed.

    Rank ``r`` of ``world_size`` ``W`` takes positions ``step·B·W + r·B + j`` (``j < B``): the ranks'
    batches of one step are disjoint, and together they are the batch of ``B·W`` one process sees.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int | None, *, rank: int = 0,
                 world_size: int = 1):
        self.n, self.batch_size, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.rank, self.world_size = rank, world_size
        self._perm: tuple[int, np.ndarray] | None = None

    def _index(self, position: int) -> int:
        epoch = position // self.n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return int(self._perm[1][position % self.n])

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("a run with a time budget has no fixed number of steps")
        return self.total - self.start

    def __iter__(self):
        for step in itertools.count(self.start) if self.total is None else range(self.start, self.total):
            first = (step * self.world_size + self.rank) * self.batch_size
            yield [(self._index(p), _sample_seed(self.seed, p)) for p in range(first, first + self.batch_size)]


@dataclass
class _Distributed:
    """This process's place in a ``torchrun`` job, or a single process (world_size 1: every
    collective is a no-op). The trainer talks to ``torch.distributed`` only through this."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    _owned: bool = field(default=False, repr=False)  # we initialised the process group: we destroy it

    @classmethod
    def from_env(cls) -> _Distributed:
        """From the variables torchrun sets (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT)."""
        try:
            world = int(os.environ.get("WORLD_SIZE") or 1)
        except ValueError:
            raise U2SegError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None
        if world <= 1:
            return cls()
        if not torch.distributed.is_available():
            raise U2SegError(f"WORLD_SIZE={world}, but this torch build has no torch.distributed")
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise U2SegError(f"WORLD_SIZE={world}, but {', '.join(missing)} not set: start several processes "
                             "with torchrun --nproc-per-node N -m u2seg train CONFIG")
        rank = int(os.environ["RANK"])
        return cls(rank=rank, world_size=world, local_rank=int(os.environ.get("LOCAL_RANK") or rank))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def resolve_device(self, name: str) -> torch.device:
        """The config's device for this process: ``cuda:LOCAL_RANK`` for cuda/auto under torchrun."""
        if not self.enabled:
            return _device(name)
        if name.startswith("cuda:"):
            raise U2SegError(f"device {name!r}: under torchrun each process takes cuda:LOCAL_RANK; set device "
                             "cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES")
        if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        _device("cuda")  # a clear error when CUDA is missing
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise U2SegError(f"LOCAL_RANK {self.local_rank}: only {count} GPU(s) visible; start at most {count} "
                             "processes per machine (--nproc-per-node), or set device cpu")
        return torch.device("cuda", self.local_rank)

    def start(self, device: torch.device) -> None:
        """Join the process group (gloo on the CPU, nccl on CUDA), unless the caller already did."""
        self.device = device
        if not self.enabled:
            return
        import torch.distributed as dist

        if device.type == "cuda":
            torch.cuda.set_device(device)
        if dist.is_initialized():
            if dist.get_world_size() != self.world_size:
                raise U2SegError(f"the process group has {dist.get_world_size()} processes, WORLD_SIZE says "
                                 f"{self.world_size}")
            return
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=self.rank,
                                world_size=self.world_size)
        self._owned = True

    def stop(self) -> None:
        if self._owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        self._owned = False

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls: DDP (averages gradients across ranks) or the model."""
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        if self.enabled:
            ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
            torch.distributed.barrier(device_ids=ids)

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block first (e.g. makes a synthetic dataset), then the others do."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def mean_and_any(self, values: dict[str, float], flag: bool) -> tuple[dict[str, float], bool]:
        """The means of ``values`` over the ranks, and whether ``flag`` is set on any rank (one
        all-reduce)."""
        if not self.enabled:
            return values, flag
        t = torch.tensor([*values.values(), float(flag)], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        summed = t.tolist()
        return {k: v / self.world_size for k, v in zip(values, summed)}, summed[-1] > 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, by rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


def _parameter_checksum(model: torch.nn.Module) -> str:
    """A short sha256 of the parameters (not the buffers: BatchNorm statistics are per rank)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _summary_writer(folder: Path, purge_step: int | None):
    """A TensorBoard ``SummaryWriter`` on ``folder``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("TensorBoard logging is off: tensorboard is not installed (pip install tensorboard, "
                 "or pip install 'u2seg[train]')")
        return None
    # purge_step: TensorBoard hides what an interrupted run logged past the checkpoint we resume from
    return SummaryWriter(str(folder), purge_step=purge_step)


class _Seeded(torch.utils.data.Dataset):
    """Items addressed as (index, seed): the transform's random sequence is reset to ``seed``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        transform = self.dataset.transform
        reseed = getattr(transform, "_reseed_in_new_process", None)
        if reseed is not None:
            reseed()  # first call in a worker: let it run now, so it does not override our seed
        pipeline = getattr(transform, "pipeline", None)
        if callable(pipeline):
            for binary in (True, False):
                pipeline(binary).set_random_seed(seed)
        return self.dataset[index]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``output_dir/checkpoints``, or None."""
    folder = Path(output_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _STEP_FILE.match(p.name))]
    return max(found)[1] if found else None


def _rng_states(device: torch.device) -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":  # this process's GPU only: get_rng_state_all() would touch every visible GPU
        states["cuda_device"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda":
        if "cuda_device" in states:
            torch.cuda.set_rng_state(states["cuda_device"], device)
        elif "cuda" in states:  # checkpoints of earlier versions: every GPU's state
            torch.cuda.set_rng_state_all(states["cuda"])


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    return value


# --------------------------------------------------------------------------------------------
# the run


class _Run:
    def __init__(self, config: TrainConfig, resume: bool | str | Path | None, progress: bool,
                 dist: _Distributed | None = None):
        self.config = config
        self.out = Path(config.output_dir).expanduser()
        self.progress = progress
        self.resume = resume
        self.dist = dist if dist is not None else _Distributed()
        self.board = None  # the TensorBoard writer (rank 0, while run() runs)
        self._created = time.perf_counter()  # the run's clock counts this session's setup too

    # -- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        from ..data import build_transform, check_dataset
        from ..models import create_model
        from .losses import DeepSupervisionLoss

        c = self.config
        random.seed(c.seed)
        np.random.seed(c.seed)
        torch.manual_seed(c.seed)
        if c.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        dist = self.dist
        self.device = dist.resolve_device(c.device)
        if c.sync_bn and self.device.type != "cuda":
            raise U2SegError(f"sync_bn: SyncBatchNorm needs CUDA, the device is {self.device} "
                             "(set sync_bn: false, or train on GPUs)")
        dist.start(self.device)
        self.bf16 = _use_bf16(c.precision, self.device)
        if c.precision == "auto":
            log.info("precision auto: %s on %s", "bf16" if self.bf16 else "fp32", self.device)
        self.num_classes = c.model.num_classes
        self.binary = self.num_classes == 1

        # rank 0 first: it makes a synthetic set the others then read, and reports bad files once
        with dist.main_first():
            self.train_set = build_dataset(c.data.train, self.num_classes)
            if dist.is_main:
                check_dataset(self.train_set)
            self.val_set = None
            if c.data.val is not None:
                self.val_set = build_dataset(c.data.val, self.num_classes)
                if dist.is_main:
                    check_dataset(self.val_set)
        n = len(self.train_set)
        # (until, transform): the earlier stages, then the configured transform for the rest
        self.stage_transforms = [(s.until, build_transform(s.transform)) for s in c.data.train.stages or ()]
        self.stage_transforms.append((math.inf, self.train_set.transform))
        self.global_batch = c.batch_size * dist.world_size
        self.total: int | None = None  # None: a time budget alone (max_minutes) ends the run
        if c.iterations is not None:
            self.total = c.iterations
        elif c.epochs is not None:
            self.total = max(1, math.ceil(c.epochs * n / self.global_batch))
        self.budget = c.max_minutes * 60 if c.max_minutes else None

        torch.manual_seed(c.seed)  # the model's initial weights do not depend on the data checks
        self.model = create_model(c.model.name, num_classes=self.num_classes, in_channels=c.model.in_channels)
        self.skipped: list[str] = []
        if c.model.pretrained not in (False, None):
            from ..weights import load_weights_into, resolve_pretrained

            with dist.main_first():  # it may fetch or convert into the cache: once
                path = resolve_pretrained(c.model.name, c.model.pretrained)
            self.skipped = load_weights_into(self.model, path)
            if self.skipped:
                log.warning("fine-tuning from %s: %d tensors of another shape start from scratch: %s",
                            path, len(self.skipped), ", ".join(self.skipped))
            else:
                log.info("loaded all weights from %s", path)
        if c.sync_bn and dist.enabled:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        if c.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_fn = DeepSupervisionLoss("binary" if self.binary else "multiclass", weights=c.loss.weights,
                                           dice_weight=c.loss.dice_weight, iou_weight=c.loss.iou_weight)
        self.optimizer = _build_optimizer(c, self.model.parameters())
        self.ema = ModelEMA(self.model, c.ema_decay) if c.ema_decay else None
        self.step = 0
        self.train_seconds = 0.0  # loading + updates
        self.spent_budget: float | None = None  # the time budget (s) that ended the run, if one did
        self.run_seconds = 0.0  # the run's clock (all ranks agree on it): training, evaluation, checkpoints
        self._session: tuple[float, float] | None = None  # (run_seconds, perf_counter) when this session began
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           build_schedule(c, self.total, lambda: self.run_seconds))
        self.best: float | None = None
        self.best_step: int | None = None
        self.last_eval: dict[str, Any] = {}
        self.last_loss: dict[str, float] = {}

        if self.resume:
            self._load_checkpoint()
        elif latest_checkpoint(self.out) is not None:
            raise U2SegError(f"{self.out}: holds checkpoints of an earlier run; continue it with --resume, or "
                             "start afresh in another output_dir (--set output_dir=...) or after deleting it")
        self.start_step = self.step
        # every rank gets here before any writes (DDP's constructor waits for all): the checks above
        # see the same output_dir on every rank
        self.net = dist.wrap(self.model)
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(_yaml_bytes(config_to_dict(c)), self.out / "config.yaml")
            self._trim_logs()

    # -- checkpoints ----------------------------------------------------------------------------

    def _load_checkpoint(self) -> None:
        if self.resume is True:
            path = latest_checkpoint(self.out)
            if path is None:
                raise U2SegError(f"{self.out / 'checkpoints'}: no checkpoint to resume from")
        else:
            path = Path(self.resume)
            if path.is_dir():
                found = latest_checkpoint(path if (path / "checkpoints").is_dir() else path.parent)
                path = found if found is not None else path
            if not path.is_file():
                raise U2SegError(f"{path}: checkpoint not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
            raise U2SegError(f"{path}: not a readable u2seg checkpoint ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise U2SegError(f"{path}: not a u2seg training checkpoint")
        saved = state["config"]
        for key in ("name", "num_classes", "in_channels"):
            if saved["model"][key] != getattr(self.config.model, key):
                raise U2SegError(f"{path}: the checkpoint is for model.{key}={saved['model'][key]!r}, "
                                 f"the config says {getattr(self.config.model, key)!r}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if state.get("ema"):
                self.ema.load_state_dict(state["ema"])
            else:  # EMA switched on for the rest of a run: the average starts from these weights
                self.ema = ModelEMA(self.model, self.config.ema_decay)
                log.warning("%s has no EMA weights (ema_decay was off): the average starts at step %d",
                            path, int(state["step"]))
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.run_seconds = float(state.get("run_seconds", self.train_seconds))
        self.spent_budget = state.get("spent_budget")
        self.best, self.best_step = state.get("best"), state.get("best_step")
        _set_rng_states(state["rng"], self.device)  # rank 0's: augmentation does not draw from them
        log.info("resumed from %s at step %d", path, self.step)
        saved_batch = int(saved.get("batch_size", self.config.batch_size)) * int(state.get("world_size", 1))
        if saved_batch != self.global_batch:
            log.warning("the checkpoint was trained with a global batch of %d (batch_size × processes), this "
                        "run uses %d: the data order does not continue exactly", saved_batch, self.global_batch)
        self.resumed_from = path

    def save_checkpoint(self) -> Path:
        folder = self.out / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "train_seconds": self.train_seconds,
            "run_seconds": self._clock(),
            "spent_budget": self.spent_budget,
            "world_size": self.dist.world_size,
            "model": self.model.state_dict(),  # the plain module's: no DDP "module." prefixes
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_states(self.device),
            "best": self.best,
            "best_step": self.best_step,
            "config": config_to_dict(self.config),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = folder / f"step_{self.step}.pt"
        write_bytes_atomic(buffer.getvalue(), path)
        keep = self.config.keep_checkpoints
        if keep:
            found = sorted((int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _STEP_FILE.match(p.name)))
            for _, old in found[:-keep]:
                old.unlink(missing_ok=True)
        return path

    def _clock(self) -> float:
        """This process's reading of the run's clock (seconds, over resumed sessions)."""
        if self._session is None:
            return self.run_seconds
        start_value, start_time = self._session
        return start_value + time.perf_counter() - start_time

    # -- logs -----------------------------------------------------------------------------------

    def _trim_logs(self) -> None:
        """Drop rows past the current step (left by the interrupted run), or all on a fresh run."""
        jsonl, csv_path = self.out / "metrics.jsonl", self.out / "metrics.csv"
        if not self.step:
            for p in (jsonl, csv_path, *(self.out / "tensorboard").glob("events.out.tfevents.*")):
                p.unlink(missing_ok=True)
            return
        if jsonl.exists():
            rows = [line for line in jsonl.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= self.step]
            write_bytes_atomic(("".join(r + "\n" for r in rows)).encode(), jsonl)
        if csv_path.exists():
            with csv_path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                fields = reader.fieldnames or []
                kept = [r for r in reader if int(r.get("step") or 0) <= self.step]
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
            write_bytes_atomic(text.getvalue().encode(), csv_path)

    def log_row(self, row: dict[str, Any], *, to_csv: bool) -> None:
        row = {k: _jsonable(v) for k, v in row.items()}
        with (self.out / "metrics.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.board is not None:
            group = "val" if row["kind"] == "eval" else row["kind"]
            for key, value in row.items():
                if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue  # None (not finite), lists (per-class IoU), flags
                self.board.add_scalar(f"{group}/{key}", value, row["step"])
        if to_csv:
            path = self.out / "metrics.csv"
            fields = list(row)
            if path.exists() and path.stat().st_size:
                with path.open(newline="", encoding="utf-8") as fh:
                    fields = next(csv.reader(fh), fields)
                new = False
            else:
                new = True
            with path.open("a", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)

    # -- evaluation and previews ------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _forward(self, images: torch.Tensor, net: torch.nn.Module) -> tuple[torch.Tensor, ...]:
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            outputs = net(images)
        return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)

    @property
    def weights(self) -> torch.nn.Module:
        """The weights evaluated, previewed and saved to ``best/``: the EMA's when it is on."""
        return self.ema.module if self.ema is not None else self.model

    @contextlib.contextmanager
    def _evaluating(self):
        """The plain module to evaluate (rank 0 alone: it starts no DDP collectives), in eval mode."""
        net = self.weights
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                yield net
        finally:
            net.train(was_training)

    def evaluate(self) -> dict[str, Any]:
        from ..metrics import ConfusionMatrix, SODMetrics

        c = self.config
        loader = torch.utils.data.DataLoader(self.val_set, batch_size=c.eval_batch_size or c.batch_size,
                                             shuffle=False, num_workers=c.workers)
        metric = SODMetrics() if self.binary else ConfusionMatrix(self.num_classes)
        losses = []
        with self._evaluating() as net:
            for batch in loader:
                images = batch["image"].to(self.device)
                masks = batch["mask"]
                outputs = self._forward(images, net)
                total, _ = self.loss_fn(outputs, masks.to(self.device))
                losses.append(float(total))
                logits = outputs[0].float().cpu()
                if self.binary:
                    probs = torch.sigmoid(logits)[:, 0].numpy()
                    for prob, gt in zip(probs, masks[:, 0].numpy()):
                        metric.update(prob, gt)
                else:
                    metric.update(logits.argmax(1).numpy(), masks.numpy())
        from ..metrics.headline import headline

        out = headline(metric.results(), "binary" if self.binary else "multiclass")
        if "IoU" in out:
            out["IoU"] = [_jsonable(v) for v in out["IoU"]]
        out["main"] = out["maxF" if self.binary else "mIoU"]
        out["loss"] = float(np.mean(losses)) if losses else float("nan")
        return out

    def recipe(self) -> dict[str, Any]:
        """The pre-processing the saved weights expect, so that every front end runs them as
        trained: the evaluation transform's input size, or without a validation set the
        training transform's resize size (as the official recipe infers at 320 after training on
        288 crops of 320-px images); the normalisation of the dataset's transform."""
        data = self.config.data
        size = _transform_size(data.val.transform if data.val else None) or _transform_size(data.train.transform)
        recipe: dict[str, Any] = {"input_size": [size, size]} if size else {}
        dataset = self.val_set if self.val_set is not None else self.train_set
        norm = getattr(getattr(dataset, "transform", None), "norm", None)
        if norm is not None:
            recipe.update(mean=list(norm.mean), std=list(norm.std), input_norm=norm.input_norm)
        return recipe

    def maybe_save_best(self, metrics: dict[str, Any]) -> bool:
        main = metrics["main"]
        if not math.isfinite(main) or (self.best is not None and main <= self.best):
            return False
        self.best, self.best_step = main, self.step
        from ..weights import save_pretrained

        name = "maxF" if self.binary else "mIoU"
        metadata: dict[str, Any] = {"step": self.step, "metric": name, name: main, **self.recipe()}
        if self.ema is not None:
            metadata["ema_decay"] = self.ema.decay
        save_pretrained(self.weights, self.out / "best", metadata=metadata)
        return True

    def preview(self) -> Path:
        from PIL import Image

        dataset = self.val_set if self.val_set is not None else self.train_set
        count = min(self.config.preview_count, len(dataset))
        items = [dataset[i] for i in range(count)]
        images = torch.stack([it["image"] for it in items])
        with self._evaluating() as net:
            logits = self._forward(images.to(self.device), net)[0].float().cpu()
        from ..infer.colorize import gray, label_colours, side_by_side

        rows = []
        for i, item in enumerate(items):
            picture = _to_uint8_image(item["image"], dataset.transform)
            if self.binary:
                label = gray(item["mask"][0].numpy())
                pred = gray(torch.sigmoid(logits[i, 0]).numpy())
            else:
                label = label_colours(item["mask"].numpy())
                pred = label_colours(logits[i].argmax(0).numpy())
            rows.append(side_by_side([picture, label, pred], gap=0))
        width = max(r.shape[1] for r in rows)
        sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
        buffer = io.BytesIO()
        Image.fromarray(sheet).save(buffer, format="PNG")
        path = self.out / "previews" / f"step_{self.step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(buffer.getvalue(), path)
        return path

    # -- the loop -------------------------------------------------------------------------------

    def run_fraction(self) -> float:
        """How far the run is (0 … 1): by steps, or by the clock with max_minutes (the further)."""
        done = self.step / self.total if self.total else 0.0
        if self.budget is not None:
            done = max(done, self.run_seconds / self.budget)
        return min(1.0, done)

    def budget_spent(self) -> bool:
        """A time budget at its end, or one that already ended this run (resumed with the same)."""
        return self.budget is not None and max(self.run_seconds, self.spent_budget or 0) >= self.budget

    def _stage(self) -> int:
        """The index into ``self.stage_transforms`` that applies now."""
        return next(i for i, (until, _) in enumerate(self.stage_transforms) if self.run_fraction() < until or
                    i == len(self.stage_transforms) - 1)

    def _batches(self):
        """Training batches from the current step on. When the transform stage changes the loader
        starts again from that step: its worker processes hold a copy of the old transform."""
        c, dist = self.config, self.dist
        while (self.total is None or self.step < self.total) and not self.budget_spent():
            stage = self._stage()
            until, transform = self.stage_transforms[stage]
            if self.train_set.transform is not transform:
                self.train_set.transform = transform
                log.info("step %d: training transform %s%s", self.step, transform,
                         f" until {until:g} of the run" if until <= 1 else "")
            sampler = _StepSampler(len(self.train_set), c.batch_size, c.seed, self.step, self.total,
                                   rank=dist.rank, world_size=dist.world_size)
            loader = torch.utils.data.DataLoader(_Seeded(self.train_set), batch_sampler=sampler,
                                                 num_workers=c.workers, pin_memory=self.device.type == "cuda")
            for batch in loader:
                yield batch
                if self._stage() != stage:
                    break
            else:
                return

    def _install_sigint_handler(self):
        """First Ctrl-C: finish the current step, save a checkpoint, stop. Second: stop at once.

        Several ranks must stop after the same step: there the first Ctrl-C only sets a flag, which
        the ranks agree on after each update."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop_requested or not (self._updating or self.dist.enabled):
                raise KeyboardInterrupt
            self._stop_requested = True
            log.warning("Ctrl-C: stopping after this step (press again to stop at once)")

        return signal.signal(signal.SIGINT, handler)

    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        c, dist = self.config, self.dist
        self.model.train()
        bar = tqdm(total=self.total, initial=self.step, disable=not (self.progress and dist.is_main), unit="it",
                   dynamic_ncols=True)
        if dist.is_main and c.tensorboard:
            self.board = _summary_writer(self.out / "tensorboard", self.step + 1 if self.step else None)
        window_images, window_start = 0, time.perf_counter()
        self._stop_requested = False
        self._updating = False
        mark = time.perf_counter()  # train_seconds counts loading + updates, not evaluation or saving
        self._session = (self.run_seconds, self._created)
        # a time budget keeps room for one more step and for the final evaluation, preview and
        # checkpoint: 1.25 × the longest such pause so far
        reserve = 0.0
        previous_handler = self._install_sigint_handler()
        try:
            for batch in self._batches():
                self._updating = True
                images = batch["image"].to(self.device, non_blocking=True)
                masks = batch["mask"].to(self.device, non_blocking=True)
                outputs = self._forward(images, self.net)  # through DDP: gradients averaged across ranks
                total, parts = self.loss_fn(outputs, masks)
                if not math.isfinite(parts["total"]):  # before the update: the weights stay usable
                    raise U2SegError(f"step {self.step + 1}: the loss is {parts['total']} (lower optimizer.lr, "
                                     "or use precision fp32); the last checkpoint is intact")
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.model)
                lr = self.optimizer.param_groups[0]["lr"]
                self.step += 1
                step_seconds = time.perf_counter() - mark  # the next one should take about as long
                self.train_seconds += step_seconds
                # one all-reduce: mean losses, any Ctrl-C, and the clock every rank then uses alike
                parts, self._stop_requested = dist.mean_and_any(
                    {**parts, "_clock": self._clock(), "_room": step_seconds + reserve}, self._stop_requested)
                self.run_seconds, room = parts.pop("_clock"), parts.pop("_room")
                self.scheduler.step()  # the next step's rate: it may follow the clock (max_minutes)
                self._updating = False
                self.last_loss = parts
                window_images += images.shape[0] * dist.world_size
                elapsed = time.perf_counter() - window_start
                rate = window_images / elapsed if elapsed > 0 else float("nan")
                bar.update(1)
                bar.set_postfix(loss=f"{parts['total']:.4f}", img_s=f"{rate:.1f}")
                out_of_time = self.budget is not None and self.run_seconds + room >= self.budget
                last = self.step == self.total or out_of_time
                if self.step % c.log_interval == 0 or last:
                    if dist.is_main:
                        self.log_row({"kind": "train", "step": self.step, "lr": lr, "img_per_s": rate,
                                      "time": time.time(), "train_seconds": self.train_seconds,
                                      "run_seconds": self.run_seconds,
                                      **{f"loss_{k}": v for k, v in parts.items()}}, to_csv=True)
                    window_images, window_start = 0, time.perf_counter()
                evaluate = self.val_set is not None and ((c.eval_interval and self.step % c.eval_interval == 0) or last)
                preview = bool(c.preview_interval) and (self.step % c.preview_interval == 0 or last)
                save = bool(c.save_interval and self.step % c.save_interval == 0) or last
                if out_of_time:
                    self.spent_budget = self.budget
                    log.info("time budget: stopping at step %d after %.0f s (max_minutes %g)", self.step,
                             self.run_seconds, c.max_minutes)
                extra_start = time.perf_counter()
                if dist.is_main:
                    if evaluate:
                        self._evaluate_and_log(bar)
                    if preview:
                        self.preview()
                    if save:
                        self.save_checkpoint()
                if evaluate or preview or save:
                    dist.barrier()  # the other ranks wait for rank 0's evaluation and files
                    reserve = max(reserve, 1.25 * (time.perf_counter() - extra_start))
                if time.perf_counter() - window_start > elapsed + 0.5:  # evaluation etc. is not training speed
                    window_images, window_start = 0, time.perf_counter()
                if self._stop_requested and not last:
                    raise KeyboardInterrupt
                if last:
                    break
                mark = time.perf_counter()
        except KeyboardInterrupt:
            bar.close()
            # no collectives here: another rank may be gone already
            if self._updating:  # a second Ctrl-C inside an update: the weights may be half-stepped
                found = latest_checkpoint(self.out)
                log.warning("interrupted during step %d; not saving a half-updated state (latest checkpoint: %s)",
                            self.step + 1, found)
            elif dist.is_main:
                path = self.save_checkpoint()
                log.warning("interrupted after step %d; saved %s (continue with --resume)", self.step, path)
            raise
        finally:
            bar.close()
            if self.board is not None:
                self.board.close()
                self.board = None
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
        if dist.is_main and self.val_set is None:
            best_dir = self.out / "best"  # no validation: the final weights are the best we know
            from ..weights import save_pretrained

            save_pretrained(self.weights, best_dir, metadata={"step": self.step, **self.recipe()})
        result: dict[str, Any] = {"step": self.step, "start_step": self.start_step, "iterations": self.total,
                                  "train_seconds": self.train_seconds, "run_seconds": self._clock(),
                                  "loss": self.last_loss.get("total"), "skipped": list(self.skipped),
                                  "best": self.best, "best_step": self.best_step,
                                  "output_dir": str(self.out)}
        result.update({f"val_{k}": v for k, v in self.last_eval.items()})
        if dist.is_main:
            write_bytes_atomic((json.dumps({k: _jsonable(v) for k, v in result.items()}, indent=2) + "\n").encode(),
                               self.out / "final_metrics.json")
        if dist.enabled:
            self._check_in_sync()
        return dist.broadcast(result)  # every rank returns rank 0's metrics (its evaluation, its best)

    def _evaluate_and_log(self, bar) -> None:
        self.last_eval = self.evaluate()
        improved = self.maybe_save_best(self.last_eval)
        self.log_row({"kind": "eval", "step": self.step, "time": time.time(), "train_seconds": self.train_seconds,
                      "run_seconds": self._clock(),
                      **self.last_eval, "best": improved},
                     to_csv=False)
        summary = f"step {self.step}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in self.last_eval.items() if isinstance(v, float) and k != "main")
        if self.progress:
            bar.write(summary)
        else:
            log.info("%s", summary)

    def _check_in_sync(self) -> None:
        """DDP keeps the ranks' parameters equal; say so in the log, and warn if they are not."""
        mine = _parameter_checksum(self.model)
        log.info("rank %d of %d: parameter checksum %s at step %d", self.dist.rank, self.dist.world_size, mine,
                 self.step)
        every = self.dist.gather(mine)
        if self.dist.is_main and len(set(every)) > 1:
            log.warning("the ranks ended with different parameters (checksums %s); the checkpoint holds rank 0's",
                        ", ".join(every))


def train(config: TrainConfig | dict, *, resume: bool | str | Path | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train as ``config`` says; returns the final metrics (``step``, ``loss``, ``val_*``, ``best``,
    ``skipped``). ``resume``: True (latest checkpoint in ``output_dir``) or a checkpoint path.

    Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel, see the module's doc."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    dist = _Distributed.from_env()
    try:
        run = _Run(config, resume, progress, dist)
        run.setup()
        if run.total is not None and run.step >= run.total:
            log.warning("the checkpoint is at step %d of %d: nothing left to train", run.step, run.total)
        elif run.budget_spent():
            log.warning("the checkpoint is %.0f s into a budget of %g minutes: nothing left to train (raise "
                        "max_minutes to go on)", run.run_seconds, run.config.max_minutes)
        return run.run()
    finally:  # deterministic mode is process-wide in torch: give the caller its settings back
        dist.stop()
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


# --------------------------------------------------------------------------------------------
# helpers


def _yaml_bytes(data: dict) -> bytes:
    import yaml

    return yaml.safe_dump(data, sort_keys=False).encode()


def _transform_size(spec: Any) -> int | None:
    if isinstance(spec, dict):
        size = spec.get("size")
        return int(size) if isinstance(size, int) else (320 if spec.get("name", "").startswith("official") else None)
    if isinstance(spec, str) and spec.startswith("official"):
        return 320
    return None


def _to_uint8_image(image: torch.Tensor, transform: Any) -> np.ndarray:
    x = image.numpy().astype(np.float32)
    norm = getattr(transform, "norm", None)
    mean, std = getattr(norm, "mean", None), getattr(norm, "std", None)
    if mean is not None and std is not None:
        x = x * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return (x.transpose(1, 2, 0) * 255 + 0.5).clip(0, 255).astype(np.uint8)

