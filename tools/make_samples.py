"""Rebuild the small sample set shipped in ``src/expertir/samples`` (demo and tests).

Real benchmark crops where the data exist (CBSD68 with protocol noise, Rain100L rain,
SOTS-outdoor haze) and our synthesis on ``skimage.data`` photos for the rest (motion blur,
low light, a spatially varying mix). Paired layout: ``input/`` + ``target/`` with matching
names, plus ``manifest.json`` saying where each pair comes from.

    python tools/make_samples.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from skimage import data as skdata

from expertir.data import degradations as deg
from expertir.imageio import load_rgb, save_rgb

OUT = Path(__file__).resolve().parents[1] / "src" / "expertir" / "samples"
SIZE = 192


def crop(img: np.ndarray, top: int, left: int, size: int = SIZE) -> np.ndarray:
    return np.ascontiguousarray(img[top:top + size, left:left + size])


def photo(name: str) -> np.ndarray:
    return getattr(skdata, name)()[..., :3].astype(np.float32) / 255.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, type=Path)
    root = ap.parse_args().data_root
    pairs = []  # (name, task, degraded, clean, source)

    clean = crop(load_rgb(root / "denoise/CBSD68/253027.png"), 60, 140)
    pairs.append(("denoise_25_253027", "denoise_25", deg.gaussian_noise(clean, 25, seed=0), clean,
                  "CBSD68 253027 crop, Gaussian noise sigma=25 (protocol, seed 0)"))
    rain_dir = root / "derain/Rain100L-sub10"
    pairs.append(("derain_rain100l_001", "derain", crop(load_rgb(rain_dir / "rain/rain-001.png"), 60, 150),
                  crop(load_rgb(rain_dir / "norain/norain-001.png"), 60, 150), "Rain100L rain-001 crop (real pair)"))
    haze_dir = root / "dehaze/SOTS-outdoor-sub2"
    pairs.append(("dehaze_sots_0001", "dehaze", crop(load_rgb(haze_dir / "input/0001_0.8_0.2.jpg"), 100, 200),
                  crop(load_rgb(haze_dir / "target/0001.png"), 100, 200), "SOTS-outdoor 0001 crop (real pair)"))
    clean = crop(photo("chelsea"), 60, 100)
    pairs.append(("deblur_chelsea", "deblur", deg.motion_blur(clean, seed=3), clean,
                  "skimage chelsea crop, synthetic motion blur (seed 3)"))
    clean = crop(photo("astronaut"), 40, 160)
    pairs.append(("lowlight_astronaut", "lowlight", deg.low_light(clean, seed=1), clean,
                  "skimage astronaut crop, synthetic low light (seed 1)"))
    clean = crop(photo("coffee"), 100, 200)
    pairs.append(("mixed_coffee", "mixed", deg.spatially_varying(clean, seed=5, names=["noise", "haze"]), clean,
                  "skimage coffee crop, spatially varying noise + haze (seed 5)"))

    for sub in ("input", "target"):
        (OUT / sub).mkdir(parents=True, exist_ok=True)
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
