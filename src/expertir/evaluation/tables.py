"""Benchmark tables in the papers' layout, as Markdown, CSV and JSON (same numbers in all three).

Layout (PromptIR Tab. 1, AdaIR / MoCE-IR five-task tables): one row per method, one column
per task set (denoising has one column per σ), each cell ``PSNR/SSIM``, then the average
over all columns. A method that does not apply to a column (BM3D on rain) shows ``–`` there,
and its average is left empty rather than averaged over a subset. The protocol line, the
missing benchmark parts and unreadable files follow the table.

Below the table, a second one counts per method and column the images made worse than
their input ("made worse": n of N). Clean-fidelity columns (``clean:DIR``: PSNR of
restore(clean) against clean) measure harm, not restoration, and stay out of the Average.

Rounding: PSNR to 2 decimals, SSIM to 3 in Markdown and CSV; JSON keeps full precision and
the per-image scores.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from expertir.evaluation.runner import CLEAN_VISIBLE_DB, EvalReport
from expertir.metrics import SEAM_REGION

DASH = "–"


def _restoration_columns(report: EvalReport) -> list:
    """The columns that measure restoration (clean-fidelity columns measure harm instead and
    stay out of the average)."""
    return [c for c in report.columns if c.task != "clean"]


def average(report: EvalReport, method: str) -> tuple[float | None, float | None]:
    """Mean PSNR and SSIM of ``method`` over the restoration columns (the table's Average);
    ``(None, None)`` unless it ran on every one of them."""
    scores = report.scores[method]
    cells = [scores.get(c.key) for c in _restoration_columns(report)]
    if not cells or any(s is None or s.psnr is None for s in cells):
        return None, None
    return (sum(s.psnr for s in cells) / len(cells), sum(s.ssim for s in cells) / len(cells))


def _cells(report: EvalReport, method: str) -> list[tuple[float | None, float | None]]:
    out = []
    for col in report.columns:
        score = report.scores[method].get(col.key)
        out.append((score.psnr, score.ssim) if score is not None else (None, None))
    return out + [average(report, method)]


def _worse_cells(report: EvalReport, method: str) -> list[str]:
    cells, worse, total = [], 0, 0
    for col in report.columns:
        score = report.scores[method].get(col.key)
        if score is None or not score.count:
            cells.append(DASH)
            continue
        cells.append(f"{score.made_worse}/{score.count}")
        worse, total = worse + score.made_worse, total + score.count
    return cells + [f"{worse}/{total}" if total else DASH]


def _fmt(p: float | None, s: float | None) -> str:
    return DASH if p is None else f"{p:.2f}/{s:.3f}"


def to_markdown(report: EvalReport, title: str | None = None) -> str:
    header = ["Method"] + [c.label for c in report.columns] + ["Average"]
    lines = [f"### {title or 'Benchmark ' + report.benchmark}", ""]
    if report.columns:
        lines += ["| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|"]
        for method in report.methods:
            lines.append("| " + " | ".join([method] + [_fmt(p, s) for p, s in _cells(report, method)]) + " |")
        lines.append("")
        counts = ", ".join(f"{c.label}: {c.count}" for c in report.columns)
        clean = " except the clean-fidelity ones (restore(clean) vs clean)" \
            if len(_restoration_columns(report)) < len(report.columns) else ""
        lines.append(f"Cells are PSNR (dB) / SSIM, mean over the images of each set ({counts}); "
                     f"Average: mean over the columns shown{clean}.")
        lines += ["", "Images made worse (output PSNR below the input's; for a clean input, "
                  f"below {CLEAN_VISIBLE_DB:g} dB), n of N:", "",
                  "| " + " | ".join(["Method"] + [c.label for c in report.columns] + ["Total"]) + " |",
                  "|" + "|".join(["---"] + [":---:"] * (len(report.columns) + 1)) + "|"]
        for method in report.methods:
            lines.append("| " + " | ".join([method] + _worse_cells(report, method)) + " |")
        lines += ["", f"Seam ratio (edges on the {SEAM_REGION}-px region grid, output over input; "
                  "1.00 = none added), mean over the images:", "",
                  "| " + " | ".join(["Method"] + [c.label for c in report.columns]) + " |",
                  "|" + "|".join(["---"] + [":---:"] * len(report.columns)) + "|"]
        for method in report.methods:
            seams = [report.scores[method].get(c.key) for c in report.columns]
            lines.append("| " + " | ".join([method] + [DASH if s is None or s.seam is None else f"{s.seam:.2f}"
                                                      for s in seams]) + " |")
    else:
        lines.append("No test set of this benchmark was found.")
    lines += ["", f"Protocol: {report.protocol}.", ""]
    lines += [f"- `{name}`: {desc}" for name, desc in report.methods.items()]
    if report.missing:
        lines += ["", "Missing (skipped):"] + [f"- {m}" for m in report.missing]
    errors = [e for c in report.columns for e in c.errors]
    if errors:
        lines += ["", "Unreadable files (skipped):"] + [f"- {e}" for e in errors]
    if report.notes:
        lines += [""] + [f"Note: {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def to_csv(report: EvalReport) -> str:
    """Same rows and rounding as the Markdown; first line is ``# protocol: ...``."""
    buf = io.StringIO()
    buf.write(f"# protocol: {report.protocol}\n")
    writer = csv.writer(buf, lineterminator="\n")
    labels = [c.label for c in report.columns] + ["Average"]
    writer.writerow(["method"] + [f"{lab} {m}" for lab in labels for m in ("PSNR", "SSIM")]
                    + [f"{c.label} made worse" for c in report.columns])
    for method in report.methods:
        row = [method]
        for p, s in _cells(report, method):
            row += ["", ""] if p is None else [f"{p:.2f}", f"{s:.3f}"]
        row += [c.split("/")[0] if c != DASH else "" for c in _worse_cells(report, method)[:-1]]
        writer.writerow(row)
    return buf.getvalue()


def to_dict(report: EvalReport) -> dict:
    """JSON-ready: the protocol, the columns, per method the mean and per-image scores."""
    rows = {}
    for method, desc in report.methods.items():
        cells = {}
        for col in report.columns:
            score = report.scores[method].get(col.key)
            if score is None:
                continue
            cells[col.key] = {
                "psnr": score.psnr, "ssim": score.ssim, "count": score.count,
                "made_worse": score.made_worse, "seam": score.seam, "seconds": round(score.seconds, 3),
                "images": [{"name": i.name, "psnr": i.psnr, "ssim": i.ssim, "input_psnr": i.input_psnr,
                            "made_worse": i.made_worse, "seam": i.seam} for i in score.images],
            }
        avg_p, avg_s = average(report, method)
        rows[method] = {"description": desc, "sets": cells,
                        "average": None if avg_p is None else {"psnr": avg_p, "ssim": avg_s}}
    return {
        "benchmark": report.benchmark,
        "protocol": report.protocol,
        "columns": [{"key": c.key, "task": c.task, "label": c.label, "sigma": c.sigma,
                     "count": c.count, "errors": c.errors} for c in report.columns],
        "methods": rows,
        "missing": report.missing,
        "notes": report.notes,
    }


def write_tables(report: EvalReport, outdir: str | Path, stem: str = "results",
                 title: str | None = None) -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` into ``outdir``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {ext: outdir / f"{stem}.{ext}" for ext in ("md", "csv", "json")}
    paths["md"].write_text(to_markdown(report, title), encoding="utf-8")
    paths["csv"].write_text(to_csv(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(to_dict(report), indent=2, ensure_ascii=False) + "\n",
                             encoding="utf-8")
    return paths
