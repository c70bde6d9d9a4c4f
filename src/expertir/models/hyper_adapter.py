"""Cross-Attention Hyper-Adapter and token-wise continuous assembly (CEA, design §4).

Two pieces, usable by any model that wants instance-conditioned low-rank updates:

* :class:`CrossAttentionHyperAdapter` (§4, first bullet): ``rank`` learnable queries
  cross-attend to a feature map average-pooled to a ``grid`` x ``grid`` grid; two linear
  heads turn the ``rank`` attended queries into routing bases ``A`` (rank x C) and residual
  directions ``B`` (rank x C) for each image of the batch.
* :func:`assemble_tokenwise` (§4, second bullet): every token x_i gets its own update
  ``dx_i = sum_k <x_i, A_k> / sqrt(C) * B_k`` -- dense, signed, no softmax, no top-k. It is
  the low-rank map ``x_i -> x_i (A^T B) / sqrt(C)``, computed as two batched matrix products
  (cost O(N r C)); the N per-token matrices are never formed. Read as linear attention: the
  token is the query, ``A`` the keys, ``B`` the values.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from expertir.models.blocks import is_channels_last


def assemble_tokenwise(x: torch.Tensor, bases: torch.Tensor,
                       directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-wise continuous assembly (design §4): ``dx_i = sum_k <x_i, A_k>/sqrt(C) B_k``.

    ``x`` is NCHW (C channels, N = H*W tokens), ``bases`` (A) and ``directions`` (B) are
    (batch, rank, C). Returns ``(delta, affinity)``: the NCHW update and the signed
    per-token affinities ``<x_i, A_k>/sqrt(C)`` as (batch, rank, H, W).
    """
    b, c, h, w = x.shape
    if is_channels_last(x):  # the same products on (b, N, C) tokens, without reordering memory
        affinity = x.permute(0, 2, 3, 1).reshape(b, h * w, c) @ bases.transpose(1, 2) / math.sqrt(c)  # (b, N, r)
        delta = affinity @ directions  # (b, N, C)
        return delta.view(b, h, w, c).permute(0, 3, 1, 2), affinity.view(b, h, w, -1).permute(0, 3, 1, 2)
    affinity = bases @ x.reshape(b, c, h * w) / math.sqrt(c)  # (b, r, N)
    delta = directions.transpose(1, 2) @ affinity  # (b, C, N)
    return delta.reshape(b, c, h, w), affinity.reshape(b, -1, h, w)


class CrossAttentionHyperAdapter(nn.Module):
    """Synthesises per-image routing bases A and residual directions B (design §4).

    ``x`` (NCHW) is average-pooled to ``grid`` x ``grid`` tokens, layer-normalised and
    projected to keys and values of width ``hidden``. ``rank`` learnable queries attend to
    them (single-head scaled dot-product attention over the grid), keep a residual of the
    query, are layer-normalised, and two linear heads map each to a C-vector: the k-th
    attended query gives A_k and B_k. The pooled grid is fixed, so the adapter's own cost
    does not grow with the image; only the assembly is O(N).
    """

    def __init__(self, dim: int, rank: int = 8, grid: int = 8, hidden: int = 32):
        super().__init__()
        self.rank, self.grid, self.hidden = rank, grid, hidden
        self.queries = nn.Parameter(torch.randn(rank, hidden))
        self.norm_features = nn.LayerNorm(dim)
        self.to_key = nn.Linear(dim, hidden, bias=False)
        self.to_value = nn.Linear(dim, hidden, bias=False)
        self.norm_queries = nn.LayerNorm(hidden)
        self.to_bases = nn.Linear(hidden, dim)  # head producing A
        self.to_directions = nn.Linear(hidden, dim)  # head producing B

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """NCHW features -> ``(A, B)``, each (batch, rank, C)."""
        pooled = F.adaptive_avg_pool2d(x, self.grid).flatten(2).transpose(1, 2)  # (b, g*g, C)
        pooled = self.norm_features(pooled)
        keys, values = self.to_key(pooled), self.to_value(pooled)  # (b, g*g, hidden)
        weights = (self.queries @ keys.transpose(1, 2) / math.sqrt(self.hidden)).softmax(dim=-1)
        attended = self.norm_queries(self.queries + weights @ values)  # (b, rank, hidden)
        return self.to_bases(attended), self.to_directions(attended)
