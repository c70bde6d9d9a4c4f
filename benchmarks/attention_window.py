"""What MDTA's attention window at inference does to each test column.

Restormer's transposed attention takes its channel statistics from the whole feature map;
trained on 32- and 64-px patches, a network sees them over a few thousand pixels in
training and over a whole photo at test time. ``attention_window`` (a backbone option,
``docs/design.md``) takes them from windows of that many pixels at inference instead. This
script restores evenly spaced images of each column with the same weights at every window
and prints mean PSNR per column (the clean columns compare restore(clean) with clean).

    python benchmarks/attention_window.py --data-root DATA --model sler_ir_tiny \\
        --windows 0 32 64 [--weights RUN/final.safetensors] [--per-set 8]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

#: (benchmark spec, images) per column; the images are spread evenly over each set.
COLUMNS = [("denoise:denoise/BSD68@25", 8), ("denoise:denoise/CBSD68@25", 8), ("derain", 8),
           ("dehaze", 2), ("lowlight", 4), ("clean:denoise/McMaster", 4), ("clean:denoise/CBSD68", 4)]


def evenly_spaced(task_set, count: int) -> list:
    """``count`` samples spread over the set (all of them if it holds fewer)."""
    picks = np.linspace(0, len(task_set) - 1, min(count, len(task_set))).round().astype(int)
    return [task_set.load(int(i)) for i in picks]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data-root", required=True)
    p.add_argument("--model", help="shipped model (default: the default model)")
    p.add_argument("--weights", help="checkpoint instead of the shipped weights")
    p.add_argument("--windows", type=int, nargs="+", default=[0, 32, 64], help="0: whole map")
    p.add_argument("--per-set", type=int, default=0, help="images per column (0: the table's counts)")
    args = p.parse_args()

    from tqdm import tqdm

    from expertir.checkpoint import load_model
    from expertir.data.benchmarks import load_benchmark
    from expertir.errors import ExpertirError
    from expertir.inference import restore
    from expertir.metrics import psnr
    from expertir.weights import DEFAULT_MODEL, shipped_weights

    path = args.weights or shipped_weights(args.model or DEFAULT_MODEL)
    if path is None:
        sys.exit(f"attention_window: no shipped weights for {args.model!r}")
    columns = []
    for spec, count in COLUMNS:
        try:
            bench = load_benchmark(spec, args.data_root)
        except ExpertirError as exc:
            sys.exit(f"attention_window: {exc}")
        if bench.tasks and len(bench.tasks[0]):
            columns.append((bench.tasks[0], evenly_spaced(bench.tasks[0], args.per_set or count)))
        else:
            print(f"skipped {spec}: {'; '.join(bench.missing)}", file=sys.stderr)
    print(f"{path}, whole images, exposure guard on; images per column: "
          + ", ".join(f"{ts.name} {len(s)}" for ts, s in columns))
    print("| window | " + " | ".join(ts.name + (" (clean)" if ts.task == "clean" else "") for ts, _ in columns) + " | s |")
    print("|---:|" + "---:|" * (len(columns) + 1))
    for window in args.windows:
        try:
            model, _ = load_model(path, attention_window=window)
        except ExpertirError as exc:
            sys.exit(f"attention_window: {exc}")
        start, means = time.perf_counter(), []
        for task_set, samples in columns:  # restore() runs without autograd
            means.append(np.mean([psnr(restore(model, s.degraded), s.clean)
                                  for s in tqdm(samples, desc=f"{window} {task_set.name}", leave=False)]))
        print(f"| {window or 'whole'} | " + " | ".join(f"{m:.2f}" for m in means)
              + f" | {time.perf_counter() - start:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
