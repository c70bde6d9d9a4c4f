"""PromptIR (Potlapalli et al., NeurIPS 2023) on the shared Restormer backbone
(``docs/design.md``, "Baselines").

PromptIR adds two kinds of block to the Restormer decoder (paper Sec. 3, Fig. 2):

* **Prompt generation block (PGB)**, Eq. (1)–(2): ``N`` learned prompt components
  ``P_c ∈ R^{N×C_p×S×S}`` are mixed by weights ``w = softmax(W · GAP(F))`` computed from the
  globally pooled decoder features ``F``; the mixture ``Σ_c w_c P_c`` is resized to the
  feature size and passed through a 3×3 convolution: ``P = Conv3x3(Resize(Σ_c w_c P_c))``.
* **Prompt interaction block (PIB)**, Eq. (3): the prompt is concatenated with the features
  along the channels, processed by one transformer block (MDTA + GDFN) and brought back to
  the feature width by a 1×1 convolution: ``F̂ = Conv1x1(TB([F; P]))``.

Placement. PromptIR applies its three prompt blocks to the latent and to the outputs of
decoder levels 3 and 2, *before* each upsampling. Our backbone offers the same points just
*after* each upsampling: ``make_decoder_hook(level, dim)`` wraps the features entering
decoder levels 3, 2 and 1 (see :mod:`expertir.models.backbone`). The information flow is
the same (one prompt block between consecutive decoder levels).

Sizes. PromptIR (dim 48) uses prompt widths 320/128/64 and spatial sizes 16/32/64 for its
three blocks, ``N = 5`` components. Here the prompt width of a level is two thirds of the
feature width rounded up to a multiple of 8 (64/64/128 on ``base``) and the spatial size
scales with the preset, so the prompt parameters stay a modest share of the model.

Options: ``prompt_len`` (N), ``prompt_sizes`` (S for levels 1, 2, 3; from the size preset
when ``None``), ``prompt_dims`` (C_p for levels 1, 2, 3; derived from the backbone when
``None``) and any
:class:`~expertir.models.backbone.BackboneConfig` field on top of ``size``. With
``model(x, return_aux=True)`` the aux dict holds ``aux["prompt_weights"][level]``, the
softmax weights (b, N) of each prompt block, detached.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from expertir.models.backbone import RestorationModel, RestormerBackbone, backbone_config
from expertir.models.blocks import GDFN, BlockSite, ForwardContext, TransformerBlock
from expertir.models.registry import register_model

#: Prompt spatial sizes S for decoder levels (1, 2, 3), per preset.
PROMPT_SIZES = {"tiny": (16, 8, 4), "small": (32, 16, 8), "base": (64, 32, 16)}


def default_prompt_dim(feature_dim: int) -> int:
    """Two thirds of the feature width, rounded up to a multiple of 8 (PromptIR's ratio at
    its two finer levels: 64 of 96 and 128 of 192)."""
    return -(-(2 * feature_dim // 3) // 8) * 8


class PromptGenBlock(nn.Module):
    """Prompt generation block, PromptIR Eq. (1)–(2): softmax-weighted learned components."""

    def __init__(self, feature_dim: int, prompt_dim: int, prompt_len: int, prompt_size: int):
        super().__init__()
        self.components = nn.Parameter(torch.rand(prompt_len, prompt_dim, prompt_size, prompt_size))
        self.weights = nn.Linear(feature_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt of shape (b, C_p, H, W), component weights of shape (b, N))."""
        w = F.softmax(self.weights(x.mean(dim=(-2, -1))), dim=1)
        prompt = torch.einsum("bn,nchw->bchw", w, self.components)
        prompt = F.interpolate(prompt, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv3x3(prompt), w


class PromptBlock(nn.Module):
    """PGB then PIB (Eq. 3): ``x -> Conv1x1(TB([x; prompt(x)]))``; a decoder hook ``(x, ctx) -> x``."""

    def __init__(self, level: int, feature_dim: int, num_heads: int, prompt_dim: int,
                 prompt_len: int, prompt_size: int, ffn_expansion: float, bias: bool):
        super().__init__()
        self.level = level
        self.generate = PromptGenBlock(feature_dim, prompt_dim, prompt_len, prompt_size)
        joint = feature_dim + prompt_dim
        site = BlockSite("prompt", level, 0, joint, num_heads)
        self.interact = TransformerBlock(site, GDFN(joint, ffn_expansion, bias), bias=bias)
        self.reduce = nn.Conv2d(joint, feature_dim, 1, bias=bias)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        prompt, weights = self.generate(x)
        if ctx.record:
            ctx.aux.setdefault("prompt_weights", {})[self.level] = weights.detach()
        return self.reduce(self.interact(torch.cat([x, prompt], dim=1), ctx))


@register_model("promptir")
class PromptIR(RestorationModel):
    def __init__(self, size: str = "base", prompt_len: int = 5,
                 prompt_sizes: tuple[int, int, int] | list[int] | None = None,
                 prompt_dims: tuple[int, int, int] | list[int] | None = None, **backbone):
        cfg = backbone_config(size, **backbone)
        sizes = tuple(prompt_sizes or PROMPT_SIZES[size])
        # Feature widths entering decoder levels 1, 2, 3 (see RestormerBackbone).
        widths = (cfg.dim * 2, cfg.dim * 2, cfg.dim * 4)
        dims = tuple(prompt_dims or (default_prompt_dim(c) for c in widths))
        if len(sizes) != 3 or len(dims) != 3:
            raise ValueError("prompt_sizes and prompt_dims need one value per decoder level (1, 2, 3)")
        super().__init__()

        def make_prompt_block(level: int, dim: int) -> PromptBlock:
            return PromptBlock(level, dim, cfg.heads[level - 1], dims[level - 1], prompt_len,
                               sizes[level - 1], cfg.ffn_expansion_factor, cfg.bias)

        self.backbone = RestormerBackbone(cfg, make_decoder_hook=make_prompt_block)
