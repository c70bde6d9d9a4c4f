"""SLER-IR: does the degradation embedding tell degradations apart?

Trains only the degradation encoder, the prototypes and the routers of ``sler_ir_tiny``
(embedding losses + balance loss; the restoration backbone is never run) on patches of the
five single degradations of :mod:`expertir.data.degradations` (noise, rain, haze, blur,
low light), then prints, for the spherical embedding and for the ``sphere: false`` ablation
(plain linear embedding), measured on held-out patches:

* nearest-prototype accuracy of the global embedding;
* per routed layer, the mutual information (bits) between the task and the top-1 expert
  chosen per region;
* on images whose left half is noisy and right half hazy, whether the full-image routing
  differs between the halves and matches the routing of each half seen alone.

Clean content is generated (colour gradients, rectangles, a sinusoidal texture). Each
degradation is applied once to every ``size``-px image of a pool (with the library's random
strength per image; rain denser than its default, see :func:`streaky_rain`), and every step
draws random images from the pool, flipped left-right at random. The held-out pool and the
mixed images have their own content and seeds. ``tests/test_sler_ir.py`` runs a short
version.

    python benchmarks/sler_ir_embedding.py                  # 64-px patches, 300 steps
    python benchmarks/sler_ir_embedding.py --size 32 --steps 300 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from expertir.data.degradations import DEGRADATIONS, rain, sub_seed
from expertir.models import build_model
from expertir.models.experts import load_balance_loss


def streaky_rain(img: np.ndarray, seed: int) -> np.ndarray:
    """The library's rain with drop density U(0.004, 0.01): at its light-rain default
    (0.001-0.004, meant for full-size images) about one 32-px patch in nine holds no streak."""
    density = np.random.default_rng(sub_seed(seed, 1)).uniform(0.004, 0.01)
    return rain(img, seed, density=density)


#: The library's single degradations, rain made dense enough for small patches.
SYNTHESIZERS = {**DEGRADATIONS, "rain": streaky_rain}
#: The task label of a patch is its index here.
KINDS = tuple(SYNTHESIZERS)


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


def degrade(clean: torch.Tensor, kind: str, seed: int) -> torch.Tensor:
    """Every image of the N×3×H×W batch ``clean`` degraded by ``SYNTHESIZERS[kind]``, each
    with its own seed (random strength)."""
    images = clean.permute(0, 2, 3, 1).numpy()
    out = [SYNTHESIZERS[kind](img, sub_seed(seed, i)) for i, img in enumerate(images)]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


@dataclass
class Pool:
    """Degraded images by task: ``images[k]`` holds the pool of ``KINDS[k]`` (P×3×S×S)."""

    clean: torch.Tensor  # K×P×3×S×S
    images: torch.Tensor  # K×P×3×S×S

    @classmethod
    def generate(cls, per_kind: int, size: int, seed: int) -> Pool:
        gen = torch.Generator().manual_seed(seed)
        clean = torch.stack([clean_patches(per_kind, size, gen) for _ in KINDS])
        images = torch.stack([degrade(c, kind, sub_seed(seed, k)) for k, (c, kind) in enumerate(zip(clean, KINDS))])
        return cls(clean, images)

    def sample(self, per_kind: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``per_kind`` random images of every task, each flipped left-right at random, and
        their labels."""
        kinds, pool = self.images.shape[:2]
        index = torch.randint(pool, (kinds, per_kind), generator=gen)
        images = self.images[torch.arange(kinds)[:, None], index].flatten(0, 1)
        flip = torch.rand(len(images), generator=gen) < 0.5
        images[flip] = images[flip].flip(-1)
        return images, torch.arange(kinds).repeat_interleave(per_kind)


def mutual_information(a: torch.Tensor, b: torch.Tensor) -> float:
    """I(A; B) in bits of two integer label vectors (empirical joint distribution)."""
    joint = torch.zeros(int(a.max()) + 1, int(b.max()) + 1)
    joint.index_put_((a.long(), b.long()), torch.ones(len(a)), accumulate=True)
    joint /= joint.sum()
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * (joint[nz] / outer[nz]).log2()).sum())


def train_embedding(model, pool: Pool, steps: int = 300, per_kind: int = 8, lr: float = 2e-3,
                    seed: int = 0) -> list[float]:
    """Train encoder, prototypes and routers on images of ``pool``; returns the loss curve."""
    gen = torch.Generator().manual_seed(seed)
    params = [*model.encoder.parameters(), *model.prototypes.parameters(),
              *(p for ffn in model.routed.values() for p in ffn.router.parameters())]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    curve = []
    model.train()
    for _ in range(steps):
        x, labels = pool.sample(per_kind, gen)
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
    halves_differ: float  # share of (mixed image, routed layer) whose halves' majority experts differ
    halves_match_alone: float  # share of (image, layer, region) whose expert equals the half-alone one


