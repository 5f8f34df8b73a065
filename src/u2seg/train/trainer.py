"""The training loop: ``train(config) -> final metrics``, and the :class:`Trainer` that runs it.

- Set-up (:mod:`.build`, :mod:`.optim`): the config's datasets, checked before the first step;
  the model (``pretrained`` tensors of another shape, e.g. a head of another ``num_classes``, start
  from scratch and are listed in the log and in the result's ``skipped``); the deep-supervision
  loss; the optimizer and LambdaLR schedule (warm-up, then constant / poly / cosine).
- Batches from :mod:`.batches`, in the order :mod:`.sampler` fixes (a pure function of (seed,
  step): a resumed run sees exactly the batches the uninterrupted run would).
- ``output_dir``: ``config.yaml``, the logs (:mod:`.logs`: ``metrics.jsonl``, ``metrics.csv``,
  ``tensorboard/``), ``checkpoints/step_N.pt`` (:mod:`.checkpoints`, the last
  ``keep_checkpoints``), ``best/`` (``save_pretrained`` by maxF, binary, or mIoU, multiclass,
  with the recipe of :mod:`.validation`), ``previews/step_N.png`` (:mod:`.previews`).
- ``resume=True`` continues from the latest checkpoint in ``output_dir/checkpoints``, a path from
  that checkpoint. Ctrl-C saves a checkpoint, then re-raises ``KeyboardInterrupt`` (:mod:`.interrupt`).
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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from ..errors import U2SegError
from ..fileio import write_bytes_atomic
from .batches import training_batches
from .build import build_data, build_loss, build_model, seed_everything, total_steps, train_mode, use_bf16
from .checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_from_dict, config_to_dict
from .distributed import Distributed
from .ema import ModelEMA
from .interrupt import InterruptHandler
from .logs import MetricsLog, jsonable
from .optim import build_optimizer, build_schedule
from .previews import preview_png
from .validation import evaluate_and_log, save_final_weights, validate

__all__ = ["Trainer", "train"]

log = logging.getLogger(__name__)


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
        """Seed, pick the device and precision, build data, model, loss, optimizer and schedule
        (:mod:`.build`, :mod:`.optim`), resume when asked, and write ``config.yaml``."""
        c, dist = self.config, self.dist
        seed_everything(c.seed, c.deterministic)
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

        data = build_data(c, self.device, dist, progress=self.progress)
        self.train_set, self.val_set, self.source = data.train_set, data.val_set, data.source
        self.stage_transforms = data.stage_transforms  # (until, transform); the last one's until is inf
        self.global_batch = c.batch_size * dist.world_size
        # None: a time budget alone (max_minutes) ends the run
        self.total: int | None = total_steps(c, len(self.train_set), self.global_batch)
        self.budget = c.max_minutes * 60 if c.max_minutes else None

        self.model, self.skipped = build_model(c, self.device, dist)
        self.loss_fn = build_loss(c)
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
            if was_training:
                train_mode(net, freeze_bn=self.config.freeze_bn)

    def evaluate(self) -> dict[str, Any]:
        """The validation metrics of :attr:`weights` (see :func:`.validation.validate`)."""
        c = self.config
        loader = torch.utils.data.DataLoader(self.val_set, batch_size=c.eval_batch_size or c.batch_size,
                                             shuffle=False, num_workers=c.workers)
        with self._evaluating() as net:
            return validate(net, loader, self._forward, self.loss_fn, self.device, self.num_classes)

    def preview(self) -> Path:
        """Write ``previews/step_N.png``: the first samples, their labels and :attr:`weights`' predictions."""
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

    def run(self) -> dict[str, Any]:
        """Train from the current step to the end (steps or time budget); returns the final metrics."""
        c, dist = self.config, self.dist
        train_mode(self.model, freeze_bn=c.freeze_bn)
        bar = tqdm(total=self.total, initial=self.step, disable=not (self.progress and dist.is_main), unit="it",
                   dynamic_ncols=True)
        if dist.is_main and c.tensorboard:
            self.logs.open_board(self.step)
        window_images, window_start = 0, time.perf_counter()
        ctrl_c = InterruptHandler(several_ranks=dist.enabled)
        mark = time.perf_counter()  # train_seconds counts loading + updates, not evaluation or saving
        self._session = (self.run_seconds, self._created)
        # a time budget keeps room for one more step and for the final evaluation, preview and
        # checkpoint: 1.25 × the longest such pause so far
        reserve = 0.0
        ctrl_c.install()
        try:
            for batch in training_batches(self):
                ctrl_c.updating = True
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
                parts, ctrl_c.requested = dist.mean_and_any(
                    {**parts, "_clock": self.clock(), "_room": step_seconds + reserve}, ctrl_c.requested)
                self.run_seconds, room = parts.pop("_clock"), parts.pop("_room")
                self.scheduler.step()  # the next step's rate: it may follow the clock (max_minutes)
                ctrl_c.updating = False
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
                        evaluate_and_log(self, bar)
                    if preview:
                        self.preview()
                    if save:
                        save_checkpoint(self)
                if evaluate or preview or save:
                    dist.barrier()  # the other ranks wait for rank 0's evaluation and files
                    reserve = max(reserve, 1.25 * (time.perf_counter() - extra_start))
                if time.perf_counter() - window_start > elapsed + 0.5:  # evaluation etc. is not training speed
                    window_images, window_start = 0, time.perf_counter()
                if ctrl_c.requested and not last:
                    raise KeyboardInterrupt
                if last:
                    break
                mark = time.perf_counter()
        except KeyboardInterrupt:
            bar.close()
            # no collectives here: another rank may be gone already
            if ctrl_c.updating:  # a second Ctrl-C inside an update: the weights may be half-stepped
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
            ctrl_c.restore()
        if dist.is_main and self.val_set is None:
            save_final_weights(self)  # no validation: the final weights are the best we know
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
