"""The evaluation loop: every method on every task set of a benchmark, PSNR/SSIM per image.

A *method* is anything with ``name``, ``description``, ``applies_to(task_set)`` and
``restore(sample, task_set) -> H×W×3 float32``: the classical baselines of
:mod:`expertir.evaluation.classical` and :class:`ModelMethod` (a restoration network) alike,
so learned and classical rows of a table come from the same code.

Each image is loaded once and restored by every method that applies to its task set;
besides its scores, every image records whether the method made it worse than its input
(:attr:`ImageScore.made_worse`: a restoration tool that damages photos is worse than none)
and its seam ratio (:func:`~expertir.metrics.seam_ratio`: edges added on the 16-px grid of
region-wise routing).
Metrics are :func:`expertir.metrics.psnr` / :func:`~expertir.metrics.ssim` (the PromptIR
protocol; the task sets already crop to a multiple of 16). The per-set score is the mean
over its images, as in the papers.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from expertir.metrics import protocol_line, psnr, seam_ratio, ssim


#: A clean input (identical to its target) counts as made worse when the output falls below
#: this PSNR against it: beyond about 40 dB a change is invisible.
CLEAN_VISIBLE_DB = 40.0


@dataclass
class ImageScore:
    name: str
    psnr: float
    ssim: float
    input_psnr: float = float("nan")  # of the degraded input; inf for a clean input
    seam: float = float("nan")  # seam ratio of the output against the input (1 = no seams)

    @property
    def made_worse(self) -> bool:
        """The output scores below the input (for a clean input: below
        :data:`CLEAN_VISIBLE_DB`)."""
        return self.psnr < min(self.input_psnr, CLEAN_VISIBLE_DB) if np.isinf(self.input_psnr) \
            else self.psnr < self.input_psnr


@dataclass
class SetScore:
    """One method on one task set: mean PSNR/SSIM over its images (``None`` if none ran)."""

    images: list[ImageScore] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def psnr(self) -> float | None:
        return float(np.mean([s.psnr for s in self.images])) if self.images else None

    @property
    def ssim(self) -> float | None:
        return float(np.mean([s.ssim for s in self.images])) if self.images else None

    @property
    def seam(self) -> float | None:
        """Mean :func:`~expertir.metrics.seam_ratio` over the images."""
        values = [s.seam for s in self.images if np.isfinite(s.seam)]
        return float(np.mean(values)) if values else None

    @property
    def made_worse(self) -> int:
        """How many images came out below their input (see :attr:`ImageScore.made_worse`)."""
        return sum(s.made_worse for s in self.images)


@dataclass
class Column:
    """A task set of the benchmark, as a table column."""

    key: str  # unique within the report
    task: str
    label: str
    sigma: float | None
    count: int  # images listed in the set
    errors: list[str] = field(default_factory=list)


@dataclass
class EvalReport:
    """Everything a table needs: columns, one row of scores per method, what was missing."""

    benchmark: str
    protocol: str
    columns: list[Column]
    methods: dict[str, str]  # name -> description, in row order
    scores: dict[str, dict[str, SetScore]]  # method -> column key -> score
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ModelMethod:
    """A restoration network as an evaluation method (whole image, or tiled with ``tile``).

    ``pretrained``: the :class:`~expertir.weights.Pretrained` it came from, if any (its
    file and metadata: what a model card or a training-curve lookup needs);
    ``exposure_guard``, ``self_ensemble``: as :func:`expertir.inference.restore` (the
    defaults are what users get)."""

    def __init__(self, name: str, model, description: str = "", tile: int | None = None,
                 device=None, pretrained=None, exposure_guard: bool = True, self_ensemble: int = 1):
        self.name = name
        self.model = model
        self.description = description or name
        self.tile = tile
        self.device = device
        self.pretrained = pretrained
        self.exposure_guard = exposure_guard
        self.self_ensemble = self_ensemble

    def applies_to(self, task_set) -> bool:
        return True  # all-in-one: one network for every task, no label

    def restore(self, sample, task_set) -> np.ndarray:
        from expertir.inference import restore

        return restore(self.model, sample.degraded, tile=self.tile, device=self.device,
                       exposure_guard=self.exposure_guard, self_ensemble=self.self_ensemble)


def column_label(task_set) -> str:
    """Header of a task set's column: the set name (for denoising it carries σ), prefixed by
    the task id when the two differ (``derain: Rain100L``)."""
    if task_set.sigma is not None or task_set.task == task_set.name:
        return task_set.name
    return f"{task_set.task}: {task_set.name}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "set"


def new_report(benchmark, methods, y_channel: bool = False) -> EvalReport:
    """An empty report for ``benchmark`` (a :class:`~expertir.data.benchmarks.Benchmark`)."""
    columns, seen = [], set()
    for ts in benchmark.tasks:
        key, n = _safe(ts.name), 2
        while key in seen:
            key, n = f"{_safe(ts.name)}_{n}", n + 1
        seen.add(key)
        columns.append(Column(key, ts.task, column_label(ts), ts.sigma, len(ts)))
    return EvalReport(benchmark=benchmark.spec, protocol=protocol_line(y_channel), columns=columns,
                      methods={m.name: m.description for m in methods},
                      scores={m.name: {} for m in methods}, missing=list(benchmark.missing))


def evaluate(methods: list, benchmark, y_channel: bool = False, save_images: str | Path | None = None,
             first: list[str] | None = None, on_set_done=None, progress: bool = True) -> EvalReport:
    """Run every method on every task set of ``benchmark`` and score it.

    ``first`` lists task ids to evaluate before the others (the table order is unchanged).
    ``save_images``: write each restored image to ``DIR/<method>/<set>/<name>.png``.
    ``on_set_done(report)`` is called after each task set (e.g. to save partial tables).
    """
    from tqdm import tqdm

    from expertir.imageio import save_rgb

    report = new_report(benchmark, methods, y_channel)
    order = sorted(zip(benchmark.tasks, report.columns),
                   key=lambda pair: 0 if first and pair[0].task in first else 1)
    for ts, col in order:
        active = [m for m in methods if m.applies_to(ts)]
        if not active:
            continue
        for m in active:
            report.scores[m.name][col.key] = SetScore()
        bar = tqdm(total=len(ts), desc=f"{col.label}", unit="img", disable=not progress,
                   dynamic_ncols=True)
        for sample in ts:
            input_psnr = psnr(sample.degraded, sample.clean, y_channel=y_channel)
            for m in active:
                start = time.perf_counter()
                restored = m.restore(sample, ts)
                score = report.scores[m.name][col.key]
                score.seconds += time.perf_counter() - start
                score.images.append(ImageScore(sample.name,
                                               psnr(restored, sample.clean, y_channel=y_channel),
                                               ssim(restored, sample.clean, y_channel=y_channel),
                                               input_psnr, seam_ratio(restored, sample.degraded)))
                if save_images:
                    save_rgb(Path(save_images) / _safe(m.name) / col.key / f"{sample.name}.png",
                             restored)
            bar.update(1)
        bar.close()
        col.errors = list(ts.errors)
        if on_set_done is not None:
            on_set_done(report)
    return report
