"""Tests of the tolerance policy (harness/tolerance.py).

Tensors are built so that every error figure is known in closed form; the expected
thresholds are recomputed here from ``POLICY`` and ``torch.finfo(dtype).eps`` as the
module docstring states them:

    max-abs:  k * base_max_abs + floor_ulps * eps * max(max|oracle|, 1)
    rel RMS:  k * base_rel_rms + floor_ulps * eps,   rel_rms = ||x - ref|| / ||ref||
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.tolerance import ERROR, FAIL, PASS, POLICY, all_finite, compare, exact_zero, measure

# max |oracle| = 3, ||oracle||_2 = sqrt(9 + 1 + 0.25 + 4 + 0 + 1) = sqrt(15.25)
ORACLE = torch.tensor([3.0, -1.0, 0.5, 2.0, 0.0, 1.0], dtype=torch.float64)
ORACLE_MAX, ORACLE_NORM = 3.0, math.sqrt(15.25)
CHECKS = list(POLICY)
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def with_error(at: int, amount: float) -> torch.Tensor:
    x = ORACLE.clone()
    x[at] += amount
    return x


def spread_error(amount: float) -> torch.Tensor:
    """Every element off by +amount: max-abs = amount, rel RMS = amount * sqrt(n) / ||oracle||."""
    return ORACLE + amount


def expected_thresholds(check, dtype, base_max_abs, base_rel_rms):
    rule, eps = POLICY[check], torch.finfo(dtype).eps
    return (rule.k * base_max_abs + rule.floor_ulps * eps * max(ORACLE_MAX, 1.0),
            rule.k * base_rel_rms + rule.floor_ulps * eps)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_passes_with_margin_one(check, dtype):
    baseline = with_error(0, 0.01)
    c = compare(check, "out", ORACLE.clone(), ORACLE, baseline, dtype)
    assert c.status == PASS
    assert c.margin == 1.0
    assert c.error == 0.0 and c.rel_rms == 0.0
    assert (c.check, c.target) == (check, "out")


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_abs_threshold_boundary(check, dtype):
    # Baseline off by delta at one element; the variant off by e at another element.
    # With a single-element error, rel RMS is e/||oracle|| against
    # (k*delta)/||oracle|| + floor*eps; since ||oracle|| > max|oracle| the max-abs rule binds.
    delta = 1e-3
    baseline = with_error(2, delta)
    threshold, rel_threshold = expected_thresholds(check, dtype, delta, delta / ORACLE_NORM)
    assert threshold / ORACLE_NORM < rel_threshold  # the max-abs rule is the binding one

    below = compare(check, "out", with_error(3, 0.99 * threshold), ORACLE, baseline, dtype)
    above = compare(check, "out", with_error(3, 1.01 * threshold), ORACLE, baseline, dtype)
    assert below.status == PASS and above.status == FAIL
    for c in (below, above):
        assert c.threshold == pytest.approx(threshold, rel=1e-12)
        assert c.rel_rms_threshold == pytest.approx(rel_threshold, rel=1e-12)
        assert c.worst_index == (3,)
    assert below.margin == pytest.approx(0.01, rel=1e-6)
    assert above.margin == pytest.approx(-0.01, rel=1e-6)
    assert below.error == pytest.approx(0.99 * threshold, rel=1e-9)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rel_rms_threshold_boundary(check, dtype):
    # Baseline off at one element (small rel RMS); the variant off by e everywhere:
    # rel RMS = e * sqrt(n) / ||oracle||, which binds before the max-abs rule does.
    delta = 1e-3
    n = ORACLE.numel()
    baseline = with_error(0, delta)
    threshold, rel_threshold = expected_thresholds(check, dtype, delta, delta / ORACLE_NORM)
    e_limit = rel_threshold * ORACLE_NORM / math.sqrt(n)
    assert e_limit < threshold  # the max-abs figure alone would pass both cases below

    below = compare(check, "out", spread_error(0.99 * e_limit), ORACLE, baseline, dtype)
    above = compare(check, "out", spread_error(1.01 * e_limit), ORACLE, baseline, dtype)
    assert below.status == PASS and above.status == FAIL
    assert above.error < above.threshold  # failed on rel RMS alone
    assert above.rel_rms == pytest.approx(1.01 * rel_threshold, rel=1e-9)
    assert above.margin == pytest.approx(-0.01, rel=1e-6)


def test_floor_scales_with_dtype_eps_and_oracle_magnitude():
    # A perfect baseline leaves the floor alone: floor_ulps * eps * max(|oracle|, 1).
    rule = POLICY["OUT"]
    for dtype in DTYPES:
        c = compare("OUT", "out", ORACLE, ORACLE, ORACLE, dtype)
        assert c.threshold == rule.floor_ulps * torch.finfo(dtype).eps * ORACLE_MAX
        assert c.rel_rms_threshold == rule.floor_ulps * torch.finfo(dtype).eps
    small = ORACLE / 100  # max |oracle| < 1: the scale is 1, not 0.03
    c = compare("OUT", "out", small, small, small, torch.float32)
    assert c.threshold == rule.floor_ulps * torch.finfo(torch.float32).eps


def test_grad_gets_more_room_than_out():
    baseline = with_error(1, 1e-3)
    e = 2.5e-3  # above 2 * 1e-3 + floor, below 3 * 1e-3 + floor
    assert compare("OUT", "out", with_error(4, e), ORACLE, baseline, torch.float32).status == FAIL
    assert compare("GRAD", "dq", with_error(4, e), ORACLE, baseline, torch.float32).status == PASS


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_actual_fails(bad):
    # Finite and exactly equal to the oracle elsewhere, with a generous baseline.
    actual = ORACLE.clone()
    actual[4] = bad
    c = compare("OUT", "out", actual, ORACLE, with_error(0, 10.0), torch.float16)
    assert c.status == FAIL
    assert c.worst_index == (4,)
    assert c.margin == -math.inf
    assert "non-finite" in c.detail


def test_non_finite_actual_fails_even_where_oracle_is_non_finite():
    oracle = ORACLE.clone()
    oracle[1] = -math.inf
    c = compare("OUT", "lse", oracle.clone(), oracle, oracle.clone(), torch.float32)
    assert c.status == FAIL


@pytest.mark.parametrize("shape", [(5,), (6, 1), (1, 6), (7,)])
def test_shape_mismatch_fails(shape):
    actual = torch.zeros(shape, dtype=torch.float64)
    c = compare("LAYOUT", "out", actual, ORACLE, ORACLE, torch.float32)
    assert c.status == FAIL
    assert "shape" in c.detail and str(tuple(shape)) in c.detail


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_baseline_is_an_error(bad):
    baseline = ORACLE.clone()
    baseline[2] = bad
    c = compare("OUT", "out", ORACLE.clone(), ORACLE, baseline, torch.float16)
    assert c.status == ERROR
    assert "baseline" in c.detail


def test_non_finite_actual_is_a_fail_before_a_bad_baseline_is_an_error():
    actual, baseline = ORACLE.clone(), ORACLE.clone()
    actual[0], baseline[0] = math.nan, math.inf
    assert compare("OUT", "out", actual, ORACLE, baseline, torch.float16).status == FAIL


# --------------------------------------------------------------------------------------
# exact_zero
# --------------------------------------------------------------------------------------

MUST = torch.tensor([[False, True, True], [False, False, True]])


def test_exact_zero_passes_on_zeros_and_ignores_unselected():
    x = torch.tensor([[5.0, 0.0, 0.0], [math.nan, 7.0, 0.0]])
    c = exact_zero("ZERO", "out", x, MUST)
    assert c.status == PASS and c.error == 0.0
    assert "3 element(s)" in c.detail


def test_exact_zero_accepts_negative_zero():
    x = torch.tensor([[1.0, -0.0, 0.0], [1.0, 1.0, -0.0]])
    assert exact_zero("ZERO", "out", x, MUST).status == PASS


@pytest.mark.parametrize("bad", [1e-30, -1e-30, 5e-324, math.nan, math.inf])
def test_exact_zero_rejects_anything_else(bad):
    x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, bad]], dtype=torch.float64)
    c = exact_zero("ZERO", "dq", x, MUST)
    assert c.status == FAIL
    assert c.worst_index == (1, 2)
    if not math.isnan(bad):
        assert c.error == abs(bad)
    assert "1 of 3" in c.detail


def test_exact_zero_reports_first_offending_index_and_worst_value():
    x = torch.tensor([[1.0, 0.0, 1e-20], [1.0, 1.0, -3e-10]], dtype=torch.float64)
    c = exact_zero("ZERO", "dk", x, MUST)
    assert c.status == FAIL
    assert c.worst_index == (0, 2)  # first in row-major order, not the largest
    assert c.error == 3e-10
    assert "2 of 3" in c.detail


def test_exact_zero_broadcasts_the_selection():
    # A [B, H, L] row selection against a [B, H, L, D] tensor needs a trailing 1.
    x = torch.zeros(1, 2, 3, 4)
    rows = torch.zeros(1, 2, 3, 1, dtype=torch.bool)
    rows[0, 1, 2] = True
    x[0, 0, 0, 1] = 1.0  # not selected
    assert exact_zero("ZERO", "out", x, rows).status == PASS
    x[0, 1, 2, 3] = 1e-30
    c = exact_zero("ZERO", "out", x, rows)
    assert c.status == FAIL and c.worst_index == (0, 1, 2, 3)


# --------------------------------------------------------------------------------------
# all_finite
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_all_finite_fails_and_names_the_tensor(bad):
    dq, dk, dv = torch.zeros(2, 3), torch.ones(2, 3), torch.ones(4)
    dk[1, 2] = bad
    dk[1, 0] = bad
    c = all_finite("FIN", "grads", {"dq": dq, "dk": dk, "dv": dv})
    assert c.status == FAIL
    assert c.detail.startswith("dk:")
    assert c.worst_index == (1, 0)
    assert c.error == 2.0  # the count of non-finite values


def test_all_finite_passes_on_finite_tensors():
    tensors = {"dq": torch.full((2, 2), 1e300, dtype=torch.float64), "dk": torch.zeros(3), "dv": -torch.ones(1)}
    c = all_finite("FIN", "grads", tensors)
    assert c.status == PASS
    assert "dq" in c.detail and "dk" in c.detail and "dv" in c.detail


# --------------------------------------------------------------------------------------
# measure
# --------------------------------------------------------------------------------------

def test_measure_rel_rms_is_norm_ratio():
    ref = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)  # ||ref|| = 5
    x = torch.tensor([[4.0, 4.0], [0.0, -2.0]], dtype=torch.float64)  # diff (1, 0, 0, -2)
    m = measure(x, ref)
    assert m.max_abs == 2.0
    assert m.worst_index == (1, 1)
    assert m.rel_rms == pytest.approx(math.sqrt(5.0) / 5.0, rel=1e-15)


def test_measure_works_across_dtypes_in_float64():
    ref = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x = torch.tensor([1.0, 2.0 + 2.0 ** -8], dtype=torch.float16)  # exactly representable (ulp at 2 is 2**-9)
    m = measure(x, ref)
    assert m.max_abs == 2.0 ** -8
    assert m.rel_rms == pytest.approx(2.0 ** -8 / math.sqrt(5.0), rel=1e-15)


def test_a_magnitude_judges_a_tiny_gradient_at_the_scale_of_its_computation():
    """dg under extreme gates is ~1e-20 while the other gradients are ~1: an error of
    1e-24 there is below float32 rounding of the computation, not a 1e-4 relative miss."""
    oracle = torch.full((8,), 1e-20, dtype=torch.float64)
    baseline = oracle.clone()  # the baseline happens to cancel exactly
    actual = oracle + 1e-24
    assert compare("GRAD", "dg", actual, oracle, baseline, torch.float32).status == "fail"
    assert compare("GRAD", "dg", actual, oracle, baseline, torch.float32, magnitude=1.0).status == "pass"
    # ... while a gradient lost at the scale of the computation still fails
    assert compare("GRAD", "dg", torch.zeros(8), torch.ones(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64),
                   torch.float32, magnitude=1.0).status == "fail"


def test_a_cancelling_allowance_is_added_to_both_thresholds_and_no_more():
    """dq with a single key is exactly 0 and the naive baseline finds it exactly; a
    flash-style backward leaves the rounding of dp - D, which the family passes as an
    absolute allowance."""
    oracle = torch.zeros(4, 8, dtype=torch.float64)
    floor = POLICY["GRAD"].floor_ulps * torch.finfo(torch.float32).eps * 2.0  # magnitude 2
    rounded = oracle + 3 * floor
    assert compare("GRAD", "dq", rounded, oracle, oracle, torch.float32, magnitude=2.0).status == FAIL
    passed = compare("GRAD", "dq", rounded, oracle, oracle, torch.float32, magnitude=2.0, cancelling=2.5 * floor)
    assert passed.status == PASS and passed.threshold == pytest.approx(3.5 * floor)
    beyond = oracle + 3.6 * floor
    assert compare("GRAD", "dq", beyond, oracle, oracle, torch.float32, magnitude=2.0, cancelling=2.5 * floor).status == FAIL
    # on a non-zero reference the relative RMS threshold gets the allowance over rms(ref)
    ref = torch.full((4, 8), 0.5, dtype=torch.float64)
    judged = compare("GRAD", "dq", ref + 1e-3, ref, ref, torch.float32, cancelling=1e-3)
    assert judged.status == PASS and judged.rel_rms_threshold == pytest.approx(
        POLICY["GRAD"].floor_ulps * torch.finfo(torch.float32).eps + 1e-3 / 0.5)
