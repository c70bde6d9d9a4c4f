"""``expertir explain``: what the model thinks the degradation is, and where it routes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from expertir.cli.jobs import collect_jobs, job_summary, unique_path
from expertir.cli.options import add_model_options
from expertir.errors import ExpertirError

EPILOG = """examples:
  expertir explain photo.jpg -o explained/
  expertir explain shots/ more/img.png -o explained/ --model cea
  expertir explain noisy.png -o out/ --layers encoder2.0 latent4.1
  expertir explain --sphere --benchmark aio3 aio5 --data-root data/ -o sphere/

Per image, OUTDIR gets NAME.png (input, restored, where it changed, the blind degradation
estimate, and SLER-IR's expert routing or CEA's affinity maps) and NAME.json (the same
numbers). Folders are searched recursively and their layout is kept. A file that cannot be
read is reported in one line and the others are still explained; the exit code is 1 if any
failed. With --sphere, every test image of a benchmark is embedded instead: OUTDIR gets
sphere.png, confusion.png, sphere.md and sphere.json (SLER-IR only: it needs prototypes;
the shipped SLER-IR unless --model or --weights names another).
CEA has no prototypes; its estimate is a linear probe fitted once per set of weights on
synthetic patches and cached under $XDG_CACHE_HOME/expertir (some seconds, once)."""


def add_parser(sub) -> None:
    from expertir.explanation.image import DEFAULT_MAX_AUX_PIXELS

    p = sub.add_parser(
        "explain", help="show what the model thinks the degradation is and where it routes",
        description="Explain blind restorations: the model's degradation estimate, where it "
                    "changed the image and how it routed each region (SLER-IR experts, CEA "
                    "affinities); or, with --sphere, a benchmark's embeddings on SLER-IR's sphere.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="IMAGE", help="image files and/or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="where figures and JSON go")
    add_model_options(p, "pipeline testing only")
    p.add_argument("--layers", nargs="+", metavar="BLOCK",
                   help="blocks to map, e.g. encoder1.0 latent4.0 (default: SLER-IR the first block "
                        "of each stage, CEA the first and last adapted blocks)")
    p.add_argument("--aux-pixels", type=int, default=DEFAULT_MAX_AUX_PIXELS, metavar="N",
                   help=f"compute maps and estimate on a copy of at most N pixels (default {DEFAULT_MAX_AUX_PIXELS})")
    p.add_argument("--sphere", action="store_true", help="embed a benchmark's test images (see below)")
    p.add_argument("--benchmark", default=["aio5"], nargs="+", metavar="SPEC",
                   help="with --sphere: aio3, aio5, a task id, paired:DIR, ... (see 'expertir eval "
                        "--help'); several make one set, each task once (default aio5)")
    p.add_argument("--data-root", default=".", metavar="ROOT", help="with --sphere: where benchmarks live")
    p.add_argument("--layout", default="auto", help="with --sphere: auto, promptir, moce or bytask")
    p.add_argument("--device", metavar="D", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.set_defaults(func=run)


def explain_jobs(inputs: list[str], outdir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, output path without suffix) pairs; ``a.png`` and ``a.jpg`` get distinct names."""
    jobs, errors = collect_jobs(inputs, outdir)
    taken: set[Path] = set()
    return [(src, unique_path(dst.with_suffix(""), taken)) for src, dst in jobs], errors


