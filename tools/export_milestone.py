"""Export a running training's EMA weights as a milestone ``.safetensors``.

A long run keeps everything it needs to resume in ``RUN_DIR/last.pt``, which is large and
not meant to be shared. This writes the EMA weights of that checkpoint (the ones
validation and ``final.safetensors`` use) with the run's config, the step reached, the
planned steps and the latest validation PSNR in the metadata, so that the weights of a
long campaign can be kept (and restored or evaluated with ``--weights``) before it ends.
Reading ``last.pt`` runs no code (``torch.load(weights_only=True)``).

    python tools/export_milestone.py RUN_DIR [-o RUN_DIR/milestone_stepNNNNNNN.safetensors]
        [--path /data/root=DATA ...]

``--path OLD=NEW`` writes NEW for the path OLD wherever the config in the metadata names it
(the data roots), so that weights meant to be shared do not carry the paths of the machine
that trained them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def latest_validation(run_dir: Path) -> tuple[int | None, dict]:
    """Step and per-task PSNR of the run's last validation (``val.csv``), if any."""
    path = run_dir / "val.csv"
    if not path.is_file():
        return None, {}
    rows = list(csv.DictReader(path.open()))
    if not rows:
        return None, {}
    step = max(int(r["step"]) for r in rows)
    return step, {r["task"]: {"psnr": float(r["psnr"]), "input_psnr": float(r["input_psnr"])}
                  for r in rows if int(r["step"]) == step}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dir", type=Path)
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--path", action="append", default=[], metavar="OLD=NEW",
                   help="name a path of this machine otherwise in the metadata (repeatable)")
    args = p.parse_args()
    renames = []
    for item in args.path:
        old, sep, new = item.partition("=")
        if not sep or not old:
            sys.exit(f"export_milestone: --path {item!r}: write OLD=NEW, e.g. --path /data/bench=DATA")
        renames.append((old.rstrip("/"), new))

    from expertir.checkpoint import save_checkpoint
    from expertir.errors import ExpertirError
    from expertir.models import build_model
    from expertir.training.state import load_state

    try:
        state = load_state(args.run_dir / "last.pt")
    except (ExpertirError, OSError) as exc:
        sys.exit(f"export_milestone: {exc}")
    cfg = json.loads(state["config"])
    model = build_model(cfg["model"]["name"], **cfg["model"].get("options", {}))
    weights = state["ema"] if state["ema"] is not None else state["model"]
    model.load_state_dict(weights)
    step = int(state["step"])
    val_step, val = latest_validation(args.run_dir)
    for old, new in sorted(renames, key=lambda r: len(r[0]), reverse=True):
        cfg = json.loads(json.dumps(cfg).replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1]))
    metadata = {"training": {"config": cfg, "steps": step, "planned_steps": int(cfg["train"]["steps"]),
                             "seed": int(cfg["train"]["seed"]), "effective_batch": state["effective_batch"],
                             "devices": state["world_size"], "weights": "ema" if state["ema"] is not None else "raw",
                             "milestone": True},
                "metrics": {"validation_psnr": val, "validation_step": val_step}}
    out = args.output or args.run_dir / f"milestone_step{step:07d}.safetensors"
    save_checkpoint(out, model.float(), cfg["model"]["name"], metadata)
    print(f"{out}: {cfg['model']['name']} EMA weights at step {step} of {cfg['train']['steps']}"
          + (f", validated at step {val_step}" if val_step is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
