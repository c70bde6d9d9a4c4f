"""Every results table, the acceptance verdict, model cards and figures from one command.

    python tools/results.py --data-root DATA -o runs/results [--runs RUNS] [--limit N]
        [--weights candidate.safetensors ...] [--write-docs]

(``make results DATA=... [RUNS=...]``.) In one evaluation run, on the acceptance columns
(expertir.evaluation.verdict: gray BSD68 σ=25, CBSD68 σ=15/25/50, Rain100L, SOTS, LOL
eval15, blur synthesised on McMaster, clean CBSD68 and McMaster): identity, BM3D/CBM3D
(denoising columns) and every shipped model plus the --weights candidates. Then the verdict
(each criterion per model, and the default the rule picks), training curves of the models
whose run folder is under --runs, and a figure of before/after crops on real test images.
Everything goes to the output folder; --write-docs also rewrites the generated block of
docs/results.md and the Evaluation section of each shipped model card.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

from expertir.threads import set_openmp_defaults

set_openmp_defaults()  # before torch loads (see expertir.threads)

from expertir.errors import ExpertirError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "results.md"
#: The test sets of the figure, one row each (roles of expertir.evaluation.verdict).
FIGURE_ROLES = ["Rain100L", "SOTS", "LOL", "CBSD68 σ=25", "McMaster blur", "clean CBSD68"]
TITLE = "Acceptance columns, one run"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, metavar="DATA", help="benchmark data (layouts: docs/data.md)")
    ap.add_argument("-o", "--output", default="runs/results", metavar="DIR",
                    help="where tables, verdict, figures and the test sets go (default runs/results)")
    ap.add_argument("--runs", metavar="RUNS", help="folder of training runs: curves of the evaluated models")
    ap.add_argument("--limit", type=int, metavar="N",
                    help="first N images of each set (pipeline checks: not comparable with full sets)")
    ap.add_argument("--weights", nargs="+", action="extend", default=[], metavar="FILE",
                    help="candidate checkpoints, evaluated beside the shipped models")
    ap.add_argument("--write-docs", action="store_true",
                    help="rewrite the generated block of --docs and the shipped model cards")
    ap.add_argument("--docs", type=Path, default=DOCS, help="results document (default docs/results.md)")
    ap.add_argument("--cards", type=Path, metavar="DIR",
                    help="where the shipped models' cards are written (default: beside the weights)")
    ap.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit <= 0:
        ap.error(f"--limit must be a positive number of images (got {args.limit})")
    if args.write_docs and args.limit and (args.docs == DOCS or args.cards is None):
        ap.error("--write-docs with --limit would put numbers of partial sets into the committed "
                 "docs and cards; drop --limit, or give --docs and --cards to write elsewhere")
    return args


class Public:
    """Paths of this machine as the docs show them: DATA, RUNS, OUT, repository-relative."""

    def __init__(self, args):
        self.names: dict[str, str] = {}
        for given, name in ((args.data_root, "DATA"), (args.runs, "RUNS"), (args.output, None)):
            if not given:
                continue
            path = Path(given)
            name = name or (given if not path.is_absolute() else "OUT")
            self.names[str(path.resolve())] = name
            if "/" in given.strip("/") or path.is_absolute():  # a bare "." or "data" stays as it is
                self.names[given.rstrip("/")] = name
        self.names[str(REPO) + "/"] = ""

    def __call__(self, text: str) -> str:
        for path in sorted(self.names, key=len, reverse=True):
            text = text.replace(path, self.names[path])
        return text


def command_line(args) -> str:
    parts = ["python tools/results.py --data-root DATA", f"-o {args.output}"]
    if args.runs:
        parts.append("--runs RUNS")
    if args.limit:
        parts.append(f"--limit {args.limit}")
    if args.weights:
        parts.append("--weights " + " ".join(args.weights))
    if args.write_docs:
        parts.append("--write-docs")
    return " ".join(parts)


def duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h} h {m} min" if h else (f"{m} min {s} s" if m else f"{s} s")


def baseline_budget(networks, baseline: str) -> str:
    """How the baseline's training compares with the methods': "same budget", unless its
    weights are a milestone of a run that has not reached its planned steps."""
    meta = next(m.pretrained.metadata for m in networks if m.name == baseline).get("training", {})
    steps, planned = meta.get("steps"), meta.get("planned_steps")
    if steps is not None and planned is not None and int(steps) < int(planned):
        return f"the baseline stopped at step {steps} of its {planned}: less training than the methods"
    return "same budget"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except ExpertirError as exc:
        print(f"results: error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    from expertir.evaluation import ModelMethod, build_methods, evaluate, to_markdown, write_tables
    from expertir.evaluation.figures import crops_figure, curves_figure, run_folder_of
    from expertir.evaluation.publish import machine_line, write_card, write_marked
    from expertir.evaluation.verdict import (acceptance_benchmark, column_roles, comparison_markdown,
                                             judge, verdict_markdown)
    from expertir.inference import select_device
    from expertir.weights import DEFAULT_MODEL, list_shipped, shipped_weights

    start = time.time()
    public = Public(args)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    device = select_device(args.device)
    date = time.strftime("%Y-%m-%d")
    machine = machine_line(str(device))

    bench, roles = acceptance_benchmark(args.data_root, out / "testsets", args.limit,
                                        progress=lambda line: print(f"  blur set: {line}"))
    for line in bench.missing:
        print(f"results: missing: {line}")
    if not bench.tasks:
        raise ExpertirError(f"no acceptance test set found under {args.data_root} (layouts: docs/data.md)")
    shipped = [p.stem for p in list_shipped()]
    methods = build_methods(["identity", "bm3d"], shipped, args.weights, device=device)
    networks = [m for m in methods if isinstance(m, ModelMethod)]
    for m in networks:  # the docs name files as the reader finds them, not by this machine's paths
        m.description = public(m.description)
    report = evaluate(methods, bench, on_set_done=lambda r: write_tables(r, out, title=TITLE))
    if args.limit:
        first = "image" if args.limit == 1 else f"{args.limit} images"
        report.notes.append(f"only the first {first} of each set (--limit {args.limit}): "
                            "a pipeline check, not comparable with full-set results")
    tables = to_markdown(report, TITLE)
    write_tables(report, out, title=TITLE)
    role_keys, names = column_roles(report, roles), [m.name for m in networks]
    verdict = judge(report, role_keys, names)
    verdict_md = verdict_markdown(verdict)
    baseline = next((n for n in names if n.startswith("restormer")), None)
    comparison = comparison_markdown(report, role_keys, names, baseline, baseline_budget(networks, baseline)) \
        if baseline else ""

    figures: dict[str, Path] = {}
    by_role = dict(zip(roles, bench.tasks))
    rows = []
    for role in FIGURE_ROLES:
        task_set = by_role.get(role)
        sample = next(iter(task_set), None) if task_set is not None else None  # skips unreadable files
        if sample is not None:
            rows.append((role, task_set, sample))
    if rows:
        figures["Before/after crops of real test images"] = crops_figure(rows, networks, out / "crops.png",
                                        title="Crops of real test images; dB: PSNR of the whole image")
    if args.runs:
        for m in networks:
            pre = m.pretrained
            folder, why = run_folder_of(pre.path, pre.metadata, args.runs)
            if folder is None:
                print(f"results: no training curves for {m.name}: {why}")
                continue
            print(f"results: curves of {m.name} from {folder} ({why})")
            stem = re.sub(r"[^A-Za-z0-9.-]+", "_", m.name).strip("_")
            figures[f"Training curves of {m.name}"] = curves_figure(folder, out / f"curves_{stem}.png",
                                                        title=f"{m.name}: {public(str(folder))}")

    took = duration(time.time() - start)
    run_line = (f"Measured {date} on {machine} (device: {device}), in {took}, by "
                f"`{public(command_line(args))}` (DATA: the benchmark folder; every row from the same run).")
    heading = "the shipped weights" + (" and candidates" if args.weights else "")
    text = "\n".join([f"## Results of {heading} ({date})", "", run_line, "",
                      public(tables), "### Acceptance and default model", "", verdict_md]
                     + (["### The methods against the baseline", "", comparison] if comparison else []))
    (out / "verdict.md").write_text(verdict_md, encoding="utf-8")
    (out / "results_section.md").write_text(text, encoding="utf-8")
    print(tables)
    print(verdict_md)
    print(comparison)

    committed = shipped_weights(DEFAULT_MODEL)
    committed = committed.stem if committed else DEFAULT_MODEL
    if verdict.default != committed:
        bar = "!" * 78
        print(f"\n{bar}\n!! expertir.weights.DEFAULT_MODEL = {DEFAULT_MODEL!r} ({committed}), but the "
              f"measured choice is {verdict.default or 'none (no model passes the no-harm checks)'}.\n"
              f"!! The code was not changed: decide, and change DEFAULT_MODEL by hand.\n{bar}\n",
              file=sys.stderr)

    if args.write_docs:
        docs_dir = args.docs.parent
        links = []
        for key, path in figures.items():
            target = docs_dir / f"results_{path.name}"
            shutil.copyfile(path, target)
            links.append(f"![{key}]({target.name})")
        write_marked(args.docs, text + ("\n" + "\n\n".join(links) + "\n" if links else ""))
        print(f"wrote {args.docs}")
        for m in networks:
            if m.pretrained.path is None or m.name not in shipped:
                continue
            section = "\n".join([run_line, "", public(tables),
                                 f"### Acceptance of {m.name}", "", verdict_markdown(verdict, [m.name])])
            print(f"wrote {write_card(m.pretrained.path, section, args.cards)}")
    print(f"results in {out} ({took})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
