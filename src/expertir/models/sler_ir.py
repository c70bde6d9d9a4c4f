"""SLER-IR: Spherical Layer-wise Expert Routing (arXiv 2603.05940); our design in
``docs/design.md``, "SLER-IR".

``restore_padded`` runs three steps:

1. :class:`~expertir.models.degradation_encoder.DegradationEncoder` reads the image and
   gives the global embedding g, the local embeddings l_p and, through GLGF, the routing
   embedding e_p of every 16×16 region (all on the unit sphere);
2. when task labels are given (training), the spherical embedding losses of
   :mod:`expertir.models.sphere_losses` are added to ``ctx.losses``;
3. the Restormer backbone runs with the FFN of each routed block replaced by a
   :class:`~expertir.models.experts.MixtureOfExpertsFFN` with its own router reading e_p.

Auxiliary losses (``aux["losses"]``) already carry their weights (``contrastive_weight``,
``triplet_weight``, ``uniformity_weight``, ``balance_weight`` are model options), so a
trainer only sums them. ``model(x, return_aux=True)`` also records ``embedding_global``
(B×d), ``embedding_local`` and ``routing_embedding`` (B×d×h×w), ``glgf_gate`` (B×1×h×w)
and ``routing`` (block name -> top-k weights B×E×h×w).
"""

from __future__ import annotations

import torch

from expertir.models.backbone import RestorationModel, RestormerBackbone, backbone_config
from expertir.models.blocks import GDFN, BlockSite, ForwardContext
from expertir.models.degradation_encoder import TOKEN_STRIDE, DegradationEmbedding, DegradationEncoder
from expertir.models.experts import MixtureOfExpertsFFN
from expertir.models.registry import register_model
from expertir.models.sphere_losses import (
    PrototypeBank, supervised_infonce, triplet_loss, uniformity_loss,
)

STAGES = ("encoder", "latent", "decoder", "refinement")

#: Per backbone size: the degradation encoder's width and the experts' FFN expansion.
PRESET_OPTIONS = {
    "tiny": {"encoder_width": 16, "encoder_dim": 48, "encoder_depth": 2, "expert_expansion": 1.33},
    "small": {"encoder_width": 16, "encoder_dim": 64, "encoder_depth": 2, "expert_expansion": 1.33},
    "base": {"encoder_width": 24, "encoder_dim": 96, "encoder_depth": 3, "expert_expansion": 1.0},
}


@register_model("sler_ir", preset_options=PRESET_OPTIONS)
class SLERIR(RestorationModel):
    size_multiple = TOKEN_STRIDE  # one routing region per 16×16 pixels

    def __init__(self, size: str = "base", embed_dim: int = 128, num_experts: int = 4,
                 top_k: int = 2, routed_stages: tuple[str, ...] | list[str] = STAGES,
                 expert_expansion: float = 1.0, expert_compute: str = "sparse",
                 router_scale: float = 10.0, encoder_width: int = 24, encoder_dim: int = 96,
                 encoder_depth: int = 3, encoder_heads: int = 4, train_patch: int = 128,
                 num_tasks: int = 8, sphere: bool = True, glgf: bool = True,
                 routing_smoothing: int = 1, local_margin: float = 0.0,
                 uniformity: bool = True, prototypes: str = "learned",
                 temperature: float = 0.1, margin: float = 0.2, local_weight: float = 0.5,
                 contrastive_weight: float = 0.1, triplet_weight: float = 0.1,
                 uniformity_weight: float = 0.01, balance_weight: float = 0.01, **backbone):
        unknown = set(routed_stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown routed_stages {sorted(unknown)}; choose from {STAGES}")
        super().__init__()
        cfg = backbone_config(size, **backbone)
        self.temperature, self.margin, self.local_weight = temperature, margin, local_weight
        #: Weight of each auxiliary loss; uniformity only acts on learned prototypes.
        self.loss_weights = {"contrastive": contrastive_weight, "triplet": triplet_weight,
                             "balance": balance_weight}
        if uniformity and prototypes == "learned":
            self.loss_weights["uniformity"] = uniformity_weight

        self.encoder = DegradationEncoder(embed_dim, encoder_width, encoder_dim, encoder_depth,
                                          encoder_heads, train_patch, sphere, glgf,
                                          routing_smoothing, local_margin)
        self.prototypes = PrototypeBank(num_tasks, embed_dim, prototypes, sphere)

        def make_ffn(site: BlockSite):
            if site.stage not in routed_stages:
                return GDFN(site.dim, cfg.ffn_expansion_factor, cfg.bias)
            return MixtureOfExpertsFFN(site, embed_dim, num_experts, top_k, expert_expansion,
                                       cfg.bias, router_scale, sphere, expert_compute)

        self.backbone = RestormerBackbone(cfg, make_ffn=make_ffn)
        self.routed = {b.site.name: b.ffn for b in self.backbone.blocks()
                       if isinstance(b.ffn, MixtureOfExpertsFFN)}

    def embedding_losses(self, emb: DegradationEmbedding, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted contrastive / triplet / uniformity losses of g and of every l_p."""
        protos = self.prototypes()
        local = emb.local.permute(0, 2, 3, 1).reshape(-1, emb.local.shape[1])
        local_labels = labels.repeat_interleave(emb.local.shape[2] * emb.local.shape[3])
        losses = {}
        for name, fn, arg in (("contrastive", supervised_infonce, self.temperature),
                              ("triplet", triplet_loss, self.margin)):
            value = fn(emb.global_, labels, protos, arg) + self.local_weight * fn(local, local_labels, protos, arg)
            losses[name] = self.loss_weights[name] * value
        if "uniformity" in self.loss_weights:
            losses["uniformity"] = self.loss_weights["uniformity"] * uniformity_loss(protos)
        return losses

    def routing_maps(self, routing_embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """Top-k weights of every routed block for a routing-embedding map (B×d×h×w)."""
        return {name: ffn.router(routing_embedding)[0] for name, ffn in self.routed.items()}

    def restore_padded(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        emb = self.encoder(x, self.prototypes() if self.encoder.local_margin > 0 else None)
        if ctx.labels is not None:
            for name, value in self.embedding_losses(emb, ctx.labels.to(x.device).long()).items():
                ctx.add_loss(name, value)
        if ctx.record:
            ctx.aux.update(embedding_global=emb.global_.detach(), embedding_local=emb.local.detach(),
                           routing_embedding=emb.routing.detach(),
                           glgf_gate=None if emb.gate is None else emb.gate.detach())
        ctx.cond["routing_embedding"] = emb.routing
        out = self.backbone(x, ctx)
        if "balance" in ctx.losses:  # summed over routed blocks: use their mean
            ctx.losses["balance"] = self.loss_weights["balance"] * ctx.losses["balance"] / len(self.routed)
        return out
