"""Give a trained SLER-IR more experts per routed block ("sparse upcycling", Komatsuzaki et
al. 2022): a checkpoint with ``num_experts`` = a multiple of the trained count, to start a
later training stage from (``train.init``).

Expert ``j`` of every routed block is copied to ``j + E``, ``j + 2E``, …; each copy's router
key is the original's with a small seeded perturbation, so that the copies rank next to
their original and training can pull them apart. Everything else is kept. With the same
``top_k`` the copies change the output (a region's top two may now be an expert and its
copy instead of two different experts), so the stage that follows must train the
experts and the routing back into agreement; the experts' work per region stays the same
(top-k of more experts), only their parameters grow.

    python tools/upcycle_experts.py milestones/sler_ir_tiny.safetensors \
        -o runs/upcycled/sler_ir_tiny_experts8.safetensors --experts 8
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

EXPERT_KEY = re.compile(r"^(.*\.experts\.)(\d+)(\..*)$")


def upcycled_state(state: dict[str, torch.Tensor], old: int, new: int, jitter: float,
                   seed: int) -> dict[str, torch.Tensor]:
    """``state`` of a model with ``old`` experts per block as one with ``new`` experts."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        match = EXPERT_KEY.match(key)
        if match:
            head, index, tail = match.group(1), int(match.group(2)), match.group(3)
            for copy in range(index, new, old):
                out[f"{head}{copy}{tail}"] = value.clone()
        elif key.endswith("router.keys"):
            copies = [value]
            for _ in range(new // old - 1):
                noise = torch.randn(value.shape, generator=generator) * jitter / value.shape[1] ** 0.5
                copies.append(value + noise)  # the router normalises keys itself on the sphere
            out[key] = torch.cat(copies)
        else:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", help="a SLER-IR checkpoint (.safetensors with expertir metadata)")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--experts", type=int, required=True, help="experts per routed block")
    parser.add_argument("--jitter", type=float, default=0.05,
                        help="norm of the perturbation of each copy's router key (default 0.05)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from expertir.checkpoint import load_model, save_checkpoint
    from expertir.errors import ExpertirError
    from expertir.models import build_model

    try:
        model, meta = load_model(args.weights)
    except ExpertirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    old = meta["config"].get("num_experts")
    if old is None:
        print(f"error: {args.weights}: a {meta['model']} checkpoint has no experts to upcycle", file=sys.stderr)
        return 2
    if args.experts <= old or args.experts % old:
        print(f"error: {args.weights}: has {old} experts per block; --experts must be a larger "
              f"multiple of it, not {args.experts}", file=sys.stderr)
        return 2
    config = {**meta["config"], "num_experts": args.experts}
    bigger = build_model(meta["model"], **config)
    bigger.load_state_dict(upcycled_state(model.state_dict(), old, args.experts, args.jitter, args.seed))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.output, bigger, meta["model"],
                    {"upcycled_from": {"weights": str(args.weights), "num_experts": old,
                                       "jitter": args.jitter, "seed": args.seed}})
    print(f"{args.output}: {meta['model']} with {args.experts} experts per routed block "
          f"(from {old}; {sum(p.numel() for p in bigger.parameters()) / 1e6:.2f} M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
