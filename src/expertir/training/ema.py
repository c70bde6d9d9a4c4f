"""Exponential moving average of the weights, as in Restormer/BasicSR's
``model_ema``: after every optimizer step ``ema = decay * ema + (1 - decay) * weights``;
buffers are copied. Validation and the exported checkpoint use the EMA weights.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One multi-tensor ``lerp`` over all parameters (one call instead of one per tensor)."""
        params = dict(model.named_parameters())
        mine, theirs = [], []
        for name, p in self.model.named_parameters():
            mine.append(p)
            theirs.append(params[name].detach().to(p.dtype))
        torch._foreach_lerp_(mine, theirs, 1.0 - self.decay)
        buffers = dict(model.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(buffers[name])

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
