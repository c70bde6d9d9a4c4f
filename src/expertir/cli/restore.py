"""``expertir restore``: restore image files and folders with one all-in-one model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from expertir.cli.jobs import collect_jobs, job_summary
from expertir.cli.options import add_model_options, add_self_ensemble_option
from expertir.errors import ExpertirError

EPILOG = """examples:
  expertir restore photo.jpg -o restored/
  expertir restore shots/ more/img.png -o out/ --model cea
  expertir restore big.tif -o out/ --max-memory 2GB
  expertir restore big.tif -o out/ --tile 256 --overlap 32 --device cpu
  expertir restore in/ -o out/ --weights runs/my_run/final.safetensors

Memory: by default each image runs whole when it fits the memory budget, else in the
largest tiles that fit; one line per image says which ("whole image" or "tiled N x T px").
The budget is --max-memory, or half of the memory available now (CPU: at most 1.5 GB;
CUDA: 80% of the free device memory). The memory the model needs per pixel is measured
once per model and cached. If a whole-image run still runs out of memory it is retried
in tiles, once, and the line says so.

Kept in the output: format, size, bit depth, gray-ness, alpha channel, the ICC colour
profile and the EXIF data (the EXIF orientation is applied to the pixels once and reset,
so the output is upright everywhere). JPEGs are written at quality 95 with the input's
chroma subsampling. 16-bit TIFF and BMP outputs carry no ICC/EXIF.

Folders are searched recursively and their layout is kept under OUTDIR. Inputs are never
overwritten and outputs are written atomically (no partial files). A file that cannot be
read is reported in one line and the others still run; the exit code is 1 if any file
failed."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "restore", help="restore images (files or folders) with an all-in-one model",
        description="Restore images with an unknown degradation (noise, rain, haze, blur, "
                    "low light, or a mix). No degradation label is needed.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="where restored images go")
    add_model_options(p, "pipeline testing only; output is not restored")
    p.add_argument("--tile", type=tile_arg, default="auto", metavar="auto|0|N",
                   help="auto (default): whole image if it fits the memory budget, else the "
                        "largest tiles that fit; 0: whole image; N: tiles of N pixels")
    p.add_argument("--max-memory", type=memory_arg, metavar="SIZE",
                   help="memory budget per image, e.g. 2GB or 800MB (default: half of the "
                        "available memory, on CPU at most 1.5 GB)")
    p.add_argument("--overlap", type=int, default=32, metavar="M", help="tile overlap in pixels (default 32)")
    p.add_argument("--no-exposure-guard", dest="exposure_guard", action="store_false",
                   help="let the network brighten photos whose highlights already reach white "
                        "(by default they keep their exposure: a dark scene is not underexposed)")
    add_self_ensemble_option(p)
    p.add_argument("--device", metavar="D", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.set_defaults(func=run)


def _report_exposure(src, darkened: float) -> None:
    """One line when the exposure guard took back a visible brightening (≥ 1/255 on average)."""
    from tqdm import tqdm

    if darkened * 255 >= 1:
        tqdm.write(f"{src}: kept its exposure (its highlights reach white); the network "
                   f"brightened it by {darkened * 255:.0f}/255 on average "
                   "(--no-exposure-guard keeps that)")


def tile_arg(text: str) -> str | int:
    """``auto``, 0 (whole image) or a positive tile side (argparse type)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, 0 or a number of pixels, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be auto, 0 or a positive number of pixels, not {value}")
    return value


def memory_arg(text: str) -> int:
    """Bytes from ``2GB`` / ``800MB`` (argparse type)."""
    from expertir.inference import parse_size

    try:
        return parse_size(text)
    except ExpertirError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    tiles = tqdm(unit="tile", desc="  tiles", leave=False, dynamic_ncols=True, delay=0.5)
    for src, dst in bar:
        bar.set_postfix_str(src.name[-30:])
        try:
            if dst.resolve() in input_paths:
                raise ExpertirError(f"{src}: output {dst} would overwrite an input; choose another -o")
            image = read_image(src)
            h, w = image.rgb.shape[:2]
            out = restore(net, image.rgb, tile=args.tile, overlap=args.overlap, device=device,
                          max_memory=args.max_memory, progress=tiles, on_measure=tqdm.write,
                          exposure_guard=args.exposure_guard, self_ensemble=args.self_ensemble,
                          on_exposure=lambda darkened, name=src: _report_exposure(name, darkened),
                          on_plan=lambda plan, name=f"{src} ({w}×{h})": tqdm.write(f"{name}: {plan}"))
            write_image(dst, out, like=image)
            del image, out  # free both before the next image is read
            done += 1
        except ExpertirError as exc:
            msg = str(exc) if str(src) in str(exc) else f"{src}: {exc}"
            failures.append(msg)
            tqdm.write(f"expertir: error: {msg}")
        except (RuntimeError, MemoryError) as exc:
            msg = f"{src}: restoration failed ({str(exc).splitlines()[0]})"
            failures.append(msg)
            tqdm.write(f"expertir: error: {msg}")
    tiles.close()
    bar.close()
    return job_summary("restored", done, len(jobs), outdir, time.perf_counter() - start, failures)
