"""Export a training run's EMA weights as a ``.safetensors`` to share: a milestone while the
run goes on, or the finished run's weights with their training record.

A long run keeps everything it needs to resume in ``RUN_DIR/last.pt``, which is large and
not meant to be shared. This writes the EMA weights of that checkpoint (the ones
validation and ``final.safetensors`` use) with the run's config, the step reached, the
planned steps and the latest validation PSNR in the metadata, so that the weights of a
long campaign can be kept (and restored or evaluated with ``--weights``) before it ends.
Once the run has finished, the export is its ``final.safetensors`` (weights and metadata,
including the data sources), and ``--command`` also writes the training record
``<output>.json`` that the model cards read (:mod:`expertir.evaluation.publish`): the
command, the device, the date the run finished and its training time (the logged steps'
time summed over all sittings of a resumed run, and over the earlier stages when
``train.init`` names another run's ``final.safetensors``; validation and checkpoint writing
excluded). A finished later stage also prints each stage's last validation PSNR per task and
warns about every task the last stage made worse: a stage is meant to ship only if it loses
none.
Reading ``last.pt`` runs no code (``torch.load(weights_only=True)``).

    python tools/export_run.py RUN_DIR [-o RUN_DIR/milestone_stepNNNNNNN.safetensors]
        [--path /data/root=DATA ...] [--command "expertir train …" [--conditions TEXT]]

``--path OLD=NEW`` writes NEW for the path OLD wherever the metadata names it (the data
roots and sources), so that weights meant to be shared do not carry the paths of the
machine that trained them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path


def latest_validation(run_dir: Path) -> tuple[int | None, dict]:
    """Step and per-task PSNR of the run's last validation (``val.csv``), if any."""
    from expertir.training.logs import read_csv

    path = run_dir / "val.csv"
    rows = read_csv(path) if path.is_file() else []
    if not rows:
        return None, {}
    step = max(int(r["step"]) for r in rows)
    return step, {r["task"]: {"psnr": float(r["psnr"]), "input_psnr": float(r["input_psnr"])}
                  for r in rows if int(r["step"]) == step}


def training_seconds(run_dir: Path) -> float:
    """Seconds of training steps: each ``train.csv`` row covers the steps since the row
    before (the first: since ``train.init_step``), at its logged images/s (of the run's
    effective batch, ``run.json``)."""
    from expertir.training.logs import read_csv, run_config

    batch = int(json.loads((run_dir / "run.json").read_text())["effective_batch"])
    done, total = int(run_config(run_dir).get("train", {}).get("init_step") or 0), 0.0
    for row in read_csv(run_dir / "train.csv"):
        step = int(row["step"])
        total += (step - done) * batch / float(row["images_per_s"])
        done = step
    return total


