"""``expertir data``: check a data root, write synthetic/mixed test sets, draw the contact sheet.

Subcommands: ``check ROOT [--layout …]``, ``make-mixed CLEAN_DIR -o OUT``,
``make-synthetic CLEAN_DIR -o OUT``, ``contact-sheet -o PNG`` (see :mod:`expertir.data`).
"""

from __future__ import annotations

import os
from pathlib import Path

from expertir.errors import ExpertirError

LAYOUT_CHOICES = ("auto", "promptir", "moce", "bytask", "paired")


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="check benchmark folders, make synthetic and mixed test sets",
                       description="Check what a data folder holds, write synthetic or mixed "
                                   "paired test sets, or draw the degradation contact sheet.")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    c = dsub.add_parser("check", help="report the sets found under ROOT and what is missing",
                        description="Per task: test and training sets found (counts, unmatched "
                                    "pairs, unreadable files) and the paths expected for what "
                                    "is missing. Exit status 1 when files are unmatched or "
                                    "unreadable.")
    c.add_argument("roots", nargs="+", metavar="ROOT",
                   help="data root(s) (e.g. PromptIR's data/, or the benchmark folder and a "
                        "folder with the LOL training pairs)")
    c.add_argument("--layout", choices=LAYOUT_CHOICES, default="auto",
                   help="folder layout (default: auto-detect)")
    c.add_argument("--no-read", action="store_true",
                   help="do not decode every image (faster; unreadable files go unnoticed)")
    c.set_defaults(func=run_check)

    for name, what in (("make-mixed", "mixed-degradation (compositional and spatially varying)"),
                       ("make-synthetic", "single-degradation (one subset per task)")):
        m = dsub.add_parser(name, help=f"write a paired {what} test set",
                            description=f"Degrade every image of CLEAN_DIR and write a paired "
                                        f"{what} test set with a manifest.json, readable by "
                                        f"'expertir eval'.")
        m.add_argument("clean_dir", help="folder of clean images (e.g. DATA/denoise/Set12)")
        m.add_argument("-o", "--output", required=True, help="output folder")
        m.add_argument("--seed", type=int, default=0, help="seed of every degradation (default 0)")
        if name == "make-synthetic":
            m.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                           help="task ids to write (default: all seven)")
        m.set_defaults(func=run_make, kind=name)

    s = dsub.add_parser("contact-sheet", help="draw every degradation on one image (PNG)",
                        description="A labelled grid of one image under every single and mixed "
                                    "degradation.")
    s.add_argument("-o", "--output", default="docs/degradations.png", help="PNG to write")
    s.add_argument("--image", default=None,
                   help="image to degrade (default: scikit-image's 'coffee' photo)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tile", type=int, default=160, help="panel size in pixels (default 160)")
    s.set_defaults(func=run_contact_sheet)


