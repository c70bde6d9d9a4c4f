"""``expertir restore``: restore image files and folders with one all-in-one model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from expertir.errors import ExpertirError

EPILOG = """examples:
  expertir restore photo.jpg -o restored/
  expertir restore shots/ more/img.png -o out/ --model cea
  expertir restore big.tif -o out/ --tile 256 --overlap 32 --device cpu
  expertir restore in/ -o out/ --weights runs/my_run/final.safetensors

Folders are searched recursively and their layout is kept under OUTDIR. Inputs are never
overwritten. A file that cannot be read is reported in one line and the others still run;
the exit code is 1 if any file failed."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "restore", help="restore images (files or folders) with an all-in-one model",
        description="Restore images with an unknown degradation (noise, rain, haze, blur, "
                    "low light, or a mix). No degradation label is needed.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="where restored images go")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="NAME",
                     help="registered model; uses its shipped weights (default: the shipped default model)")
    src.add_argument("--weights", metavar="FILE", help="an expertir .safetensors checkpoint")
    p.add_argument("--untrained", action="store_true",
                   help="run --model with random weights (pipeline testing only; output is not restored)")
    p.add_argument("--tile", type=int, metavar="N", help="tile size for large images (e.g. 256)")
    p.add_argument("--overlap", type=int, default=32, metavar="M", help="tile overlap in pixels (default 32)")
    p.add_argument("--device", metavar="D", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.set_defaults(func=run)


def collect_jobs(inputs: list[str], outdir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input file, output file) pairs, and one error line per input that yields nothing."""
    from expertir.imageio import IMAGE_EXTENSIONS, list_images

    jobs, errors, taken = [], [], set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = list_images(path)
            if not files:
                errors.append(f"{path}: folder contains no images ({', '.join(IMAGE_EXTENSIONS)})")
            pairs = [(f, outdir / path.resolve().name / f.relative_to(path)) for f in files]
        elif path.exists():
            pairs = [(path, outdir / path.name)]
        else:
            errors.append(f"{path}: no such file or folder")
            continue
        for src, dst in pairs:
            base, n = dst, 2
            while dst in taken:  # two inputs with the same name: keep both
                dst = base.with_name(f"{base.stem}_{n}{base.suffix}")
                n += 1
            taken.add(dst)
            jobs.append((src, dst))
    return jobs, errors


def run(args) -> int:
    from tqdm import tqdm

    from expertir.imageio import read_image, write_image
    from expertir.inference import restore, select_device

    device = select_device(args.device)
    outdir = Path(args.output)
    jobs, failures = collect_jobs(args.inputs, outdir)
    if not jobs and failures:
        for line in failures:
            print(f"expertir: error: {line}")
        return 1
    from expertir.weights import load_pretrained

    loaded = load_pretrained(args.model, args.weights, args.untrained, device)
    net = loaded.model
    print(f"model: {loaded.source} on {device}")
    input_paths = {src.resolve() for src, _ in jobs}
    done, start = 0, time.perf_counter()
    bar = tqdm(jobs, unit="img", desc="restoring", dynamic_ncols=True)
    tiles = tqdm(unit="tile", desc="  tiles", leave=False, dynamic_ncols=True) if args.tile else None
    for src, dst in bar:
        bar.set_postfix_str(src.name[-30:])
        try:
            if dst.resolve() in input_paths:
                raise ExpertirError(f"{src}: output {dst} would overwrite an input; choose another -o")
            image = read_image(src)
            out = restore(net, image.rgb, tile=args.tile, overlap=args.overlap, device=device,
                          progress=tiles)
            write_image(dst, out, like=image)
            done += 1
        except ExpertirError as exc:
            failures.append(str(exc))
            tqdm.write(f"expertir: error: {exc}")
        except (RuntimeError, MemoryError) as exc:  # e.g. out of memory on a huge image
            msg = f"{src}: restoration failed ({str(exc).splitlines()[0]}); try --tile 256"
            failures.append(msg)
            tqdm.write(f"expertir: error: {msg}")
    bar.close()
    if tiles is not None:
        tiles.close()
    seconds = time.perf_counter() - start
    print(f"restored {done} of {len(jobs)} image(s) into {outdir} in {seconds:.1f} s"
          + (f"; {len(failures)} failed:" if failures else ""))
    for line in failures:
        print(f"  {line}")
    return 1 if failures else 0
