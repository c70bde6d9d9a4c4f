"""Training data: task-balanced patches with their task label (ARCHITECTURE §6).

:class:`TrainDataset` draws, for every index, a task (by configurable ratios), an image of
that task, a ``patch_size`` crop at the same place in the degraded and clean image, and one
of the 8 dihedral transforms (identity included). Each item is
``{"degraded": 3×P×P float tensor, "clean": 3×P×P, "task": int}`` where ``task`` is the
index in :data:`~expertir.data.tasks.TASK_IDS` — for the training losses only; the model
never receives it at test time.

Balance is by ratios, not by repeating file lists: each epoch, the ``length`` indices get
task labels in exact proportion to the ratios (largest-remainder rounding), in an order
shuffled from ``(seed, epoch)``. Everything an item draws comes from a generator seeded by
``(seed, epoch, index)``, so an item is the same whichever worker or rank loads it:
batches are identical across runs for any ``num_workers``, and under DDP each rank reads a
disjoint share of the indices (:class:`torch.utils.data.DistributedSampler`).

A source is either real pairs (:class:`PairSource`) or clean images degraded on the fly
(:class:`SynthSource`, with :data:`~expertir.data.degradations.SYNTHESIZERS` by default).
:func:`build_train_dataset` finds the sources under a data root and says which it used.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler

from expertir.data import layouts
from expertir.data.degradations import SYNTHESIZERS
from expertir.data.tasks import TASK_IDS, task_label
from expertir.errors import ExpertirError
from expertir.imageio import load_rgb

#: Natural photos shipped inside scikit-image (offline), added to the clean training images.
#: ``camera`` is left out: it is the "cameraman" image of the Set12 test set.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")

ImageRef = Path | str | np.ndarray  # a file, or an image already in memory (H×W×3 float)


@dataclass
class PairSource:
    """Real (degraded, clean) training pairs."""

    pairs: list[tuple[ImageRef, ImageRef]]
    description: str = "pairs"

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass
class SynthSource:
    """Clean images, degraded on the fly by ``fn(img, seed)`` (default: the task's
    synthesizer). ``weights`` (one per image, any scale) makes some images likelier to be
    drawn; ``None`` draws them uniformly."""

    images: list[ImageRef]
    fn: Callable[[np.ndarray, int], np.ndarray] | None = None
    description: str = "synthesised"
    weights: list[float] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def pick(self, rng: np.random.Generator) -> ImageRef:
        if self.weights is None:
            return self.images[int(rng.integers(len(self.images)))]
        p = np.asarray(self.weights, np.float64)
        return self.images[int(rng.choice(len(self.images), p=p / p.sum()))]


def _as_source(value) -> PairSource | SynthSource:
    if isinstance(value, (PairSource, SynthSource)):
        return value
    items = list(value)
    if items and all(isinstance(v, (tuple, list)) and len(v) == 2 for v in items):
        return PairSource([tuple(v) for v in items])
    return SynthSource(items)


def _load(ref: ImageRef) -> np.ndarray:
    if isinstance(ref, np.ndarray):
        return ref
    return load_rgb(ref)


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th of the 8 dihedral transforms (0 = identity): rotate by ``k % 4`` quarter
    turns, then mirror left–right when ``k >= 4``."""
    out = np.rot90(img, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out


def _pad_to(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if h >= size and w >= size:
        return img
    ph, pw = max(0, size - h), max(0, size - w)
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")


def balanced_labels(ratios: dict[str, float], length: int) -> list[str]:
    """``length`` task ids in exact proportion to ``ratios`` (largest-remainder rounding)."""
    tasks = list(ratios)
    weights = np.array([ratios[t] for t in tasks], np.float64)
    quotas = weights / weights.sum() * length
    counts = np.floor(quotas).astype(int)
    for i in np.argsort(-(quotas - counts), kind="stable")[: length - counts.sum()]:
        counts[i] += 1
    return [t for t, c in zip(tasks, counts) for _ in range(c)]


class TrainDataset(Dataset):
    """Task-balanced training patches (see the module docstring).

    ``sources``: task id → :class:`PairSource`, :class:`SynthSource`, a list of
    ``(degraded, clean)`` pairs, or a list of clean images (paths or arrays).
    ``ratios``: task id → weight (normalised; default equal). ``length``: items per epoch.
    """

    def __init__(self, sources: dict[str, object], ratios: dict[str, float] | None = None,
                 patch_size: int = 128, length: int = 10_000, seed: int = 0):
        if not sources:
            raise ExpertirError("no training sources given")
        self.sources = {task: _as_source(src) for task, src in sources.items()}
        for task, src in self.sources.items():
            task_label(task)  # validates the id
            if len(src) == 0:
                raise ExpertirError(f"training source for {task} is empty")
        ratios = dict(ratios) if ratios else {t: 1.0 for t in self.sources}
        unknown = set(ratios) - set(self.sources)
        if unknown:
            raise ExpertirError(f"ratios given for tasks without a source: {sorted(unknown)}")
        if any(r < 0 for r in ratios.values()) or sum(ratios.values()) <= 0:
            raise ExpertirError(f"task ratios must be ≥ 0 and not all 0, got {ratios}")
        self.ratios = {t: float(r) for t, r in ratios.items() if r > 0}
        self.patch_size = int(patch_size)
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        self.report: list[str] = []
        self._schedule: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Draw a new task order and new crops/augmentations for ``epoch``."""
        self.epoch = int(epoch)

    def task_schedule(self) -> np.ndarray:
        """Integer task label of every index in the current epoch."""
        if self._schedule is None or self._schedule[0] != self.epoch:
            labels = np.array([task_label(t) for t in balanced_labels(self.ratios, self.length)])
            np.random.default_rng([self.seed, self.epoch, 0xBA1]).shuffle(labels)
            self._schedule = (self.epoch, labels)
        return self._schedule[1]

    def _crop(self, rng: np.random.Generator, *images: np.ndarray) -> list[np.ndarray]:
        p = self.patch_size
        images = [_pad_to(im, p) for im in images]
        h, w = images[0].shape[:2]
        y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        return [im[y:y + p, x:x + p] for im in images]

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        label = int(self.task_schedule()[index])
        task = TASK_IDS[label]
        src = self.sources[task]
        k = int(rng.integers(8))
        if isinstance(src, PairSource):
            deg_ref, clean_ref = src.pairs[int(rng.integers(len(src)))]
            degraded, clean = _load(deg_ref), _load(clean_ref)
            if degraded.shape != clean.shape:
                raise ExpertirError(f"training pair sizes differ: {deg_ref} {degraded.shape[:2]} "
                                    f"vs {clean_ref} {clean.shape[:2]}")
            degraded, clean = (dihedral(im, k) for im in self._crop(rng, degraded, clean))
        else:
            clean = dihedral(self._crop(rng, _load(src.pick(rng)))[0], k)
            clean = np.ascontiguousarray(clean, dtype=np.float32)
            fn = src.fn or SYNTHESIZERS[task]
            degraded = fn(clean, int(rng.integers(2**31)))
        return {
            "degraded": torch.from_numpy(np.ascontiguousarray(degraded.transpose(2, 0, 1), np.float32)),
            "clean": torch.from_numpy(np.ascontiguousarray(clean.transpose(2, 0, 1), np.float32)),
            "task": label,
        }


def seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's global generators in each worker from torch's per-worker
    seed (itself fixed by the loader's seeded generator)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class TrainLoader(DataLoader):
    """A :class:`DataLoader` whose :meth:`set_epoch` reaches both the sampler and the
    dataset (call it before each epoch)."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def make_train_loader(dataset: TrainDataset, batch_size: int, num_workers: int = 0,
                      seed: int = 0, distributed: bool = False, drop_last: bool = True,
                      pin_memory: bool = False) -> TrainLoader:
    """A deterministic loader over ``dataset``.

    Items are already random per ``(seed, epoch, index)``, so indices are read in order:
    all of them on one process, or a disjoint ``rank::world_size`` share each under DDP
    (``distributed=True`` needs an initialised process group). Workers are seeded
    deterministically (:func:`seed_worker`); they are re-created each epoch so that
    :meth:`TrainLoader.set_epoch` reaches them.
    """
    if distributed:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise ExpertirError("distributed=True needs an initialised torch.distributed process group")
        sampler = DistributedSampler(dataset, shuffle=False, seed=seed, drop_last=drop_last)
    else:
        sampler = SequentialSampler(dataset)
    return TrainLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                       drop_last=drop_last, pin_memory=pin_memory, worker_init_fn=seed_worker,
                       generator=torch.Generator().manual_seed(seed), persistent_workers=False)


