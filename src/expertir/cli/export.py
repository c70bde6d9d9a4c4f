"""``expertir export``: write a model as an ONNX file and check it against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  expertir export sler_ir_tiny -o sler_ir_tiny.onnx          # shipped weights
  expertir export runs/my_run/best.safetensors -o mine.onnx   # a checkpoint you trained
  expertir export cea_tiny -o cea_tiny.onnx --bench          # + CPU latency vs PyTorch

The file takes 'image' (N x 3 x H x W float32 RGB in [0,1], any H, W of at least the
model's size multiple: 16 px for SLER-IR, 8 for the others) and returns 'restored' (same
shape); the padding to the multiple and the crop back are inside the graph. After export,
ONNX Runtime (CPU) and PyTorch restore crops of a bundled sample at two sizes and the PSNR
of one output against the other is printed (--no-check skips this)."""


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (checked with ONNX Runtime)",
                       description="Export a model with shipped weights, or a checkpoint, to "
                                   "ONNX with dynamic batch, height and width.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="MODEL_OR_WEIGHTS",
                   help="a model name with shipped weights (see 'expertir models') or an "
                        "expertir .safetensors checkpoint")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="ONNX file to write")
    p.add_argument("--no-check", action="store_true",
                   help="skip the ONNX Runtime vs PyTorch check")
    p.add_argument("--min-psnr", type=float, default=50.0, metavar="DB",
                   help="the check fails below this PSNR between the two outputs (default 50)")
    p.add_argument("--bench", action="store_true",
                   help="also time PyTorch and ONNX Runtime on CPU, interleaved")
    p.add_argument("--size", type=int, default=256, help="--bench input side (default 256)")
    p.add_argument("--runs", type=int, default=10, help="--bench timed runs (default 10)")
    p.add_argument("--threads", type=int, default=1, help="--bench threads for each (default 1)")
    p.set_defaults(func=run)


def _is_weights_file(source: str) -> bool:
    return source.endswith(".safetensors") or Path(source).is_file()


def run(args) -> int:
    import time

    from tqdm import tqdm

    from expertir.errors import ExpertirError
    from expertir.inference.export import (
        check_onnx, compare_cpu_latency, export_onnx, latency_markdown,
    )
    from expertir.weights import load_pretrained

    if args.size < 16 or args.runs < 1 or args.threads < 1:
        raise ExpertirError("--size must be at least 16, --runs and --threads at least 1")
    out = Path(args.output)
    if out.is_dir():
        raise ExpertirError(f"{out}: is a folder; give the ONNX file to write (e.g. model.onnx)")
    if _is_weights_file(args.source):
        pre = load_pretrained(weights=args.source)
    else:
        pre = load_pretrained(model=args.source)
    print(f"Exporting {pre.source} to {out} (takes a few minutes on CPU)")
    steps = ["trace and convert"] + ([] if args.no_check else ["check"]) + (["bench"] if args.bench else [])
    with tqdm(total=len(steps), desc="export", unit="step") as bar:
        start = time.perf_counter()
        export_onnx(pre.model, out, pre.name, pre.source)
        seconds = time.perf_counter() - start
        bar.update(1)
        parity = []
        if not args.no_check:
            parity = check_onnx(pre.model, out)
            bar.update(1)
        timing = None
        if args.bench:
            timing = compare_cpu_latency(pre.model, out, pre.name, args.size, args.runs,
                                         threads=args.threads)
            timing.parity_db = min((r.psnr for r in parity), default=None)
            bar.update(1)
    print(f"Wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {seconds:.0f} s")
    for r in parity:
        print(f"ONNX Runtime vs PyTorch at {r.height}×{r.width}: {r.psnr:.1f} dB PSNR "
              f"(max |difference| {r.max_abs_diff:.1e})")
    if timing is not None:
        print(latency_markdown([timing]), end="")
    bad = [r for r in parity if not r.psnr >= args.min_psnr]
    if bad:
        sizes = ", ".join(f"{r.height}×{r.width} ({r.psnr:.1f} dB)" for r in bad)
        raise ExpertirError(f"{out}: ONNX Runtime output differs from PyTorch's at {sizes}, "
                            f"below {args.min_psnr} dB; the file was written but is not faithful")
    return 0
