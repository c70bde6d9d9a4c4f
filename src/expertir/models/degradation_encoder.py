"""Degradation encoder and Global-Local Granularity Fusion (docs/design.md,
"SLER-IR").

* **Encoder**: a small conv stem turns the image into a grid of tokens, one per 16×16
  region; a few transformer layers with a CLS token read them. The CLS output gives the
  global embedding g, each token the local embedding l_p; both are projected to
  ``embed_dim`` and L2-normalised (they live on S^{d-1}; ``sphere=False`` keeps the plain
  linear embedding for the ablation).
* **Windows**: the transformer reads the token grid in windows of the training patch size
  (``train_patch`` px), so a full-size test image is seen at the granularity of training.
  The global token is the mean of the window CLS outputs (weighted by each window's share
  of real, unpadded tokens), i.e. it is read from all windows. Images smaller than one
  window form a single smaller window.
* **GLGF**: a gate mixes g and l_p into the routing embedding
  ``e_p = normalize(a_p g + (1 - a_p) l_p)`` with ``a_p = sigmoid(W [g; l_p; cos(g, l_p)] + b)``.
  The gate starts as ``sigmoid(10 cos - 8)``: the global token leads where it agrees with
  the local cue, and the local cue wins where they disagree (a region whose degradation
  differs from the rest of the image). With ``glgf=False`` every region is routed by g.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Pixels per encoder token (and per routing region) along each side.
TOKEN_STRIDE = 16
#: The stem reads the image and its amplified high-pass residual.
HIGH_PASS_GAIN = 8.0


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """Image minus its 3×3 local mean: where noise, rain streaks and (by their absence)
    blur show most clearly."""
    mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
    return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode=mode), 3, stride=1)


@dataclass
class DegradationEmbedding:
    """Output of :class:`DegradationEncoder` (h×w = image size / TOKEN_STRIDE)."""

    global_: torch.Tensor  # B×d
    local: torch.Tensor  # B×d×h×w
    routing: torch.Tensor  # B×d×h×w, what the routers read
    gate: torch.Tensor | None  # B×1×h×w, weight of the global token (None without GLGF)


class DegradationEncoder(nn.Module):
    def __init__(self, embed_dim: int = 128, width: int = 16, token_dim: int = 64,
                 depth: int = 2, heads: int = 4, train_patch: int = 128, sphere: bool = True,
                 glgf: bool = True, smoothing: int = 1, local_margin: float = 0.0):
        super().__init__()
        if train_patch % TOKEN_STRIDE:
            raise ValueError(f"train_patch must be a multiple of {TOKEN_STRIDE}, not {train_patch}")
        if smoothing < 1 or smoothing % 2 == 0:
            raise ValueError(f"routing smoothing must be an odd number of regions, not {smoothing}")
        self.window = train_patch // TOKEN_STRIDE
        self.sphere, self.glgf = sphere, glgf
        self.smoothing, self.local_margin = int(smoothing), float(local_margin)
        self.stem = nn.Sequential(
            nn.Conv2d(6, width, 3, padding=1), nn.GELU(),  # pixel-level cues (noise, streaks)
            nn.Conv2d(width, token_dim, 4, stride=4), nn.GELU(),
            nn.Conv2d(token_dim, token_dim, 4, stride=4),
        )
        # Convolutional position encoding (works for any grid size).
        self.position = nn.Conv2d(token_dim, token_dim, 3, padding=1, groups=token_dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, token_dim))
        layer = nn.TransformerEncoderLayer(token_dim, heads, 2 * token_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(token_dim)
        self.global_head = nn.Linear(token_dim, embed_dim)
        self.local_head = nn.Linear(token_dim, embed_dim)
        if glgf:
            self.gate = nn.Linear(2 * embed_dim + 1, 1)
            nn.init.zeros_(self.gate.weight)
            with torch.no_grad():
                self.gate.weight[0, -1] = 10.0
                self.gate.bias.fill_(-8.0)

    def _project(self, x: torch.Tensor, head: nn.Linear) -> torch.Tensor:
        x = head(x)
        return F.normalize(x, dim=-1) if self.sphere else x

    def _smooth(self, local: torch.Tensor) -> torch.Tensor:
        """Mean of the local embeddings (B×h×w×d) over ``smoothing``² neighbouring regions."""
        k = self.smoothing
        if k == 1:
            return local
        grid = local.permute(0, 3, 1, 2)
        pad = k // 2
        mode = "replicate" if min(grid.shape[-2:]) <= pad else "reflect"
        grid = F.avg_pool2d(F.pad(grid, (pad, pad, pad, pad), mode=mode), k, stride=1)
        grid = grid.permute(0, 2, 3, 1)
        return F.normalize(grid, dim=-1) if self.sphere else grid

    def confidence(self, local: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """``c_p`` of every region (B×h×w×1): how clearly its local embedding resembles one
        prototype more than any other (see the module docstring)."""
        sims = local @ prototypes.detach().T
        top2 = sims.topk(2, dim=-1).values
        return torch.sigmoid((top2[..., :1] - top2[..., 1:] - self.local_margin) / 0.05)

    def forward(self, x: torch.Tensor, prototypes: torch.Tensor | None = None) -> DegradationEmbedding:
        """``x``: B×3×H×W with H, W multiples of TOKEN_STRIDE; ``prototypes`` (num_tasks×d)
        are needed with ``local_margin > 0``."""
        t = self.stem(torch.cat([x - 0.5, HIGH_PASS_GAIN * high_pass(x)], 1))
        t = t + self.position(t)
        b, c, h, w = t.shape
        wh, ww = min(h, self.window), min(w, self.window)
        ph, pw = (-h) % wh, (-w) % ww
        valid = F.pad(t.new_ones(1, 1, h, w), (0, pw, 0, ph))
        if ph or pw:
            t = F.pad(t, (0, pw, 0, ph), mode="replicate")
        nh, nw = (h + ph) // wh, (w + pw) // ww
        tokens = t.reshape(b, c, nh, wh, nw, ww).permute(0, 2, 4, 3, 5, 1).reshape(-1, wh * ww, c)
        out = self.transformer(torch.cat([self.cls.expand(len(tokens), 1, c), tokens], 1))
        out = self.norm(out)

        share = valid.reshape(1, nh, wh, nw, ww).sum((2, 4)).reshape(1, nh * nw, 1)
        cls = out[:, 0].reshape(b, nh * nw, c)
        g = self._project((cls * share).sum(1) / share.sum(1), self.global_head)

        local = out[:, 1:].reshape(b, nh, nw, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
        local = self._project(local.reshape(b, nh * wh, nw * ww, c)[:, :h, :w], self.local_head)

        local = self._smooth(local)
        g_map = g[:, None, None, :].expand_as(local)
        if not self.glgf:
            return DegradationEmbedding(g, local.permute(0, 3, 1, 2),
                                        g_map.permute(0, 3, 1, 2).contiguous(), None)
        agreement = F.cosine_similarity(g_map, local, dim=-1)[..., None]
        alpha = torch.sigmoid(self.gate(torch.cat([g_map, local, agreement], -1)))
        if self.local_margin > 0:
            if prototypes is None:
                raise ValueError("local_margin > 0 needs the task prototypes")
            alpha = 1.0 - (1.0 - alpha) * self.confidence(local, prototypes)
        routing = alpha * g_map + (1 - alpha) * local
        if self.sphere:
            routing = F.normalize(routing, dim=-1)
        return DegradationEmbedding(g, local.permute(0, 3, 1, 2), routing.permute(0, 3, 1, 2),
                                    alpha.permute(0, 3, 1, 2))
