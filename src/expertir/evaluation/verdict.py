"""The acceptance protocol of the shipped weights: its test columns, its criteria, and the
choice of the default model — as code, so that every results run applies the same rules.

**Columns** (:data:`ACCEPTANCE_SPECS`; one ``expertir eval`` run, one table): gray BSD68
σ=25, colour CBSD68 σ=15/25/50, the full Rain100L, SOTS, LOL eval15 (the standard test set
of each task under the data root), blur synthesised on McMaster (seed 0), and two
clean-fidelity columns (CBSD68 and McMaster given clean). Each column has a *role*, the name
the criteria use, independent of folder names and layouts.

**Criteria** (:func:`judge`), per model, in three groups:

* *no harm*: mean PSNR above the input's on every test column; clean-input fidelity on
  CBSD68 ≥ :data:`CLEAN_FIDELITY_DB`; at most :data:`MAX_RAIN_WORSE` of the Rain100L images
  come out below their input.
* *beats the classics*: BSD68 σ=25 ≥ BM3D + :data:`BM3D_MARGIN_DB` and CBSD68 σ=25 ≥ CBM3D,
  the classical rows measured in the same run (the ``bm3d`` row runs CBM3D on colour).
* *real tasks*: Rain100L ≥ input + :data:`RAIN_GAIN_DB`; LOL ≥ :data:`LOL_MIN_DB`.

A column that was not measured fails its check as "not measured": nothing is declared
harmless on data it was not run on.

**Default** (:attr:`Verdict.default`): among the models that pass every *no harm* check,
the best mean PSNR over the test columns (the clean-fidelity columns measure harm, not
restoration, and stay out of the mean, as in the tables). If no model passes, there is no
default by the rule, and the verdict says which model has the best mean regardless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from expertir.errors import ExpertirError

CLEAN_FIDELITY_DB = 36.0
MAX_RAIN_WORSE = 0.05
BM3D_MARGIN_DB = 0.3
RAIN_GAIN_DB = 5.0
LOL_MIN_DB = 20.0

#: Benchmark specs of the acceptance run and the roles of the columns each one yields, in
#: table order. ``{blur}`` is the folder of the synthetic McMaster blur set.
ACCEPTANCE_SPECS: list[tuple[str, tuple[str, ...]]] = [
    ("denoise:denoise/BSD68@25", ("BSD68 σ=25",)),
    ("denoise:denoise/CBSD68@15,25,50", ("CBSD68 σ=15", "CBSD68 σ=25", "CBSD68 σ=50")),
    ("derain", ("Rain100L",)),
    ("dehaze", ("SOTS",)),
    ("lowlight", ("LOL",)),
    ("synthetic:{blur}", ("McMaster blur",)),
    ("clean:denoise/CBSD68", ("clean CBSD68",)),
    ("clean:denoise/McMaster", ("clean McMaster",)),
]

#: The restoration columns (every role but the clean-fidelity ones).
TEST_ROLES: list[str] = [r for _, roles in ACCEPTANCE_SPECS for r in roles if not r.startswith("clean")]

#: Where the blur column's clean images come from, under the data root.
BLUR_SOURCE = "denoise/McMaster"

GROUPS = ("no harm", "beats the classics", "real tasks")


def acceptance_benchmark(data_root: str | Path, workdir: str | Path, limit: int | None = None,
                         progress: Callable[[str], None] | None = None):
    """The acceptance run's test sets under ``data_root``: ``(benchmark, roles)``, with
    ``roles[i]`` the role of ``benchmark.tasks[i]``.

    Builds the synthetic blur set (seed 0, deblur only) into ``workdir/mcmaster_blur`` first:
    the same files on every run. ``limit`` keeps the first N images of each set (pipeline
    checks; such numbers are not comparable with full-set ones). A part that is not found is
    listed in ``benchmark.missing`` and the rest is evaluated.
    """
    from expertir.data.benchmarks import Benchmark, load_benchmark
    from expertir.data.synthetic import make_synthetic

    root = Path(data_root)
    blur = Path(workdir) / "mcmaster_blur"
    missing: list[str] = []
    if (root / BLUR_SOURCE).is_dir():
        make_synthetic(root / BLUR_SOURCE, blur, seed=0, tasks=["deblur"], progress=progress)
    tasks, roles = [], []
    for spec, spec_roles in ACCEPTANCE_SPECS:
        if "{blur}" in spec and not (blur / "manifest.json").is_file():
            missing.append(f"McMaster blur: no clean McMaster images in {root / BLUR_SOURCE}")
            continue
        try:
            part = load_benchmark(spec.format(blur=blur), root)
        except ExpertirError as exc:
            missing.append(f"{', '.join(spec_roles)}: {exc}")
            continue
        missing += part.missing
        if part.tasks and len(part.tasks) != len(spec_roles):
            raise ExpertirError(f"benchmark {spec!r} gave {len(part.tasks)} sets, expected "
                                f"{len(spec_roles)} ({', '.join(spec_roles)})")
        for ts, role in zip(part.tasks, spec_roles):
            if role == "McMaster blur":
                ts.name = "McMaster-blur"  # the subset is named by its task alone
            if limit is not None:
                ts.pairs = ts.pairs[:limit]
            tasks.append(ts)
            roles.append(role)
    return Benchmark("acceptance", tasks, missing), roles


def column_roles(report, roles: list[str]) -> dict[str, str]:
    """Role → column key of a report evaluated on :func:`acceptance_benchmark`'s sets (its
    columns are in the order of the benchmark's task sets)."""
    if len(roles) != len(report.columns):
        raise ExpertirError(f"{len(roles)} roles for {len(report.columns)} columns")
    return {role: col.key for role, col in zip(roles, report.columns)}


