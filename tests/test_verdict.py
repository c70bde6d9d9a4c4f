"""The acceptance criteria and the default-model rule, on small hand-made reports."""

import math

import pytest

from expertir.errors import ExpertirError
from expertir.evaluation.runner import Column, EvalReport, ImageScore, SetScore
from expertir.evaluation.verdict import (ACCEPTANCE_SPECS, TEST_ROLES, column_roles, judge,
                                         verdict_markdown)

ROLES = [r for _, roles in ACCEPTANCE_SPECS for r in roles]
#: Input PSNR of each column (what an unchanged input scores).
INPUT = {"BSD68 σ=25": 20.5, "CBSD68 σ=15": 24.8, "CBSD68 σ=25": 20.5, "CBSD68 σ=50": 15.0,
         "Rain100L": 25.5, "SOTS": 16.0, "LOL": 7.8, "McMaster blur": 23.8}
BM3D = {"BSD68 σ=25": 28.35, "CBSD68 σ=15": 33.5, "CBSD68 σ=25": 30.7, "CBSD68 σ=50": 27.4}
IMAGES = 20


def cell(psnr: float, role: str, worse: int = 0) -> SetScore:
    """IMAGES images of mean ``psnr``; ``worse`` of them below their input."""
    inp = INPUT.get(role, math.inf)
    if worse == 0:
        return SetScore([ImageScore(f"{role}{i}", psnr, 0.5, inp) for i in range(IMAGES)])
    low = inp - 1.0
    high = (psnr * IMAGES - low * worse) / (IMAGES - worse)
    assert high > inp
    return SetScore([ImageScore(f"{role}{i}", low if i < worse else high, 0.5, inp) for i in range(IMAGES)])


def good(**override) -> dict:
    """A model that passes every criterion (per role: its mean PSNR)."""
    values = {"BSD68 σ=25": 28.8, "CBSD68 σ=15": 33.6, "CBSD68 σ=25": 30.8, "CBSD68 σ=50": 27.5,
              "Rain100L": 31.0, "SOTS": 25.0, "LOL": 21.0, "McMaster blur": 25.0,
              "clean CBSD68": 40.0, "clean McMaster": 39.0}
    values.update(override)
    return values


def report(models: dict[str, dict], rain_worse: dict[str, int] | None = None, drop=()) -> tuple:
    roles = [r for r in ROLES if r not in drop]
    columns = [Column(f"c{i}", "task", role, None, IMAGES) for i, role in enumerate(roles)]
    keys = {role: col.key for role, col in zip(roles, columns)}
    scores = {"bm3d": {keys[r]: cell(v, r) for r, v in BM3D.items() if r in keys}}
    for name, values in models.items():
        scores[name] = {keys[r]: cell(v, r, (rain_worse or {}).get(name, 0) if r == "Rain100L" else 0)
                        for r, v in values.items() if r in keys}
    rep = EvalReport("acceptance", "protocol", columns, {n: n for n in scores}, scores)
    return rep, column_roles(rep, roles)


def checks_by_name(verdict, model):
    return {c.name: c for c in verdict.checks[model]}


def test_a_model_that_meets_every_criterion_passes_and_is_the_default():
    rep, roles = report({"m": good()})
    verdict = judge(rep, roles, ["m"])
    assert verdict.passed_all("m") and verdict.harmless == ["m"] and verdict.default == "m"
    assert len(verdict.checks["m"]) == len(TEST_ROLES) + 2 + 2 + 2
    assert verdict.averages["m"] == pytest.approx(sum(good()[r] for r in TEST_ROLES) / len(TEST_ROLES))
    md = verdict_markdown(verdict)
    assert "**fail**" not in md and "Default: **m**" in md


def test_the_default_is_the_best_average_among_models_that_harm_nothing():
    rep, roles = report({
        "harmful_best": good(**{"McMaster blur": 23.7, "LOL": 30.0}),  # best mean, blur below input
        "second": good(SOTS=27.0),
        "third": good(),
    })
    verdict = judge(rep, roles, ["harmful_best", "second", "third"])
    assert verdict.averages["harmful_best"] > verdict.averages["second"] > verdict.averages["third"]
    assert verdict.harmless == ["second", "third"]
    assert verdict.default == "second"
    blur = checks_by_name(verdict, "harmful_best")["McMaster blur: above the input"]
    assert blur.passed is False and "23.70 vs 23.80" in blur.detail
    assert "second" in verdict.rule and "(second, third)" in verdict.rule


