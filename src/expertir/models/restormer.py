"""Restormer (Zamir et al., CVPR 2022): the shared backbone alone, the baseline of all methods."""

from __future__ import annotations

from expertir.models.backbone import RestorationModel, RestormerBackbone, backbone_config
from expertir.models.registry import register_model


@register_model("restormer")
class Restormer(RestorationModel):
    def __init__(self, size: str = "base", **backbone):
        super().__init__()
        self.backbone = RestormerBackbone(backbone_config(size, **backbone))
