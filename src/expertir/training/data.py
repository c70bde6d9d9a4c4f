"""Training data for the trainer: a step-indexed sampler over
:class:`expertir.data.train.TrainDataset` and the dataset a config describes.

Exact resume and world-size independence come from one rule: the ``j``-th sample of the
global batch of step ``s`` is global draw ``p = s * G + j`` (G = per-device batch × devices
× accumulation), and draw ``p`` is item ``p mod L`` of epoch ``p // L`` of the dataset
(L = its length). A ``TrainDataset`` item is a pure function of (seed, epoch, index) — task,
image, crop, flip/rotation and degradation — so nothing depends on which process or worker
made it or on what came before: a resumed run re-creates step ``s`` without replaying, and
1 process or N processes see the same global batches.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Sampler

from expertir.data.degradations import SYNTHESIZERS
from expertir.data.train import (SynthSource, TrainDataset, TrainingData, _every_kth,
                                 build_train_dataset, synthesised_validation)
from expertir.errors import ExpertirError


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


def build_dataset(data_cfg: dict, seed: int) -> TrainingData:
    """The training data (dataset, validation batches, report) a config's ``data`` section
    describes."""
    tasks = list(data_cfg["tasks"])
    common = {"ratios": data_cfg["ratios"] or None, "patch_size": int(data_cfg["patch"]),
              "synth_context": int(data_cfg["synth_context"]), "length": int(data_cfg["length"]), "seed": seed}
    val_images, val_patch = int(data_cfg["val_images"]), int(data_cfg["val_patch"])
    if data_cfg["procedural"]:
        images = procedural_images(int(data_cfg["procedural"]), size=max(96, int(data_cfg["patch"]) + 32))
        images, held = _every_kth(images, val_images)
        desc = f"{len(images)} procedural images"
        dataset = TrainDataset({t: SynthSource(list(images), None, desc) for t in tasks}, **common)
        validation = {t: synthesised_validation(t, SYNTHESIZERS[t], held, val_patch)
                      for t in tasks} if held else {}
        return TrainingData(dataset, validation, [f"{t}: synthesised on the fly from {desc}" for t in tasks])
    if not data_cfg["root"]:
        raise ExpertirError("data.root is not set: name the data folder(s), e.g. data.root=PATH "
                            "or data.root=[PATH1,PATH2] (or data.procedural=N for generated images)")
    return build_train_dataset(data_cfg["root"], tasks, layout=data_cfg["layout"],
                               use_skimage_photos=bool(data_cfg["skimage_photos"]),
                               colour_share=data_cfg["colour_share"], rain=data_cfg["rain"],
                               rain_intensity=data_cfg["rain_intensity"],
                               rain_procedural_share=float(data_cfg["rain_procedural_share"]),
                               dark_scene_share=float(data_cfg["dark_scene_share"]),
                               val_images=val_images, val_patch=val_patch, **common)
