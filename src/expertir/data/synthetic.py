"""Writers of synthetic paired test sets, and the degradation contact sheet.

:func:`make_mixed` degrades every clean image of a folder with each mixed recipe of
:data:`MIXED_RECIPES` — compositional chains (CDD-11-like: haze+rain, low light+noise, …)
and spatially varying mixtures (different types or strengths in different soft regions).
:func:`make_synthetic` does the same with one subset per single-degradation task id.
Both write ``OUT/<subset>/input/<name>.png`` and ``OUT/<subset>/target/<name>.png`` and a
``manifest.json`` (subsets, recipes, per-image seeds) that
:func:`expertir.data.benchmarks.load_benchmark` reads (specs ``mixed:OUT`` /
``synthetic:OUT``). Every output is a pure function of the clean image, the recipe and the
seed, so the same command rebuilds the same set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from expertir import __version__
from expertir.data.benchmarks import MANIFEST
from expertir.data.degradations import SYNTHESIZERS, compose, spatially_varying, sub_seed
from expertir.data.tasks import DEGRADATION_TASKS
from expertir.errors import ExpertirError, ImageReadError
from expertir.imageio import list_images, read_image, save_rgb


@dataclass(frozen=True)
class Recipe:
    """A named way to degrade an image: ``kind`` is ``compose``, ``spatial`` or ``task``."""

    name: str
    kind: str
    names: tuple[str, ...]

    def apply(self, img: np.ndarray, seed: int) -> np.ndarray:
        if self.kind == "compose":
            return compose(img, seed, self.names)
        if self.kind == "spatial":
            return spatially_varying(img, seed, self.names)
        return SYNTHESIZERS[self.names[0]](img, seed)

    def describe(self) -> str:
        if self.kind == "compose":
            return "chain " + " → ".join(self.names)
        if self.kind == "spatial":
            return "spatially varying: " + " | ".join(self.names)
        return f"task {self.names[0]}"


#: The mixed test set: four CDD-11-style chains and four spatially varying mixtures.
MIXED_RECIPES: list[Recipe] = [
    Recipe("haze+rain", "compose", ("haze", "rain")),
    Recipe("lowlight+noise", "compose", ("lowlight", "noise")),
    Recipe("lowlight+haze", "compose", ("lowlight", "haze")),
    Recipe("haze+rain+lowlight", "compose", ("haze", "rain", "lowlight")),
    Recipe("sv-rain-haze", "spatial", ("rain", "haze")),
    Recipe("sv-noise-blur", "spatial", ("noise", "blur")),
    Recipe("sv-noise-levels", "spatial", ("noise", "noise")),
    Recipe("sv-hazerain-lowlight", "spatial", ("haze+rain", "lowlight")),
]

#: One subset per standard task id.
SYNTHETIC_RECIPES: list[Recipe] = [Recipe(t, "task", (t,)) for t in DEGRADATION_TASKS]


def _write_set(clean_dir: str | Path, out: str | Path, recipes: Sequence[Recipe], seed: int,
               kind: str, progress: Callable[[str], None] | None = None) -> Path:
    clean_dir, out = Path(clean_dir), Path(out)
    if not clean_dir.is_dir():
        raise ExpertirError(f"clean folder not found: {clean_dir}")
    files = list_images(clean_dir, recursive=False)
    if not files:
        raise ExpertirError(f"no images in {clean_dir}")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise ExpertirError(f"{out} is not empty and holds no {MANIFEST}; choose an empty folder")
    errors: list[str] = []
    images = []
    for i, path in enumerate(files):
        try:
            images.append((i, path, read_image(path).rgb))
        except ImageReadError as exc:
            errors.append(str(exc))
            if progress:
                progress(f"skipped {exc}")
    subsets = []
    for r, recipe in enumerate(recipes):
        records = []
        for i, path, clean in images:
            s = sub_seed(seed, r, i)
            name = path.stem + ".png"
            save_rgb(out / recipe.name / "input" / name, recipe.apply(clean, s))
            save_rgb(out / recipe.name / "target" / name, clean)
            records.append({"name": name, "source": path.name, "seed": s})
        subsets.append({"name": recipe.name, "task": recipe.name, "kind": recipe.kind,
                        "recipe": recipe.describe(), "degradations": list(recipe.names),
                        "input": f"{recipe.name}/input", "target": f"{recipe.name}/target",
                        "images": records})
        if progress:
            progress(f"{recipe.name}: {len(records)} images ({recipe.describe()})")
    manifest = {"format": "expertir paired set", "kind": kind, "expertir": __version__,
                "seed": seed, "source": str(clean_dir), "subsets": subsets, "errors": errors}
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return out / MANIFEST


def make_mixed(clean_dir: str | Path, out: str | Path, seed: int = 0,
               recipes: Sequence[Recipe] = tuple(MIXED_RECIPES),
               progress: Callable[[str], None] | None = None) -> Path:
    """Write the mixed-degradation set (:data:`MIXED_RECIPES`); returns the manifest path."""
    return _write_set(clean_dir, out, recipes, seed, "mixed", progress)


def make_synthetic(clean_dir: str | Path, out: str | Path, seed: int = 0,
                   tasks: Sequence[str] = tuple(DEGRADATION_TASKS),
                   progress: Callable[[str], None] | None = None) -> Path:
    """Write one subset per single degradation (task ids); returns the manifest path."""
    recipes = [r for r in SYNTHETIC_RECIPES if r.name in tasks]
    unknown = set(tasks) - {r.name for r in recipes}
    if unknown:
        raise ExpertirError(f"unknown task(s) {sorted(unknown)} (known: {', '.join(DEGRADATION_TASKS)})")
    return _write_set(clean_dir, out, recipes, seed, "synthetic", progress)


def contact_sheet(img: np.ndarray, out: str | Path, seed: int = 0, tile: int = 160,
                  columns: int = 4) -> Path:
    """A labelled grid of ``img`` under every single degradation and every mixed recipe
    (drawn with matplotlib's Agg backend, saved as a 256-colour PNG). ``img`` is
    centre-cropped to a square and resized to ``tile`` pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    h, w = img.shape[:2]
    side = min(h, w)
    square = img[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    small = Image.fromarray(np.round(np.clip(square, 0, 1) * 255).astype(np.uint8))
    base = np.asarray(small.resize((tile, tile), Image.LANCZOS), np.float32) / 255.0
    panels = [("clean", base)]
    for r, recipe in enumerate(SYNTHETIC_RECIPES + MIXED_RECIPES):
        panels.append((recipe.name, recipe.apply(base, sub_seed(seed, r))))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.8, rows * 1.95), dpi=tile / 1.6)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, panel) in zip(axes.flat, panels):
        ax.imshow(np.clip(panel, 0, 1), interpolation="nearest")
        ax.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    fig.canvas.draw()
    sheet = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
    plt.close(fig)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the PNG small enough to ship in the docs.
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out
