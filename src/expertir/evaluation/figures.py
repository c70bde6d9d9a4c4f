"""Figures of a results run (PNG, matplotlib's object API with the Agg canvas).

* :func:`curves_figure`: the training curves of one run folder (with the earlier stages it
  continues, if it is a later stage of a recipe in stages) — training loss (and its
  L1 restoration term, where the loss has others) against step, and the validation **gain** per task (restored PSNR minus the input's) against step,
  so that every task starts from zero whatever its input quality; the ``clean`` task has no
  gain to show (its input *is* the target) and gets its own panel: the PSNR of
  restore(clean) against clean, with the :data:`~expertir.evaluation.verdict.CLEAN_FIDELITY_DB`
  line.
* :func:`crops_figure`: before/after crops of real test images, one row per test set:
  input | each model | target. The crop is where there is most to see (:func:`crop_window`:
  detail of the target times the input's difference from it); the dB in each title is
  the PSNR of the **whole** image, the number the tables average. About one screen pixel
  per image pixel; in full colour, unless the PNG would exceed :data:`MAX_FIGURE_BYTES`
  (then 256 colours), so that it stays small enough for the docs.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from expertir.atomic import atomic_path
from expertir.errors import ExpertirError
from expertir.explanation.figures import task_colour
from expertir.metrics import psnr

#: Side of the crops of :func:`crops_figure`, in pixels.
CROP = 128
#: Largest PNG :func:`crops_figure` writes in full colour (beyond it: 256 colours).
MAX_FIGURE_BYTES = 1_000_000


def _save(fig, path: str | Path, max_bytes: int | None = None, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically; if that is larger than ``max_bytes``, as a
    256-colour PNG instead (smaller, at the cost of some banding)."""
    from PIL import Image

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = buf.getvalue()
    if max_bytes and len(data) > max_bytes:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        small = io.BytesIO()
        img.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(small, format="png", optimize=True)
        data = small.getvalue()
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return path


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_folder_of(checkpoint: str | Path, metadata: dict, runs: str | Path) -> tuple[Path | None, str]:
    """The training run folder (one with ``train.csv``) under ``runs`` that produced
    ``checkpoint``, and how it was found:

    1. the checkpoint's own folder, if it is a run folder (``RUN/final.safetensors``);
    2. a run folder whose ``final.safetensors`` has the same bytes (shipped weights are
       copies of a run's final file);
    3. the one run folder named as the checkpoint's training config (``name``), if exactly
       one is (a run that went on after the file was copied).
    Folders are searched three levels deep. ``(None, reason)`` if none fits.
    """
    checkpoint, runs = Path(checkpoint), Path(runs)
    if (checkpoint.parent / "train.csv").is_file():
        return checkpoint.parent, "the checkpoint's own run folder"
    if not runs.is_dir():
        return None, f"{runs} is not a folder"
    folders = [p.parent for depth in ("", "*/", "*/*/", "*/*/*/") for p in runs.glob(f"{depth}train.csv")]
    digest = _digest(checkpoint)
    same = [f for f in folders if (f / "final.safetensors").is_file()
            and (f / "final.safetensors").stat().st_size == checkpoint.stat().st_size
            and _digest(f / "final.safetensors") == digest]
    if same:
        return same[0], "its final.safetensors is this checkpoint"
    name = metadata.get("training", {}).get("config", {}).get("name")
    named = [f for f in folders if name and f.name == name]
    if len(named) == 1:
        return named[0], f"named {name} as the checkpoint's training config"
    if named:
        return None, f"{len(named)} run folders are named {name} and none holds this checkpoint"
    return None, f"no run folder under {runs} produced it or is named {name}"


