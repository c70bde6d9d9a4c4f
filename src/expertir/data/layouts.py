"""Where the benchmark files live: folder layouts and name pairing (docs/data.md).

Four layouts are understood, for test and training sets:

``promptir``
    PromptIR's ``data/``: ``Train/Denoise`` (clean), ``Train/Derain/{rainy,gt}``,
    ``Train/Dehaze/{synthetic,original}``; tests under ``test/``: ``denoise/bsd68`` (clean
    CBSD68), ``derain/Rain100L/{input,target}``, ``dehaze/{input,target}``, and by the same
    pattern ``deblur/GoPro/{input,target}``, ``lowlight/LOLv1/{input,target}``.
``moce``
    MoCE-IR's data dir: ``denoising/{BSD400,WaterlooED}``, ``deraining/RainTrainL/{rainy,gt}``,
    ``dehazing/RESIDE/{part1..4,clear}``, ``deblurring/GoPro/crop/train/{input,target}_crops``,
    ``llie/LOLv1/Train/{input,target}``; tests ``denoising/cBSD68/original_png``,
    ``deraining/Rain100L/{rainy,gt}``, ``dehazing/SOTS/outdoor/{hazy,gt}``,
    ``deblurring/GoPro/test/{input,target}``, ``llie/LOLv1/Test/{input,target}``.
``bytask``
    One folder per task: ``denoise/<SET>/`` (clean images: CBSD68, BSD68, Set12, McMaster,
    BSD400 for training), ``derain/<SET>/{rain,norain}``, ``dehaze/<SET>/{input,target}``,
    ``deblur/<SET>/…``, ``lowlight/<SET>/…``. Test sets: ``CBSD68``, ``Rain100L*``,
    ``SOTS-outdoor*``, ``GoPro*``, ``LOL*``; training sets have ``train`` in their name.
``paired``
    Any folder holding an input folder and a target folder with matching names.

Training material in any layout root: every ``clean/<SET>/`` folder holds clean images for
synthesis (:func:`clean_folders`) and every ``rain-streaks/<SET>/`` folder real rain-streak
layers (:func:`streak_folders`). A folder whose name contains ``train`` is never taken as a
test set.

Path components match case-insensitively and may be glob patterns (first match, sorted).
Degraded and clean files are paired by name (:func:`pair_by_name`), accepting the original
namings: ``rain-001.png`` ↔ ``norain-001.png``, SOTS/RESIDE ``0001_0.8_0.2.jpg`` ↔
``0001.png``, ``x_rainy.png`` ↔ ``x_gt.png``, or identical names.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

from expertir.imageio import list_images

LAYOUTS = ("promptir", "moce", "bytask", "paired")

#: (degraded, clean) sub-folder names recognised inside a paired set, in order of preference.
PAIR_DIRS: list[tuple[str, str]] = [
    ("input", "target"), ("rain", "norain"), ("rainy", "gt"), ("hazy", "gt"), ("hazy", "clear"),
    ("synthetic", "original"), ("input_crops", "target_crops"), ("low", "high"),
    ("blur", "sharp"), ("degraded", "clean"), ("lq", "gt"), ("part*", "clear"),
]


@dataclass(frozen=True)
class Loc:
    """An expected location: a clean-only folder (``paired=False``) or a folder holding one
    of the :data:`PAIR_DIRS` pairs."""

    path: str
    paired: bool = True

    def describe(self) -> str:
        if not self.paired:
            return f"{self.path}/ (clean images)"
        return f"{self.path}/{{input,target}}"


def _t(*paths: str) -> list[Loc]:
    return [Loc(p) for p in paths]


def _c(*paths: str) -> list[Loc]:
    return [Loc(p, paired=False) for p in paths]


#: layout → split ("test" / "train") → task family → candidate locations.
LOCATIONS: dict[str, dict[str, dict[str, list[Loc]]]] = {
    "promptir": {
        "test": {
            "denoise": _c("test/denoise/bsd68", "test/denoise/cbsd68"),
            "derain": _t("test/derain/Rain100L"),
            "dehaze": _t("test/dehaze"),
            "deblur": _t("test/deblur/GoPro", "test/deblur"),
            "lowlight": _t("test/lowlight/LOLv1", "test/lowlight"),
        },
        "train": {
            "denoise": _c("Train/Denoise", "data/Train/Denoise"),
            "derain": _t("Train/Derain", "data/Train/Derain"),
            "dehaze": _t("Train/Dehaze", "data/Train/Dehaze"),
            "deblur": _t("Train/Deblur"),
            "lowlight": _t("Train/Lowlight"),
        },
    },
    "moce": {
        "test": {
            "denoise": _c("denoising/cBSD68/original_png", "denoising/cBSD68"),
            "derain": _t("deraining/Rain100L"),
            "dehaze": _t("dehazing/SOTS/outdoor"),
            "deblur": _t("deblurring/GoPro/test"),
            "lowlight": _t("llie/LOLv1/Test"),
        },
        "train": {
            "denoise": _c("denoising/BSD400", "denoising/WaterlooED"),
            "derain": _t("deraining/RainTrainL"),
            "dehaze": _t("dehazing/RESIDE"),
            "deblur": _t("deblurring/GoPro/crop/train", "deblurring/GoPro/train"),
            "lowlight": _t("llie/LOLv1/Train"),
        },
    },
    "bytask": {
        "test": {
            "denoise": _c("denoise/CBSD68"),
            "derain": _t("derain/Rain100L*"),
            "dehaze": _t("dehaze/SOTS-outdoor*", "dehaze/SOTS*"),
            "deblur": _t("deblur/GoPro*"),
            "lowlight": _t("lowlight/LOL*"),
        },
        "train": {
            "denoise": _c("denoise/BSD400", "denoise/WaterlooED", "denoise/WED"),
            "derain": _t("derain/*train*"),
            "dehaze": _t("dehaze/*train*"),
            "deblur": _t("deblur/*train*"),
            "lowlight": _t("lowlight/*train*"),
        },
    },
}

FAMILIES = ("denoise", "derain", "dehaze", "deblur", "lowlight")


def family(task: str) -> str:
    """``denoise_25`` → ``denoise``; other task ids are their own family."""
    return task.split("_")[0]


def resolve(root: Path, pattern: str) -> Path | None:
    """Resolve ``pattern`` under ``root`` component by component, case-insensitively, with
    glob wildcards; the first sorted match wins. ``None`` when nothing matches."""
    here = Path(root)
    for part in pattern.split("/"):
        if not here.is_dir():
            return None
        matches = sorted(c for c in here.iterdir()
                         if fnmatch.fnmatch(c.name.lower(), part.lower()))
        if not matches:
            return None
        here = matches[0]
    return here


def _pair_dirs(folder: Path) -> tuple[list[Path], Path] | None:
    """The degraded folder(s) and the clean folder of a paired set, or ``None``."""
    for deg, clean in PAIR_DIRS:
        target = resolve(folder, clean)
        if target is None or not target.is_dir():
            continue
        inputs = sorted(c for c in folder.iterdir() if c.is_dir() and c != target
                        and fnmatch.fnmatch(c.name.lower(), deg.lower()))
        if inputs:
            return inputs, target
    return None


_PREFIX = re.compile(r"^(no)?rain(y)?[-_]")
_SUFFIX = re.compile(r"[-_](gt|rainy|rain|hazy|clean|clear|target|input|lq|hq|low|high|blur|sharp)$")


def name_key(stem: str) -> str:
    """Pairing key of a file stem: lower case, ``rain-``/``norain-`` prefixes and
    ``_gt``/``_rainy``/``_hazy``… suffixes removed, leading zeros of numbers dropped."""
    key = _SUFFIX.sub("", _PREFIX.sub("", stem.lower()))
    return str(int(key)) if key.isdigit() else key


@dataclass
class PairedFiles:
    """Degraded/clean files of one set, paired by name, with what could not be paired."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    unmatched_inputs: list[Path] = field(default_factory=list)
    unmatched_targets: list[Path] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = [f"{p}: no matching target" for p in self.unmatched_inputs]
        return out + [f"{p}: target with no matching input" for p in self.unmatched_targets]


