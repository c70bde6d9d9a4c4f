"""Spherical uniform degradation embedding losses (docs/design.md, "SLER-IR").

Embeddings of degraded images live on the unit hypersphere S^{d-1}. Three training terms
shape them, all computed against a pool made of the batch embeddings *and* one prototype
per task, so each sample always has at least one positive (its prototype):

* :func:`supervised_infonce`: InfoNCE with temperature over same-task positives
  (supervised contrastive form, positives = other samples of the task + its prototype);
* :func:`triplet_loss`: batch-hard margin triplet on the cosine distance;
* :func:`uniformity_loss`: Wang & Isola (ICML 2020) uniformity of the class prototypes,
  ``log mean_{i != j} exp(-t ||p_i - p_j||^2)``, which spreads them evenly on the sphere.

Distances are ``||a - b||^2 / 2``: on the sphere that is exactly the cosine distance
``1 - cos(a, b)``; for the ``sphere: false`` ablation (plain linear embedding) the same
code gives the Euclidean geometry, and similarity is the plain dot product.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def half_squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2 / 2`` for all pairs (N×M); equals ``1 - cos`` for unit vectors."""
    sq = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None] - 2 * a @ b.T
    return sq.clamp_min(0) / 2


def simplex_prototypes(num_classes: int, dim: int) -> torch.Tensor:
    """``num_classes`` unit vectors with pairwise cosine ``-1/(C-1)`` (a regular simplex):
    the most uniform placement possible, fixed instead of learned."""
    if num_classes > dim:
        raise ValueError(f"simplex prototypes need embed_dim >= number of tasks ({num_classes})")
    eye = torch.eye(num_classes)
    centred = eye - eye.mean(0, keepdim=True) if num_classes > 1 else eye
    vectors = F.normalize(centred, dim=1)
    return F.pad(vectors, (0, dim - num_classes))


class PrototypeBank(nn.Module):
    """One prototype per task: learned (kept on the sphere) or fixed simplex vertices."""

    def __init__(self, num_classes: int, dim: int, mode: str = "learned", sphere: bool = True):
        super().__init__()
        if mode not in ("learned", "simplex"):
            raise ValueError(f"prototypes must be 'learned' or 'simplex', not {mode!r}")
        self.mode, self.sphere = mode, sphere
        if mode == "learned":
            self.weight = nn.Parameter(F.normalize(torch.randn(num_classes, dim), dim=1))
        else:
            self.register_buffer("weight", simplex_prototypes(num_classes, dim))

    def forward(self) -> torch.Tensor:
        return F.normalize(self.weight, dim=1) if self.sphere else self.weight

    def nearest(self, emb: torch.Tensor) -> torch.Tensor:
        """Index of the nearest prototype of each embedding (N×d -> N)."""
        return half_squared_distance(emb, self()).argmin(1)


def _pool(emb, labels, prototypes):
    pool = torch.cat([emb, prototypes])
    pool_labels = torch.cat([labels, torch.arange(len(prototypes), device=labels.device)])
    same = labels[:, None] == pool_labels[None]
    self_mask = torch.zeros_like(same)
    self_mask[:, : len(emb)] = torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    return pool, same & ~self_mask, ~same, self_mask


def supervised_infonce(emb: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
                       temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE over same-task positives (mean over positives, then over anchors)."""
    pool, positive, _, self_mask = _pool(emb, labels, prototypes)
    logits = (emb @ pool.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - logits.logsumexp(1, keepdim=True)
    log_prob = log_prob.masked_fill(~positive, 0.0)
    return (-(log_prob.sum(1)) / positive.sum(1)).mean()


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
                 margin: float = 0.2) -> torch.Tensor:
    """Batch-hard triplet: farthest positive vs nearest negative, on the cosine distance."""
    pool, positive, negative, _ = _pool(emb, labels, prototypes)
    dist = half_squared_distance(emb, pool)
    hardest_pos = dist.masked_fill(~positive, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(~negative, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def uniformity_loss(prototypes: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola uniformity of the (normalised) prototypes; lowest when evenly spread."""
    p = F.normalize(prototypes, dim=1)
    n = len(p)
    sq = 2 * half_squared_distance(p, p)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=p.device)
    return torch.logsumexp(-t * sq[off_diagonal], 0) - torch.log(torch.tensor(n * (n - 1.0)))