def stage_validation(folders: list[Path]) -> tuple[str, list[str]]:
    """A table of each stage's last validation PSNR per task (``folders``: earliest stage
    first) and the tasks where the last stage is below the one before; ("", []) unless
    every stage validated."""
    vals = [latest_validation(folder) for folder in folders]
    if len(folders) < 2 or not all(v for _, v in vals):
        return "", []
    lines = ["task | " + " | ".join(f"stage {i + 1} (step {step})" for i, (step, _) in enumerate(vals))]
    worse = []
    for task, last in vals[-1][1].items():
        cells = [f"{v[task]['psnr']:.2f}" if task in v else "-" for _, v in vals]
        before = vals[-2][1].get(task)
        if before is not None and last["psnr"] < before["psnr"]:
            worse.append(f"{task} {before['psnr']:.2f} -> {last['psnr']:.2f}")
            cells[-1] += " (worse)"
        lines.append(f"{task} | " + " | ".join(cells))
    return "\n".join(lines), worse


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def rename(obj, renames: list[tuple[str, str]]):
    """``obj`` (JSON-like) with every OLD path in its strings written as NEW, longest first."""
    text = json.dumps(obj)
    for old, new in sorted(renames, key=lambda r: len(r[0]), reverse=True):
        text = text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1])
    return json.loads(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dir", type=Path)
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--path", action="append", default=[], metavar="OLD=NEW",
                   help="name a path of this machine otherwise in the metadata (repeatable)")
    p.add_argument("--command", help="finished runs: the training command, for the training record")
    p.add_argument("--conditions", help="with --command: how the machine was shared, resumed sittings …")
    args = p.parse_args()
    renames = []
    for item in args.path:
        old, sep, new = item.partition("=")
        if not sep or not old:
            sys.exit(f"export_run: --path {item!r}: write OLD=NEW, e.g. --path /data/bench=DATA")
        renames.append((old.rstrip("/"), new))

    from expertir.checkpoint import read_metadata, save_checkpoint
    from expertir.errors import ExpertirError
    from expertir.evaluation.publish import machine_line
    from expertir.models import build_model
    from expertir.training.logs import stage_folders
    from expertir.training.state import load_state

    try:
        state = load_state(args.run_dir / "last.pt")
    except (ExpertirError, OSError) as exc:
        sys.exit(f"export_run: {exc}")
    cfg = json.loads(state["config"])
    model = build_model(cfg["model"]["name"], **cfg["model"].get("options", {}))
    weights = state["ema"] if state["ema"] is not None else state["model"]
    model.load_state_dict(weights)
    step, planned = int(state["step"]), int(cfg["train"]["steps"])
    final = args.run_dir / "final.safetensors"
    finished = step >= planned and final.is_file()
    if args.command and not finished:
        sys.exit(f"export_run: {args.run_dir}: --command writes the record of a finished run; "
                 f"this one is at step {step} of {planned}")
    if finished:
        metadata = read_metadata(final)
        metadata = {k: v for k, v in metadata.items() if k not in ("model", "config")}
        metadata["training"]["planned_steps"] = planned
    else:
        val_step, val = latest_validation(args.run_dir)
        metadata = {"training": {"config": cfg, "steps": step, "planned_steps": planned,
                                 "seed": int(cfg["train"]["seed"]), "effective_batch": state["effective_batch"],
                                 "devices": state["world_size"], "precision": cfg["train"]["precision"],
                                 "weights": "ema" if state["ema"] is not None else "raw",
                                 "milestone": True},
                    "metrics": {"validation_psnr": val, "validation_step": val_step}}
    metadata = rename(metadata, renames)
    out = args.output or args.run_dir / f"milestone_step{step:07d}.safetensors"
    save_checkpoint(out, model.float(), cfg["model"]["name"], metadata)
    folders = stage_folders(args.run_dir)  # this run and the earlier stages it continues
    if args.command:
        run = json.loads((args.run_dir / "run.json").read_text())
        stages = [training_seconds(folder) for folder in folders]
        if len(stages) == 1 and str(cfg["train"].get("init") or "").endswith("final.safetensors"):
            print(f"export_run: warning: the run that train.init continues ({cfg['train']['init']}) is not "
                  f"here; its training time is not counted", file=sys.stderr)
        wall = f"{duration(sum(stages))} of training steps"
        if len(stages) > 1:
            wall += " (" + " + ".join(f"stage {i + 1}: {duration(t)}" for i, t in enumerate(stages)) + ")"
        record = {"command": args.command,
                  "device": f"{machine_line(run['device'])}; torch {run['torch']}, {run['precision']}",
                  "date": datetime.date.fromtimestamp(final.stat().st_mtime).isoformat(),
                  "wall_time": wall,
                  **({"conditions": args.conditions} if args.conditions else {})}
        out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    if finished:
        table, worse = stage_validation(folders)
        if table:
            print("validation PSNR (dB) at the end of each stage:\n" + table)
        if worse:
            print(f"export_run: warning: the last stage is worse than the one before on {', '.join(worse)}",
                  file=sys.stderr)
    print(f"{out}: {cfg['model']['name']} EMA weights at step {step} of {planned}"
          + (" (finished run" + (", with its training record)" if args.command else ")") if finished
             else f", validated at step {metadata['metrics']['validation_step']}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