def test_equal_to_the_input_is_not_above_it():
    rep, roles = report({"m": good(**{"McMaster blur": INPUT["McMaster blur"]})})
    verdict = judge(rep, roles, ["m"])
    assert checks_by_name(verdict, "m")["McMaster blur: above the input"].passed is False
    assert verdict.default is None


@pytest.mark.parametrize("worse, ok", [(1, True), (2, False)])  # 1/20 = 5 % passes, 2/20 fails
def test_rain_images_made_worse_at_most_five_percent(worse, ok):
    rep, roles = report({"m": good()}, rain_worse={"m": worse})
    check = checks_by_name(judge(rep, roles, ["m"]), "m")["Rain100L made worse ≤ 5%"]
    assert check.passed is ok and check.detail.startswith(f"{worse}/{IMAGES}")


@pytest.mark.parametrize("margin, ok", [(0.29, False), (0.31, True)])
def test_gray_denoising_must_beat_bm3d_by_three_tenths(margin, ok):
    rep, roles = report({"m": good(**{"BSD68 σ=25": BM3D["BSD68 σ=25"] + margin})})
    check = checks_by_name(judge(rep, roles, ["m"]), "m")["BSD68 σ=25 ≥ BM3D + 0.3 dB"]
    assert check.passed is ok


@pytest.mark.parametrize("role, value, name", [
    ("clean CBSD68", 35.9, "clean CBSD68 ≥ 36 dB"),
    ("CBSD68 σ=25", 30.6, "CBSD68 σ=25 ≥ CBM3D"),
    ("Rain100L", 30.4, "Rain100L ≥ input + 5 dB"),
    ("LOL", 19.9, "LOL ≥ 20 dB"),
])
def test_each_threshold_fails_just_below_it(role, value, name):
    rep, roles = report({"m": good(**{role: value})})
    verdict = judge(rep, roles, ["m"])
    failed = [c.name for c in verdict.checks["m"] if not c.ok]
    assert failed == [name]
    # only the no-harm group decides the default
    assert (verdict.default == "m") is (role not in ("clean CBSD68",))


def test_an_unmeasured_column_fails_as_not_measured_and_no_default_is_chosen():
    rep, roles = report({"m": good()}, drop=("clean CBSD68",))
    verdict = judge(rep, roles, ["m"])
    check = checks_by_name(verdict, "m")["clean CBSD68 ≥ 36 dB"]
    assert check.passed is None and "not measured" in check.detail
    assert verdict.default is None and "none by the rule" in verdict.rule
    assert "n/a: not measured" in verdict_markdown(verdict)


def test_without_bm3d_row_the_classics_checks_are_not_measured():
    rep, roles = report({"m": good()})
    del rep.scores["bm3d"]
    checks = checks_by_name(judge(rep, roles, ["m"]), "m")
    assert checks["BSD68 σ=25 ≥ BM3D + 0.3 dB"].passed is None
    assert "bm3d on BSD68 σ=25" in checks["BSD68 σ=25 ≥ BM3D + 0.3 dB"].detail


def test_when_every_model_harms_a_column_the_best_mean_is_named_but_not_chosen():
    rep, roles = report({"a": good(SOTS=15.0), "b": good(LOL=7.0, SOTS=30.0)})
    verdict = judge(rep, roles, ["a", "b"])
    assert verdict.default is None and verdict.harmless == []
    best = max(verdict.averages, key=verdict.averages.get)
    assert f"is {best}'s" in verdict.rule


def test_unknown_rows_and_mismatched_roles_are_errors():
    rep, roles = report({"m": good()})
    with pytest.raises(ExpertirError, match="no row 'x'"):
        judge(rep, roles, ["x"])
    with pytest.raises(ExpertirError, match="roles for"):
        column_roles(rep, ROLES[:-1])


def test_comparison_names_the_columns_each_model_wins_and_loses():
    from expertir.evaluation.verdict import comparison_markdown

    base = good()
    rep, roles = report({"base": base, "m": good(**{"BSD68 σ=25": 29.3, "Rain100L": 30.0, "LOL": 21.02,
                                                     "clean CBSD68": 41.0})})
    text = comparison_markdown(rep, roles, ["m", "base"], "base")
    assert text.startswith("**m against base** (same budget): wins on BSD68 σ=25 (+0.50)")
    assert "loses on Rain100L (-1.00)" in text and "LOL (+0.02)" in text.split("ties on")[1]
    assert f"mean {(0.5 - 1.0 + 0.02) / len(TEST_ROLES):+.2f} dB over {len(TEST_ROLES)} test columns" in text
    assert "clean CBSD68 +1.00" in text and "base against" not in text
