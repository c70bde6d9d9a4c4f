"""Folder runs of ``restore`` and ``explain``: input files → output paths, and the summary.

Folders are searched recursively and their layout kept under the output folder; two inputs
with the same name both keep an output; an input that yields nothing is one error line,
and the run goes on past it.
"""

from __future__ import annotations

from pathlib import Path


def collect_jobs(inputs: list[str], outdir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input file, output file) pairs, and one error line per input that yields nothing."""
    from expertir.imageio import IMAGE_EXTENSIONS, list_images

    jobs, errors, taken = [], [], set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = list_images(path)
            if not files:
                errors.append(f"{path}: folder contains no images ({', '.join(IMAGE_EXTENSIONS)})")
            pairs = [(f, outdir / path.resolve().name / f.relative_to(path)) for f in files]
        elif path.exists():
            pairs = [(path, outdir / path.name)]
        else:
            errors.append(f"{path}: no such file or folder")
            continue
        jobs += [(src, unique_path(dst, taken)) for src, dst in pairs]  # same names: keep both
    return jobs, errors


def unique_path(path: Path, taken: set[Path]) -> Path:
    """``path``, or the first of ``stem_2``, ``stem_3``… (same suffix) not in ``taken``;
    the answer is added to ``taken``."""
    candidate, n = path, 2
    while candidate in taken:
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
        n += 1
    taken.add(candidate)
    return candidate


def job_summary(verb: str, done: int, total: int, outdir, seconds: float, failures: list[str]) -> int:
    """Print what a folder run did and every file that failed; the exit code (1 if any)."""
    print(f"{verb} {done} of {total} image(s) into {outdir} in {seconds:.1f} s"
          + (f"; {len(failures)} failed:" if failures else ""))
    for line in failures:
        print(f"  {line}")
    return 1 if failures else 0
