"""Layer-wise expert routing (SLER-IR, design §3 of ARCHITECTURE.md).

In every routed transformer block the FFN becomes ``num_experts`` GDFN experts with their
own parameters, and the block gets its *own* :class:`ExpertRouter`. The router scores the
routing embedding of each region (``ctx.cond["routing_embedding"]``, B×d×h×w, one vector
per encoder region) against learnable expert keys on the sphere:
``logits_j = s · cos(e, k_j)``; the top-k experts are kept and their logits soft-maxed, so
the weights are non-negative, sum to one and have exactly k non-zeros per region. The
weights are upsampled bilinearly to the block's resolution, so where routing changes from
one region to the next the experts cross-fade over about a region instead of meeting at a
hard 16-px seam (nearest upsampling left visible rectangles in restored images; bilinear
measured better on the demo samples and Rain100L with the same weights). Convex blends of
the region weights still sum to one. :func:`load_balance_loss` is the
Switch-Transformer balance term ``E · sum_j f_j P_j``.

Compute: the experts run *fused* (:func:`gdfn_mixture`): their 1×1 input projections are
stacked into one wide 1×1 convolution, their depth-wise kernels into one depth-wise
convolution, and their output projections into one 1×1 convolution over the routing-weighted
hidden features. Because ``Σ_j W_j (w_j ⊙ g_j) = [W_1 … W_E] [w_1 g_1; … ; w_E g_E]``, this is
exactly ``Σ_j w_j · GDFN_j(x)``, in three large operations instead of three per expert plus
the gathering and scattering of images per expert (measured in the README, Training).
``expert_compute="sparse"`` (default) leaves out the experts chosen nowhere in the batch
and, when images choose few experts each (per-image routing), runs each image only with
its own experts, images with the same experts together; ``"dense"`` runs every expert on
every image. GDFN's 3×3 depth-wise convolution needs each pixel's neighbours, so skipping
at the level of single regions would need halos around every region; skipping whole
images keeps the output identical to dense. Under ``torch.compile`` the experts run dense:
the sparse choices give tensors whose sizes depend on the data, which Inductor cannot
compile (and every new size would be compiled again).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from expertir.models.blocks import GDFN, BlockSite, ForwardContext, conv1x1, is_channels_last

EXPERT_COMPUTE = ("sparse", "dense")
#: Sparse compute groups images by their experts only when that leaves out more than this
#: share of the expert work (gathering and scattering images costs time of its own).
GROUPING_SAVING = 0.5


class ExpertRouter(nn.Module):
    """Scaled-cosine router with top-k selection (plain dot product when ``sphere`` is off)."""

    def __init__(self, embed_dim: int, num_experts: int, top_k: int, scale: float = 10.0,
                 sphere: bool = True):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in 1..num_experts ({num_experts}), not {top_k}")
        self.top_k, self.scale, self.sphere = top_k, scale, sphere
        self.keys = nn.Parameter(F.normalize(torch.randn(num_experts, embed_dim), dim=1))

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``emb`` B×d×h×w -> (top-k weights B×E×h×w, full softmax probabilities B×E×h×w)."""
        if self.sphere:
            logits = self.scale * torch.einsum("bdhw,ed->behw", emb, F.normalize(self.keys, dim=1))
        else:
            logits = torch.einsum("bdhw,ed->behw", emb, self.keys)
        chosen = logits.topk(self.top_k, dim=1).indices
        mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, chosen, True)
        weights = logits.masked_fill(~mask, float("-inf")).softmax(1)
        return weights, logits.softmax(1)