def pair_by_name(inputs: list[Path], targets: list[Path]) -> PairedFiles:
    """Pair degraded files with clean files by :func:`name_key`.

    A degraded file matches the target with the same key, or failing that the target whose
    key is the part of its name before the first ``_`` (SOTS/RESIDE ``ID_A_beta``). Several
    degraded files may share one target (RESIDE has many hazy versions per scene).
    """
    by_key: dict[str, Path] = {}
    for t in targets:
        by_key.setdefault(name_key(t.stem), t)
    out = PairedFiles()
    used: set[Path] = set()
    for p in inputs:
        target = by_key.get(name_key(p.stem)) or by_key.get(name_key(p.stem.split("_")[0]))
        if target is None:
            out.unmatched_inputs.append(p)
        else:
            out.pairs.append((p, target))
            used.add(target)
    out.unmatched_targets = [t for t in targets if t not in used]
    return out


def read_paired_folder(folder: Path) -> PairedFiles | None:
    """Pairs of a folder holding one of the :data:`PAIR_DIRS` pairs (``None`` if it holds
    none)."""
    dirs = _pair_dirs(folder)
    if dirs is None:
        return None
    inputs, target = dirs
    files = [f for d in inputs for f in list_images(d)]
    return pair_by_name(files, list_images(target))


