"""Which training samples an epoch draws: a set share holding foreground, per rank."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class BalancedSampler(Sampler[int]):
    """Draws an epoch of sample indices with a set share of foreground samples, per rank.

    ``foreground[i]`` says whether sample ``i`` (a 2.5D stack or a 2D image) holds any label.
    With ``ratio`` in [0, 1], samples are drawn with replacement so that on average that share
    of them holds foreground (most slices of a CT hold none); a negative ratio means a plain
    shuffle. ``draws`` sets the epoch's length (default: one per sample); fewer draws make
    epochs short enough to validate often on a CPU. Each epoch's draw depends only on ``seed``
    and the epoch, so a resumed run draws what an uninterrupted one would. Under DDP each rank
    takes every ``world_size``-th index.
    """

    def __init__(
        self,
        foreground: list[bool],
        ratio: float,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        draws: int = 0,
    ) -> None:
        self.foreground = torch.tensor(foreground, dtype=torch.bool)
        self.draws = draws or len(foreground)
        self.ratio = ratio
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(range(self.rank, self.draws, self.world_size))

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        total = len(self.foreground)
        n_foreground = int(self.foreground.sum())
        if self.ratio < 0 or n_foreground in (0, total):
            passes = -(-self.draws // total)
            order = torch.cat([torch.randperm(total, generator=generator) for _ in range(passes)])
            order = order[: self.draws]
        else:
            weights = torch.where(
                self.foreground,
                self.ratio / n_foreground,
                (1.0 - self.ratio) / (total - n_foreground),
            )
            order = torch.multinomial(weights, self.draws, replacement=True, generator=generator)
        return iter(order[self.rank :: self.world_size].tolist())