def _rel(path: Path) -> str:
    """``path`` relative to the current folder when that is shorter, else as it is."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if len(rel) <= len(str(path)) else str(path)


def _verify(files, unreadable: list[str]) -> int:
    from expertir.imageio import read_image
    from expertir.errors import ImageReadError

    count = 0
    for f in files:
        count += 1
        try:
            read_image(f)
        except ImageReadError as exc:
            unreadable.append(str(exc))
    return count


def _files_of(found) -> list[Path]:
    if found.paired is None:
        return list(found.clean)
    return sorted({p for pair in found.paired.pairs for p in pair})


def _print_problems(problems: list[str], limit: int = 5) -> None:
    for line in problems[:limit]:
        print(f"      ! {line}")
    if len(problems) > limit:
        print(f"      ! … and {len(problems) - limit} more")


def run_check(args) -> int:
    status = 0
    for root in args.roots:
        status |= _check_root(Path(root), args)
    if args.layout != "paired":
        _print_training_sources(args.roots, args.layout)
    return status


def _print_training_sources(roots, layout: str) -> None:
    """What training would use from all the roots together."""
    from expertir.data.train import find_training_data

    found = find_training_data(roots, layout)
    pool = found.clean
    print(f"Training sources (all roots): {len(pool.gray)} gray + {len(pool.colour)} colour "
          f"clean images for synthesis")
    for line in pool.origin:
        print(f"  clean     {line}")
    layers = sum(len(layouts_images) for layouts_images in
                 (_images_in(folder) for folder in found.streaks))
    print(f"  streaks   {layers} rain-streak layers from {len(found.streaks)} folder(s)"
          + ("" if found.streaks else " — rain is drawn procedurally"))
    for fam, sets in found.pairs.items():
        for pairs, folder in sets:
            print(f"  {fam:9s} {len(pairs)} real training pairs from {_rel(folder)}")
    for line in found.refused:
        print(f"  refused   {line}")
    _print_problems(found.problems)


def _images_in(folder: Path) -> list[Path]:
    from expertir.imageio import list_images

    return list_images(folder, recursive=False)


def _check_root(root: Path, args) -> int:
    from expertir.data import layouts
    from expertir.data.benchmarks import load_benchmark
    from expertir.data.tasks import BENCHMARKS

    if not root.is_dir():
        raise ExpertirError(f"data root not found: {root}")
    unreadable: list[str] = []
    unmatched: list[str] = []
    read = 0
    reported: set[Path] = set()
    if args.layout == "paired":
        print(f"Data root: {_rel(root)}  (layout: paired)")
        for path, files in layouts.scan_paired(root):
            if isinstance(files, layouts.PairedFiles):
                problems = files.problems()
                print(f"  {_rel(path):40s} {len(files.pairs):5d} pairs")
                _print_problems(problems)
                unmatched += problems
                if not args.no_read:
                    read += _verify(sorted({p for pair in files.pairs for p in pair}), unreadable)
            else:
                print(f"  {_rel(path):40s} {len(files):5d} clean images (for denoise:DIR@SIGMA)")
                if not args.no_read:
                    read += _verify(files, unreadable)
    else:
        found_layouts = layouts.detect_layouts(root)
        print(f"Data root: {_rel(root)}  (layout: {args.layout}; found: "
              f"{', '.join(found_layouts) or 'none'})")
        for split, title in (("test", "Test sets"), ("train", "Training sets")):
            print(title)
            for fam in layouts.FAMILIES:
                hits = layouts.locate(root, fam, split, args.layout)
                if not hits:
                    if split == "test":
                        print(f"  {fam:9s} MISSING — expected one of:")
                        for where in layouts.expected(fam, split, args.layout):
                            print(f"      {where}")
                    elif fam != "denoise":
                        print(f"  {fam:9s} none — synthesised on the clean training images")
                    continue
                for hit in hits:
                    reported.add(hit.path)
                    kind = ("clean images (noise added on the fly)" if hit.paired is None
                            else "pairs")
                    print(f"  {fam:9s} {_rel(hit.path):40s} {hit.count:5d} {kind}  [{hit.layout}]")
                    _print_problems(hit.problems)
                    unmatched += hit.problems
                    if not args.no_read:
                        read += _verify(_files_of(hit), unreadable)
        for folder, files in layouts.clean_folders(root) + layouts.streak_folders(root):
            reported.add(folder)
            if not files:
                print(f"  {folder.parent.name:9s} {_rel(folder):40s} empty folder, skipped")
                continue
            kind = "rain-streak layers" if folder.parent.name == "rain-streaks" else "clean images (for synthesis)"
            print(f"  {folder.parent.name:9s} {_rel(folder):40s} {len(files):5d} {kind}")
            if not args.no_read:
                read += _verify(files, unreadable)
        others = [(p, f) for p, f in layouts.scan_paired(root)
                  if p not in reported and not any(r in p.parents for r in reported)]
        if others:
            print("Other image folders (use with the specs paired:DIR or denoise:DIR@SIGMA)")
            for path, files in others:
                n, kind = ((len(files.pairs), "pairs") if isinstance(files, layouts.PairedFiles)
                           else (len(files), "clean images"))
                print(f"  {_rel(path):50s} {n:5d} {kind}")
                if isinstance(files, layouts.PairedFiles):
                    _print_problems(files.problems())
                    unmatched += files.problems()
                if not args.no_read:
                    read += _verify(sorted({p for pair in files.pairs for p in pair})
                                    if isinstance(files, layouts.PairedFiles) else files,
                                    unreadable)
        if args.layout != "paired":
            for name in BENCHMARKS:
                bench = load_benchmark(name, root, args.layout)
                tasks = BENCHMARKS[name]
                have = [t.task for t in bench.tasks]
                if bench.missing:
                    lacking = [t for t in tasks if t not in have]
                    print(f"Benchmark {name}: incomplete ({len(have)}/{len(tasks)} tasks; "
                          f"missing {', '.join(lacking)})")
                else:
                    print(f"Benchmark {name}: complete ({len(tasks)}/{len(tasks)} tasks)")
    if args.no_read:
        print("Unreadable files: not checked (--no-read)")
    elif unreadable:
        print(f"Unreadable files: {len(unreadable)} of {read} read")
        for line in unreadable:
            print(f"      ! {line}")
    else:
        print(f"Unreadable files: none ({read} files read)")
    if unmatched:
        print(f"Unmatched files: {len(unmatched)}")
    return 1 if unreadable or unmatched else 0


def run_make(args) -> int:
    from expertir.data.synthetic import make_mixed, make_synthetic

    say = lambda line: print(f"  {line}")  # noqa: E731
    if args.kind == "make-mixed":
        manifest = make_mixed(args.clean_dir, args.output, seed=args.seed, progress=say)
        spec = f"mixed:{args.output}"
    else:
        kwargs = {"tasks": args.tasks} if args.tasks else {}
        manifest = make_synthetic(args.clean_dir, args.output, seed=args.seed, progress=say,
                                  **kwargs)
        spec = f"synthetic:{args.output}"
    print(f"wrote {_rel(manifest)} — evaluate with --benchmark {spec}")
    return 0


def run_contact_sheet(args) -> int:
    from expertir.data.synthetic import contact_sheet
    from expertir.imageio import load_rgb

    if args.image:
        img = load_rgb(args.image)
    else:
        import numpy as np
        import skimage.data

        img = skimage.data.coffee().astype(np.float32) / 255.0
    out = contact_sheet(img, args.output, seed=args.seed, tile=args.tile)
    print(f"wrote {_rel(out)} ({out.stat().st_size // 1024} KB)")
    return 0
