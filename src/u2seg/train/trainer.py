"""The training loop: ``train(config) -> final metrics``, and the :class:`Trainer` that runs it.

- Data: the config's datasets (``u2seg.data.build_dataset``), checked with ``check_dataset``
  before the first step; batches from :mod:`.batches`, in the order :mod:`.sampler` fixes (a pure
  function of (seed, step): a resumed run sees exactly the batches the uninterrupted run would).
- Model: ``create_model``; ``pretrained`` weights load with ``load_weights_into`` (a head of
  another ``num_classes`` is skipped and reported in the log and in the result's ``skipped``).
- Loss ``DeepSupervisionLoss`` (binary for ``num_classes == 1``, else multiclass), the optimizer
  and LambdaLR schedule of :mod:`.optim` (warm-up, then constant / poly / cosine).
- ``output_dir``: ``config.yaml``, the logs (:mod:`.logs`: ``metrics.jsonl``, ``metrics.csv``,
  ``tensorboard/``), ``checkpoints/step_N.pt`` (:mod:`.checkpoints`, the last
  ``keep_checkpoints``), ``best/`` (``save_pretrained`` by maxF, binary, or mIoU, multiclass,
  with the recipe of :mod:`.validation`), ``previews/step_N.png`` (:mod:`.previews`).
- ``resume=True`` continues from the latest checkpoint in ``output_dir/checkpoints``, a path from
  that checkpoint. Ctrl-C saves a checkpoint, then re-raises ``KeyboardInterrupt``.
- ``max_minutes``: a time budget on the run's clock (``run_seconds``: wall time of setup (data
  checks), training, evaluation and checkpoints, summed over resumed sessions). Poly/cosine decay
  follow the clock (``clock / budget``, or the further of that and the step count when
  ``iterations`` is set too), and the run stops when another step plus the final evaluation,
  preview and checkpoint (1.25 × the longest such pause so far) would not fit in the budget. The
  rate then depends on the machine's speed: such runs are not reproducible step for step.
- ``ema_decay``: evaluation, previews and ``best/`` use an exponential moving average of the
  weights (``ema.py``); checkpoints hold both.
- Several processes (``torchrun``): DistributedDataParallel, see :mod:`.distributed`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import U2SegError
from ..fileio import write_bytes_atomic
from .batches import BatchSource
from .checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_from_dict, config_to_dict
from .distributed import Distributed
from .ema import ModelEMA
from .logs import MetricsLog, jsonable
from .optim import build_optimizer, build_schedule
from .sampler import StepSampler

__all__ = ["Trainer", "train", "use_bf16"]

log = logging.getLogger(__name__)


def use_bf16(precision: str, device: torch.device) -> bool:
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


class Trainer:
    """One training run: :meth:`setup` builds data, model, optimizer (and resumes), :meth:`run`
    trains and returns the final metrics."""

    def __init__(self, config: TrainConfig, resume: bool | str | Path | None, progress: bool,
                 dist: Distributed | None = None) -> None:
        self.config = config
        self.out = Path(config.output_dir).expanduser()
        self.progress = progress
        self.resume = resume
        self.dist = dist if dist is not None else Distributed()
        self.logs = MetricsLog(self.out)
        self._created = time.perf_counter()  # the run's clock counts this session's setup too

    # -- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        from ..data import build_dataset, build_transform, check_dataset
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
        self.bf16 = use_bf16(c.precision, self.device)
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
            # (until, transform): the earlier stages, then the configured transform for the rest
            self.stage_transforms = [(s.until, build_transform(s.transform)) for s in c.data.train.stages or ()]
            self.stage_transforms.append((math.inf, self.train_set.transform))
            self.source = BatchSource(self.train_set, self.device, workers=c.workers, cache=c.data.cache,
                                      cache_dir=c.data.cache_dir, progress=self.progress and dist.is_main)
            self.source.prepare(t for _, t in self.stage_transforms)  # mmap: rank 0 decodes, the others reuse
        n = len(self.train_set)
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
        self.optimizer = build_optimizer(c, self.model.parameters(), self.device)
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
            load_checkpoint(self)
        elif latest_checkpoint(self.out) is not None:
            raise U2SegError(f"{self.out}: holds checkpoints of an earlier run; continue it with --resume, or "
                             "start afresh in another output_dir (--set output_dir=...) or after deleting it")
        self.start_step = self.step
        # every rank gets here before any writes (DDP's constructor waits for all): the checks above
        # see the same output_dir on every rank
        self.net = dist.wrap(self.model)
        # the training step's module: compiled on request (evaluation runs the plain weights)
        self.train_net = self.net if c.compile == "off" else torch.compile(self.net, mode=c.compile)
        if dist.is_main:
            import yaml

            self.out.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(yaml.safe_dump(config_to_dict(c), sort_keys=False).encode(), self.out / "config.yaml")
            self.logs.trim(self.step)

    # -- the clock ------------------------------------------------------------------------------

    def clock(self) -> float:
        """This process's reading of the run's clock (seconds, over resumed sessions)."""
        if self._session is None:
            return self.run_seconds
        start_value, start_time = self._session
        return start_value + time.perf_counter() - start_time

    # -- the network, evaluation and previews -----------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
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
    def _evaluating(self) -> Iterator[torch.nn.Module]:
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
        from .validation import validate

        c = self.config
        loader = torch.utils.data.DataLoader(self.val_set, batch_size=c.eval_batch_size or c.batch_size,
                                             shuffle=False, num_workers=c.workers)
        with self._evaluating() as net:
            return validate(net, loader, self._forward, self.loss_fn, self.device, self.num_classes)

    def recipe(self) -> dict[str, Any]:
        """The pre-processing the saved weights expect (see :func:`.validation.recipe`)."""
        from .validation import recipe

        return recipe(self.config.data, self.val_set if self.val_set is not None else self.train_set)

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
        from .previews import preview_png

        dataset = self.val_set if self.val_set is not None else self.train_set
        items = [dataset[i] for i in range(min(self.config.preview_count, len(dataset)))]
        images = torch.stack([it["image"] for it in items])
        with self._evaluating() as net:
            logits = self._forward(images.to(self.device), net)[0].float().cpu()
        path = self.out / "previews" / f"step_{self.step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(preview_png(items, logits, binary=self.binary, transform=dataset.transform), path)
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

    def _batches(self) -> Iterator[dict[str, Any]]:
        """Training batches from the current step on. When the transform stage changes the source
        starts again from that step with the new transform."""
        c, dist = self.config, self.dist
        while (self.total is None or self.step < self.total) and not self.budget_spent():
            stage = self._stage()
            until, transform = self.stage_transforms[stage]
            if self.train_set.transform is not transform:
                self.train_set.transform = transform
                log.info("step %d: training transform %s%s", self.step, transform,
                         f" until {until:g} of the run" if until <= 1 else "")
            sampler = StepSampler(len(self.train_set), c.batch_size, c.seed, self.step, self.total,
                                  rank=dist.rank, world_size=dist.world_size)
            for batch in self.source.batches(transform, sampler):
                yield batch
                if self._stage() != stage:
                    break
            else:
                return

    def _install_sigint_handler(self) -> Any:
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
            self.logs.open_board(self.step)
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
                if c.compile == "reduce-overhead":
                    torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are free
                outputs = self._forward(images, self.train_net)  # through DDP: gradients averaged across ranks
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
                if c.compile != "off" and self.step == self.start_step + 1:
                    log.info("torch.compile (mode %s): the first step took %.1f s, compiling included",
                             c.compile, step_seconds)
                # one all-reduce: mean losses, any Ctrl-C, and the clock every rank then uses alike
                parts, self._stop_requested = dist.mean_and_any(
                    {**parts, "_clock": self.clock(), "_room": step_seconds + reserve}, self._stop_requested)
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
                        self.logs.write({"kind": "train", "step": self.step, "lr": lr, "img_per_s": rate,
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
                        save_checkpoint(self)
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
                path = save_checkpoint(self)
                log.warning("interrupted after step %d; saved %s (continue with --resume)", self.step, path)
            raise
        finally:
            bar.close()
            self.logs.close_board()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
        if dist.is_main and self.val_set is None:
            best_dir = self.out / "best"  # no validation: the final weights are the best we know
            from ..weights import save_pretrained

            save_pretrained(self.weights, best_dir, metadata={"step": self.step, **self.recipe()})
        result: dict[str, Any] = {"step": self.step, "start_step": self.start_step, "iterations": self.total,
                                  "train_seconds": self.train_seconds, "run_seconds": self.clock(),
                                  "loss": self.last_loss.get("total"), "skipped": list(self.skipped),
                                  "best": self.best, "best_step": self.best_step,
                                  "output_dir": str(self.out)}
        result.update({f"val_{k}": v for k, v in self.last_eval.items()})
        if dist.is_main:
            write_bytes_atomic((json.dumps({k: jsonable(v) for k, v in result.items()}, indent=2) + "\n").encode(),
                               self.out / "final_metrics.json")
        if dist.enabled:
            dist.check_in_sync(self.model, self.step)
        return dist.broadcast(result)  # every rank returns rank 0's metrics (its evaluation, its best)

    def _evaluate_and_log(self, bar: Any) -> None:
        self.last_eval = self.evaluate()
        improved = self.maybe_save_best(self.last_eval)
        self.logs.write({"kind": "eval", "step": self.step, "time": time.time(), "train_seconds": self.train_seconds,
                      "run_seconds": self.clock(),
                      **self.last_eval, "best": improved},
                     to_csv=False)
        summary = f"step {self.step}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in self.last_eval.items() if isinstance(v, float) and k != "main")
        if self.progress:
            bar.write(summary)
        else:
            log.info("%s", summary)



def train(config: TrainConfig | dict, *, resume: bool | str | Path | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train as ``config`` says; returns the final metrics (``step``, ``loss``, ``val_*``, ``best``,
    ``skipped``). ``resume``: True (latest checkpoint in ``output_dir``) or a checkpoint path.

    Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel, see the module's doc."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    dist = Distributed.from_env()
    try:
        run = Trainer(config, resume, progress, dist)
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
