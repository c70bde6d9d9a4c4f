"""Equal-budget comparison: train Restormer, PromptIR, SLER-IR and CEA with the
same data, steps, seed, batch and backbone size, evaluate each with ``expertir eval``, and
write one table.

Every method trains from its config (``configs/tiny/<m>.yaml`` for ``--size tiny``,
``configs/<benchmark>/<m>_base.yaml`` for ``--size base``); these share one ``common.yaml``,
and the budget flags below are applied to all methods alike as dotted overrides.

CPU, tiny presets, a few steps (minutes):
    python benchmarks/equal_budget.py --size tiny --steps 50 --data-root DATA
GPU, real budget, 4 GPUs per training run:
    python benchmarks/equal_budget.py --size base --benchmark aio3 --steps 150000 \
        --data-root data --nproc 4 --set train.precision=bf16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["restormer", "promptir", "sler_ir", "cea"]


def config_for(method: str, size: str, benchmark: str) -> Path:
    path = ROOT / "configs" / ("tiny" if size == "tiny" else benchmark) / (
        f"{method}.yaml" if size == "tiny" else f"{method}_{size}.yaml")
    if not path.is_file():
        sys.exit(f"equal_budget: no config {path}")
    return path


def run(cmd: list[str], log: Path) -> float:
    """Run a command, its output into ``log``; seconds taken. Stops on failure."""
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if code != 0:
        sys.exit(f"equal_budget: command failed ({code}); see {log}")
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--size", default="tiny", choices=["tiny", "small", "base"])
    p.add_argument("--benchmark", default="aio3", help="eval benchmark spec and config family (aio3, aio5)")
    p.add_argument("--data-root", required=True)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every method (repeatable)")
    p.add_argument("--nproc", type=int, default=1, help="processes per training run (torchrun)")
    p.add_argument("--tile", type=int, help="tile size for evaluation")
    p.add_argument("--out", default="runs/equal_budget")
    args = p.parse_args()

    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_root = str(Path(args.data_root).resolve())
    budget = [f"train.steps={args.steps}", f"train.seed={args.seed}", f"data.root={data_root}",
              f"train.warmup_steps={max(0, min(args.steps // 10, args.steps - 1))}", *args.set]
    launcher = [sys.executable] if args.nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"]
    rows = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        run_dir = out / method
        train_s = run(launcher + ["-m", "expertir.cli.main", "train", "--config",
                                  str(config_for(method, args.size, args.benchmark)),
                                  "--out", str(run_dir), "log.progress=false", *budget], out / f"{method}.train.log")
        eval_cmd = [sys.executable, "-m", "expertir.cli.main", "eval", "--weights", str(run_dir / "final.safetensors"),
                    "--benchmark", args.benchmark, "--data-root", data_root, "-o", str(run_dir / "eval")]
        eval_s = run(eval_cmd + (["--tile", str(args.tile)] if args.tile else []), out / f"{method}.eval.log")
        info = json.loads((run_dir / "run.json").read_text())
        results = json.loads((run_dir / "eval" / "results.json").read_text())
        rows.append((method, info, results, train_s, eval_s))

    columns = rows[0][2]["columns"] if rows else []
    lines = [f"# Equal-budget comparison ({args.benchmark}, {args.size}, {args.steps} steps, seed {args.seed})", "",
             f"Training: same data root, tasks, patch, batch, steps, seed and schedule for every method "
             f"(overrides: `{' '.join(budget)}`); {args.nproc} process(es) per run.", "",
             f"Evaluation: `expertir eval`; {rows[0][2]['protocol'] if rows else ''}", "",
             "| method | params (M) | eff. batch | train s | " + " | ".join(c["label"] for c in columns)
             + " | average |",
             "|---|---:|---:|---:|" + "---:|" * (len(columns) + 1)]
    for method, info, results, train_s, _ in rows:
        scores = next(iter(results["methods"].values()))
        cells = []
        for c in columns:
            s = scores["sets"].get(c["key"])
            cells.append("–" if s is None else f"{s['psnr']:.2f} / {s['ssim']:.3f}")
        avg = scores["average"]
        cells.append("–" if avg is None else f"{avg['psnr']:.2f} / {avg['ssim']:.3f}")
        lines.append(f"| {method} | {info['parameters'] / 1e6:.3f} | {info['effective_batch']} | "
                     f"{train_s:.0f} | " + " | ".join(cells) + " |")
    missing = rows[0][2]["missing"] if rows else []
    if missing:
        lines += ["", "Not found (skipped): " + "; ".join(missing)]
    table = "\n".join(lines) + "\n"
    (out / "equal_budget.md").write_text(table)
    print(table)
    print(f"written: {out / 'equal_budget.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
