"""The shared 4-level Restormer U-Net and the base class of every registered model
(``docs/design.md``, "Backbone").

Layout (Restormer, Fig. 2; PromptIR and MoCE-IR use the same):
patch embed -> encoder levels 1..3 (downsample between) -> latent (level 4) ->
decoder levels 3..1 (upsample, concat skip, 1x1 reduce) -> refinement -> 3x3 conv,
plus the global residual ``out = net(x) + x``.

Methods customise it through three factories, each called once per site:
``make_ffn(site)`` (the FFN of a block), ``make_branch(site)`` (a residual branch after a
block, or None) and ``make_decoder_hook(level, dim)`` (a module applied to the decoder
features entering a level, or None; PromptIR's prompt blocks live there).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn as nn

from expertir.models.blocks import (
    GDFN, BlockSite, BlockStack, Downsample, ForwardContext, OverlapPatchEmbed,
    TransformerBlock, Upsample, pad_to_multiple,
)


@dataclass(frozen=True)
class BackboneConfig:
    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    in_channels: int = 3
    out_channels: int = 3
    #: Inference only: MDTA takes its statistics from windows of this many pixels instead of
    #: the whole image (0). A multiple of 16, the window at the latent level being a sixteenth.
    attention_window: int = 0


#: The one size table: every registered model has a ``<family>_<size>`` preset per entry.
BACKBONE_PRESETS: dict[str, BackboneConfig] = {
    # About PromptIR's size.
    "base": BackboneConfig(dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4),
    "small": BackboneConfig(dim=32, num_blocks=(2, 4, 4, 6), num_refinement_blocks=2),
    # CPU tests and the shipped weights.
    "tiny": BackboneConfig(dim=16, num_blocks=(1, 2, 2, 3), num_refinement_blocks=1),
}


def backbone_config(size: str = "base", **overrides) -> BackboneConfig:
    """A preset by name, with any field overridden (lists are accepted for tuples)."""
    if size not in BACKBONE_PRESETS:
        raise ValueError(f"unknown backbone size {size!r}; choose from {sorted(BACKBONE_PRESETS)}")
    fields = asdict(BACKBONE_PRESETS[size])
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ValueError(f"unknown backbone option(s): {sorted(unknown)}")
    fields.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    if fields["attention_window"] < 0 or fields["attention_window"] % 16:
        raise ValueError(f"attention_window must be 0 or a positive multiple of 16, "
                         f"not {fields['attention_window']}")
    return BackboneConfig(**fields)


FfnFactory = Callable[[BlockSite], nn.Module]
BranchFactory = Callable[[BlockSite], "nn.Module | None"]
DecoderHookFactory = Callable[[int, int], "nn.Module | None"]


class RestormerBackbone(nn.Module):
    """Restormer U-Net with method hooks. ``forward(x, ctx)`` expects H, W divisible by 8."""

    def __init__(self, cfg: BackboneConfig, make_ffn: FfnFactory | None = None,
                 make_branch: BranchFactory | None = None,
                 make_decoder_hook: DecoderHookFactory | None = None):
        super().__init__()
        self.cfg = cfg
        make_ffn = make_ffn or (lambda s: GDFN(s.dim, cfg.ffn_expansion_factor, cfg.bias))
        make_branch = make_branch or (lambda s: None)
        make_decoder_hook = make_decoder_hook or (lambda level, dim: None)
        d, nb, hd = cfg.dim, cfg.num_blocks, cfg.heads

        def stack(stage: str, level: int, dim: int, heads: int, count: int) -> BlockStack:
            sites = [BlockSite(stage, level, i, dim, heads) for i in range(count)]
            return BlockStack(TransformerBlock(s, make_ffn(s), make_branch(s), cfg.bias,
                                               cfg.attention_window) for s in sites)

        self.patch_embed = OverlapPatchEmbed(cfg.in_channels, d)
        self.encoder1 = stack("encoder", 1, d, hd[0], nb[0])
        self.down1_2 = Downsample(d)
        self.encoder2 = stack("encoder", 2, d * 2, hd[1], nb[1])
        self.down2_3 = Downsample(d * 2)
        self.encoder3 = stack("encoder", 3, d * 4, hd[2], nb[2])
        self.down3_4 = Downsample(d * 4)
        self.latent = stack("latent", 4, d * 8, hd[3], nb[3])

        self.up4_3 = Upsample(d * 8)
        self.reduce3 = nn.Conv2d(d * 8, d * 4, 1, bias=cfg.bias)
        self.hook3 = make_decoder_hook(3, d * 4)
        self.decoder3 = stack("decoder", 3, d * 4, hd[2], nb[2])
        self.up3_2 = Upsample(d * 4)
        self.reduce2 = nn.Conv2d(d * 4, d * 2, 1, bias=cfg.bias)
        self.hook2 = make_decoder_hook(2, d * 2)
        self.decoder2 = stack("decoder", 2, d * 2, hd[1], nb[1])
        self.up2_1 = Upsample(d * 2)  # level 1 keeps the concatenated 2*dim channels
        self.hook1 = make_decoder_hook(1, d * 2)
        self.decoder1 = stack("decoder", 1, d * 2, hd[0], nb[0])
        self.refinement = stack("refinement", 1, d * 2, hd[0], cfg.num_refinement_blocks)
        self.output = nn.Conv2d(d * 2, cfg.out_channels, 3, padding=1, bias=cfg.bias)

    def blocks(self) -> list[TransformerBlock]:
        return [m for m in self.modules() if isinstance(m, TransformerBlock)]

    @staticmethod
    def _hook(hook: nn.Module | None, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return x if hook is None else hook(x, ctx)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        e1 = self.encoder1(self.patch_embed(x), ctx)
        e2 = self.encoder2(self.down1_2(e1), ctx)
        e3 = self.encoder3(self.down2_3(e2), ctx)
        z = self.latent(self.down3_4(e3), ctx)

        y = self.reduce3(torch.cat([self.up4_3(z), e3], dim=1))
        y = self.decoder3(self._hook(self.hook3, y, ctx), ctx)
        y = self.reduce2(torch.cat([self.up3_2(y), e2], dim=1))
        y = self.decoder2(self._hook(self.hook2, y, ctx), ctx)
        y = torch.cat([self.up2_1(y), e1], dim=1)
        y = self.decoder1(self._hook(self.hook1, y, ctx), ctx)
        y = self.refinement(y, ctx)
        out = self.output(y)
        if out.shape[1] == x.shape[1]:
            out = out + x
        return out


class RestorationModel(nn.Module):
    """Base of every registered model: blind image in, restored image out.

    ``model(x)`` takes an NCHW batch in [0, 1] of any size (it pads to ``size_multiple``
    and crops back). ``model(x, return_aux=True, labels=task_ids)`` also returns a dict with
    ``losses`` (auxiliary training losses by name) and whatever the method records
    (embeddings, routing maps, ...). A subclass builds ``self.backbone`` and overrides
    :meth:`restore_padded` only when it does more than run the backbone.
    :func:`~expertir.models.registry.build_model` sets ``model.config``, the resolved
    constructor arguments.
    """

    #: H and W of what reaches the backbone are multiples of this (three 2x downsamplings).
    size_multiple = 8
    backbone: RestormerBackbone

    def restore_padded(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """Restore a batch whose H and W are multiples of ``size_multiple``."""
        return self.backbone(x, ctx)

    def forward(self, x: torch.Tensor, return_aux: bool = False,
                labels: torch.Tensor | None = None):
        ctx = ForwardContext(record=return_aux, labels=labels)
        h, w = x.shape[-2:]
        out = self.restore_padded(pad_to_multiple(x, self.size_multiple), ctx)[..., :h, :w]
        if not return_aux:
            return out
        return out, {**ctx.aux, "losses": ctx.losses}
