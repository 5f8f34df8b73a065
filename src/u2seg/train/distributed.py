"""Several processes training one model: the process group, each rank's device, the collectives
the trainer needs (all-reduce of the logged losses, broadcast, gather) and a parameter checksum.

``torchrun --nproc-per-node N -m u2seg train CONFIG`` (WORLD_SIZE > 1 in the environment) trains
one model with DistributedDataParallel: backend gloo on the CPU, nccl on CUDA (process
``LOCAL_RANK`` takes ``cuda:LOCAL_RANK``).

- ``batch_size`` is per process; the global batch is ``batch_size × world_size`` and one step is
  one synchronous update. The ranks partition each step's samples (:mod:`.sampler`): their
  batches are disjoint and together are exactly the batch a single process with
  ``batch_size = B·W`` would see. ``epochs`` count global batches.
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
import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import U2SegError

__all__ = ["Distributed", "parameter_checksum", "resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """The config's ``device`` (auto, cpu, cuda, cuda:N) for one process; a clear error without CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise U2SegError(f"device {name!r}: CUDA is not available on this machine")
    return torch.device(name)


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` job, or a single process (world_size 1: every
    collective is a no-op). The trainer talks to ``torch.distributed`` only through this."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    _owned: bool = field(default=False, repr=False)  # we initialised the process group: we destroy it

    @classmethod
    def from_env(cls) -> Distributed:
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
            return resolve_device(name)
        if name.startswith("cuda:"):
            raise U2SegError(f"device {name!r}: under torchrun each process takes cuda:LOCAL_RANK; set device "
                             "cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES")
        if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        resolve_device("cuda")  # a clear error when CUDA is missing
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

    def check_in_sync(self, model: torch.nn.Module, step: int) -> None:
        """DDP keeps the ranks' parameters equal; say so in the log, and warn if they are not."""
        mine = parameter_checksum(model)
        log.info("rank %d of %d: parameter checksum %s at step %d", self.rank, self.world_size, mine, step)
        every = self.gather(mine)
        if self.is_main and len(set(every)) > 1:
            log.warning("the ranks ended with different parameters (checksums %s); the checkpoint holds rank 0's",
                        ", ".join(every))


def parameter_checksum(model: torch.nn.Module) -> str:
    """A short sha256 of the parameters (not the buffers: BatchNorm statistics are per rank)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