def curves_figure(run_dir: str | Path, out: str | Path, title: str = "") -> Path:
    """Loss and validation-gain curves of the run folder ``run_dir`` (``train.csv``,
    ``val.csv`` as the trainer writes them), as the PNG ``out``."""
    from matplotlib.figure import Figure

    from expertir.evaluation.verdict import CLEAN_FIDELITY_DB
    from expertir.training.logs import stage_logs

    run_dir = Path(run_dir)
    train, val, stage_starts = stage_logs(run_dir)
    if not train and not val:
        raise ExpertirError(f"{run_dir}: no train.csv or val.csv (not a training run folder)")
    tasks = list(dict.fromkeys(r["task"] for r in val))
    clean = "clean" in tasks
    fig = Figure(figsize=(13 if clean else 9.5, 3.6), dpi=100)
    axes = fig.subplots(1, 3 if clean else 2)
    ax_loss, ax_gain = axes[0], axes[1]
    if train:
        steps = np.array([float(r["step"]) for r in train])
        k = max(1, len(train) // 20)
        for column, colour, label in (("loss", "C0", "loss"), ("l1", "C1", "L1 term")):
            if column not in train[0] or (column == "l1" and all(r["l1"] == r["loss"] for r in train)):
                continue
            values = np.array([float(r[column]) for r in train])
            if (values <= 0).any():  # e.g. the PSNR loss (minus dB): the L1 term is always logged
                continue
            ax_loss.plot(steps, values, color=colour, lw=0.6, alpha=0.35)
            smooth = np.convolve(values, np.ones(k) / k, mode="valid") if k > 1 else values
            ax_loss.plot(steps[k - 1:], smooth, color=colour, lw=1.5,
                         label=label + (f" (mean of {k})" if k > 1 else ""))
        ax_loss.set_yscale("log")
        ax_loss.legend(fontsize=8)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    for i, task in enumerate(t for t in tasks if t != "clean"):
        rows = [r for r in val if r["task"] == task]
        ax_gain.plot([float(r["step"]) for r in rows],
                     [float(r["psnr"]) - float(r["input_psnr"]) for r in rows],
                     color=task_colour(task, i), marker=".", label=task)
    ax_gain.axhline(0, color="0.3", lw=0.8, ls="--")
    ax_gain.set_xlabel("step")
    ax_gain.set_ylabel("validation gain (dB): restored − input")
    if len(tasks) > clean:
        ax_gain.legend(fontsize=7, ncol=2)
    if clean:
        ax_clean = axes[2]
        rows = [r for r in val if r["task"] == "clean"]
        ax_clean.plot([float(r["step"]) for r in rows], [float(r["psnr"]) for r in rows],
                      color=task_colour("clean"), marker=".", label="restore(clean) vs clean")
        ax_clean.axhline(CLEAN_FIDELITY_DB, color="C3", lw=0.8, ls="--",
                         label=f"{CLEAN_FIDELITY_DB:g} dB")
        ax_clean.set_xlabel("step")
        ax_clean.set_ylabel("clean-input fidelity (dB)")
        ax_clean.legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
        for i, start in enumerate(stage_starts):
            ax.axvline(start, color="0.5", lw=0.8, ls=":")
            ax.annotate(f"stage {i + 2}", (start, 1), xycoords=("data", "axes fraction"), xytext=(2, -10),
                        textcoords="offset points", fontsize=7, color="0.4")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def _window_sums(values: np.ndarray, size: int, ys: list[int], xs: list[int]) -> np.ndarray:
    integral = np.pad(values.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    y, x = np.array(ys)[:, None], np.array(xs)[None, :]
    return integral[y + size, x + size] - integral[y, x + size] - integral[y + size, x] + integral[y, x]


def crop_window(degraded: np.ndarray, clean: np.ndarray, size: int = CROP) -> tuple[slice, slice]:
    """The ``size``-pixel window (on a stride of size/4) with the most to show: the largest
    product of the target's detail (gradient energy) and the input's relative difference
    from the target (|input − target| / (target + 0.05)), both summed over the window. The
    relative difference lets a dark photo show its detail rather than its brightest flat
    wall; for a clean input, the most detail alone decides."""
    h, w = clean.shape[:2]
    size = min(size, h, w)
    stride = max(1, size // 4)
    ys = sorted(set(range(0, h - size + 1, stride)) | {h - size})
    xs = sorted(set(range(0, w - size + 1, stride)) | {w - size})
    g = clean.astype(np.float32).mean(axis=2)
    detail = np.zeros_like(g)
    detail[:-1, :-1] = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1]
    score = _window_sums(detail, size, ys, xs)
    clean = clean.astype(np.float32)
    diff = (np.abs(degraded.astype(np.float32) - clean) / (clean + 0.05)).mean(axis=2)
    if diff.any():
        score = score * _window_sums(diff, size, ys, xs)
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    return slice(ys[i], ys[i] + size), slice(xs[j], xs[j] + size)


def crops_figure(rows: list[tuple[str, object, object]], methods: list, out: str | Path,
                 title: str = "", size: int = CROP) -> Path:
    """Before/after crops: ``rows`` holds ``(label, task_set, sample)``; each of ``methods``
    (evaluation methods, e.g. :class:`~expertir.evaluation.ModelMethod`) restores every
    sample. Columns: input | methods | target."""
    from matplotlib.figure import Figure

    if not rows:
        raise ExpertirError("no test image to show: none of the figure's sets was found")
    cols = 2 + len(methods)
    # about one screen pixel per image pixel: the crops are shown as they are
    fig = Figure(figsize=(size / 100 * 1.12 * cols + 0.3, size / 100 * 1.42 * len(rows) + (0.25 if title else 0)),
                 dpi=100, layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), cols, squeeze=False))
    for r, (label, task_set, sample) in enumerate(rows):
        window = crop_window(sample.degraded, sample.clean, size)
        panels = [("input", sample.degraded, psnr(sample.degraded, sample.clean))]
        for m in methods:
            out_img = m.restore(sample, task_set)
            panels.append((m.name, out_img, psnr(out_img, sample.clean)))
        panels.append(("target", sample.clean, None))
        for c, (name, img, db) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(np.clip(img[window], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            text = name if db is None else f"{name}\n{'∞' if np.isinf(db) else f'{db:.2f}'} dB"
            ax.set_title(text, fontsize=6.5)
            if c == 0:
                ax.set_ylabel(f"{label}\n{sample.name}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, out, max_bytes=MAX_FIGURE_BYTES)
