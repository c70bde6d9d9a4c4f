"""``expertir bench``: the efficiency table and the classical-baseline tables (``make bench``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from expertir.errors import ExpertirError

EPILOG = """examples:
  expertir bench efficiency                       # every registered preset at 256x256
  expertir bench efficiency --models restormer_tiny cea_tiny --size 128 --runs 3
  expertir bench classical --data-root data/      # BM3D/NLM on gray BSD68, identity/NLM/DCP rows
  expertir bench all --data-root data/            # both (what 'make bench' runs)

'classical' evaluates BM3D, NLM and identity on gray BSD68 (DATA_ROOT/denoise/BSD68) at
σ=15/25/50 (σ=25 first), then identity, NLM and DCP on the three- and five-task
benchmarks found under DATA_ROOT. BM3D on 68 images x 3 σ takes tens of minutes on CPU."""


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="efficiency table and classical-baseline tables",
                       description="Measure parameters, FLOPs and latency of every model, "
                                   "and evaluate the classical baselines.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["efficiency", "classical", "all"], help="which benchmark")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="models to measure (default: every registered preset)")
    p.add_argument("--size", type=int, default=256, help="input side for efficiency (default 256)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per model (default 5)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default)")
    p.add_argument("--data-root", default=".", metavar="ROOT", help="benchmark data (classical)")
    p.add_argument("--sigmas", default="15,25,50", help="BSD68 noise levels (default 15,25,50)")
    p.add_argument("-o", "--output", default="runs/bench", metavar="DIR",
                   help="where tables are written (default runs/bench)")
    p.set_defaults(func=run)


def setting_line(threads: int) -> str:
    import torch

    from expertir.evaluation.efficiency import cpu_name

    cpu = cpu_name()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"Measured {time.strftime('%Y-%m-%d')} on CPU {cpu} (torch threads: {threads}){gpu}, "
            f"torch {torch.__version__}.")


def run_efficiency(args, outdir: Path) -> None:
    import torch

    from expertir.evaluation.efficiency import (
        efficiency_markdown, measure_all, preset_names, rows_to_dicts,
    )
    from expertir.models import list_models

    if args.size < 8 or args.runs < 1:
        raise ExpertirError("--size must be at least 8 and --runs at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models or preset_names()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise ExpertirError(f"unknown model(s) {', '.join(unknown)}; see 'expertir models'")
    print(f"measuring {len(names)} model(s) at {args.size}x{args.size}, timed side by side ...", flush=True)
    rows = measure_all(names, args.size, args.runs, progress=True)
    table = efficiency_markdown(rows, args.size, setting_line(torch.get_num_threads()))
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "efficiency.md").write_text(table, encoding="utf-8")
    (outdir / "efficiency.json").write_text(json.dumps(rows_to_dicts(rows), indent=2) + "\n")
    print("\n### Efficiency\n\n" + table)


def run_classical(args, outdir: Path) -> None:
    from expertir.data.benchmarks import load_benchmark
    from expertir.evaluation import evaluate, make_classical, to_markdown, write_tables

    root = Path(args.data_root)
    if not root.is_dir():
        raise ExpertirError(f"data root {root} is not a folder")
    jobs = [(f"denoise:denoise/BSD68@{args.sigmas}", ["bm3d", "nlm", "identity"], "bsd68_gray",
             "Gray BSD68 (PSNR/SSIM of the gray image)"),
            ("aio3", ["identity", "nlm", "dcp"], "aio3", "Three-task benchmark, classical rows"),
            ("aio5", ["identity", "nlm", "dcp"], "aio5", "Five-task benchmark, classical rows")]
    for spec, names, stem, title in jobs:
        if spec.startswith("denoise:") and not (root / "denoise" / "BSD68").is_dir():
            print(f"expertir: missing: {root / 'denoise' / 'BSD68'} (gray BSD68): skipped")
            continue
        bench = load_benchmark(spec, root)
        for line in bench.missing:
            print(f"expertir: missing: {line}")
        methods = [make_classical(n) for n in names]
        report = evaluate(methods, bench, first=["denoise_25"],
                          on_set_done=lambda r, s=stem, t=title: write_tables(r, outdir, s, t))
        write_tables(report, outdir, stem, title)
        print("\n" + to_markdown(report, title))


def run(args) -> int:
    outdir = Path(args.output)
    if args.what in ("efficiency", "all"):
        run_efficiency(args, outdir)
    if args.what in ("classical", "all"):
        run_classical(args, outdir)
    print(f"tables written under {outdir}")
    return 0
