"""Restore a 12-MP and a 48-MP photo with no flags: peak RSS, wall time, output size.

The photos are a real image (a CBSD68 test image by default) cropped to 4:3 and scaled up
with Lanczos to 4000×3000 and 8000×6000, saved as JPEG (quality 92, 4:2:0) with an sRGB
ICC profile and EXIF, as a phone would. Each is restored by ``expertir restore PHOTO -o
OUT`` under ``/usr/bin/time -v`` (``--model M`` is the only flag, for the non-default
models); the table gives the peak resident memory and wall time ``time`` reports, the plan
line the command printed, and checks the output has the input's size, ICC profile and EXIF.

The memory a model needs per pixel is measured once per model and cached; a small restore
first fills that cache, so the timed runs show steady-state numbers (the one-time
measurement is timed separately).

    OMP_NUM_THREADS=1 python benchmarks/large_photo.py --data-root DATA
    python benchmarks/large_photo.py --sizes 12 --models sler_ir_tiny,cea_tiny,restormer_tiny
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {12: (4000, 3000), 48: (8000, 6000)}


def make_photo(source: Path, size: tuple[int, int], path: Path) -> None:
    from PIL import Image, ImageCms

    with Image.open(source) as im:
        im = im.convert("RGB")
        w, h = im.size
        if w * 3 > h * 4:  # crop to 4:3 (or 3:4), centred
            cw = h * 4 // 3
            im = im.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
        else:
            ch = w * 3 // 4
            im = im.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
        big = im.resize(size, Image.LANCZOS)
    exif = big.getexif()
    exif[0x010F] = "expertir benchmark"
    exif[0x0112] = 1
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    big.save(path, quality=92, subsampling=2, exif=exif, icc_profile=icc)


def timed(cmd: list[str], env: dict, log: Path) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``; exit code, peak RSS (bytes), wall seconds."""
    start = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=f, stderr=subprocess.STDOUT,
                              env=env, cwd=ROOT).returncode
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    plan = re.search(r"\): ((?:whole image|tiled).*)$", text, re.M)
    return {"exit": code, "peak_rss_bytes": int(rss.group(1)) * 1024 if rss else None,
            "wall_s": round(wall, 1), "plan": plan.group(1) if plan else None}


def check_output(src: Path, out: Path) -> dict:
    from PIL import Image

    if not out.is_file():
        return {"same_size": False, "icc_kept": False, "exif_kept": False}
    with Image.open(src) as a, Image.open(out) as b:
        return {"same_size": a.size == b.size,
                "icc_kept": a.info.get("icc_profile") == b.info.get("icc_profile"),
                "exif_kept": b.getexif().get(0x010F) == "expertir benchmark"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--source", default="denoise/CBSD68/101085.png", help="image under --data-root")
    p.add_argument("--sizes", default="12,48", help="megapixels, from 12 and 48")
    p.add_argument("--models", default="",
                   help="comma-separated models (default: the default model, no --model flag)")
    p.add_argument("--out", default="runs/bench/large_photo")
    args = p.parse_args()

    if not Path("/usr/bin/time").is_file():
        sys.exit("large_photo: /usr/bin/time is missing (Debian/Ubuntu: apt-get install time)")
    source = Path(args.data_root) / args.source
    if not source.is_file():
        sys.exit(f"large_photo: {source} not found (see --data-root, --source)")
    out = (ROOT / args.out).resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    expertir = [sys.executable, "-m", "expertir", "restore"]
    models = [m for m in args.models.split(",") if m] or [None]

    warm = out / "warm.jpg"
    make_photo(source, (64, 48), warm)
    rows = []
    for model in models:
        flags = ["--model", model] if model else []
        t0 = time.perf_counter()  # fills the per-model memory cache (once per machine)
        subprocess.run([*expertir, str(warm), "-o", str(out / "warm_out"), *flags], env=env,
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        warm_s = time.perf_counter() - t0
        for mp in (int(s) for s in args.sizes.split(",")):
            photo = out / f"photo_{mp}mp.jpg"
            if not photo.is_file():
                make_photo(source, SIZES[mp], photo)
            name = model or "default"
            target = out / f"out_{name}"
            cmd = [*expertir, str(photo), "-o", str(target), *flags]
            print("$ /usr/bin/time -v " + " ".join(cmd[2:]), flush=True)
            row = {"photo": f"{SIZES[mp][0]}×{SIZES[mp][1]} ({mp} MP)", "model": name,
                   "command": "expertir restore " + " ".join([photo.name, "-o", "out/", *flags]),
                   "threads": os.environ.get("OMP_NUM_THREADS", "default"),
                   "first_run_measure_s": round(warm_s, 1),
                   **timed(cmd, env, out / f"log_{name}_{mp}mp.txt"),
                   **check_output(photo, target / photo.name)}
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
            (out / "large_photo.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")

    lines = ["| Photo | Model | Plan | Peak RSS | Wall | Exit | Same size, ICC, EXIF |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        rss = f"{r['peak_rss_bytes'] / 1e9:.2f} GB" if r["peak_rss_bytes"] else "?"
        kept = "yes" if r["same_size"] and r["icc_kept"] and r["exif_kept"] else "NO"
        lines.append(f"| {r['photo']} | {r['model']} | {r['plan']} | {rss} | {r['wall_s']:.0f} s "
                     f"| {r['exit']} | {kept} |")
    table = "\n".join(lines)
    (out / "large_photo.md").write_text(table + "\n")
    print("\n" + table)
    return 0 if all(r["exit"] == 0 and r["same_size"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