@dataclass
class Check:
    """One criterion for one model: ``passed`` is None when its column was not measured."""

    group: str
    name: str
    passed: bool | None
    detail: str

    @property
    def ok(self) -> bool:
        return bool(self.passed)


@dataclass
class Verdict:
    """Per model its checks and mean over the test columns; the default and why."""

    checks: dict[str, list[Check]]
    averages: dict[str, float | None]
    harmless: list[str]
    default: str | None
    rule: str
    notes: list[str] = field(default_factory=list)

    def passed_all(self, model: str) -> bool:
        return all(c.ok for c in self.checks[model])


def _score(report, roles: dict[str, str], method: str, role: str):
    key = roles.get(role)
    score = report.scores.get(method, {}).get(key) if key else None
    return score if score is not None and score.count else None


def _input_psnr(score) -> float:
    return float(np.mean([i.input_psnr for i in score.images]))


def _checks(report, roles: dict[str, str], model: str, reference: str) -> list[Check]:
    def get(role: str, method: str = model):
        return _score(report, roles, method, role)

    def unmeasured(group: str, name: str, *needed: str) -> Check:
        return Check(group, name, None, "not measured (" + ", ".join(needed) + ")")

    out = []
    for role in TEST_ROLES:
        name = f"{role}: above the input"
        s = get(role)
        if s is None:
            out.append(unmeasured("no harm", name, role))
            continue
        base = _input_psnr(s)
        out.append(Check("no harm", name, s.psnr > base, f"{s.psnr:.2f} vs {base:.2f} dB"))
    s = get("clean CBSD68")
    name = f"clean CBSD68 ≥ {CLEAN_FIDELITY_DB:g} dB"
    out.append(unmeasured("no harm", name, "clean CBSD68") if s is None else
               Check("no harm", name, s.psnr >= CLEAN_FIDELITY_DB, f"{s.psnr:.2f} dB"))
    s = get("Rain100L")
    name = f"Rain100L made worse ≤ {MAX_RAIN_WORSE:.0%}"
    out.append(unmeasured("no harm", name, "Rain100L") if s is None else
               Check("no harm", name, s.made_worse <= MAX_RAIN_WORSE * s.count,
                     f"{s.made_worse}/{s.count} ({s.made_worse / s.count:.0%})"))
    for role, margin, label in (("BSD68 σ=25", BM3D_MARGIN_DB, "BM3D"), ("CBSD68 σ=25", 0.0, "CBM3D")):
        name = f"{role} ≥ {label}" + (f" + {margin:g} dB" if margin else "")
        s, ref = get(role), get(role, reference)
        if s is None or ref is None:
            out.append(unmeasured("beats the classics", name,
                                  *([role] if s is None else []) + ([f"{reference} on {role}"] if ref is None else [])))
            continue
        out.append(Check("beats the classics", name, s.psnr >= ref.psnr + margin,
                         f"{s.psnr:.2f} vs {ref.psnr + margin:.2f} dB"))
    s = get("Rain100L")
    name = f"Rain100L ≥ input + {RAIN_GAIN_DB:g} dB"
    out.append(unmeasured("real tasks", name, "Rain100L") if s is None else
               Check("real tasks", name, s.psnr >= _input_psnr(s) + RAIN_GAIN_DB,
                     f"{s.psnr:.2f} vs {_input_psnr(s) + RAIN_GAIN_DB:.2f} dB"))
    s = get("LOL")
    name = f"LOL ≥ {LOL_MIN_DB:g} dB"
    out.append(unmeasured("real tasks", name, "LOL") if s is None else
               Check("real tasks", name, s.psnr >= LOL_MIN_DB, f"{s.psnr:.2f} dB"))
    return out


def _average(report, roles: dict[str, str], model: str) -> float | None:
    scores = [_score(report, roles, model, r) for r in TEST_ROLES if r in roles]
    if not scores or any(s is None for s in scores):
        return None
    return float(np.mean([s.psnr for s in scores]))


