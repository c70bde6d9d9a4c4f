"""Training data for the trainer: a step-indexed sampler over :class:`expertir.data.train.TrainDataset`
and a held-out validation split (issue 6 §2, §4, §5).

Exact resume and world-size independence come from one rule: the ``j``-th sample of the
global batch of step ``s`` is global draw ``p = s * G + j`` (G = per-device batch × devices
× accumulation), and draw ``p`` is item ``p mod L`` of epoch ``p // L`` of the dataset
(L = its length). A ``TrainDataset`` item is a pure function of (seed, epoch, index) — task,
image, crop, flip/rotation and degradation — so nothing depends on which process or worker
made it or on what came before: a resumed run re-creates step ``s`` without replaying, and
1 process or N processes see the same global batches.

Validation (:func:`hold_out`): a few clean images (and real pairs) are taken out of the
training sources before training; each task's validation input is the centre crop of each
held-out image, degraded with a seed fixed by (task, image).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from expertir.data.degradations import SYNTHESIZERS, sub_seed
from expertir.data.tasks import TASK_IDS, task_label
from expertir.data.train import PairSource, SynthSource, TrainDataset, build_train_dataset
from expertir.errors import ExpertirError
from expertir.imageio import load_rgb

VAL_SEED = 20250101  # fixed: validation inputs do not change with the training seed


class StepSampler(Sampler):
    """Yields ``(epoch, index)`` of this process's share of steps ``start_step .. steps - 1``:
    per step, ``accum`` micro-batches of ``batch_size``. Micro-batch ``m`` of rank ``r``
    holds the global slots ``(m * world + r) * batch_size + k``, k < batch_size."""

    def __init__(self, length: int, steps: int, batch_size: int, world_size: int = 1,
                 rank: int = 0, accum: int = 1, start_step: int = 0):
        self.length, self.steps = length, steps
        self.batch_size, self.world_size, self.rank, self.accum = batch_size, world_size, rank, accum
        self.start_step = start_step
        self.global_batch = batch_size * world_size * accum

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            for micro in range(self.accum):
                first = step * self.global_batch + (micro * self.world_size + self.rank) * self.batch_size
                for position in range(first, first + self.batch_size):
                    yield divmod(position, self.length)

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accum * self.batch_size


class EpochIndexed(Dataset):
    """``dataset[(epoch, index)]``: item ``index`` of ``epoch`` of a :class:`TrainDataset`
    (each loader worker holds its own copy, so setting the epoch per item is safe)."""

    def __init__(self, dataset: TrainDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        if self.dataset.epoch != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def procedural_images(count: int, size: int = 160, seed: int = 0) -> list[np.ndarray]:
    """``count`` generated clean images (float32 H×W×3): smooth colour fields with
    sharp-edged shapes, so every degradation is visible; for tests and smoke runs."""
    import cv2

    images = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        img = cv2.resize(rng.random((6, 6, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        for _ in range(4):
            colour = rng.random(3).tolist()
            x0, y0 = (int(v) for v in rng.integers(0, size, 2))
            if rng.random() < 0.5:
                x1, y1 = (int(v) for v in rng.integers(8, size // 2, 2))
                cv2.rectangle(img, (x0, y0), (x0 + x1, y0 + y1), colour, -1)
            else:
                cv2.circle(img, (x0, y0), int(rng.integers(5, size // 4)), colour, -1)
        images.append((np.clip(img, 0, 1) * 255).round().astype(np.float32) / 255)
    return images


def build_dataset(data_cfg: dict, seed: int) -> TrainDataset:
    """The training dataset a config's ``data`` section describes."""
    tasks = list(data_cfg["tasks"])
    common = {"ratios": data_cfg["ratios"] or None, "patch_size": int(data_cfg["patch"]),
              "length": int(data_cfg["length"]), "seed": seed}
    if data_cfg["procedural"]:
        images = procedural_images(int(data_cfg["procedural"]), size=max(96, int(data_cfg["patch"]) + 32))
        desc = f"{len(images)} procedural images"
        dataset = TrainDataset({t: SynthSource(list(images), None, desc) for t in tasks}, **common)
        dataset.report = [f"{t}: synthesised on the fly from {desc}" for t in tasks]
        return dataset
    share = data_cfg["photo_share"]
    return build_train_dataset(data_cfg["root"], tasks, layout=data_cfg["layout"],
                               use_skimage_photos=bool(data_cfg["skimage_photos"]),
                               photo_share=None if share is None else float(share), **common)


def _every_kth(items: list, count: int) -> tuple[list, list]:
    """(kept, held out): ``count`` items spread evenly through ``items``."""
    if count <= 0 or not items:
        return items, []
    if count >= len(items):
        raise ExpertirError(f"data.val_images={count} leaves no training image (of {len(items)})")
    stride = len(items) // count
    held = set(range(stride - 1, stride * count, stride))
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def _centre(img: np.ndarray, patch: int) -> np.ndarray:
    h, w = img.shape[:2]
    p = min(patch, h, w) // 16 * 16
    top, left = (h - p) // 2, (w - p) // 2
    return np.ascontiguousarray(img[top:top + p, left:left + p], dtype=np.float32)


def _load(ref) -> np.ndarray:
    return ref if isinstance(ref, np.ndarray) else load_rgb(ref)


def _chw(images: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in images])


def hold_out(dataset: TrainDataset, count: int, patch: int) -> dict[str, dict]:
    """Remove ``count`` clean images (or real pairs) from every task's source and return
    the validation batches ``{task: {"degraded", "clean": N×3×P×P, "task": N}}``."""
    val: dict[str, dict] = {}
    if count <= 0:
        return val
    for task, src in dataset.sources.items():
        if isinstance(src, PairSource):
            src.pairs, held = _every_kth(src.pairs, count)
            pairs = [(_centre(_load(d), patch), _centre(_load(c), patch)) for d, c in held]
        else:
            if src.weights is None:
                src.images, held = _every_kth(src.images, count)
            else:
                kept, held_pairs = _every_kth(list(zip(src.images, src.weights)), count)
                src.images, src.weights = [im for im, _ in kept], [w for _, w in kept]
                held = [im for im, _ in held_pairs]
            fn = src.fn or SYNTHESIZERS[task]
            cleans = [_centre(_load(c), patch) for c in held]
            pairs = [(fn(c, sub_seed(VAL_SEED, TASK_IDS.index(task), i)), c) for i, c in enumerate(cleans)]
        size = min(min(d.shape[:2]) for d, _ in pairs)
        pairs = [(_centre(d, size), _centre(c, size)) for d, c in pairs]
        val[task] = {"degraded": _chw([d for d, _ in pairs]), "clean": _chw([c for _, c in pairs]),
                     "task": torch.full((len(pairs),), task_label(task))}
    return val
