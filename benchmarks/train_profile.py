"""Where a training step's time goes: ``torch.profiler`` over real ``train_step`` calls.

The run is built by the trainer's own :func:`~expertir.training.trainer.setup` from a
recipe (data, model, EMA, fused AdamW, schedule), so what is profiled is the whole step:
waiting for the data batch, forward, backward, clipping, optimizer and EMA. After
``--warmup`` untimed steps, ``--steps`` steps are profiled; the table lists the operators
by self CPU time (top ``--top``) and is printed and written as Markdown.

Usage (from the repository root)::

    python benchmarks/train_profile.py --data-root DATA --config configs/shipped/sler_ir_tiny.yaml \\
        [--threads 2] [--steps 10] [-o runs/bench/train_profile_sler_ir_tiny.md]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import expertir.cli.main  # noqa: F401  (sets the OpenMP defaults before torch loads)
import torch
from torch.profiler import ProfilerActivity, profile

from expertir.training.config import load_config
from expertir.training.distributed import DistInfo
from expertir.training.trainer import setup, train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--data-root", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("-o", "--output", type=Path, default=None)
    args = p.parse_args()
    cfg = load_config(args.config, [f"data.root={args.data_root}", f"train.threads={args.threads}",
                                    "log.tensorboard=false"])
    with tempfile.TemporaryDirectory(prefix="train_profile-") as tmp:
        run = setup(cfg, DistInfo(), run_dir=tmp)
        for _ in range(args.warmup):
            train_step(run)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                train_step(run)
        wall = (time.perf_counter() - start) / args.steps
    batch = int(cfg["train"]["batch_size"])
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=48)
    head = (f"`{cfg['model']['name']}`, `{args.config}`, {args.threads} thread(s), batch {batch} of "
            f"{cfg['data']['patch']} px: {wall * 1000:.0f} ms per step under the profiler "
            f"({batch / wall:.1f} images/s; the profiler itself adds overhead), {args.steps} steps after "
            f"{args.warmup} warm-up steps, {time.strftime('%Y-%m-%d')}.")
    print(head)
    print(table)
    out = args.output or Path(f"runs/bench/train_profile_{cfg['model']['name']}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}\n\n```\n{table}\n```\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
