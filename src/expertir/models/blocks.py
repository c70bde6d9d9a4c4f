"""Shared building blocks of the Restormer-style backbone (Zamir et al., CVPR 2022).

Every model in :mod:`expertir.models` is built from these pieces. Methods change the
network only through two hooks of :class:`TransformerBlock`:

* ``ffn``: the block's feed-forward module (GDFN by default). SLER-IR swaps it for a
  mixture of experts.
* ``branch``: an optional residual branch after the block, ``x <- x + branch(x, ctx)``.
  CEA puts its token-wise low-rank update there.

Both receive a :class:`ForwardContext` that carries per-forward conditioning (e.g. a
routing embedding computed once from the input image) and collects auxiliary outputs
(embeddings, routing maps, auxiliary losses) for the trainer and for visualisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ForwardContext:
    """State shared by all blocks during one forward pass.

    ``cond`` holds inputs computed once per forward (method specific), ``aux`` collects
    tensors for inspection, ``losses`` collects auxiliary training losses by name.
    ``labels`` are the task ids of the batch when the trainer provides them (training
    only: the model never sees them at test time). ``record`` says whether ``aux`` is
    wanted; modules skip storing large maps when it is False.
    """

    record: bool = False
    labels: torch.Tensor | None = None
    cond: dict[str, Any] = field(default_factory=dict)
    aux: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, torch.Tensor] = field(default_factory=dict)

    def add_loss(self, name: str, value: torch.Tensor) -> None:
        """Accumulate a named auxiliary loss (summed over the layers that add it)."""
        self.losses[name] = self.losses[name] + value if name in self.losses else value


@dataclass(frozen=True)
class BlockSite:
    """Where a transformer block sits in the U-Net; hooks use it to decide what to build."""

    stage: str  # "encoder", "latent", "decoder" or "refinement"
    level: int  # 1 (full resolution) .. 4 (latent)
    index: int  # block index inside its stage
    dim: int
    num_heads: int

    @property
    def name(self) -> str:
        return f"{self.stage}{self.level}.{self.index}"


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of each pixel (Restormer's ``WithBias`` norm)."""

    def __init__(self, dim: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, eps=1e-5)
        return x.permute(0, 3, 1, 2)


