"""Write the model card of a shipped checkpoint from its metadata and evaluation tables.

    python tools/model_card.py src/expertir/weights/cea_tiny.safetensors \
        --command "expertir train --config configs/shipped/cea_tiny.yaml" \
        --time "9 min" --eval runs/eval/aio3_cea/results.md runs/eval/bsd68_cea/results.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from expertir.checkpoint import read_metadata


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--command", required=True, help="the training command that made it")
    ap.add_argument("--time", required=True, help="wall-clock training time")
    ap.add_argument("--device", default="CPU (2 cores, AMD EPYC)")
    ap.add_argument("--date", required=True)
    ap.add_argument("--eval", nargs="*", type=Path, default=[], help="results.md files of expertir eval")
    args = ap.parse_args()
    meta = read_metadata(args.checkpoint)
    training = meta.get("training", {})
    lines = [f"# {meta['model']} — shipped weights", "",
             f"- file: `{args.checkpoint.name}` ({args.checkpoint.stat().st_size / 1e6:.1f} MB, safetensors)",
             f"- command: `{args.command}`", f"- device: {args.device}; date: {args.date}; "
             f"training time: {args.time}",
             f"- steps: {training.get('steps')}, seed: {training.get('seed')}, effective batch: "
             f"{training.get('effective_batch')}, precision: {training.get('precision')}, "
             f"weights: {training.get('weights')}",
             "", "## Training config", "", "```json", json.dumps(training.get("config"), indent=1),
             "```", "", "## Data", ""]
    lines += [f"- {s}" for s in meta.get("data", {}).get("sources", [])]
    val = meta.get("metrics", {}).get("validation_psnr")
    if val:
        lines += ["", "## Validation PSNR at the end of training (held-out training images, dB)", "",
                  "```json", json.dumps(val, indent=1), "```"]
    lines += ["", "## Evaluation", ""]
    for md in args.eval:
        lines += [md.read_text().strip(), ""]
    out = args.checkpoint.with_suffix(".md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
