"""``expertir eval``: PSNR/SSIM tables of a model or a classical baseline on a benchmark."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from expertir.cli.options import add_self_ensemble_option
from expertir.errors import ExpertirError

EPILOG = """examples:
  expertir eval --model sler_ir --benchmark aio3 --data-root data/
  expertir eval --weights runs/cea/final.safetensors --benchmark aio5 --data-root data/ --tile 256
  expertir eval --method bm3d,nlm,identity --benchmark denoise:denoise/BSD68@15,25,50 --data-root data/
  expertir eval --method identity,dcp --benchmark paired:my_hazy_set --sigma 25
  expertir eval --method identity,bm3d --model sler_ir,cea --weights runs/x/final.safetensors \
      --benchmark denoise:denoise/BSD68@25 --data-root data/    # one table, one run
  expertir eval --model cea --benchmark aio5 clean:denoise/CBSD68 --data-root data/

Benchmarks: aio3, aio5 (standard settings found under --data-root), a task id (derain,
denoise_25, ...), mixed[:DIR], paired:DIR (input/target folders), denoise:DIR@SIGMA[,SIGMA],
clean:DIR (clean images as input: how much a model alters what needs no restoration).
Several specs make one table. Every table also counts the images each method made worse
than its input.
Parts of a benchmark that are not found are listed and skipped. Tables are printed and
written as results.md, results.csv and results.json into --output."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="PSNR/SSIM tables of models and classical baselines on a benchmark",
        description="Evaluate models and classical baselines per task, in the papers' "
                    "table layout, with the metric protocol stated.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", metavar="FILE", nargs="+", action="extend", default=[],
                   help="expertir .safetensors checkpoint(s); a row each, named by its model")
    p.add_argument("--model", metavar="NAME[,NAME...]",
                   help="registered model(s) with their shipped weights, comma separated")
    p.add_argument("--method", metavar="M[,M...]",
                   help="classical baseline(s), comma separated: bm3d, nlm, dcp, identity")
    p.add_argument("--untrained", action="store_true",
                   help="run --model with random weights (pipeline testing only)")
    p.add_argument("--benchmark", required=True, nargs="+", metavar="SPEC",
                   help="what to evaluate on (see below); several specs make one table")
    p.add_argument("--data-root", default=".", metavar="ROOT", help="where benchmark folders live (default: .)")
    p.add_argument("--layout", default="auto", help="auto, promptir, moce or bytask (default auto)")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="where the tables go (default: runs/eval/<benchmark>_<method>)")
    p.add_argument("--save-images", metavar="DIR", help="also write every restored image here")
    p.add_argument("--y-channel", action="store_true", help="PSNR/SSIM on the Y channel instead of RGB")
    p.add_argument("--tile", type=_tile, metavar="N|auto",
                   help="restore in N-pixel tiles, or auto: tiles only where the whole image "
                        "does not fit the memory budget (default: whole images)")
    p.add_argument("--no-exposure-guard", dest="exposure_guard", action="store_false",
                   help="measure the networks' raw output, without the exposure guard that "
                        "keeps properly exposed photos from being brightened")
    add_self_ensemble_option(p)
    p.add_argument("--sigma", type=float, metavar="S",
                   help="noise σ (0-255) for bm3d/nlm on sets whose name carries none (paired:DIR)")
    p.add_argument("--device", metavar="D", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.set_defaults(func=run)


def _tile(text: str) -> int | str:
    from expertir.cli.restore import tile_arg

    return tile_arg(text)


def _names(text: str | None) -> list[str]:
    return list(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))


def run(args) -> int:
    from expertir.data.benchmarks import load_benchmarks
    from expertir.evaluation import build_methods, evaluate, to_markdown, write_tables
    from expertir.inference import select_device

    if args.tile is not None and args.tile != "auto" and args.tile <= 0:
        raise ExpertirError(f"--tile must be auto or a positive number of pixels (got {args.tile})")
    device = select_device(args.device)
    benchmark = load_benchmarks(args.benchmark, args.data_root, layout=args.layout)
    for line in benchmark.missing:
        print(f"expertir: missing: {line}")
    methods = build_methods(_names(args.method), _names(args.model), args.weights, args.untrained,
                            args.sigma, args.tile, device, args.exposure_guard, args.self_ensemble)
    label = "_".join(m.name for m in methods)
    outdir = Path(args.output or Path("runs") / "eval" /
                  re.sub(r"[^A-Za-z0-9._=-]+", "_", f"{'+'.join(args.benchmark)}_{label}"))
    report = evaluate(methods, benchmark, y_channel=args.y_channel, save_images=args.save_images,
                      on_set_done=lambda r: write_tables(r, outdir))
    not_applied = [m.name for m in methods if report.columns and not report.scores[m.name]]
    for name in not_applied:
        report.notes.append(f"{name} applies to none of these sets"
                            + (" (bm3d/nlm need σ: use --sigma)" if name in ("bm3d", "nlm") else ""))
    paths = write_tables(report, outdir)
    print(to_markdown(report))
    print(f"tables written: {', '.join(str(p) for p in paths.values())}")
    return 0 if report.columns else 1