@torch.no_grad()
def evaluate(model, per_kind: int = 40, size: int = 64, mixed_images: int = 4, seed: int = 1) -> ProbeResult:
    """The measures of :class:`ProbeResult` on a pool and ``mixed_images`` half-noisy,
    half-hazy images generated from ``seed``."""
    held_out = Pool.generate(per_kind, size, seed)
    x, labels = held_out.images.flatten(0, 1), torch.arange(len(KINDS)).repeat_interleave(per_kind)
    emb = model.encoder(x)
    accuracy = float((model.prototypes.nearest(emb.global_) == labels).float().mean())
    region_labels = labels[:, None, None].expand(-1, *emb.routing.shape[2:]).flatten()
    mi = {name: mutual_information(region_labels, w.argmax(1).flatten())
          for name, w in model.routing_maps(emb.routing).items()}

    # Left half noisy, right half hazy, each half one training window wide.
    half = model.config["train_patch"]
    clean = clean_patches(mixed_images, 2 * half, torch.Generator().manual_seed(seed))
    mixed = torch.cat([degrade(clean, "noise", seed)[..., :half], degrade(clean, "haze", seed)[..., half:]], -1)
    full = model.routing_maps(model.encoder(mixed).routing)
    left = model.routing_maps(model.encoder(mixed[..., :half]).routing)
    right = model.routing_maps(model.encoder(mixed[..., half:]).routing)
    differ, match = [], []
    for name, w in full.items():
        chosen = w.argmax(1)  # B×h×w
        cut = chosen.shape[2] // 2
        alone = torch.cat([left[name].argmax(1), right[name].argmax(1)], 2)
        match.append((chosen == alone).float().mean())
        majority = [side.flatten(1).mode(1).values for side in (chosen[..., :cut], chosen[..., cut:])]
        differ.append((majority[0] != majority[1]).float().mean())
    return ProbeResult(accuracy, mi, float(torch.stack(differ).mean()), float(torch.stack(match).mean()))


def run_probe(steps: int = 300, size: int = 64, per_kind: int = 8, pool: int = 256, seed: int = 0,
              **model_options) -> tuple[ProbeResult, list[float]]:
    """Build ``sler_ir_tiny`` for the five tasks with ``size``-px training windows, train it
    on a pool of ``pool`` images per task, evaluate on a held-out pool."""
    torch.manual_seed(seed)
    options = {"num_tasks": len(KINDS), "train_patch": size, **model_options}
    model = build_model("sler_ir_tiny", **options)
    curve = train_embedding(model, Pool.generate(pool, size, seed), steps=steps, per_kind=per_kind, seed=seed)
    return evaluate(model, size=size, seed=seed + 1000), curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=64, help="patch size = train_patch (multiple of 16)")
    parser.add_argument("--per-class", type=int, default=8, help="patches per degradation per step")
    parser.add_argument("--pool", type=int, default=256, help="degraded images per degradation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"encoder-only training: {args.steps} steps, {args.per_class}x{len(KINDS)} patches of "
          f"{args.size} px per step, drawn from {args.pool} degraded images per degradation")
    runs = {}
    for sphere in (True, False):
        for seed in args.seeds:
            start = time.perf_counter()
            result, curve = run_probe(steps=args.steps, size=args.size, per_kind=args.per_class,
                                      pool=args.pool, seed=seed, sphere=sphere)
            runs[sphere, seed] = result
            print(f"  sphere={str(sphere).lower():5s} seed={seed}: loss {curve[0]:.3f} -> {curve[-1]:.3f}"
                  f" in {time.perf_counter() - start:.0f} s")

    layers = list(runs[True, args.seeds[0]].mutual_information)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    print("\n| | sphere: true | sphere: false |\n|---|---|---|")
    rows = [("nearest-prototype accuracy (held-out)", lambda r: f"{100 * r.accuracy:.1f} %"),
            ("mean MI(task; top-1 expert), bits", lambda r: f"{mean(list(r.mutual_information.values())):.2f}"),
            ("lowest per-layer MI, bits", lambda r: f"{min(r.mutual_information.values()):.2f}"),
            ("mixed images: routed layers whose halves differ", lambda r: f"{100 * r.halves_differ:.0f} %"),
            ("mixed images: regions routed as in the half alone", lambda r: f"{100 * r.halves_match_alone:.1f} %")]
    rows += [(f"MI at {name}, bits", lambda r, n=name: f"{r.mutual_information[n]:.2f}") for name in layers]
    for label, fmt in rows:
        cells = [" / ".join(fmt(runs[sphere, s]) for s in args.seeds) for sphere in (True, False)]
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    print(f"\nMI upper bound: log2(4 experts) = 2 bits; task entropy log2({len(KINDS)}) = "
          f"{math.log2(len(KINDS)):.2f} bits.")


if __name__ == "__main__":
    main()
