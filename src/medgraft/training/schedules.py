"""Learning-rate schedules by name: ``--schedule NAME`` picks one.

A schedule is one function registered in :data:`SCHEDULES`: given the step it reaches its
decay's end at (as a share of the steps after warm-up, 0 to 1), it returns the factor on the
peak learning rate. Warm-up is shared by all of them (:func:`lr_factor`). Pure arithmetic, so
the CLI lists the names without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from medgraft.registry import Registry

Decay = Callable[[float], float]
SCHEDULES: Registry[Decay] = Registry("schedule", "--schedule")


@SCHEDULES.register("poly")
def poly(progress: float) -> float:
    """nnU-Net's polynomial decay, power 0.9."""
    return (1.0 - progress) ** 0.9


@SCHEDULES.register("cosine")
def cosine(progress: float) -> float:
    """Cosine decay to zero."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(kind: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor per step: linear warm-up, then the decay ``kind`` names."""
    decay = SCHEDULES.get(kind)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return decay(min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return factor
