"""Write the model card of a shipped checkpoint from its metadata, its training record and
evaluation tables.

    python tools/model_card.py src/expertir/weights/cea_tiny.safetensors \
        --eval runs/eval/aio3_cea/results.md runs/eval/bsd68_cea/results.md

The training facts (command, device, date, wall time) come from the committed record
``<model>.json`` beside the checkpoint (expertir.evaluation.publish). Without --eval the
card keeps its current Evaluation section; ``make results ... --write-docs`` rewrites it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from expertir.errors import ExpertirError
from expertir.evaluation.publish import write_card


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--eval", nargs="*", type=Path, default=None,
                    help="results.md files of expertir eval (default: keep the card's evaluation)")
    args = ap.parse_args()
    try:
        evaluation = None if args.eval is None else "\n\n".join(md.read_text().strip() for md in args.eval)
        out = write_card(args.checkpoint, evaluation)
    except (ExpertirError, OSError) as exc:
        print(f"model_card: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
