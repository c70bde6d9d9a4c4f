"""Restormer (Zamir et al., CVPR 2022): the shared backbone alone, the baseline of all methods."""

from __future__ import annotations

import torch

from expertir.models.backbone import RestorationModel, RestormerBackbone, backbone_config
from expertir.models.blocks import ForwardContext
from expertir.models.registry import register_model

SIZES = {"tiny": {"size": "tiny"}, "small": {"size": "small"}, "base": {"size": "base"}}


@register_model("restormer", presets=SIZES)
class Restormer(RestorationModel):
    def __init__(self, size: str = "base", **backbone):
        super().__init__({"size": size, **backbone})
        self.backbone = RestormerBackbone(backbone_config(size, **backbone))

    def restore_padded(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return self.backbone(x, ctx)
