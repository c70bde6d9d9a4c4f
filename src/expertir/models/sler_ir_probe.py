"""Does the SLER-IR embedding tell degradations apart? (the experiment of issue 4).

Trains only the degradation encoder, the prototypes and the routers of a SLER-IR model
(embedding losses + balance loss; the restoration backbone is never run) on generated
patches of five degradations, then measures on held-out patches:

* nearest-prototype accuracy of the global embedding;
* per routed layer, the mutual information (bits) between the task and the top-1 expert
  chosen per region;
* on an image whose left half is noisy and right half hazy, whether the full-image routing
  differs between the halves and matches the routing of each half seen alone.

The degradations here are simple, self-contained stand-ins (Gaussian noise, line-kernel
rain streaks, the haze model I = J t + A (1 - t), motion blur, gamma darkening) so the
experiment runs anywhere in seconds. ``benchmarks/sler_ir_embedding.py`` prints it with the
``sphere: false`` ablation beside it; the tests run a short version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from expertir.models.experts import load_balance_loss
from expertir.models.registry import build_model

DEGRADATIONS = ("noise", "rain", "haze", "blur", "lowlight")


def clean_patches(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Colour gradients + random rectangles + a sinusoidal texture, in [0.05, 0.95]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    slope_x, slope_y = (rand(2, n, 3, 1, 1) - 0.5) * 0.4
    img = rand(n, 3, 1, 1) * 0.6 + 0.2 + slope_x * xx + slope_y * yy
    for _ in range(4):
        x0, y0 = (rand(2, n) * size).long()
        w, h = (rand(2, n) * size / 2 + 4).long()
        colour = rand(n, 3)
        for i in range(n):
            img[i, :, y0[i]:y0[i] + h[i], x0[i]:x0[i] + w[i]] = colour[i, :, None, None]
    freq, angle, amp = rand(n) * 20 + 4, rand(n) * math.pi, rand(n) * 0.1
    wave = torch.sin(freq[:, None, None] * (xx * angle.cos()[:, None, None] + yy * angle.sin()[:, None, None]))
    return (img + amp[:, None, None, None] * wave[:, None]).clamp(0.05, 0.95)


def _line_kernels(n: int, length: torch.Tensor, angle: torch.Tensor, size: int = 15) -> torch.Tensor:
    """n normalised line kernels (n×1×size×size) of the given lengths and angles."""
    r = torch.arange(size) - size // 2
    yy, xx = torch.meshgrid(r.float(), r.float(), indexing="ij")
    along = xx * angle.cos()[:, None, None] + yy * angle.sin()[:, None, None]
    across = -xx * angle.sin()[:, None, None] + yy * angle.cos()[:, None, None]
    k = ((across.abs() < 0.6) & (along.abs() <= length[:, None, None] / 2)).float()
    return (k / k.sum((1, 2), keepdim=True))[:, None]


def _per_image_conv(img: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    n, c, h, w = img.shape
    pad = kernels.shape[-1] // 2
    x = F.pad(img.reshape(1, n * c, h, w), (pad,) * 4, mode="reflect")
    return F.conv2d(x, kernels.repeat_interleave(c, 0), groups=n * c).reshape(n, c, h, w)


def degrade(clean: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Apply one degradation of :data:`DEGRADATIONS` with random strength per image."""
    n, _, h, w = clean.shape
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    if kind == "noise":
        sigma = (rand(n, 1, 1, 1) * 35 + 15) / 255
        out = clean + sigma * torch.randn(clean.shape, generator=gen)
    elif kind == "rain":
        drops = (rand(n, 1, h, w) < rand(n, 1, 1, 1) * 0.02 + 0.005).float()
        angle = math.pi / 2 + (rand(n) - 0.5) * 0.6
        streaks = _per_image_conv(drops, _line_kernels(n, rand(n) * 6 + 7, angle)) * 9
        out = clean + (rand(n, 1, 1, 1) * 0.4 + 0.4) * streaks.clamp(0, 1)
    elif kind == "haze":
        t, airlight = rand(n, 1, 1, 1) * 0.3 + 0.3, rand(n, 1, 1, 1) * 0.25 + 0.75
        out = clean * t + airlight * (1 - t)
    elif kind == "blur":
        out = _per_image_conv(clean, _line_kernels(n, rand(n) * 6 + 7, rand(n) * math.pi))
    elif kind == "lowlight":
        out = clean.pow(rand(n, 1, 1, 1) * 0.8 + 1.2) * (rand(n, 1, 1, 1) * 0.2 + 0.1)
    else:
        raise ValueError(f"unknown degradation {kind!r}; choose from {DEGRADATIONS}")
    return out.clamp(0, 1)


