"""The kernel grade (harness/tolerance.py, issue 15): why it exists, and that it can fail.

In bfloat16 and float16 the naive rule compares a variant with the plain reference
run in the dtype, which rounds every intermediate. A kernel that accumulates in the
low dtype is about as good as that, so it passes the naive rule; the kernel grade
compares with the fp32-accumulate baseline (float32 arithmetic, results rounded to the
dtype) and catches it. Each mutant below is right in float32 arithmetic except for one
accumulator kept in the input dtype; its correct twin keeps that accumulator in float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch

import mutants_attention as ma
import mutants_gated_delta as mg
from cases import catalogue
from harness.families import CheckSpec, get_family
from harness.registry import DEFAULT_PRECISION, Variant, VariantError, register
from harness.tolerance import (FAIL, KERNEL, KERNEL_POLICY, NAIVE, PASS, POLICY, compare, current_grade, graded)

LOW = ("bfloat16", "float16")

# max |oracle| = 3; the fp32-accumulate baseline is off by 0.01 at one element, the
# naive one by 0.1 (both above the kernel floor in bfloat16): closed-form figures, as
# in tests/test_tolerance.py.
ORACLE = torch.tensor([3.0, -1.0, 0.5, 2.0, 0.0, 1.0], dtype=torch.float64)


def off_by(at: int, amount: float) -> torch.Tensor:
    x = ORACLE.clone()
    x[at] += amount
    return x


NAIVE_BASE, FP32_BASE = off_by(1, 0.1), off_by(1, 0.01)


# ------------------------------------------------------------------ the rule itself

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("check", sorted(KERNEL_POLICY))
def test_kernel_thresholds_in_closed_form(check, dtype):
    rule, eps = KERNEL_POLICY[check], torch.finfo(dtype).eps
    c = compare(check, "out", off_by(3, 0.02), ORACLE, NAIVE_BASE, dtype, base32=FP32_BASE, grade=KERNEL)
    norm = float(ORACLE.norm())
    assert c.grade == KERNEL
    assert c.threshold == pytest.approx(rule.k * 0.01 + rule.floor_ulps * eps * 3.0)
    assert c.rel_rms_threshold == pytest.approx(rule.rms_k * 0.01 / norm + rule.floor_ulps * eps)
    assert c.kernel_ratio == pytest.approx(2.0)  # 0.02 against 0.01, in both figures


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_an_error_the_naive_rule_accepts_fails_the_kernel_grade(dtype):
    actual = off_by(3, 0.05)  # half the naive baseline's error, five times the fp32-accumulate one's
    naive = compare("OUT", "out", actual, ORACLE, NAIVE_BASE, dtype, base32=FP32_BASE, grade=NAIVE)
    kernel = compare("OUT", "out", actual, ORACLE, NAIVE_BASE, dtype, base32=FP32_BASE, grade=KERNEL)
    assert (naive.status, kernel.status) == (PASS, FAIL)
    assert kernel.naive_margin == pytest.approx(naive.margin)  # both figures kept, whatever the grade
    assert naive.kernel_ratio == kernel.kernel_ratio == pytest.approx(5.0)


@pytest.mark.parametrize("grade", [NAIVE, KERNEL])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_and_inf_never_pass_either_grade(grade, bad):
    actual = off_by(2, 0.0)
    actual[2] = bad
    c = compare("OUT", "out", actual, ORACLE, NAIVE_BASE, torch.bfloat16, base32=FP32_BASE, grade=grade)
    assert c.status == FAIL and c.kernel_ratio == math.inf


def test_a_non_finite_fp32_accumulate_baseline_is_an_error_not_a_pass():
    c = compare("OUT", "out", ORACLE.clone(), ORACLE, NAIVE_BASE, torch.bfloat16, base32=off_by(0, math.inf), grade=KERNEL)
    assert c.status == "error"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_float32_and_float64_the_kernel_grade_is_the_naive_rule(dtype):
    actual = off_by(3, 0.05)
    naive = compare("OUT", "out", actual, ORACLE, NAIVE_BASE, dtype, grade=NAIVE)
    kernel = compare("OUT", "out", actual, ORACLE, NAIVE_BASE, dtype, grade=KERNEL)
    assert (kernel.status, kernel.margin, kernel.grade) == (naive.status, naive.margin, NAIVE)
    assert kernel.kernel_ratio == pytest.approx(0.5)  # against the dtype baseline, itself float32 arithmetic


def test_checks_outside_the_kernel_table_keep_the_naive_rule():
    # SPLIT hands the state over in the dtype between calls: the naive rule under both grades.
    assert "SPLIT" not in KERNEL_POLICY and "SPLIT" in POLICY
    actual = off_by(3, 0.05)
    c = compare("SPLIT", "out", actual, ORACLE, NAIVE_BASE, torch.bfloat16, base32=FP32_BASE, grade=KERNEL)
    assert (c.status, c.grade) == (PASS, NAIVE) and c.kernel_ratio == pytest.approx(5.0)


def test_graded_sets_the_default_grade_and_restores_it():
    assert current_grade() == NAIVE
    with graded(KERNEL):
        assert current_grade() == KERNEL
        c = compare("OUT", "out", off_by(3, 0.05), ORACLE, NAIVE_BASE, torch.bfloat16, base32=FP32_BASE)
        assert (c.grade, c.status) == (KERNEL, FAIL)
    assert current_grade() == NAIVE
    with pytest.raises(ValueError, match="grade"):
        with graded("strict"):
            pass


def test_variants_declare_their_precision():
    def adapter(q, k, v, *, scale, causal, window, alignment, mask, softcap):
        return q

    assert Variant("attention", "x", adapter).precision == DEFAULT_PRECISION == KERNEL
    with pytest.raises(VariantError, match="precision"):
        register(Variant("attention", "precision_typo", adapter, precision="exact"))


# ------------------------------------------------------------- mutants and their twins

PER_DTYPE = 3  # the cheapest cases that qualify, per family and dtype (the suite's time)


def _cheapest(cases, cost):
    return [c for d in LOW for c in sorted((c for c in cases if c.dtype == d), key=cost)[:PER_DTYPE]]


def _gdn_cases():
    """The catalogue's gated delta cases in the low dtypes, where the state carries memory:
    at least 15 tokens, gates mild or zero. (Extreme gates and -5 / -28 forget the state
    at every token, so a low-dtype state is rounded once, as the baseline is.) All 38
    such cases are caught (measured; README, "Precision grades")."""
    cases = [dataclasses.replace(c, dtype=d) for c in catalogue("gated_delta")
             if c.length >= 15 and c.gates in ("mild", "zero") for d in LOW]
    return _cheapest(cases, lambda c: (c.batch * c.length * c.heads_v * c.dim_k * c.dim_v, c.id))


def _attention_cases():
    """The catalogue's low-dtype attention cases with 32 keys or more (a sum over 15 keys
    rounds too few times to stand out from the final rounding). All 12 are caught."""
    cases = [c for c in catalogue("attention") if c.dtype in LOW and c.len_k >= 32 and c.len_q]
    return _cheapest(cases, lambda c: (c.batch * c.heads_q * c.len_q * c.len_k * c.head_dim, c.id))


MUTANTS = {  # family -> (the low-dtype accumulator, its float32 twin, the checks, the cases)
    "attention": (ma.pv_accumulated_in_input_dtype, ma.float32_accumulate, [CheckSpec("OUT", "out")], _attention_cases()),
    "gated_delta": (mg.state_accumulated_in_input_dtype, mg.float32_state,
                    [CheckSpec("OUT", "out"), CheckSpec("STATE", "final")], _gdn_cases()),
}
PAIRS = [(family, case) for family, (*_, cases) in MUTANTS.items() for case in cases]


@functools.lru_cache(maxsize=None)
def _oracle(family, case):
    return get_family(family).oracle(case)


def _statuses(family, case, fn, grade) -> dict[str, str]:
    specs = MUTANTS[family][2]
    with graded(grade):
        results = get_family(family).run(case, fn, "cpu", _oracle(family, case), specs)
    return {key: c.status for key, c in results.items()}


def test_the_mutant_cases_cover_both_low_dtypes():
    for family, (*_, cases) in MUTANTS.items():
        assert {c.dtype for c in cases} == set(LOW), family
        assert len(cases) == 2 * PER_DTYPE, family


@pytest.mark.parametrize("family, case", PAIRS, ids=[f"{f}-{c.id}" for f, c in PAIRS])
def test_a_low_dtype_accumulator_passes_naive_and_is_caught_by_the_kernel_grade(family, case):
    mutant = MUTANTS[family][0]
    assert set(_statuses(family, case, mutant, NAIVE).values()) == {PASS}, "the naive rule accepts it: why the grade exists"
    assert FAIL in _statuses(family, case, mutant, KERNEL).values()


@pytest.mark.parametrize("family, case", PAIRS, ids=[f"{f}-{c.id}" for f, c in PAIRS])
def test_its_float32_twin_passes_the_kernel_grade(family, case):
    assert set(_statuses(family, case, MUTANTS[family][1], KERNEL).values()) == {PASS}


# ------------------------------------------------------------ the sensitivity benchmark

def test_the_sensitivity_scan_reports_the_smallest_eps_caught_throughout():
    from harness.sensitivity import smallest_caught

    assert smallest_caught({2: True, 3: True, 4: False, 5: True}) == 3  # a catch below a miss does not count
    assert smallest_caught({2: False, 3: True}) is None


@pytest.mark.parametrize("target", ["output", "gradient"])
def test_under_the_kernel_grade_bfloat16_catches_an_error_the_naive_rule_misses(target):
    """The benchmark's headline on one case: a relative error 2^-8 in SDPA math's bfloat16
    output (2^-5 in its dq) is caught by the kernel grade, not by the naive rule."""
    from harness.sensitivity import caught, setups

    (setup,) = setups(1, families=("attention",))
    case = next(c for c in setup.cases if c.dtype == "bfloat16")
    oracle = get_family("attention").oracle(case)
    eps = 2.0 ** (-8 if target == "output" else -5)
    assert caught(setup, case, oracle, target, eps) == (False, True)
    assert caught(setup, case, oracle, target, 0.0) == (False, False)  # the variant itself passes both


# ------------------------------------------------------------------------ the report

def test_the_report_shows_each_variants_worst_kernel_ratio_beside_its_naive_margin():
    import pandas as pd

    from harness.records import Record
    from harness.report import grades_table

    def row(variant, dtype, ratio, margin, naive_margin, status=PASS, grade=KERNEL):
        return Record(case_id=f"c-{ratio}", family="attention", variant=variant, check="OUT", target="out", status=status,
                      dtype=dtype, margin=margin, grade=grade, kernel_ratio=ratio, naive_margin=naive_margin).__dict__

    frame = pd.DataFrame([row("good", "bfloat16", 1.0, 0.5, 0.95), row("good", "bfloat16", 1.4, 0.3, 0.93),
                          row("bad", "bfloat16", 4.0, -0.8, 0.8, status=FAIL), row("good", "float32", 9.0, 0.1, 0.1),
                          row("old", "float16", math.nan, 0.9, math.nan)])
    table = grades_table(frame)
    assert [(r["variant"], r["dtype"]) for r in table] == [("bad", "bfloat16"), ("good", "bfloat16")]  # worst first
    good = table[1]
    assert (good["worst_ratio"], good["min_margin"], good["min_naive_margin"], good["failures"]) == (1.4, 0.3, 0.93, 0)
    assert good["worst"] == "c-1.4 (OUT:out)" and table[0]["failures"] == 1
    assert grades_table(frame.drop(columns=["kernel_ratio"])) == []  # results saved before the column existed


def test_results_saved_before_the_grade_columns_load_with_empty_ones(tmp_path):
    import pandas as pd

    from harness import records

    old = pd.DataFrame([{"case_id": "c", "family": "attention", "variant": "v", "check": "OUT", "target": "out",
                         "status": PASS, "dtype": "bfloat16", "margin": 0.5, "case_params": "{}"}])
    old.to_csv(tmp_path / "results.csv", index=False)
    frame = records.load(tmp_path / "results.csv")
    assert frame.loc[0, "grade"] == "" and math.isnan(frame.loc[0, "kernel_ratio"]) and math.isnan(frame.loc[0, "naive_margin"])


# ------------------------------------------------- gradients that cancel (dq, dk)

CANCELLING = [  # a single key (dq = dk = 0 exactly), and peaked softmaxes over 2 and 4 keys
    "b1-h1x1-q1-k1-d32v32-f32-br-sc1-s0", "b1-h1x1-q1-k2-d32v32-bf16-br-sc1-s0", "b1-h2x2-q2-k4-d64v64-f16-br-sc1-s36",
    "b1-h1x1-q4-k2-d64v64-bf16-br-sc1-s0"]  # D from the kernel's own output (found by a Hypothesis draw)


@pytest.mark.parametrize("case_id", CANCELLING)
def test_the_cpu_flash_backward_passes_where_dq_and_dk_cancel_and_fails_without_the_allowance(case_id, monkeypatch):
    """The CPU flash kernel forms D = rowsum(dout * out) from the output it stored in the
    dtype (and rounds dp - D in float32): the attention oracle's ``cancelling`` allowance,
    of the size of the kernel's error, not orders above it."""
    from harness.families.attention import AttentionOracle
    from harness.registry import variants
    from harness.runner import OracleCache, evaluate

    flash = variants("attention", ["sdpa_flash_cpu"])
    if not flash or flash[0].unavailable_reason():
        pytest.skip("the CPU flash kernel is not available here")
    case = get_family("attention").case_from_id(case_id)
    cache = OracleCache()

    def gradients():
        return {r.target: r for r in evaluate(case, flash[0], cache) if r.check == "GRAD"}

    records, oracle = gradients(), cache.get(case)
    for name in ("dq", "dk"):
        assert records[name].status == PASS, name
        assert oracle.cancellings()[name] <= 20 * records[name].error, name
    assert "dv" not in oracle.cancellings()
    monkeypatch.setattr(AttentionOracle, "cancellings", lambda self, out=None: {})
    assert FAIL in {gradients()[name].status for name in ("dq", "dk")}


def test_the_allowance_takes_the_kernels_own_stored_output_where_it_is_off_by_more_than_rounding(monkeypatch):
    """On this draw the CPU flash kernel's forward output is within OUT's threshold but its
    row 1 is off 4x more than the fp32-accumulate output rounded; its backward's D comes
    from that output, and dk is 0.080 off (0.041 with D from the rounded fp32 output,
    0.004 from the fp32 output itself). The model alone would fail it; the realised
    difference of the kernel's own output passes it."""
    from harness.families.attention import AttentionOracle
    from harness.registry import variants
    from harness.runner import OracleCache, evaluate

    flash = variants("attention", ["sdpa_flash_cpu"])
    if not flash or flash[0].unavailable_reason():
        pytest.skip("the CPU flash kernel is not available here")
    case = get_family("attention").case_from_id("b1-h1x1-q4-k2-d64v64-bf16-br-sc1-s0")

    def dk():
        return next(r for r in evaluate(case, flash[0], OracleCache()) if (r.check, r.target) == ("GRAD", "dk"))

    assert dk().status == PASS
    monkeypatch.setattr(AttentionOracle, "cancellings", lambda self, out=None: self._cancelling)  # the model's only
    assert dk().status == FAIL