def judge(report, roles: dict[str, str], models: list[str], reference: str = "bm3d") -> Verdict:
    """Apply the criteria to each of ``models`` (rows of ``report``) and choose the default.

    ``roles`` maps a role (see :data:`ACCEPTANCE_SPECS`) to its column key in ``report``;
    ``reference`` is the classical row the *beats the classics* checks compare with.
    """
    unknown = [m for m in models if m not in report.scores]
    if unknown:
        raise ExpertirError(f"no row {', '.join(map(repr, unknown))} in the report")
    checks = {m: _checks(report, roles, m, reference) for m in models}
    averages = {m: _average(report, roles, m) for m in models}
    harmless = [m for m in models if all(c.ok for c in checks[m] if c.group == "no harm")]
    measured = [r for r in TEST_ROLES if r in roles]
    over = f"mean PSNR over the {len(measured)} test columns measured"
    ranked = sorted((m for m in harmless if averages[m] is not None), key=lambda m: -averages[m])
    if ranked:
        default = ranked[0]
        rule = (f"default: **{default}**, the best {over} ({averages[default]:.2f} dB) among the "
                f"models that pass every no-harm check ({', '.join(harmless)})")
    else:
        default = None
        best = max((m for m in models if averages[m] is not None), key=lambda m: averages[m], default=None)
        rule = ("default: **none by the rule**: no model passes every no-harm check"
                + (f"; regardless of harm, the best {over} is {best}'s ({averages[best]:.2f} dB)"
                   if best else ""))
    notes = []
    missing = [r for r in TEST_ROLES if r not in roles]
    if missing:
        notes.append(f"not measured: {', '.join(missing)}")
    return Verdict(checks, averages, harmless, default, rule, notes)


def verdict_markdown(verdict: Verdict, models: list[str] | None = None) -> str:
    """The checks as a table (one column per model), the test-column mean and the default."""
    models = models or list(verdict.checks)
    first = verdict.checks[models[0]]
    lines = ["| Criterion | " + " | ".join(models) + " |",
             "|---|" + "|".join([":---:"] * len(models)) + "|"]
    for i, check in enumerate(first):
        cells = []
        for m in models:
            c = verdict.checks[m][i]
            mark = "n/a" if c.passed is None else ("pass" if c.passed else "**fail**")
            cells.append(f"{mark}: {c.detail}")
        lines.append(f"| {check.group}: {check.name} | " + " | ".join(cells) + " |")
    lines.append("| mean over the test columns | " + " | ".join(
        "–" if verdict.averages[m] is None else f"{verdict.averages[m]:.2f} dB" for m in models) + " |")
    lines.append("| **all criteria** | " + " | ".join(
        "pass" if verdict.passed_all(m) else "**fail**" for m in models) + " |")
    lines += ["", "Rule: among the models that pass every no-harm check, the best mean PSNR over "
              "the test columns (clean-fidelity columns excluded).", "",
              verdict.rule[0].upper() + verdict.rule[1:] + "."]
    lines += [f"Note: {n}." for n in verdict.notes]
    return "\n".join(lines) + "\n"


#: A PSNR difference smaller than this (dB) is a tie in :func:`comparison_markdown`.
TIE_DB = 0.05


def comparison_markdown(report, roles: dict[str, str], models: list[str], baseline: str,
                        budget: str = "same budget") -> str:
    """One plain sentence per model on where it beats the ``baseline``: the test columns it
    wins and loses (PSNR difference, ties within :data:`TIE_DB`), the mean difference over
    the columns both measured, and the clean-fidelity difference. ``budget`` says how the
    baseline's training compares (shown after each model's name)."""
    lines = []
    for model in (m for m in models if m != baseline):
        wins, losses, ties, diffs, clean = [], [], [], [], []
        for role in roles:
            mine, base = _score(report, roles, model, role), _score(report, roles, baseline, role)
            if mine is None or base is None:
                continue
            d = mine.psnr - base.psnr
            if role.startswith("clean"):
                clean.append(f"{role} {d:+.2f}")
                continue
            diffs.append(d)
            (wins if d > TIE_DB else losses if d < -TIE_DB else ties).append(f"{role} ({d:+.2f})")
        if not diffs:
            continue
        parts = [f"**{model} against {baseline}** ({budget}): wins on "
                 + (", ".join(wins) or "no column")]
        if losses:
            parts.append("loses on " + ", ".join(losses))
        if ties:
            parts.append("ties on " + ", ".join(ties))
        text = "; ".join(parts) + f"; mean {np.mean(diffs):+.2f} dB over {len(diffs)} test columns"
        lines.append(text + (f"; clean-input fidelity {', '.join(clean)} dB." if clean else "."))
    return "\n\n".join(lines) + ("\n" if lines else "")
