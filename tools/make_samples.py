"""Rebuild the small sample set shipped in ``src/expertir/samples`` (demo and tests).

Crops of test images only, never of training images, so the demo shows how the shipped
models do on images they did not see: real pairs where the benchmarks have them
(Rain100L rain, SOTS-outdoor haze, LOL v1 eval15 low light), protocol noise on CBSD68, our
synthesis on McMaster and CBSD68 for motion blur and a spatially varying mix, and one
clean McMaster crop (input = target) that a model should leave alone. Paired layout:
``input/`` + ``target/`` with matching names, plus ``manifest.json`` saying where each
pair comes from.

    python tools/make_samples.py --data-root DATA
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from expertir.data import degradations as deg
from expertir.imageio import load_rgb, save_rgb

OUT = Path(__file__).resolve().parents[1] / "src" / "expertir" / "samples"
SIZE = 192


def crop(img: np.ndarray, top: int, left: int, size: int = SIZE) -> np.ndarray:
    return np.ascontiguousarray(img[top:top + size, left:left + size])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, type=Path)
    root = ap.parse_args().data_root
    pairs = []  # (name, task, degraded, clean, source)

    clean = crop(load_rgb(root / "denoise/CBSD68/253027.png"), 60, 140)
    pairs.append(("denoise_25_253027", "denoise_25", deg.gaussian_noise(clean, 25, seed=0), clean,
                  "CBSD68 253027 crop, Gaussian noise sigma=25 (protocol, seed 0)"))
    rain_dir = root / "derain/Rain100L"
    pairs.append(("derain_rain100l_011", "derain", crop(load_rgb(rain_dir / "rain/rain-011.png"), 60, 150),
                  crop(load_rgb(rain_dir / "norain/norain-011.png"), 60, 150), "Rain100L rain-011 crop (real pair)"))
    haze_dir = root / "dehaze/SOTS-outdoor-sub2"
    pairs.append(("dehaze_sots_0001", "dehaze", crop(load_rgb(haze_dir / "input/0001_0.8_0.2.jpg"), 100, 200),
                  crop(load_rgb(haze_dir / "target/0001.png"), 100, 200), "SOTS-outdoor 0001 crop (real pair)"))
    clean = crop(load_rgb(root / "denoise/McMaster/3.tif"), 150, 150)
    pairs.append(("deblur_mcmaster_3", "deblur", deg.motion_blur(clean, seed=3), clean,
                  "McMaster 3 crop, synthetic motion blur (seed 3)"))
    lol_dir = root / "lowlight/LOLv1-eval15"
    pairs.append(("lowlight_lol_1", "lowlight", crop(load_rgb(lol_dir / "low/1.png"), 100, 250),
                  crop(load_rgb(lol_dir / "high/1.png"), 100, 250), "LOL v1 eval15 1 crop (real pair)"))
    clean = crop(load_rgb(root / "denoise/CBSD68/102061.png"), 60, 150)
    pairs.append(("mixed_cbsd68_102061", "mixed", deg.spatially_varying(clean, seed=5, names=["noise", "haze"]),
                  clean, "CBSD68 102061 crop, spatially varying noise + haze (seed 5)"))
    clean = crop(load_rgb(root / "denoise/McMaster/8.tif"), 200, 200)
    pairs.append(("clean_mcmaster_8", "clean", clean, clean,
                  "McMaster 8 crop, undegraded (input = target): should be left alone"))

    for sub in ("input", "target"):
        (OUT / sub).mkdir(parents=True, exist_ok=True)
        for old in (OUT / sub).glob("*.png"):
            old.unlink()
    manifest = []
    for name, task, degraded, clean, source in pairs:
        save_rgb(OUT / "input" / f"{name}.png", degraded)
        save_rgb(OUT / "target" / f"{name}.png", clean)
        manifest.append({"name": f"{name}.png", "task": task, "source": source})
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {len(pairs)} pairs to {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