def labelled_batch(per_class: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` degraded patches of every degradation, labels = index in DEGRADATIONS."""
    images = [degrade(clean_patches(per_class, size, gen), kind, gen) for kind in DEGRADATIONS]
    labels = torch.arange(len(DEGRADATIONS)).repeat_interleave(per_class)
    return torch.cat(images), labels


def mutual_information(a: torch.Tensor, b: torch.Tensor) -> float:
    """I(A; B) in bits of two integer label vectors (empirical joint distribution)."""
    joint = torch.zeros(int(a.max()) + 1, int(b.max()) + 1)
    joint.index_put_((a.long(), b.long()), torch.ones(len(a)), accumulate=True)
    joint /= joint.sum()
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * (joint[nz] / outer[nz]).log2()).sum())


def train_embedding(model, steps: int = 300, per_class: int = 8, size: int = 64,
                    lr: float = 2e-3, seed: int = 0) -> list[float]:
    """Train encoder, prototypes and routers on generated patches; returns the loss curve."""
    gen = torch.Generator().manual_seed(seed)
    params = [*model.encoder.parameters(), *model.prototypes.parameters(),
              *(p for ffn in model.routed.values() for p in ffn.router.parameters())]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    curve = []
    model.train()
    for _ in range(steps):
        x, labels = labelled_batch(per_class, size, gen)
        emb = model.encoder(x)
        losses = model.embedding_losses(emb, labels)
        balance = [load_balance_loss(*ffn.router(emb.routing)) for ffn in model.routed.values()]
        losses["balance"] = model.config["balance_weight"] * torch.stack(balance).mean()
        loss = sum(losses.values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        curve.append(loss.item())
    model.eval()
    return curve


@dataclass
class ProbeResult:
    accuracy: float  # nearest-prototype accuracy of the global embedding, held-out patches
    mutual_information: dict[str, float]  # per routed layer, bits (upper bound log2(E))
    halves_differ: float  # share of routed layers whose left / right majority expert differ
    halves_match_alone: float  # share of (layer, region) whose expert equals the half-alone one


@torch.no_grad()
def evaluate(model, per_class: int = 40, size: int = 64, seed: int = 1) -> ProbeResult:
    gen = torch.Generator().manual_seed(seed)
    x, labels = labelled_batch(per_class, size, gen)
    emb = model.encoder(x)
    accuracy = float((model.prototypes.nearest(emb.global_) == labels).float().mean())
    region_labels = labels[:, None, None].expand(-1, *emb.routing.shape[2:]).flatten()
    mi = {name: mutual_information(region_labels, w.argmax(1).flatten())
          for name, w in model.routing_maps(emb.routing).items()}

    # Left half noisy, right half hazy, each half two training windows wide.
    window = model.config["train_patch"]
    clean = clean_patches(1, 2 * window, gen)
    half = window
    mixed = torch.cat([degrade(clean, "noise", gen)[..., :half], degrade(clean, "haze", gen)[..., half:]], -1)
    full = model.routing_maps(model.encoder(mixed).routing)
    left = model.routing_maps(model.encoder(mixed[..., :half]).routing)
    right = model.routing_maps(model.encoder(mixed[..., half:]).routing)
    differ, match = [], []
    for name, w in full.items():
        chosen = w.argmax(1)[0]
        cut = chosen.shape[1] // 2
        alone = torch.cat([left[name].argmax(1)[0], right[name].argmax(1)[0]], 1)
        match.append((chosen == alone).float().mean())
        differ.append(float(chosen[:, :cut].flatten().mode().values != chosen[:, cut:].flatten().mode().values))
    return ProbeResult(accuracy, mi, sum(differ) / len(differ), float(torch.stack(match).mean()))


def run_probe(steps: int = 300, size: int = 64, per_class: int = 8, seed: int = 0,
              **model_options) -> tuple[ProbeResult, list[float]]:
    """Build ``sler_ir_tiny`` for 5 tasks with ``size``-px training windows, train, evaluate."""
    torch.manual_seed(seed)
    options = {"num_tasks": len(DEGRADATIONS), "train_patch": size, **model_options}
    model = build_model("sler_ir_tiny", **options)
    curve = train_embedding(model, steps=steps, per_class=per_class, size=size, seed=seed)
    return evaluate(model, size=size, seed=seed + 1), curve