def run(args) -> int:
    from expertir.inference import select_device
    from expertir.weights import load_pretrained

    if args.aux_pixels < 1:
        raise ExpertirError(f"--aux-pixels must be positive, got {args.aux_pixels}")
    if args.sphere and args.inputs:
        raise ExpertirError("--sphere embeds a benchmark; give either images or --sphere, not both")
    if not args.sphere and not args.inputs:
        raise ExpertirError("give images or folders to explain (or --sphere --benchmark SPEC)")
    device = select_device(args.device)
    if args.sphere:  # the sphere is SLER-IR's: its shipped weights unless a model is named
        model = args.model or (None if args.weights else "sler_ir")
        loaded = load_pretrained(model, args.weights, args.untrained, device)
        print(f"model: {loaded.source} on {device}")
        return run_sphere(args, loaded, device)
    outdir = Path(args.output)
    jobs, failures = explain_jobs(args.inputs, outdir)
    if not jobs:
        for line in failures:
            print(f"expertir: error: {line}")
        return 1
    loaded = load_pretrained(args.model, args.weights, args.untrained, device)
    print(f"model: {loaded.source} on {device}")
    if args.layers:
        from expertir.explanation.image import mapped_layers

        available = mapped_layers(loaded.model, device)
        unknown = [name for name in args.layers if name not in available]
        if unknown:
            raise ExpertirError(f"unknown layer(s) {', '.join(unknown)}; {loaded.name} has: "
                                f"{', '.join(available) or 'none (it records no routing)'}")
    return run_images(args, loaded, jobs, failures, device)


def run_images(args, loaded, jobs, failures, device) -> int:
    from tqdm import tqdm

    from expertir.explanation import explain, write_json
    from expertir.explanation.figures import explanation_figure

    inputs = {src.resolve() for src, _ in jobs}
    done, start = 0, time.perf_counter()
    bar = tqdm(jobs, unit="img", desc="explaining", dynamic_ncols=True)
    for src, stem in bar:
        bar.set_postfix_str(src.name[-30:])
        figure, numbers = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".json")
        try:
            for path in (figure, numbers):
                if path.resolve() in inputs:
                    raise ExpertirError(f"{src}: output {path} would overwrite an input; choose another -o")
            ex = explain(src, loaded, device=device, layers=args.layers,
                         max_aux_pixels=args.aux_pixels, progress=True)
            explanation_figure(ex, figure)
            write_json(ex, numbers)
            done += 1
            if ex.estimate is not None:
                tqdm.write(f"{src}: looks like {ex.estimate.top} (margin {ex.estimate.margin:.2f}) -> {figure}")
            else:
                tqdm.write(f"{src}: no degradation estimate for {loaded.name} -> {figure}")
        except ExpertirError as exc:
            failures.append(str(exc))
            tqdm.write(f"expertir: error: {exc}")
        except (RuntimeError, MemoryError) as exc:  # e.g. out of memory on a huge image
            msg = f"{src}: explanation failed ({str(exc).splitlines()[0]}); try a smaller --aux-pixels"
            failures.append(msg)
            tqdm.write(f"expertir: error: {msg}")
    bar.close()
    return job_summary("explained", done, len(jobs), args.output, time.perf_counter() - start, failures)


def run_sphere(args, loaded, device) -> int:
    import json

    from expertir.atomic import atomic_path
    from expertir.explanation import embed_benchmark
    from expertir.explanation.sphere import load_test_sets
    from expertir.explanation.figures import confusion_figure, sphere_figure

    bench = load_test_sets(args.benchmark, args.data_root, args.layout)
    if bench.tasks:
        for line in bench.missing:
            print(f"note: skipped {line}")
    report = embed_benchmark(loaded.model, loaded.name, bench, args.aux_pixels, device)
    out = Path(args.output)
    sphere_figure(report, out / "sphere.png")
    confusion_figure(report, out / "confusion.png")
    table = report.to_markdown()
    header = (f"Blind degradation classification of {loaded.source} on {bench.spec} "
              f"(nearest prototype of the global embedding; region accuracy: share of 16×16 "
              f"regions whose local embedding is nearest to the true prototype).\n\n")
    with atomic_path(out / "sphere.md") as tmp:
        Path(tmp).write_text(header + table + "\n")
    with atomic_path(out / "sphere.json") as tmp:
        Path(tmp).write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n")
    print()
    print(table)
    print(f"\nwrote {out}/sphere.png, confusion.png, sphere.md and sphere.json")
    for line in report.errors:
        print(f"  unreadable: {line}")
    return 1 if report.errors else 0