@dataclass
class Found:
    """A set located on disk: its folder, the layout it came from, and its files."""

    family: str
    split: str
    layout: str
    path: Path
    clean: list[Path] = field(default_factory=list)  # clean-only sets
    paired: PairedFiles | None = None

    @property
    def count(self) -> int:
        return len(self.paired.pairs) if self.paired is not None else len(self.clean)

    @property
    def problems(self) -> list[str]:
        return self.paired.problems() if self.paired is not None else []


def locate(root: Path, fam: str, split: str, layout: str = "auto") -> list[Found]:
    """Every set of task family ``fam`` (``denoise``, ``derain``…) and ``split`` found under
    ``root`` in ``layout`` (``auto``: all layouts, in :data:`LAYOUTS` order)."""
    layouts = [lay for lay in LOCATIONS if layout in ("auto", lay)]
    found: list[Found] = []
    seen: set[Path] = set()
    for lay in layouts:
        for loc in LOCATIONS[lay][split].get(fam, []):
            path = resolve(root, loc.path)
            if path is None or not path.is_dir() or path in seen:
                continue
            if split == "test" and "train" in path.name.lower():
                continue
            if loc.paired:
                files = read_paired_folder(path)
                if files is None:
                    continue
                found.append(Found(fam, split, lay, path, paired=files))
            else:
                images = list_images(path, recursive=False)
                if not images:
                    continue
                found.append(Found(fam, split, lay, path, clean=images))
            seen.add(path)
    return found


def _image_folders(root: Path, parent: str) -> list[tuple[Path, list[Path]]]:
    folder = resolve(root, parent)
    if folder is None or not folder.is_dir():
        return []
    return [(sub, list_images(sub, recursive=False))
            for sub in sorted(c for c in folder.iterdir() if c.is_dir())]


def clean_folders(root: Path) -> list[tuple[Path, list[Path]]]:
    """Every ``clean/<SET>/`` folder under ``root`` with its images (clean training images;
    an empty folder comes with an empty list)."""
    return _image_folders(root, "clean")


def streak_folders(root: Path) -> list[tuple[Path, list[Path]]]:
    """Every ``rain-streaks/<SET>/`` folder under ``root`` with its images (streak layers;
    an empty folder comes with an empty list)."""
    return _image_folders(root, "rain-streaks")


def expected(fam: str, split: str, layout: str = "auto") -> list[str]:
    """Human-readable expected locations of a family/split (for 'missing' messages)."""
    layouts = [lay for lay in LOCATIONS if layout in ("auto", lay)]
    return [f"{loc.describe()} [{lay}]" for lay in layouts
            for loc in LOCATIONS[lay][split].get(fam, [])]


def detect_layouts(root: Path) -> list[str]:
    """The layouts of which at least one set is present under ``root``."""
    hits = []
    for lay in LOCATIONS:
        if any(locate(root, fam, split, lay) for fam in FAMILIES for split in ("test", "train")):
            hits.append(lay)
    if _pair_dirs(Path(root)) is not None:
        hits.append("paired")
    return hits


def scan_paired(root: Path) -> list[tuple[Path, PairedFiles | list[Path]]]:
    """Every paired set (folder with input/target-like sub-folders) under ``root``, and
    every other folder that directly holds images (a clean-only set), in path order."""
    root = Path(root)
    out: list[tuple[Path, PairedFiles | list[Path]]] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        files = read_paired_folder(folder)
        if files is not None:
            out.append((folder, files))
            pair_dirs = _pair_dirs(folder)
            skip = set(pair_dirs[0]) | {pair_dirs[1]} if pair_dirs else set()
        else:
            images = list_images(folder, recursive=False)
            if images:
                out.append((folder, images))
            skip = set()
        stack.extend(sorted((c for c in folder.iterdir() if c.is_dir() and c not in skip),
                            reverse=True))
    return sorted(out, key=lambda item: str(item[0]))