def load_balance_loss(weights: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``E · sum_j f_j · P_j``: f_j the share of (region, slot) assignments to expert j,
    P_j its mean router probability. Equals 1 for perfectly balanced routing."""
    num_experts = weights.shape[1]
    chosen = (weights > 0).float()
    share = chosen.sum((0, 2, 3)) / chosen.sum()
    return num_experts * (share * probs.mean((0, 2, 3))).sum()


def upsample_routing(weights: torch.Tensor, size) -> torch.Tensor:
    """Region routing weights (B×E×h×w) at a block's resolution: bilinear, so experts
    cross-fade between regions (see the module docstring); weights still sum to one."""
    return F.interpolate(weights, size=tuple(size), mode="bilinear", align_corners=False)


class MixtureOfExpertsFFN(nn.Module):
    """A block's FFN as a routed mixture of GDFN experts; the ``ffn`` hook of the backbone."""

    def __init__(self, site: BlockSite, embed_dim: int, num_experts: int = 4, top_k: int = 2,
                 expansion: float = 2.66, bias: bool = False, router_scale: float = 10.0,
                 sphere: bool = True, compute: str = "sparse"):
        super().__init__()
        if compute not in EXPERT_COMPUTE:
            raise ValueError(f"expert_compute must be one of {EXPERT_COMPUTE}, not {compute!r}")
        self.site_name, self.compute = site.name, compute
        self.experts = nn.ModuleList(GDFN(site.dim, expansion, bias) for _ in range(num_experts))
        self.router = ExpertRouter(embed_dim, num_experts, top_k, router_scale, sphere)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        weights, probs = self.router(ctx.cond["routing_embedding"])
        ctx.add_loss("balance", load_balance_loss(weights, probs))
        if ctx.record:
            ctx.aux.setdefault("routing", {})[self.site_name] = weights.detach()
        weights = upsample_routing(weights, x.shape[-2:])
        if self.compute == "dense" or torch.compiler.is_compiling():
            return gdfn_mixture(list(self.experts), x, weights)
        # Sparse: one fused pass over the batch with the experts chosen anywhere in it, unless
        # running images that choose the same experts together skips at least half of it.
        chosen = (weights > 0).flatten(2).any(2)  # B×E
        union = chosen.any(0)
        if int(chosen.sum()) > GROUPING_SAVING * len(x) * int(union.sum()):
            return self._mixture(union, x, weights)
        patterns, group = chosen.unique(dim=0, return_inverse=True)
        members = [(group == g).nonzero().squeeze(1) for g in range(len(patterns))]
        parts = [self._mixture(p, x[m], weights[m]) for p, m in zip(patterns, members)]
        order = torch.cat(members).argsort()
        return torch.cat(parts)[order]

    def _mixture(self, chosen: torch.Tensor, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        used = chosen.nonzero().squeeze(1).tolist()
        return gdfn_mixture([self.experts[j] for j in used], x, weights[:, used])


def gdfn_mixture(experts: list[GDFN], x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_j weights[:, j] · experts[j](x)`` (weights B×E×H×W) as one wide GDFN (module docstring).

    Expert j's hidden features ``gelu(x1_j) · x2_j`` (h channels each) are scaled by its
    weight map and the output projection sums over all of them at once; with biases, the
    output biases are blended by the weights as well.
    """
    if not experts:
        return torch.zeros_like(x)
    first = experts[0]
    b, _, height, width = x.shape
    n, hidden = len(experts), first.project_out.in_channels

    def stacked(name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The experts' ``name`` convolutions as one: all first halves (x1), then all second halves (x2)."""
        convs = [getattr(e, name) for e in experts]
        order = [c.weight[:hidden] for c in convs] + [c.weight[hidden:] for c in convs]
        if convs[0].bias is None:
            return torch.cat(order), None
        return torch.cat(order), torch.cat([c.bias[:hidden] for c in convs] + [c.bias[hidden:] for c in convs])

    w_in, b_in = stacked("project_in")
    w_dw, b_dw = stacked("dwconv")
    w_out = torch.cat([e.project_out.weight for e in experts], 1)
    h = conv1x1(x, w_in, b_in)
    x1, x2 = F.conv2d(h, w_dw, b_dw, padding=1, groups=w_dw.shape[0]).chunk(2, dim=1)
    gated = F.gelu(x1) * x2
    if is_channels_last(gated):
        weights = weights.contiguous(memory_format=torch.channels_last)
    gated = (gated.view(b, n, hidden, height, width) * weights[:, :, None]).view(b, n * hidden, height, width)
    out = conv1x1(gated, w_out)
    if first.project_out.bias is not None:
        out = out + torch.einsum("behw,ec->bchw", weights,
                                 torch.stack([e.project_out.bias for e in experts]))
    return out
