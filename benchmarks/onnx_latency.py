"""CPU latency of ONNX Runtime against PyTorch for every shipped model, side by side.

    python benchmarks/onnx_latency.py --size 256 --runs 10 --threads 1

Each model is exported (a few minutes per model on a small CPU), checked against PyTorch,
then both run interleaved in this process on the same 1×3×S×S input
(:func:`expertir.inference.export.onnx_latency_rows`). Prints a Markdown table and the
setting line.
"""

from __future__ import annotations

import argparse

from tqdm import tqdm

from expertir.cli.bench import setting_line
from expertir.inference.export import latency_markdown, onnx_latency_rows
from expertir.weights import list_shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[p.stem for p in list_shipped()])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", metavar="DIR", help="keep the ONNX files in DIR")
    args = parser.parse_args()

    import onnxruntime

    with tqdm(total=len(args.models), desc="export + time", unit="model") as bar:
        rows = onnx_latency_rows(args.models, args.size, args.runs, args.threads,
                                 workdir=args.keep, progress=bar)
    print(latency_markdown(rows))
    print(setting_line(args.threads), f"ONNX Runtime {onnxruntime.__version__}.")


if __name__ == "__main__":
    main()
