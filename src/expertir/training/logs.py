"""Run logs: CSV files, TensorBoard scalars, a PNG grid of validation
restorations and a PNG of the training curves.

``train.csv`` has one row per logged step (step, lr, loss, every loss term, images/s);
``val.csv`` one row per (step, task) with the restored and the input PSNR. On resume, rows
after the resumed step are dropped so the files read as one uninterrupted run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from expertir.imageio import save_rgb

VAL_FIELDS = ["step", "task", "psnr", "input_psnr"]


def _truncate_csv(path: Path, after_step: int) -> None:
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= after_step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


def read_csv(path: str | Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def run_config(run_dir: str | Path) -> dict:
    """The resolved config a run folder keeps (``config.yaml``), or {} if it has none."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def earlier_stage(run_dir: str | Path) -> Path | None:
    """The run folder that ``run_dir`` continues — the run whose ``final.safetensors`` its
    ``train.init`` names (a later stage of a recipe in stages) — or None. A relative
    ``train.init`` is relative to where the training ran, so it is also looked up from
    each parent of the run folder."""
    init = run_config(run_dir).get("train", {}).get("init")
    if not init or Path(init).name != "final.safetensors":
        return None
    init = Path(init)
    places = [init] if init.is_absolute() else [init, *(parent / init for parent in Path(run_dir).resolve().parents)]
    return next((p.parent for p in places if (p.parent / "train.csv").is_file()), None)


def stage_folders(run_dir: str | Path) -> list[Path]:
    """``run_dir`` and the runs it continues (:func:`earlier_stage`), earliest first."""
    folders = [Path(run_dir)]
    while (before := earlier_stage(folders[0])) is not None and before.resolve() not in \
            {f.resolve() for f in folders}:
        folders.insert(0, before)
    return folders


def stage_logs(run_dir: str | Path) -> tuple[list[dict], list[dict], list[int]]:
    """``train.csv`` and ``val.csv`` rows of ``run_dir`` and the runs it continues, as one
    run: a later stage's steps are counted on from the planned end (``train.steps``) of the
    one before. Also the steps where each later stage begins."""
    train, val, starts, offset = [], [], [], 0
    for i, folder in enumerate(stage_folders(run_dir)):
        if i:
            starts.append(offset)
        for name, rows in (("train.csv", train), ("val.csv", val)):
            if (folder / name).is_file():
                rows += [{**r, "step": str(int(float(r["step"])) + offset)} for r in read_csv(folder / name)]
        steps = run_config(folder).get("train", {}).get("steps")
        offset = offset + int(steps) if steps else max((int(r["step"]) for r in train), default=offset)
    return train, val, starts


class RunLogger:
    """Writes the logs of one run (main process only)."""

    def __init__(self, run_dir: Path, start_step: int = 0, tensorboard: bool = True):
        self.dir = run_dir
        self.train_csv, self.val_csv = run_dir / "train.csv", run_dir / "val.csv"
        for path in (self.train_csv, self.val_csv):
            _truncate_csv(path, start_step)
        self.fields: list[str] | None = None
        if self.train_csv.is_file():
            with self.train_csv.open(newline="") as f:
                self.fields = next(csv.reader(f), None)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)

    def log_train(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values}
        if self.fields is None:
            self.fields = list(row)
            with self.train_csv.open("w", newline="") as f:
                csv.writer(f).writerow(self.fields)
        with self.train_csv.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for name, value in values.items():
                self.tb.add_scalar(f"train/{name}", value, step)

    def log_val(self, step: int, results: dict[str, tuple[float, float]]) -> None:
        new = not self.val_csv.is_file()
        with self.val_csv.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(VAL_FIELDS)
            for task, (psnr, input_psnr) in results.items():
                writer.writerow([step, task, f"{psnr:.4f}", f"{input_psnr:.4f}"])
                if self.tb is not None:
                    self.tb.add_scalar(f"val_psnr/{task}", psnr, step)
        if self.tb is not None and results:
            self.tb.add_scalar("val_psnr/mean", float(np.mean([r[0] for r in results.values()])), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def save_grid(path: Path, rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], gap: int = 4) -> None:
    """A PNG with one row per sample: degraded | restored | clean (each 3×H×W in [0, 1])."""
    lines = []
    for images in rows:
        tiles = [t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() for t in images]
        h = tiles[0].shape[0]
        spacer = np.ones((h, gap, 3), np.float32)
        line = tiles[0]
        for tile in tiles[1:]:
            line = np.concatenate([line, spacer, tile], axis=1)
        lines.append(line)
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, gap), (0, width - line.shape[1]), (0, 0)), constant_values=1.0) for line in lines]
    save_rgb(path, np.concatenate(lines, axis=0)[:-gap])


def plot_curves(run_dir: Path, path: Path | None = None, title: str = "") -> Path:
    """Training loss (raw and smoothed) and validation PSNR per task (dashed: the input's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = path or run_dir / "curves.png"
    train = read_csv(run_dir / "train.csv") if (run_dir / "train.csv").is_file() else []
    val = read_csv(run_dir / "val.csv") if (run_dir / "val.csv").is_file() else []
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
    if train:
        steps = np.array([float(r["step"]) for r in train])
        column = "loss" if all(float(r["loss"]) > 0 for r in train) else "l1"  # log scale: L1 if the loss is not positive
        loss = np.array([float(r[column]) for r in train])
        ax_loss.plot(steps, loss, color="0.75", lw=0.8, label="loss" if column == "loss" else "L1 term")
        k = max(1, len(loss) // 20)
        if k > 1:
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax_loss.plot(steps[k - 1:], smooth, color="C0", lw=1.5, label=f"mean of {k}")
        ax_loss.set_yscale("log")
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel("training loss")
        ax_loss.legend(fontsize=8)
    tasks = sorted({r["task"] for r in val}, key=lambda t: [r["task"] for r in val].index(t))
    for i, task in enumerate(tasks):
        rows = [r for r in val if r["task"] == task]
        steps = [float(r["step"]) for r in rows]
        ax_val.plot(steps, [float(r["psnr"]) for r in rows], color=f"C{i}", marker=".", label=task)
        ax_val.axhline(float(rows[0]["input_psnr"]), color=f"C{i}", ls="--", lw=0.8)
    if tasks:
        ax_val.set_xlabel("step")
        ax_val.set_ylabel("validation PSNR (dB); dashed: input")
        ax_val.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
