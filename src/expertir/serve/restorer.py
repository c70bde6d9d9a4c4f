"""What one request of the browser demo does, with no web code in it.

:class:`Restorer` holds the models a page may pick and turns an uploaded file into a
:class:`Restoration`. Design choices (the safety defaults of ``expertir serve``):

* **Decoding**: the upload is read by :func:`expertir.imageio.read_image`, the reader of
  ``expertir restore``: a non-image, a truncated file or a decompression bomb raises
  :class:`~expertir.errors.ImageReadError`, and images over ``max_pixels`` are refused from
  their header, before a pixel is decoded.
* **Memory**: the restoration is :func:`expertir.inference.restore` inside
  :func:`expertir.explain` (whole image if it fits the memory budget, else tiles), and the
  routing maps run on a copy of at most 512 × 512 pixels. The page queues requests so that
  one runs at a time (:mod:`.app`); :attr:`Restorer.max_active` records the most that ever
  ran at once, so tests can check it.
* **Files**: the server reads only the temporary file the web framework stored the upload
  in, and writes only into a folder of its own (``mkdtemp``) under fixed names; nothing a
  client sends becomes part of a path it writes. The newest ``KEEP_RESULTS`` are kept.
* **Errors** a user can fix are :class:`~expertir.errors.ExpertirError` with a one-line
  message that names the upload by its file name, never by a server path.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from expertir.errors import ExpertirError, ImageReadError

#: Uploads over this many pixels are refused before decoding (a 48-megapixel photo fits).
DEFAULT_MAX_PIXELS = 50_000_000
#: Longest side of the before/after images sent to the page (the download is full size).
PREVIEW_SIDE = 1600
#: Result folders kept on disk; older ones are deleted when a new result is written.
KEEP_RESULTS = 16


@dataclass
class Restoration:
    """One restored upload: what the page shows and the files it offers."""

    name: str  # the upload's file name, for display only
    model: str
    size: tuple[int, int]  # (width, height) of the upload
    before: np.ndarray  # uint8 preview of the input, at most PREVIEW_SIDE px
    after: np.ndarray  # uint8 preview of the restored image, same size
    png: Path  # the full-size restored image
    figure: Path  # the explanation figure (estimate and routing maps)
    plan: str  # how restore ran it: whole image or tiles
    seconds: float  # reading, restoring and explaining (not the figure)
    figure_seconds: float
    estimate: dict[str, float] | None  # task -> probability, when the model has an estimate
    note: str  # the estimate's top task and margin, or why there is none

    def summary(self) -> str:
        """Markdown lines for the page."""
        w, h = self.size
        return (f"**{self.name}** ({w}×{h}) restored by **{self.model}** in "
                f"**{self.seconds:.2f} s** ({self.plan}); figure drawn in {self.figure_seconds:.2f} s.  \n"
                f"{self.note}")


def display_name(path: str | Path) -> str:
    """The file name of an upload, reduced to characters that are safe to show anywhere."""
    name = "".join(c if c.isalnum() or c in "._- " else "_" for c in Path(str(path)).name)
    return name[-80:] or "upload"


def preview(rgb: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """``rgb`` (float H×W×3 in [0, 1]) as uint8, scaled down to at most ``side`` px."""
    q = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    h, w = q.shape[:2]
    if max(h, w) <= side:
        return q
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(q).resize(size, Image.Resampling.LANCZOS))


class _TileProgress:
    """The ``progress`` object :func:`expertir.inference.restore` advances per tile,
    reported as a fraction between ``start`` and ``end`` of the whole request."""

    def __init__(self, report, start: float, end: float):
        self.report, self.start, self.end = report, start, end
        self.total, self.n = 0, 0

    def reset(self, total: int) -> None:
        self.total, self.n = max(1, total), 0
        self.report(self.start, f"restoring: {total} tiles")

    def update(self, n: int = 1) -> None:
        self.n += n
        frac = self.start + (self.end - self.start) * self.n / self.total
        self.report(frac, f"restoring: tile {self.n} of {self.total}")


def _quiet(fraction: float, text: str) -> None:
    pass


class Restorer:
    """The models a page offers, and :meth:`run` for one upload (see the module docstring).

    ``model`` / ``weights`` choose the default as :func:`expertir.weights.load_pretrained`
    does (a checkpoint file is offered beside the shipped models). ``max_memory``: the
    budget of each restoration in bytes (default: restore's, a share of the free memory).
    """

    def __init__(self, model: str | None = None, weights: str | Path | None = None,
                 device=None, max_memory: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, log=print):
        from expertir.inference import select_device
        from expertir.weights import DEFAULT_MODEL, list_shipped, load_pretrained

        self.device = select_device(device)
        self.max_memory, self.max_pixels, self.log = max_memory, max_pixels, log
        self._sources = {p.stem: (p.stem, None) for p in list_shipped()}
        self._loaded = {}
        first = load_pretrained(model or (None if weights else DEFAULT_MODEL), weights, device=self.device)
        self.default = first.name if not weights else f"{first.name} ({Path(weights).name})"
        self._sources.setdefault(self.default, (first.name, weights))
        self._loaded[self.default] = first
        self.workdir = Path(tempfile.mkdtemp(prefix="expertir-serve-"))
        self.active = self.max_active = self.served = 0
        self._lock = threading.Lock()
        self._results = 0

    @property
    def choices(self) -> list[str]:
        """The model names the page offers, the default first."""
        return [self.default] + sorted(k for k in self._sources if k != self.default)

    def model(self, choice: str):
        """The loaded model of ``choice`` (loaded once, then kept)."""
        from expertir.weights import load_pretrained

        if choice not in self._sources:
            raise ExpertirError(f"unknown model {choice!r}; this server offers {', '.join(self.choices)}")
        if choice not in self._loaded:
            name, weights = self._sources[choice]
            self._loaded[choice] = load_pretrained(None if weights else name, weights, device=self.device)
        return self._loaded[choice]

    def _result_dir(self) -> Path:
        """A fresh folder for one result; the oldest beyond ``KEEP_RESULTS`` are deleted."""
        with self._lock:
            self._results += 1
            number = self._results
        folder = self.workdir / f"{number:06d}"
        folder.mkdir()
        for old in sorted(self.workdir.iterdir())[:-KEEP_RESULTS]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def run(self, path: str | Path, choice: str | None = None, report=_quiet) -> Restoration:
        """Restore and explain the uploaded file at ``path`` with the model ``choice``.

        ``report(fraction, text)`` hears the progress. Raises
        :class:`~expertir.errors.ExpertirError` with a message for the page.
        """
        name = display_name(path)
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            result = self._run(Path(path), name, choice or self.default, report)
        except ExpertirError as exc:
            msg = f"{name}: {exc.reason}" if isinstance(exc, ImageReadError) else str(exc)
            self.log(f"refused {msg}")
            raise ExpertirError(msg) from None
        except (RuntimeError, MemoryError) as exc:
            msg = f"{name}: restoration failed ({str(exc).splitlines()[0][:200]})"
            self.log(msg)
            raise ExpertirError(msg) from None
        finally:
            with self._lock:
                self.active -= 1
                self.served += 1
        w, h = result.size
        self.log(f"restored {name} ({w}×{h}) with {result.model} in {result.seconds:.2f} s ({result.plan})")
        return result

    def _run(self, path: Path, name: str, choice: str, report) -> Restoration:
        from expertir.explanation import explain
        from expertir.explanation.figures import explanation_figure
        from expertir.imageio import read_image, write_image

        start = time.perf_counter()
        loaded = self.model(choice)
        report(0.02, "reading the image")
        image = read_image(path, max_pixels=self.max_pixels)
        plans = []
        report(0.1, f"restoring with {loaded.name}")
        options = {"max_memory": self.max_memory, "progress": _TileProgress(report, 0.1, 0.8),
                   "on_plan": plans.append,
                   "on_measure": lambda text: report(0.1, "measuring the model's memory once")}
        ex = explain(image.rgb, loaded, device=self.device, name=name, restore_options=options)
        seconds = time.perf_counter() - start
        report(0.85, "drawing the estimate and routing maps")
        folder = self._result_dir()
        tic = time.perf_counter()
        explanation_figure(ex, folder / "explanation.png")
        figure_seconds = time.perf_counter() - tic
        report(0.95, "writing the restored PNG")
        write_image(folder / "restored.png", ex.output, like=image)
        h, w = image.rgb.shape[:2]
        if ex.estimate is not None:
            estimate = {t: float(p) for t, p in zip(ex.estimate.tasks, ex.estimate.probabilities)}
            note = (f"Blind estimate: looks like **{ex.estimate.top}** "
                    f"(margin {ex.estimate.margin:.2f} in {ex.estimate.score_label}).")
        else:
            estimate, note = None, f"No degradation estimate: {ex.no_estimate}."
        return Restoration(name, loaded.name, (w, h), preview(ex.input), preview(ex.output),
                           folder / "restored.png", folder / "explanation.png",
                           str(plans[-1]).split(" (")[0] if plans else "whole image",
                           seconds, figure_seconds, estimate, note)

    def close(self) -> None:
        """Delete the results folder."""
        shutil.rmtree(self.workdir, ignore_errors=True)