def is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def conv1x1(x: torch.Tensor, conv: nn.Conv2d | torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1×1 convolution (a module, or a weight and bias). On channels-last features it is
    computed as a matrix product over the pixels, which on CPU is faster than oneDNN's 1×1
    convolution, mostly in the backward pass (README, Training); the result is the same."""
    if isinstance(conv, nn.Conv2d):
        conv, bias = conv.weight, conv.bias
    if is_channels_last(x):
        return F.linear(x.permute(0, 2, 3, 1), conv.flatten(1), bias).permute(0, 3, 1, 2)
    return F.conv2d(x, conv, bias)


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention (Restormer Sec. 3.1): attention across
    channels, so its cost is linear in the number of pixels.

    ``window`` (features; 0: the whole map): at inference, a map larger than the window
    takes its channel-attention statistics from windows of that size instead of from the
    whole map (:func:`local_channel_attention`), as the network saw them on its training
    patches (``docs/design.md``, "Attention window at inference"). Training always
    attends over the whole patch."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False, window: int = 0):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv_dwconv(conv1x1(x, self.qkv))
        if self.window and not self.training and max(h, w) > self.window:
            q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h, w) for t in qkv.chunk(3, dim=1))
            out = local_channel_attention(q, k, v, self.temperature.view(-1), self.window)
            return conv1x1(out.reshape(b, c, h, w), self.project_out)
        if is_channels_last(qkv):
            return conv1x1(self._attend_channels_last(qkv), self.project_out)
        q, k, v = qkv.chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        return self.project_out(out.reshape(b, c, h, w))

    def _attend_channels_last(self, qkv: torch.Tensor) -> torch.Tensor:
        """The same attention on channels-last features, read as (batch, pixels, channels)
        without reordering them in memory."""
        b, c3, h, w = qkv.shape
        heads, c = self.num_heads, c3 // 3
        tokens = qkv.permute(0, 2, 3, 1).reshape(b, h * w, 3, heads, c // heads)
        q, k, v = tokens.unbind(2)  # (b, pixels, heads, d)
        q = F.normalize(q, dim=1)
        k = F.normalize(k, dim=1)
        attn = torch.einsum("bnhd,bnhe->bhde", q, k) * self.temperature
        out = torch.einsum("bhde,bnhe->bnhd", attn.softmax(dim=-1), v)
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2)


def local_channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            temperature: torch.Tensor, window: int) -> torch.Tensor:
    """MDTA's channel attention with its statistics taken over ``window``-sized windows
    (the test-time local statistics of Chu et al., ECCV 2022, "Improving Image Restoration
    by Revisiting Global Information Aggregation").

    ``q``, ``k``, ``v``: (batch, heads, d, H, W); ``temperature``: (heads,); ``window``
    even. The map is cut into cells of half a window; a window is 2×2 cells, one starting
    at every cell corner (those on the border hang half outside and cover only the cells
    inside). Each window's d×d attention is computed from its own pixels, as MDTA computes
    it from the whole map; a pixel's attention is the bilinear blend of the four windows
    around it, weighted by the distance to their centres, so it changes smoothly across
    the map. Memory stays about that of the global attention: per-cell sums, no copies of
    the pixels per window.
    """
    b, heads, d, h, w = q.shape
    s = window // 2
    rows, cols = -(-h // s), -(-w // s)

    def cells(t: torch.Tensor) -> torch.Tensor:  # (b, heads, rows, cols, d, s*s)
        t = F.pad(t, (0, cols * s - w, 0, rows * s - h))
        t = t.reshape(b, heads, d, rows, s, cols, s).permute(0, 1, 3, 5, 2, 4, 6)
        return t.reshape(b, heads, rows, cols, d, s * s)

    def window_sums(t: torch.Tensor) -> torch.Tensor:  # per cell -> per window (rows+1, cols+1)
        t = F.pad(t.movedim((2, 3), (-2, -1)), (1, 1, 1, 1))
        t = t[..., :-1, :-1] + t[..., 1:, :-1] + t[..., :-1, 1:] + t[..., 1:, 1:]
        return t.movedim((-2, -1), (2, 3))

    qc, kc, vc = cells(q), cells(k), cells(v)
    gram = window_sums(qc @ kc.transpose(-2, -1))
    q_norm = window_sums(qc.square().sum(-1)).sqrt().clamp_min(1e-12)
    k_norm = window_sums(kc.square().sum(-1)).sqrt().clamp_min(1e-12)
    attn = gram / (q_norm[..., :, None] * k_norm[..., None, :]) * temperature.view(1, heads, 1, 1, 1, 1)
    attn = attn.softmax(dim=-1)

    # A pixel at offset i in its cell lies (i + 0.5) / s of the way to the next window's centre.
    near = (torch.arange(s, device=q.device, dtype=q.dtype) + 0.5) / s
    weights = (1 - near, near)
    out = torch.zeros_like(vc)
    for dy in (0, 1):
        for dx in (0, 1):
            blend = (weights[dy][:, None] * weights[dx][None, :]).reshape(s * s)
            out += (attn[:, :, dy:dy + rows, dx:dx + cols] @ vc) * blend
    out = out.reshape(b, heads, rows, cols, d, s, s).permute(0, 1, 4, 2, 5, 3, 6)
    return out.reshape(b, heads, d, rows * s, cols * s)[..., :h, :w]


def gdfn_hidden(dim: int, expansion: float) -> int:
    return int(dim * expansion)


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network (Restormer Sec. 3.2)."""

    def __init__(self, dim: int, expansion: float = 2.66, bias: bool = False):
        super().__init__()
        hidden = gdfn_hidden(dim, expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor, ctx: ForwardContext | None = None) -> torch.Tensor:
        x1, x2 = self.dwconv(conv1x1(x, self.project_in)).chunk(2, dim=1)
        return conv1x1(F.gelu(x1) * x2, self.project_out)


class TransformerBlock(nn.Module):
    """``x + MDTA(LN(x))``, then ``x + FFN(LN(x), ctx)``, then ``x + branch(x, ctx)``.
    ``attention_window``: MDTA's window at inference, in pixels of the input image."""

    def __init__(self, site: BlockSite, ffn: nn.Module, branch: nn.Module | None = None,
                 bias: bool = False, attention_window: int = 0):
        super().__init__()
        self.site = site
        self.norm1 = LayerNorm2d(site.dim)
        # attention_window is in input pixels; level L sees the image at 1 / 2**(L-1).
        self.attn = MDTA(site.dim, site.num_heads, bias, attention_window >> (site.level - 1))
        self.norm2 = LayerNorm2d(site.dim)
        self.ffn = ffn
        self.branch = branch

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        x = x + self.attn(self.norm1(x))
        x = x + self.ffn(self.norm2(x), ctx)
        if self.branch is not None:
            x = x + self.branch(x, ctx)
        return x


class BlockStack(nn.ModuleList):
    """A sequence of transformer blocks that passes the forward context along."""

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        for block in self:
            x = block(x, ctx)
        return x


class OverlapPatchEmbed(nn.Module):
    """3x3 convolution from image channels to features (overlapped patch embedding)."""

    def __init__(self, in_channels: int, dim: int, bias: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Sequential):
    """Halve the resolution, double the channels (conv + pixel-unshuffle)."""

    def __init__(self, dim: int):
        super().__init__(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


class Upsample(nn.Sequential):
    """Double the resolution, halve the channels (conv + pixel-shuffle)."""

    def __init__(self, dim: int):
        super().__init__(nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of an NCHW tensor so H and W are multiples of ``multiple``.

    Reflection where the image is large enough, replication otherwise (e.g. a 1x1 image).
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
