"""SLER-IR expert compute: every expert on every image ("dense") or only the experts an
image chooses somewhere ("sparse", the default), measured on CPU.

    python benchmarks/sler_ir_experts.py --models sler_ir_tiny sler_ir_base --size 128

Two routing cases: GLGF on (per-region routing of a random-init model: an image usually
uses every expert somewhere, so there is little to skip) and ``glgf: false`` (per-image
routing: each image uses exactly top_k experts per layer, the best case for skipping).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from expertir.models import build_model


def median_ms(model, x, runs: int) -> float:
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["sler_ir_tiny", "sler_ir_base"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    print(f"CPU, {args.threads} threads, batch {args.batch} x {args.size}x{args.size}, median of {args.runs}")
    print("| model | routing | dense ms | sparse ms |\n|---|---|---|---|")
    for name in args.models:
        for glgf in (True, False):
            torch.manual_seed(0)
            sparse = build_model(name, glgf=glgf).eval()
            dense = build_model(name, glgf=glgf, expert_compute="dense").eval()
            dense.load_state_dict(sparse.state_dict())
            routing = "per region (GLGF)" if glgf else "per image (glgf: false)"
            print(f"| {name} | {routing} | {median_ms(dense, x, args.runs):.0f} | "
                  f"{median_ms(sparse, x, args.runs):.0f} |", flush=True)


if __name__ == "__main__":
    main()
