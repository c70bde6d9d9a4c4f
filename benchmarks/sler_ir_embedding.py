"""SLER-IR: does the degradation embedding tell degradations apart? (issue 4 experiment)

Trains only the degradation encoder, prototypes and routers of ``sler_ir_tiny`` on generated
patches of five degradations (noise, rain, haze, blur, low light), then prints, for the
spherical embedding and for the ``sphere: false`` ablation (plain linear embedding):
nearest-prototype accuracy on held-out patches, the mutual information between task and
top-1 expert at every routed layer, and how a left-noisy / right-hazy image is routed.

    python benchmarks/sler_ir_embedding.py                  # 64-px patches, 300 steps
    python benchmarks/sler_ir_embedding.py --size 32 --steps 300 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

import torch

from expertir.models.sler_ir_probe import run_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=64, help="patch size = train_patch (multiple of 16)")
    parser.add_argument("--per-class", type=int, default=8, help="patches per degradation per step")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"encoder-only training: {args.steps} steps, {args.per_class}x5 patches of {args.size} px per step")
    runs = {}
    for sphere in (True, False):
        for seed in args.seeds:
            start = time.perf_counter()
            result, curve = run_probe(steps=args.steps, size=args.size, per_class=args.per_class,
                                      seed=seed, sphere=sphere)
            runs[sphere, seed] = result
            print(f"  sphere={str(sphere).lower():5s} seed={seed}: loss {curve[0]:.3f} -> {curve[-1]:.3f}"
                  f" in {time.perf_counter() - start:.0f} s")

    layers = list(runs[True, args.seeds[0]].mutual_information)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    print("\n| | sphere: true | sphere: false |\n|---|---|---|")
    rows = [("nearest-prototype accuracy (held-out)", lambda r: f"{100 * r.accuracy:.1f} %"),
            ("mean MI(task; top-1 expert), bits", lambda r: f"{mean(list(r.mutual_information.values())):.2f}"),
            ("mixed image: layers whose halves differ", lambda r: f"{100 * r.halves_differ:.0f} %"),
            ("mixed image: regions routed as the half alone", lambda r: f"{100 * r.halves_match_alone:.1f} %")]
    rows += [(f"MI at {name}, bits", lambda r, n=name: f"{r.mutual_information[n]:.2f}") for name in layers]
    for label, fmt in rows:
        cells = [" / ".join(fmt(runs[sphere, s]) for s in args.seeds) for sphere in (True, False)]
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    print("\nMI upper bound: log2(4 experts) = 2 bits; task entropy log2(5) = 2.32 bits.")


if __name__ == "__main__":
    main()
