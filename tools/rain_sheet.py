"""Contact sheet of rain synthesis beside real rain: ``docs/rain_synthesis.png``.

Row 1: real Rain100L inputs (test images, shown, never trained on). Row 2: clean training
images with rain composited from real streak layers (the default). Row 3: the same images
with procedural streaks (the fallback). Same crop size everywhere, so streak scale compares.
It also prints, for 20 images of each kind (and for layer rain with the shipped recipe's
streak weights), how rain changes an image: mean brightening,
share of pixels brightened by more than 20/255, the 99th percentile of the change, and
how far the pixels away from the streaks (changed by less than 8/255, with a 2-px margin)
stay from the clean image (mean |change| and the ratio of high-frequency energy).

    python tools/rain_sheet.py --data-root DATA [-o docs/rain_synthesis.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from expertir.data import degradations as deg
from expertir.imageio import list_images, load_rgb

SIZE = 192


def rain_statistics(pairs: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """One line describing how the rainy images of ``(rainy, clean)`` pairs differ."""
    import cv2

    change = np.concatenate([(r - c).mean(axis=2).ravel() for r, c in pairs]) * 255
    away_diff, hf = [], []
    for r, c in pairs:
        streak = cv2.dilate((np.abs(r - c).max(axis=2) * 255 >= 8).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        away_diff.append(np.abs(r - c)[~streak].mean() * 255)
        lap = [cv2.Laplacian(np.ascontiguousarray(im.mean(axis=2)), cv2.CV_32F)[~streak] for im in (r, c)]
        hf.append(float((lap[0] ** 2).mean() / max((lap[1] ** 2).mean(), 1e-12)))
    return (f"brightening {change.mean():.1f}/255, {100 * (change > 20).mean():.1f} % of pixels by > 20/255, "
            f"99th percentile {np.percentile(change, 99):.0f}/255; away from the streaks: mean |change| "
            f"{np.mean(away_diff):.2f}/255, high-frequency energy × {np.median(hf):.3f}")


def centre(img: np.ndarray, size: int = SIZE) -> np.ndarray:
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[(h - size) // 2:(h - size) // 2 + size, (w - size) // 2:(w - size) // 2 + size])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, type=Path)
    ap.add_argument("-o", "--output", default="docs/rain_synthesis.png", type=Path)
    ap.add_argument("--columns", type=int, default=5)
    args = ap.parse_args()
    root, n = args.data_root, args.columns
    real = [centre(load_rgb(p)) for p in list_images(root / "derain/Rain100L/rain", recursive=False)[:: 100 // n][:n]]
    clean = [centre(load_rgb(p)) for p in list_images(root / "clean/SunHays80-half", recursive=False)[:: 80 // n][:n]]
    layers = deg.StreakLayers([root / "rain-streaks/Garg06"])
    rainy = list_images(root / "derain/Rain100L/rain", recursive=False)[::5][:20]
    stats_clean = [load_rgb(p) for p in list_images(root / "clean/SunHays80-half", recursive=False)[::4][:20]]
    print("Rain100L inputs:", rain_statistics(
        [(load_rgb(p), load_rgb(p.parent.parent / "norain" / p.name.replace("rain-", "norain-"))) for p in rainy]))
    print("layer rain:     ", rain_statistics([(deg.layer_rain(c, i, layers), c) for i, c in enumerate(stats_clean)]))
    print("procedural rain:", rain_statistics([(deg.rain(c, i), c) for i, c in enumerate(stats_clean)]))
    strong = deg.LayerRain(layers, intensity=(0.8, 1.6))  # the shipped recipe's weights
    print("layer rain, weights U(0.8, 1.6):", rain_statistics([(strong(c, i), c) for i, c in enumerate(stats_clean)]))
    rows = [("real rain (Rain100L inputs)", real),
            ("real streak layers composited (default)", [deg.layer_rain(c, i, layers) for i, c in enumerate(clean)]),
            ("procedural streaks (fallback)", [deg.rain(c, i) for i, c in enumerate(clean)])]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), n, figsize=(2.2 * n, 2.4 * len(rows)), dpi=72)
    for r, (title, images) in enumerate(rows):
        for c, img in enumerate(images):
            axes[r][c].imshow(np.clip(img, 0, 1))
            axes[r][c].axis("off")
        axes[r][0].set_title(title, fontsize=9, loc="left")
    fig.tight_layout(pad=0.4)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    from PIL import Image

    sheet = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
    plt.close(fig)
    # A 256-colour palette keeps the PNG small enough to ship in the docs.
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.output, optimize=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