def skimage_photos() -> list[np.ndarray]:
    """The :data:`SKIMAGE_PHOTOS` as float32 H×W×3 in [0, 1] (left view of the stereo pair)."""
    import skimage.data

    out = []
    for name in SKIMAGE_PHOTOS:
        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img
        out.append(np.ascontiguousarray(img[..., :3], dtype=np.float32) / 255.0)
    return out


@dataclass
class _CleanPool:
    images: list[ImageRef] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    n_photos: int = 0  # the scikit-image colour photos, at the end of ``images``

    def weights(self, photo_share: float | None) -> list[float] | None:
        """Per-image weights giving the photos ``photo_share`` of the draws (None: uniform)."""
        n_files = len(self.images) - self.n_photos
        if photo_share is None or not self.n_photos or not n_files:
            return None
        if not 0.0 < photo_share < 1.0:
            raise ExpertirError(f"photo_share must be in (0, 1), got {photo_share}")
        return [(1.0 - photo_share) / n_files] * n_files + [photo_share / self.n_photos] * self.n_photos


def build_train_dataset(data_root: str | Path | None, tasks: Sequence[str],
                        ratios: dict[str, float] | None = None, patch_size: int = 128,
                        length: int = 10_000, seed: int = 0, layout: str = "auto",
                        use_skimage_photos: bool = True,
                        photo_share: float | None = None) -> TrainDataset:
    """Find training data under ``data_root`` for ``tasks``; say what was used.

    Clean images: the clean training folders of the layout (``denoise/BSD400``,
    ``Train/Denoise``, ``denoising/{BSD400,WaterlooED}``) plus the scikit-image photos.
    Denoising tasks add noise to them on the fly. Other tasks use real training pairs when
    the layout has them (``Train/Derain``, ``deraining/RainTrainL``, ``derain/*train*``…),
    otherwise their synthesizer on the clean images. Test sets (CBSD68, BSD68, Set12,
    McMaster, Rain100L/H, SOTS…) are never used: only training locations are searched, and
    any folder that is also a test location is refused. The lines in ``dataset.report``
    (also printed) say which source each task got.

    ``photo_share`` gives the colour scikit-image photos that share of the synthesised
    draws (default: uniform over all images). BSD400 is gray, so without it the colour
    tasks (rain, haze, colour noise…) would see colour in about 1 % of the patches.
    """
    root = Path(data_root) if data_root is not None else None
    test_dirs: set[Path] = set()
    if root is not None:
        test_dirs = {f.path.resolve() for fam in layouts.FAMILIES
                     for f in layouts.locate(root, fam, "test", layout)}
    pool = _CleanPool()
    if root is not None:
        for found in layouts.locate(root, "denoise", "train", layout):
            if found.path.resolve() in test_dirs:
                continue
            pool.images += found.clean
            pool.origin.append(f"{len(found.clean)} from {found.path}")
    if use_skimage_photos:
        photos = skimage_photos()
        pool.images += photos
        pool.n_photos = len(photos)
        share = "" if photo_share is None else f", drawn {photo_share:.0%} of the time"
        pool.origin.append(f"{len(photos)} scikit-image photos ({', '.join(SKIMAGE_PHOTOS)}){share}")
    if not pool.images:
        raise ExpertirError(f"no clean training images under {root} (expected "
                            f"{'; '.join(layouts.expected('denoise', 'train', layout))})")
    clean_desc = " + ".join(pool.origin)
    sources: dict[str, object] = {}
    report = []
    for task in tasks:
        task_label(task)
        fam = layouts.family(task)
        pairs: list[tuple[Path, Path]] = []
        used = []
        if fam != "denoise" and root is not None:
            for found in layouts.locate(root, fam, "train", layout):
                if found.path.resolve() in test_dirs:
                    report.append(f"{task}: refused {found.path} (it is a test set)")
                    continue
                pairs += found.paired.pairs
                used.append(f"{len(found.paired.pairs)} pairs from {found.path}")
        if pairs:
            sources[task] = PairSource(pairs, "; ".join(used))
            report.append(f"{task}: real pairs — {'; '.join(used)}")
        else:
            sources[task] = SynthSource(list(pool.images), None, f"synthesised on {clean_desc}",
                                        pool.weights(photo_share))
            why = "" if fam == "denoise" else " (no training pairs found; test sets are never used)"
            report.append(f"{task}: synthesised on the fly{why} from {len(pool.images)} clean "
                          f"images: {clean_desc}")
    dataset = TrainDataset(sources, ratios, patch_size=patch_size, length=length, seed=seed)
    dataset.report = report
    for line in report:
        print(line)
    return dataset
