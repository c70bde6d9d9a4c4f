"""Where a model harms a rainy photo: on the streaks, or everywhere else.

For each model and each Rain100L pair, splits the pixels into the streaks (where the rainy
input differs from its target by ≥ 8/255, widened by 2 px) and the rest, and reports the
mean absolute error of the input and of the output on both, the output's contrast against
the target's (ratio of standard deviations; the rainy input's is shown beside it), the
PSNR and how many images came out below their input. A model that only removes rain lowers
the streak error and leaves the rest at the input's (Rain100L's inputs equal their targets
away from the streaks); one that sharpens or adds contrast to the whole photo raises it.

    python benchmarks/rain_harm.py --data-root DATA --model cea_tiny --weights RUN/final.safetensors [--limit 25]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def split_errors(rainy: np.ndarray, output: np.ndarray, target: np.ndarray) -> dict:
    import cv2

    streak = (np.abs(rainy - target).max(axis=2) * 255 >= 8).astype(np.uint8)
    streak = cv2.dilate(streak, np.ones((5, 5), np.uint8)) > 0
    err_in, err_out = np.abs(rainy - target), np.abs(output - target)
    mse = lambda a: float(np.mean((a - target) ** 2))  # noqa: E731
    return {"psnr_in": -10 * np.log10(mse(rainy)), "psnr_out": -10 * np.log10(mse(output)),
            "streak_in": float(err_in[streak].mean()), "streak_out": float(err_out[streak].mean()),
            "rest_in": float(err_in[~streak].mean()), "rest_out": float(err_out[~streak].mean()),
            "contrast_in": float(rainy.std() / target.std()), "contrast_out": float(output.std() / target.std())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data-root", required=True)
    p.add_argument("--model", action="append", default=[], help="shipped model (repeatable)")
    p.add_argument("--weights", action="append", default=[], help="checkpoint (repeatable)")
    p.add_argument("--limit", type=int, default=0, help="first N pairs only (0: all)")
    args = p.parse_args()

    from pathlib import Path

    from tqdm import tqdm

    from expertir.data.benchmarks import load_benchmark
    from expertir.errors import ExpertirError
    from expertir.inference import restore
    from expertir.weights import load_pretrained

    try:  # the benchmark's derain set (Rain100L), whole images (no crop)
        bench = load_benchmark("derain", args.data_root, crop=None)
    except ExpertirError as exc:
        sys.exit(f"rain_harm: {exc}")
    if not bench.tasks or not len(bench.tasks[0]):
        sys.exit(f"rain_harm: no Rain100L pairs under {args.data_root} ({'; '.join(bench.missing)})")
    rain_set = bench.tasks[0]
    if args.limit:
        rain_set.pairs = rain_set.pairs[: args.limit]
    try:
        models = ([(f"{m} (shipped)", load_pretrained(m)) for m in args.model]
                  + [(f"{Path(w).parent.name}/{Path(w).name}", load_pretrained(weights=w)) for w in args.weights])
    except ExpertirError as exc:
        sys.exit(f"rain_harm: {exc}")
    if not models:
        sys.exit("rain_harm: name at least one --model or --weights")
    print(f"{len(rain_set)} {rain_set.name} pairs from {rain_set.path}")
    print("| model | PSNR in → out | made worse | streaks: error in → out | elsewhere: error in → out | contrast in / out |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, loaded in models:
        rows = []
        for sample in tqdm(rain_set, total=len(rain_set), desc=label, leave=False):
            output = np.clip(restore(loaded.model, sample.degraded), 0, 1)
            rows.append(split_errors(sample.degraded, output, sample.clean))
        m = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        worse = sum(r["psnr_out"] < r["psnr_in"] for r in rows)
        print(f"| {label} | {m['psnr_in']:.2f} → {m['psnr_out']:.2f} | {worse}/{len(rows)} | "
              f"{255 * m['streak_in']:.1f} → {255 * m['streak_out']:.1f} /255 | "
              f"{255 * m['rest_in']:.2f} → {255 * m['rest_out']:.2f} /255 | "
              f"{m['contrast_in']:.3f} / {m['contrast_out']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
