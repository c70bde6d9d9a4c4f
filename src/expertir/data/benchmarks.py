"""Test benchmarks: the three-task and five-task settings, mixed sets and any folder
(docs/design.md, "Protocol").

:func:`load_benchmark` turns a *spec* into a :class:`Benchmark`, a list of
:class:`TaskSet` (one per task) plus :attr:`Benchmark.missing`, one line per part that
could not be found, naming the paths that were expected. Specs:

``aio3`` / ``aio5``
    the standard settings (:data:`expertir.data.tasks.BENCHMARKS`) found under the data
    root in the ``promptir``, ``moce`` or ``bytask`` layout (see :mod:`.layouts`).
``derain``, ``denoise_25``, … (any task id)
    that one task of the standard settings.
``mixed`` / ``mixed:DIR`` / ``synthetic:DIR``
    a folder written by ``expertir data make-mixed`` / ``make-synthetic`` (read through its
    ``manifest.json``; ``mixed`` alone looks in the data root and in ``ROOT/mixed``).
``paired:DIR``
    any folder with input/target-like sub-folders (each such folder below DIR is a set).
``denoise:DIR@25`` (or ``@15,25,50``)
    a folder of clean images at the given noise levels.
``clean:DIR``
    a folder of clean images given as they are (task ``clean``): the clean-fidelity
    benchmark, PSNR/SSIM of restore(clean) against clean.

Relative DIRs are looked up in the current directory, then under the data root.

Protocol (PromptIR's test loaders): every image is centre-cropped to a multiple of 16
(``crop=16``; ``crop=None`` keeps the full size); gray images are read as 3-channel
replicated gray. Denoising inputs get Gaussian noise on the 0–255 scale, clipped and
truncated to uint8 (:func:`~expertir.data.degradations.protocol_noise`). PromptIR seeds
NumPy's global generator once with ``np.random.seed(0)`` and then draws the images in
``os.listdir`` order, σ=15, then 25, then 50 on the same stream — so its noise depends on
the file-system order. Here image *i* (in sorted name order) uses
``np.random.RandomState(0 + i)``: the same draw every run and for any subset, and image 0
gets exactly PromptIR's first draw. On a gray image one noise plane is drawn and
replicated, so the noisy image stays gray (the usual gray-denoising protocol).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from expertir.data import layouts
from expertir.data.degradations import is_gray, protocol_noise
from expertir.data.tasks import BENCHMARKS, NOISE_SIGMA, TASK_IDS, TEST_SET_NAMES
from expertir.errors import ExpertirError, ImageReadError
from expertir.imageio import list_images, read_image
from expertir.metrics import crop_to_multiple

MANIFEST = "manifest.json"


@dataclass
class Sample:
    """One test image: ``degraded`` and ``clean`` are float32 H×W×3 in [0, 1]."""

    name: str
    degraded: np.ndarray
    clean: np.ndarray
    gray: bool = False  # the clean image was gray (three equal channels)


@dataclass
class TaskSet:
    """The test images of one task.

    ``pairs`` holds ``(degraded_path, clean_path)``; with ``sigma`` set, ``degraded_path``
    is ``None`` and the input is made by adding protocol noise to the clean image.
    Iterating yields :class:`Sample`; a file that cannot be read is skipped, its reason
    appended to ``errors`` and printed to stderr. ``unmatched`` lists files found on disk
    that could not be paired.
    """

    task: str
    name: str
    pairs: list[tuple[Path | None, Path]]
    sigma: float | None = None
    seed: int = 0
    crop: int | None = 16
    path: Path | None = None
    unmatched: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> Sample:
        """Read sample ``index``; raises :class:`ImageReadError` for an unreadable file."""
        degraded_path, clean_path = self.pairs[index]
        clean_img = read_image(clean_path)
        clean = self._crop(clean_img.rgb)
        gray = clean_img.gray or is_gray(clean)
        if degraded_path is None:
            degraded = protocol_noise(clean, self.sigma, self.seed + index)
        else:
            degraded = self._crop(read_image(degraded_path).rgb)
            if degraded.shape != clean.shape:
                raise ImageReadError(degraded_path, f"size {degraded.shape[1]}×{degraded.shape[0]}"
                                     f" differs from its target {clean_path} "
                                     f"({clean.shape[1]}×{clean.shape[0]})")
        name = (degraded_path or clean_path).stem
        return Sample(name, degraded.astype(np.float32), clean.astype(np.float32), gray)

    def _crop(self, img: np.ndarray) -> np.ndarray:
        return crop_to_multiple(img, self.crop) if self.crop and min(img.shape[:2]) >= self.crop else img

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self.pairs)):
            try:
                yield self.load(i)
            except ImageReadError as exc:
                self.errors.append(str(exc))
                print(f"expertir: warning: skipped {exc}", file=sys.stderr)

    def verify(self) -> list[str]:
        """Try to read every file; record and return the unreadable ones (``errors``)."""
        errors = []
        for i in range(len(self.pairs)):
            try:
                self.load(i)
            except ImageReadError as exc:
                errors.append(str(exc))
        self.errors = errors
        return errors


@dataclass
class Benchmark:
    """Task sets of one spec, and one line per part that was expected but not found."""

    spec: str
    tasks: list[TaskSet]
    missing: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[TaskSet]:
        return iter(self.tasks)


def _denoise_sets(files: list[Path], sigmas: list[float], set_name: str, path: Path | None,
                  crop: int | None) -> list[TaskSet]:
    sets = []
    for sigma in sigmas:
        task = f"denoise_{sigma:g}"
        sets.append(TaskSet(task, f"{set_name} σ={sigma:g}", [(None, f) for f in files],
                            sigma=float(sigma), seed=0, crop=crop, path=path))
    return sets


def _paired_set(task: str, name: str, files: layouts.PairedFiles, path: Path,
                crop: int | None) -> TaskSet:
    return TaskSet(task, name, list(files.pairs), crop=crop, path=path,
                   unmatched=files.problems())


def _set_name(path: Path) -> str:
    """A readable set name: the folder, or its parent for generic folder names."""
    generic = {"original_png", "test", "outdoor", "indoor"}
    return f"{path.parent.name}/{path.name}" if path.name.lower() in generic else path.name


def _standard(tasks: list[str], root: Path, layout: str, crop: int | None, spec: str) -> Benchmark:
    bench = Benchmark(spec, [])
    if layout == "paired":
        raise ExpertirError("the paired layout has no task names: use the spec 'paired:DIR'")
    for task in tasks:
        fam = layouts.family(task)
        found = layouts.locate(root, fam, "test", layout)
        if not found:
            where = "; ".join(layouts.expected(fam, "test", layout))
            bench.missing.append(f"{task}: no {TEST_SET_NAMES[task]} test set under {root} "
                                 f"(expected {where})")
            continue
        hit = found[0]
        set_name = _set_name(hit.path)
        if fam == "denoise":
            bench.tasks += _denoise_sets(hit.clean, [NOISE_SIGMA[task]], set_name, hit.path, crop)
        else:
            bench.tasks.append(_paired_set(task, set_name, hit.paired, hit.path, crop))
    return bench


def _find_dir(text: str, root: Path) -> Path:
    candidates = [Path(text).expanduser(), Path(root) / text]
    for c in candidates:
        if c.is_dir():
            return c
    raise ExpertirError(f"folder not found: {text} (looked in {', '.join(map(str, candidates))})")


def _from_manifest(folder: Path, crop: int | None, spec: str) -> Benchmark:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        subsets = manifest["subsets"]
    except FileNotFoundError:
        raise ExpertirError(f"{folder}: no {MANIFEST} (write one with 'expertir data make-mixed')") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ExpertirError(f"{path}: not a valid manifest ({exc})") from None
    bench = Benchmark(spec, [])
    for sub in subsets:
        input_dir, target_dir = folder / sub["input"], folder / sub["target"]
        if not input_dir.is_dir() or not target_dir.is_dir():
            bench.missing.append(f"{sub['name']}: expected {input_dir} and {target_dir}")
            continue
        files = layouts.pair_by_name(list_images(input_dir), list_images(target_dir))
        listed = {rec["name"] for rec in sub.get("images", [])}
        on_disk = {p.name for p, _ in files.pairs}
        ts = _paired_set(sub.get("task", sub["name"]), sub["name"], files, folder / sub["name"], crop)
        ts.unmatched += [f"{input_dir / n}: listed in {MANIFEST} but not on disk"
                         for n in sorted(listed - on_disk)]
        bench.tasks.append(ts)
    return bench


def _paired_dir(folder: Path, crop: int | None, spec: str) -> Benchmark:
    bench = Benchmark(spec, [])
    for path, files in layouts.scan_paired(folder):
        if isinstance(files, layouts.PairedFiles):
            name = path.name if path != folder else folder.name
            bench.tasks.append(_paired_set(name, name, files, path, crop))
    if not bench.tasks:
        bench.missing.append(f"{folder}: no paired set (expected {folder}/input and "
                             f"{folder}/target with matching names, or rain/norain, hazy/gt …)")
    return bench


def _denoise_dir(arg: str, root: Path, crop: int | None, spec: str) -> Benchmark:
    text, _, sigmas = arg.rpartition("@")
    if not text or not sigmas:
        raise ExpertirError(f"spec {spec!r}: write denoise:DIR@SIGMA, e.g. denoise:BSD68@25 or @15,25,50")
    try:
        levels = [float(s) for s in sigmas.split(",")]
    except ValueError:
        raise ExpertirError(f"spec {spec!r}: noise levels must be numbers, got {sigmas!r}") from None
    folder = _find_dir(text, root)
    files = list_images(folder, recursive=False)
    bench = Benchmark(spec, _denoise_sets(files, levels, folder.name, folder, crop))
    if not files:
        bench.missing.append(f"{folder}: no images ({', '.join(('.png', '.jpg', '.tif', '…'))})")
    return bench


def load_benchmarks(specs: list[str], data_root: str | Path, layout: str = "auto",
                    crop: int | None = 16) -> Benchmark:
    """Several specs as one benchmark (one table): their task sets in order."""
    parts = [load_benchmark(spec, data_root, layout, crop) for spec in specs]
    if len(parts) == 1:
        return parts[0]
    return Benchmark(" + ".join(specs), [t for p in parts for t in p.tasks],
                     [m for p in parts for m in p.missing])


def load_benchmark(spec: str, data_root: str | Path, layout: str = "auto",
                   crop: int | None = 16) -> Benchmark:
    """The test sets named by ``spec`` (see the module docstring) under ``data_root``."""
    root = Path(data_root)
    if layout not in ("auto", *layouts.LAYOUTS):
        raise ExpertirError(f"unknown layout {layout!r} (use auto, {', '.join(layouts.LAYOUTS)})")
    kind, _, arg = spec.partition(":")
    if spec in BENCHMARKS:
        return _standard(BENCHMARKS[spec], root, layout, crop, spec)
    if spec in TASK_IDS:
        return _standard([spec], root, layout, crop, spec)
    if kind in ("mixed", "synthetic"):
        if arg:
            return _from_manifest(_find_dir(arg, root), crop, spec)
        for folder in (root, root / "mixed"):
            if (folder / MANIFEST).is_file():
                return _from_manifest(folder, crop, spec)
        raise ExpertirError(f"no {MANIFEST} in {root} or {root / 'mixed'}: write a mixed set with "
                            f"'expertir data make-mixed CLEAN_DIR -o {root / 'mixed'}'")
    if kind == "paired" and arg:
        return _paired_dir(_find_dir(arg, root), crop, spec)
    if kind == "denoise" and arg:
        return _denoise_dir(arg, root, crop, spec)
    if kind == "clean" and arg:
        folder = _find_dir(arg, root)
        files = list_images(folder, recursive=False)
        bench = Benchmark(spec, [TaskSet("clean", folder.name, [(f, f) for f in files], crop=crop, path=folder)])
        if not files:
            bench.missing.append(f"{folder}: no images")
        return bench
    raise ExpertirError(f"unknown benchmark spec {spec!r} (use {', '.join(BENCHMARKS)}, a task id, "
                        "mixed, mixed:DIR, synthetic:DIR, paired:DIR, denoise:DIR@SIGMA or clean:DIR)")
