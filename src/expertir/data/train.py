"""Training data: task-balanced patches with their task label (docs/design.md, "Protocol").

:class:`TrainDataset` draws, for every index, a task (by configurable ratios), an image of
that task, a ``patch_size`` crop at the same place in the degraded and clean image, and one
of the 8 dihedral transforms (identity included). A synthesised degradation is applied to a
larger crop (``synth_context`` px) whose centre is then kept, so that blur kernels, haze
fields and rain streaks see real image content around the patch, as they do on a full
photo, rather than reflected borders. Each item is
``{"degraded": 3×P×P float tensor, "clean": 3×P×P, "task": int}`` where ``task`` is the
index in :data:`~expertir.data.tasks.TASK_IDS` — for the training losses only; the model
never receives it at test time.

Balance is by ratios, not by repeating file lists: each epoch, the ``length`` indices get
task labels in exact proportion to the ratios (largest-remainder rounding), in an order
shuffled from ``(seed, epoch)``. Everything an item draws comes from a generator seeded by
``(seed, epoch, index)``, so an item is the same whichever process or worker loads it.

A source is either real pairs (:class:`PairSource`) or clean images degraded on the fly
(:class:`SynthSource`, with :data:`~expertir.data.degradations.SYNTHESIZERS` by default).
:func:`build_train_dataset` finds the sources under one or more data roots, holds out the
validation images and says what it used (:class:`TrainingData`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from expertir.data import layouts
from expertir.data.degradations import SYNTHESIZERS, LayerRain, StreakLayers, dark_scene, is_gray, sub_seed
from expertir.data.tasks import TASK_IDS, task_label
from expertir.errors import ExpertirError, ImageReadError
from expertir.imageio import read_image

#: Natural photos shipped inside scikit-image (offline), optional extra colour images.
#: ``camera`` is left out: it is the "cameraman" image of the Set12 test set.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")

#: Validation inputs are degraded with seeds fixed by (task, image), not by the training seed.
VAL_SEED = 20250101

ImageRef = Path | str | np.ndarray  # a file, or an image already in memory (H×W×3 float)


def load_image(ref: ImageRef) -> np.ndarray:
    """An image reference as float32 H×W×3 in [0, 1] (arrays are returned as they are)."""
    return ref if isinstance(ref, np.ndarray) else read_image(ref).rgb


@functools.lru_cache(maxsize=None)
def _decoded(path: str) -> np.ndarray:
    return np.round(read_image(path).rgb * 255.0).astype(np.uint8)


def load_training_image(ref: ImageRef) -> np.ndarray:
    """Like :func:`load_image`, but files are decoded once per process and kept as 8-bit
    (decoding a PNG costs ~20 ms, far more than a patch's synthesis; the training images
    are 8-bit, so nothing is lost). Crop first, then :func:`to_float`."""
    return ref if isinstance(ref, np.ndarray) else _decoded(str(ref))


def to_float(img: np.ndarray) -> np.ndarray:
    """A crop of :func:`load_training_image` as float32 in [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return np.asarray(img, np.float32)


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
    drawn; ``None`` draws them uniformly. ``scene(img, seed)``, drawn for a ``scene_share``
    of the samples, changes the clean image itself (target included) before ``fn`` sees it
    (e.g. :func:`~expertir.data.degradations.dark_scene`)."""

    images: list[ImageRef]
    fn: Callable[[np.ndarray, int], np.ndarray] | None = None
    description: str = "synthesised"
    weights: list[float] | None = None
    scene: Callable[[np.ndarray, int], np.ndarray] | None = None
    scene_share: float = 0.0

    def __post_init__(self):
        self._p = None if self.weights is None else np.asarray(self.weights, np.float64) / sum(self.weights)

    def __len__(self) -> int:
        return len(self.images)

    def pick(self, rng: np.random.Generator) -> ImageRef:
        if self._p is None:
            return self.images[int(rng.integers(len(self.images)))]
        return self.images[int(rng.choice(len(self.images), p=self._p))]


def _as_source(value) -> PairSource | SynthSource:
    if isinstance(value, (PairSource, SynthSource)):
        return value
    items = list(value)
    if items and all(isinstance(v, (tuple, list)) and len(v) == 2 for v in items):
        return PairSource([tuple(v) for v in items])
    return SynthSource(items)


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
                 patch_size: int = 128, length: int = 10_000, seed: int = 0,
                 synth_context: int = 0):
        if not sources:
            raise ExpertirError("no training sources given")
        self.sources = {task: _as_source(src) for task, src in sources.items()}
        for task, src in self.sources.items():
            task_label(task)  # validates the id
            if len(src) == 0:
                raise ExpertirError(f"training source for {task} is empty")
        ratios = dict(ratios) if ratios else {t: 1.0 for t in self.sources}
        unknown = {t for t, r in ratios.items() if r > 0} - set(self.sources)
        if unknown:
            raise ExpertirError(f"ratios given for tasks without a source: {sorted(unknown)}")
        if any(r < 0 for r in ratios.values()) or sum(ratios.values()) <= 0:
            raise ExpertirError(f"task ratios must be ≥ 0 and not all 0, got {ratios}")
        self.ratios = {t: float(r) for t, r in ratios.items() if r > 0}
        self.patch_size = int(patch_size)
        self.synth_context = max(int(synth_context), self.patch_size)
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
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

    def _crop(self, rng: np.random.Generator, *images: np.ndarray, size: int | None = None) -> list[np.ndarray]:
        p = size or self.patch_size
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
            degraded, clean = load_training_image(deg_ref), load_training_image(clean_ref)
            if degraded.shape != clean.shape:
                raise ExpertirError(f"training pair sizes differ: {deg_ref} {degraded.shape[:2]} "
                                    f"vs {clean_ref} {clean.shape[:2]}")
            degraded, clean = (to_float(dihedral(im, k)) for im in self._crop(rng, degraded, clean))
        else:
            size = self.synth_context
            clean = to_float(dihedral(self._crop(rng, load_training_image(src.pick(rng)), size=size)[0], k))
            clean = np.ascontiguousarray(clean)
            if src.scene is not None and rng.random() < src.scene_share:
                clean = src.scene(clean, int(rng.integers(2**31)))
            fn = src.fn or SYNTHESIZERS[task]
            degraded = fn(clean, int(rng.integers(2**31)))
            if size > self.patch_size:
                top = (size - self.patch_size) // 2
                keep = np.s_[top:top + self.patch_size, top:top + self.patch_size]
                degraded, clean = degraded[keep], clean[keep]
        return {
            "degraded": torch.from_numpy(np.ascontiguousarray(degraded.transpose(2, 0, 1), np.float32)),
            "clean": torch.from_numpy(np.ascontiguousarray(clean.transpose(2, 0, 1), np.float32)),
            "task": label,
        }


def skimage_photos() -> list[np.ndarray]:
    """The :data:`SKIMAGE_PHOTOS` as float32 H×W×3 in [0, 1] (left view of the stereo pair)."""
    import skimage.data

    out = []
    for name in SKIMAGE_PHOTOS:
        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img
        out.append(np.ascontiguousarray(img[..., :3], dtype=np.float32) / 255.0)
    return out


# --------------------------------------------------------------------------- finding sources
@dataclass
class CleanPool:
    """Clean training images, gray and colour apart (gray ones get gray noise, and
    ``colour_share`` sets how often each kind is drawn)."""

    gray: list[ImageRef] = field(default_factory=list)
    colour: list[ImageRef] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.gray) + len(self.colour)

    def source(self, fn, share: float | None, description: str) -> SynthSource:
        """A source over the pool; colour images get ``share`` of the draws (``None``:
        every image equally likely; a kind that is absent gets no draws)."""
        images = list(self.gray) + list(self.colour)
        if share is None or not self.gray or not self.colour:
            return SynthSource(images, fn, description)
        if not 0.0 <= share <= 1.0:
            raise ExpertirError(f"colour_share must be in [0, 1], got {share}")
        weights = ([(1.0 - share) / len(self.gray)] * len(self.gray)
                   + [share / len(self.colour)] * len(self.colour))
        return SynthSource(images, fn, description, weights)

    def hold_out(self, count: int) -> "CleanPool":
        """Take ``count`` images out of each kind (spread evenly); returns them as a pool."""
        self.gray, gray = _every_kth(self.gray, count)
        self.colour, colour = _every_kth(self.colour, count)
        return CleanPool(gray, colour)


@dataclass
class FoundData:
    """What :func:`find_training_data` found under the data roots."""

    roots: list[Path]
    clean: CleanPool
    streaks: list[Path]  # folders of rain-streak layers
    pairs: dict[str, list[tuple[list[tuple[Path, Path]], Path]]]  # family -> [(pairs, folder)]
    refused: list[str]  # training folders that are also test sets
    problems: list[str]  # unmatched pair files and the like


def _kind_of(files: list[Path]) -> str:
    """``gray`` or ``colour``, by the first readable image of a set."""
    for path in files[:3]:
        try:
            return "gray" if is_gray(read_image(path).rgb) else "colour"
        except ImageReadError:
            continue
    return "colour"


def _same_size(pairs: list[tuple[Path, Path]]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """The pairs whose two files have the same size (read from the headers), and one line
    per pair left out."""
    from PIL import Image

    kept, problems = [], []
    for degraded, clean in pairs:
        try:
            with Image.open(degraded) as a, Image.open(clean) as b:
                sizes = a.size, b.size
        except OSError as exc:
            problems.append(f"{degraded}: unreadable training pair ({str(exc).splitlines()[0]}), skipped")
            continue
        if sizes[0] != sizes[1]:
            problems.append(f"{degraded}: size {sizes[0][0]}×{sizes[0][1]} differs from its target "
                            f"{clean} ({sizes[1][0]}×{sizes[1][1]}), skipped")
            continue
        kept.append((degraded, clean))
    return kept, problems


def as_roots(data_root) -> list[Path]:
    """One data root or several (a list), as paths."""
    if data_root is None:
        return []
    items = [data_root] if isinstance(data_root, (str, Path)) else list(data_root)
    return [Path(r) for r in items]


def find_training_data(data_root, layout: str = "auto", use_skimage_photos: bool = False) -> FoundData:
    """Every training source under the data root(s): clean images for synthesis (the
    denoising training sets such as BSD400 and every ``clean/<SET>`` folder), rain-streak
    layer folders (``rain-streaks/<SET>``) and real training pairs per task family.
    Test sets are never used: a training candidate that is also a test location is refused.
    """
    roots = as_roots(data_root)
    for root in roots:
        if not root.is_dir():
            raise ExpertirError(f"data root not found: {root}")
    test_dirs = {f.path.resolve() for root in roots for fam in layouts.FAMILIES
                 for f in layouts.locate(root, fam, "test", layout)}
    found = FoundData(roots, CleanPool(), [], {}, [], [])
    for root in roots:
        clean_sets = [(f.path, f.clean) for f in layouts.locate(root, "denoise", "train", layout)]
        clean_sets += layouts.clean_folders(root)
        for path, files in clean_sets:
            if not files:
                found.problems.append(f"{path}: empty folder (no images), skipped")
                continue
            if path.resolve() in test_dirs:
                found.refused.append(f"{path} (a test set)")
                continue
            kind = _kind_of(files)
            (found.clean.gray if kind == "gray" else found.clean.colour).extend(files)
            found.clean.origin.append(f"{len(files)} {kind} from {path}")
        for path, files in layouts.streak_folders(root):
            if files:
                found.streaks.append(path)
            else:
                found.problems.append(f"{path}: empty folder (no streak layers), skipped")
        for fam in layouts.FAMILIES:
            if fam == "denoise":
                continue
            for hit in layouts.locate(root, fam, "train", layout):
                if hit.path.resolve() in test_dirs:
                    found.refused.append(f"{hit.path} (a test set)")
                    continue
                pairs, mismatched = _same_size(hit.paired.pairs)
                found.pairs.setdefault(fam, []).append((pairs, hit.path))
                found.problems += hit.problems + mismatched
    if use_skimage_photos:
        photos = skimage_photos()
        found.clean.colour.extend(photos)
        found.clean.origin.append(f"{len(photos)} colour scikit-image photos ({', '.join(SKIMAGE_PHOTOS)})")
    return found


# --------------------------------------------------------------------------- validation
def _every_kth(items: list, count: int) -> tuple[list, list]:
    """(kept, held out): ``count`` items spread evenly through ``items``."""
    if count <= 0 or not items:
        return list(items), []
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


def _chw(images: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in images])


def validation_batch(task: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """``{"degraded", "clean": N×3×P×P, "task": N}`` from (degraded, clean) arrays, all
    centre-cropped to the smallest size among them."""
    size = min(min(d.shape[:2]) for d, _ in pairs)
    pairs = [(_centre(d, size), _centre(c, size)) for d, c in pairs]
    return {"degraded": _chw([d for d, _ in pairs]), "clean": _chw([c for _, c in pairs]),
            "task": torch.full((len(pairs),), task_label(task))}


def synthesised_validation(task: str, fn, cleans: list[ImageRef], patch: int) -> dict:
    """Validation batch of a synthesised task: centre crops degraded with seeds fixed by
    (task, image)."""
    crops = [_centre(load_image(c), patch) for c in cleans]
    return validation_batch(task, [(fn(c, sub_seed(VAL_SEED, task_label(task), i)), c)
                                   for i, c in enumerate(crops)])


# --------------------------------------------------------------------------- the dataset
@dataclass
class TrainingData:
    """A training dataset, its held-out validation batches (task → batch) and what was used."""

    dataset: TrainDataset
    validation: dict[str, dict]
    report: list[str]


def _share_for(colour_share, task: str) -> float | None:
    if colour_share is None or isinstance(colour_share, (int, float)):
        return None if colour_share is None else float(colour_share)
    value = colour_share.get(task, colour_share.get("default"))
    return None if value is None else float(value)


def build_train_dataset(data_root, tasks: Sequence[str], ratios: dict[str, float] | None = None,
                        patch_size: int = 128, length: int = 10_000, seed: int = 0,
                        synth_context: int = 0,
                        layout: str = "auto", use_skimage_photos: bool = False,
                        colour_share: float | dict | None = None, rain: str = "auto",
                        rain_intensity: Sequence[float] = (0.5, 1.0), rain_procedural_share: float = 0.0,
                        dark_scene_share: float = 0.0,
                        val_images: int = 0, val_patch: int = 128) -> TrainingData:
    """Find training data under ``data_root`` (one folder or a list) for ``tasks``.

    Each task uses real training pairs when the roots hold them (LOL training pairs for
    ``lowlight``, ``derain/*train*`` …), otherwise its synthesizer on the clean images;
    ``clean`` (an undegraded image, target itself) always uses the clean images. Rain is
    composited from real streak layers when a ``rain-streaks/<SET>`` folder is found
    (``rain="auto"`` or ``"layers"``; streak weight drawn from ``rain_intensity``, and a
    ``rain_procedural_share`` of the draws procedural instead), else drawn procedurally
    (``"procedural"``). ``dark_scene_share`` of the ``clean`` task's samples show a dark
    scene (:func:`~expertir.data.degradations.dark_scene`), also to be left alone.
    ``colour_share``: the share of draws given to colour images, one number for all tasks
    or a mapping task → share (key ``default`` for the rest); ``None`` draws every image
    equally. ``val_images`` clean images of each kind (and real pairs) are held out of
    training and returned as the validation batches.
    """
    if rain not in ("auto", "layers", "procedural"):
        raise ExpertirError(f"data.rain must be auto, layers or procedural, not {rain!r}")
    found = find_training_data(data_root, layout, use_skimage_photos)
    pool = found.clean
    where = ", ".join(map(str, found.roots)) or "no data root"
    if not len(pool):
        raise ExpertirError(f"no clean training images under {where} (expected "
                            f"{'; '.join(layouts.expected('denoise', 'train', layout))} or clean/<SET>/)")
    report = [f"refused {r}" for r in found.refused]
    rain_fn = None
    if "derain" in tasks and rain != "procedural":
        bank = StreakLayers(found.streaks)
        for line in bank.problems:
            report.append(f"warning: {line}")
        if len(bank):
            rain_fn = LayerRain(bank, rain_intensity, rain_procedural_share)
        elif rain == "layers":
            raise ExpertirError(f"data.rain=layers but no readable rain-streak layers under {where} "
                                f"(expected rain-streaks/<SET>/*.png)")
    held_pool = pool.hold_out(val_images)
    clean_desc = " + ".join(pool.origin)
    sources: dict[str, object] = {}
    validation: dict[str, dict] = {}
    for task in tasks:
        task_label(task)
        fam = layouts.family(task)
        pairs, used = [], []
        for found_pairs, folder in found.pairs.get(fam, []):
            pairs += found_pairs
            used.append(f"{len(found_pairs)} pairs from {folder}")
        if pairs:
            pairs, held = _every_kth(pairs, val_images)
            sources[task] = PairSource(pairs, "; ".join(used))
            report.append(f"{task}: real pairs — {'; '.join(used)}")
            if held:
                validation[task] = validation_batch(
                    task, [(_centre(load_image(d), val_patch), _centre(load_image(c), val_patch))
                           for d, c in held])
            continue
        fn = rain_fn if task == "derain" and rain_fn is not None else SYNTHESIZERS[task]
        share = _share_for(colour_share, task)
        sources[task] = pool.source(fn, share, f"synthesised on {clean_desc}")
        how = {"clean": "left undegraded (target = input)"}.get(task, "synthesised on the fly")
        if task == "clean" and dark_scene_share > 0:
            sources[task].scene, sources[task].scene_share = dark_scene, float(dark_scene_share)
            how += f", {dark_scene_share:.0%} of them dark scenes"
        if task == "derain":
            how += f" with {rain_fn!r}" if rain_fn is not None else " with procedural streaks"
        shares = "" if share is None else f", colour drawn {share:.0%}"
        report.append(f"{task}: {how} from {len(pool)} clean images{shares}: {clean_desc}")
        if val_images > 0:
            kind = held_pool.colour if (share is None or share >= 0.5) and held_pool.colour else held_pool.gray
            validation[task] = synthesised_validation(task, fn, kind or held_pool.colour, val_patch)
    dataset = TrainDataset(sources, ratios, patch_size=patch_size, length=length, seed=seed,
                           synth_context=synth_context)
    return TrainingData(dataset, validation, report + [f"warning: {p}" for p in found.problems])
