"""The step sampler: which samples, with which augmentation seeds, make each step's batch.

Batches are a pure function of (seed, step): sample ``p`` of the run (``p = step·batch + j``) is
item ``perm_e[p mod n]`` of epoch ``e = p // n``'s permutation, augmented with a seed derived from
(seed, p). A resumed run therefore sees exactly the batches the uninterrupted run would have.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["SeededItems", "StepSampler", "sample_seed"]


def sample_seed(seed: int, position: int) -> int:
    """The augmentation seed of sample ``position`` of the run."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


class StepSampler:
    """Batches of (index, augmentation seed) for steps start … total−1, a function of the seed.

    Rank ``r`` of ``world_size`` ``W`` takes positions ``step·B·W + r·B + j`` (``j < B``): the ranks'
    batches of one step are disjoint, and together they are the batch of ``B·W`` one process sees.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int | None, *, rank: int = 0,
                 world_size: int = 1) -> None:
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

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in itertools.count(self.start) if self.total is None else range(self.start, self.total):
            first = (step * self.world_size + self.rank) * self.batch_size
            yield [(self._index(p), sample_seed(self.seed, p)) for p in range(first, first + self.batch_size)]


class SeededItems(torch.utils.data.Dataset):
    """A dataset's items addressed as (index, seed): the transform restarts its random sequence at
    ``seed`` (``transform.reseed``), so an item's augmentation depends on its seed alone."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        reseed = getattr(self.dataset.transform, "reseed", None)
        if reseed is not None:
            reseed(seed)
        return self.dataset[index]
