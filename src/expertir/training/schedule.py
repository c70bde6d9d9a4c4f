"""Learning-rate schedule: per-iteration linear warm-up, then cosine decay that reaches its
minimum exactly at the last step (docs/design.md, "Protocol").

PromptIR's cosine ended at epoch 150 while training stopped at 120, so its final LR was
never the minimum; here the schedule is defined on the optimizer steps actually taken.
Step ``i`` (0-based) uses

* ``lr * (i + 1) / warmup``                                           for ``i < warmup``,
* ``min_lr + (lr - min_lr) * (1 + cos(pi * (i - warmup) / (steps - 1 - warmup))) / 2``  after,

so step ``warmup`` uses ``lr`` and step ``steps - 1`` uses ``min_lr``.
"""

from __future__ import annotations

import math

import torch


def lr_at(step: int, steps: int, lr: float, min_lr: float = 0.0, warmup: int = 0) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``steps``."""
    if not 0 <= warmup < steps:
        raise ValueError(f"warmup ({warmup}) must be in [0, steps={steps})")
    if step < warmup:
        return lr * (step + 1) / warmup
    span = steps - 1 - warmup
    progress = 1.0 if span <= 0 else min(1.0, (step - warmup) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, min_lr: float = 0.0,
                  warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following :func:`lr_at` (``optimizer``'s initial LR is the peak).

    Call ``scheduler.step()`` after every optimizer step; the optimizer's LR is then the
    one of the next step.
    """
    peak = [group["lr"] for group in optimizer.param_groups]
    factors = [lambda i, p=p: lr_at(i, steps, p, min_lr, warmup) / p for p in peak]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
