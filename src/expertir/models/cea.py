"""CEA: Continuous Expert Assembly (arXiv 2605.06127); our design in ``docs/design.md``, "CEA".

The shared Restormer backbone, with a residual branch after each adapted block
(``TransformerBlock.branch``). The branch asks a Cross-Attention Hyper-Adapter for this
image's routing bases A and residual directions B, lets every token assemble its own update
``dx_i = sum_k <x_i, A_k>/sqrt(C) B_k`` (dense, signed, no softmax, no top-k) and returns
``gamma * dx`` with a per-channel ``gamma`` initialised at zero: an untrained CEA computes
exactly what its backbone computes.

Options (recorded in ``model.config``):

* ``placement``: which blocks get a branch -- ``"encoder"`` (encoder levels 1-3 and the
  latent), ``"decoder"`` (decoder levels 3-1 and the refinement) or ``"all"``.
* ``rank``: r, the number of queries / bases / directions (default 8).
* ``grid``: the features are pooled to ``grid`` x ``grid`` tokens for the adapter (default 8).
* ``adapter_dim``: width of the adapter's keys, values and queries (default 32).
* any :class:`~expertir.models.backbone.BackboneConfig` field, on top of ``size``.

With ``model(x, return_aux=True)`` the aux dict maps every adapted block's name (e.g.
``"decoder2.3"``) to detached tensors, for visualisation, in the layout SLER-IR uses for its
routing maps: ``aux["routing"][site]`` the signed per-token affinities ``<x_i, A_k>/sqrt(C)``
(b, r, H, W), ``aux["bases"][site]`` A and ``aux["directions"][site]`` B (b, r, C). CEA adds
no auxiliary loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from expertir.models.backbone import RestorationModel, RestormerBackbone, backbone_config
from expertir.models.blocks import BlockSite, ForwardContext
from expertir.models.hyper_adapter import CrossAttentionHyperAdapter, assemble_tokenwise
from expertir.models.registry import register_model

#: Placement name -> the backbone stages whose blocks get an assembly branch.
PLACEMENTS: dict[str, frozenset[str]] = {
    "encoder": frozenset({"encoder", "latent"}),
    "decoder": frozenset({"decoder", "refinement"}),
    "all": frozenset({"encoder", "latent", "decoder", "refinement"}),
}


class ContinuousAssemblyBranch(nn.Module):
    """Residual branch of one adapted block: ``x -> gamma * dx`` (token-wise assembly)."""

    def __init__(self, site: BlockSite, rank: int, grid: int, adapter_dim: int):
        super().__init__()
        self.site_name = site.name
        self.adapter = CrossAttentionHyperAdapter(site.dim, rank, grid, adapter_dim)
        self.gamma = nn.Parameter(torch.zeros(1, site.dim, 1, 1))

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        bases, directions = self.adapter(x)
        delta, affinity = assemble_tokenwise(x, bases, directions)
        if ctx.record:
            for key, value in (("routing", affinity), ("bases", bases), ("directions", directions)):
                ctx.aux.setdefault(key, {})[self.site_name] = value.detach()
        return self.gamma * delta


@register_model("cea")
class CEA(RestorationModel):
    """Restormer backbone + token-wise continuous assembly branches."""

    def __init__(self, size: str = "base", placement: str = "all", rank: int = 8,
                 grid: int = 8, adapter_dim: int = 32, **backbone):
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown CEA placement {placement!r}; choose from {sorted(PLACEMENTS)}")
        for key, value in (("rank", rank), ("grid", grid), ("adapter_dim", adapter_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"CEA {key} must be a positive integer, got {value!r}")
        super().__init__()
        stages = PLACEMENTS[placement]

        def make_branch(site: BlockSite) -> ContinuousAssemblyBranch | None:
            if site.stage not in stages:
                return None
            return ContinuousAssemblyBranch(site, rank, grid, adapter_dim)

        self.backbone = RestormerBackbone(backbone_config(size, **backbone), make_branch=make_branch)
