"""The tolerance policy: one table, one rule, one place.

For a variant run in dtype ``d`` and a float64 oracle::

    err(variant, oracle64) <= k[check] * err(baseline_d, oracle64) + floor(d)

``baseline_d`` is the plain reference run in dtype ``d`` (the same-precision baseline
flash-attention's tests use): a variant may be ``k`` times less accurate than the naive
computation in its own dtype, never more. The rule is applied to two figures, both
of which must hold:

* max-abs error, with ``floor(d) = floor_ulps * eps(d) * max(magnitude, 1)``, where
  magnitude is ``max |oracle|`` unless the family gives the scale of the computation
  (gradients: the largest oracle gradient of the case, because a gradient that is 0
  by cancellation, like dk with a single key, still carries the rounding of the
  intermediates it was computed from, while a same-dtype baseline may cancel exactly);
* relative RMS error ``||x - ref||_2 / ||ref||_2``, with ``floor(d) = floor_ulps * eps(d)``;
  where the family gives a magnitude, the floor is that absolute floor expressed
  relative to ``rms(ref)`` (never below ``floor_ulps * eps(d)``): a gradient a million
  times smaller than the others (dg under extreme gates) is judged at the scale of the
  computation that produced it, as the max-abs rule already does.

Cancellation. Where a result is a difference of intermediates that cancel in exact
arithmetic, a correct kernel may leave an error that neither baseline makes (attention's
dq and dk: a flash-style backward forms dp_j - D with D = rowsum(dout * out), from the
output it stored in the dtype; the baselines' backward never forms D). The family
computes that allowance, an absolute error, and passes it as ``cancelling``: it is added
to the max-abs threshold of both grades, and over ``rms(ref)`` to the relative RMS one.

A value that is not finite fails, whatever the figures. Exact checks (``exact_zero``)
compare with ``==`` and have no tolerance at all.

The margin ``1 - max(err / threshold)`` is 1 for a perfect match, 0 at the limit and
negative for a failure, so a report can show how close a pass came.

Grades (issue 15). In bfloat16 and float16 the same-dtype baseline is the *naive*
computation: every intermediate rounded to the dtype. A kernel that accumulates in
float32 is about ten times more accurate than that, so a kernel that accumulates in
the low dtype (a real bug) still passes the rule above. Each low-dtype case therefore
has a second baseline, ``base32``: the reference with inputs rounded to the dtype, all
arithmetic in float32, outputs rounded to the dtype (*fp32-accumulate*). The
``kernel`` grade holds a variant to it::

    err(variant, oracle64) <= KERNEL_POLICY[check].k * err(base32, oracle64) + floor_kernel(d)

with the same two figures and magnitudes as above (relative RMS with its own multiple
``k_rms``) and a floor of a fraction of an ulp, so that it binds only where the
baseline's error is 0. Checks outside ``KERNEL_POLICY`` (SPLIT, EXPORT, LAYOUT), families
without a ``base32`` and float32 / float64 (where the dtype baseline already
accumulates in float32) keep the naive rule under both grades. Which grade a variant
is held to is declared per variant (``@variant(..., precision=...)``); within
``graded(precision)`` it is the grade ``compare`` applies (the runner enters it around
each variant's run). Every comparison keeps ``kernel_ratio`` (the worse of max-abs and
relative RMS error over ``base32``'s, never dividing by less than the kernel floor: 1 =
as good as fp32 accumulation) and ``naive_margin`` (its margin under the naive rule),
whatever grade judged it.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass

import torch

from harness.status import ERROR, FAIL, PASS, UNSUPPORTED  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Rule:
    k: float  # allowed multiple of the same-dtype baseline's error
    floor_ulps: float  # floor, in units of the dtype's machine epsilon
    k_rms: float | None = None  # the multiple for relative RMS, where it differs from max-abs's

    @property
    def rms_k(self) -> float:
        return self.k if self.k_rms is None else self.k_rms


# The one table. Gradients go through two more matmuls and a softmax Jacobian, so
# they get more room than outputs.
POLICY: dict[str, Rule] = {
    "OUT": Rule(k=2.0, floor_ulps=4.0),
    "INV": Rule(k=2.0, floor_ulps=4.0),
    "LAYOUT": Rule(k=2.0, floor_ulps=4.0),
    "GRAD": Rule(k=3.0, floor_ulps=8.0),
    "PACK": Rule(k=2.0, floor_ulps=4.0),
    "STATE": Rule(k=2.0, floor_ulps=4.0),
    "SPLIT": Rule(k=3.0, floor_ulps=8.0),  # outputs and gradients through a chain of calls
    "REUSE": Rule(k=2.0, floor_ulps=4.0),  # outputs of calls that must reuse a cache
    "EXPORT": Rule(k=2.0, floor_ulps=4.0),  # a program's outputs and states over several calls
    "GUARD": Rule(k=2.0, floor_ulps=4.0),  # outputs with NaN / huge values just past every input's end
    "UNINIT": Rule(k=2.0, floor_ulps=4.0),  # outputs with every fresh allocation NaN-filled
}

NAIVE, KERNEL = "naive", "kernel"
GRADES = (NAIVE, KERNEL)
LOW_DTYPES = (torch.bfloat16, torch.float16)  # the dtypes with an fp32-accumulate baseline

# The kernel grade's table: multiples of the fp32-accumulate baseline's error. The
# floor is a fraction of an ulp: the baseline's own error is about half an ulp of
# each element, and a floor of whole ulps would swallow the difference the grade is
# for. See README ("Precision grades") for the measured figures behind each number.
KERNEL_FLOOR_ULPS = 0.125
KERNEL_POLICY: dict[str, Rule] = {
    check: Rule(k=2.0, floor_ulps=KERNEL_FLOOR_ULPS, k_rms=1.5)
    for check in ("OUT", "INV", "PACK", "STATE", "REUSE", "GUARD", "UNINIT")
} | {"GRAD": Rule(k=6.0, floor_ulps=KERNEL_FLOOR_ULPS)}
# Not in the table, judged by the naive rule under both grades: SPLIT and EXPORT (a
# chain of calls hands its state over in the dtype: every call boundary rounds it,
# as the naive baseline does; the fp32-accumulate baseline is one call), and LAYOUT
# (a check of strides, not of accuracy, which OUT judges on the same values; K/V
# expanded along the sequence make every key the same, the output exactly
# representable and the fp32-accumulate baseline exact, so its ratio says nothing).

_GRADE: contextvars.ContextVar[str] = contextvars.ContextVar("attn_oracle_grade", default=NAIVE)


@contextlib.contextmanager
def graded(grade: str):
    """Within the block, ``compare`` (without an explicit ``grade``) applies ``grade``."""
    if grade not in GRADES:
        raise ValueError(f"grade {grade!r} is not one of {', '.join(GRADES)}")
    token = _GRADE.set(grade)
    try:
        yield
    finally:
        _GRADE.reset(token)


def current_grade() -> str:
    return _GRADE.get()


@dataclass(frozen=True)
class Comparison:
    """Error figures of one check on one tensor; the runner adds who and what."""

    check: str
    target: str
    status: str
    error: float = math.nan  # max-abs error (exact checks: max |x| where 0 is required)
    threshold: float = math.nan
    rel_rms: float = math.nan
    rel_rms_threshold: float = math.nan
    margin: float = math.nan  # NaN for exact checks
    worst_index: tuple[int, ...] | None = None
    detail: str = ""
    grade: str = ""  # the grade whose rule gave status and margin ("" for exact checks)
    kernel_ratio: float = math.nan  # max(err / err(base32)) over both figures; NaN without base32
    naive_margin: float = math.nan  # the margin under the naive rule (== margin when graded naive)


@dataclass(frozen=True)
class Errors:
    max_abs: float
    rel_rms: float
    worst_index: tuple[int, ...]


def measure(actual: torch.Tensor, expected: torch.Tensor) -> Errors:
    """Max-abs and relative RMS error of ``actual`` against ``expected``, in float64."""
    diff = (actual.detach().to(torch.float64) - expected.detach().to(torch.float64)).abs()
    if diff.numel() == 0:
        return Errors(0.0, 0.0, ())
    flat = int(diff.argmax())
    worst = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    ref_norm = float(expected.detach().to(torch.float64).norm())
    rms = float(diff.norm())
    rel = rms / ref_norm if ref_norm > 0 else rms / math.sqrt(diff.numel())
    return Errors(float(diff.max()), rel, worst)


def _first_nonfinite(x: torch.Tensor) -> tuple[int, tuple[int, ...]]:
    bad = ~torch.isfinite(x.detach())
    count = int(bad.sum())
    index = tuple(int(i) for i in bad.nonzero()[0]) if count else ()
    return count, index


def compare(
    check: str,
    target: str,
    actual: torch.Tensor,
    oracle: torch.Tensor,
    baseline: torch.Tensor,
    dtype: torch.dtype,
    magnitude: float | None = None,
    policy: str | None = None,
    base32: torch.Tensor | None = None,
    grade: str | None = None,
    cancelling: float = 0.0,
) -> Comparison:
    """Apply the policy of ``check`` (or of the row ``policy``: GUARD on a gradient is
    judged by the GRAD row) to a variant's tensor; see the module docstring.

    ``baseline`` is the naive same-dtype reference, ``base32`` the fp32-accumulate one
    (low dtypes; None elsewhere), both the shape of ``oracle``. ``grade`` (default: the
    one ``graded`` set) picks the rule; without ``base32`` or outside the low dtypes
    the kernel grade is the naive rule. ``cancelling``: the absolute error a correct
    kernel may leave where the result cancels exactly (see the module docstring; 0: none)."""
    grade = grade or current_grade()
    if actual.shape != oracle.shape:
        return Comparison(check, target, FAIL, detail=f"shape {tuple(actual.shape)} != expected {tuple(oracle.shape)}", grade=grade)
    count, index = _first_nonfinite(actual)
    if count:
        return Comparison(check, target, FAIL, error=math.inf, worst_index=index, margin=-math.inf,
                          detail=f"{count} non-finite value(s); first at index {index}", grade=grade,
                          kernel_ratio=math.inf, naive_margin=-math.inf)
    if _first_nonfinite(baseline)[0] or (base32 is not None and _first_nonfinite(base32)[0]):
        return Comparison(check, target, ERROR, detail=f"the {dtype} baseline is not finite: the case is outside the dtype's range", grade=grade)
    row = policy or check
    got = measure(actual, oracle)
    scale, floor_scale = _scales(oracle, magnitude)
    extra = _cancellation_room(oracle, cancelling)
    naive = _judged(got, POLICY[row], measure(baseline, oracle), dtype, scale, floor_scale, extra)
    kernel_ratio, kernel = math.nan, None
    if base32 is None and dtype not in LOW_DTYPES:
        base32 = baseline  # in float32 and float64 the dtype baseline accumulates in (at least) float32
    if base32 is not None:
        fp32acc = measure(base32, oracle)
        kernel_ratio = _ratio(got, fp32acc, KERNEL_FLOOR_ULPS * torch.finfo(dtype).eps, scale, floor_scale)
        if dtype in LOW_DTYPES and row in KERNEL_POLICY:
            kernel = _judged(got, KERNEL_POLICY[row], fp32acc, dtype, scale, floor_scale, extra)
    applied = KERNEL if grade == KERNEL and kernel is not None else NAIVE
    margin, threshold, rel_threshold = kernel if applied == KERNEL else naive
    return Comparison(
        check, target, PASS if margin >= 0 else FAIL,
        error=got.max_abs, threshold=threshold, rel_rms=got.rel_rms, rel_rms_threshold=rel_threshold,
        margin=margin, worst_index=got.worst_index, grade=applied, kernel_ratio=kernel_ratio, naive_margin=naive[0],
    )


def _scales(oracle: torch.Tensor, magnitude: float | None) -> tuple[float, float]:
    """(max-abs floor scale, rel-RMS floor multiplier): ``max(magnitude, 1)``, and where the
    family gives a magnitude, that scale over ``rms(oracle)`` (never below 1)."""
    if magnitude is None:
        magnitude = float(oracle.detach().abs().max()) if oracle.numel() else 0.0
        return max(magnitude, 1.0), 1.0
    scale = max(magnitude, 1.0)
    ref_rms = float(oracle.detach().to(torch.float64).norm()) / math.sqrt(max(oracle.numel(), 1))
    return scale, max(1.0, scale / ref_rms if ref_rms > 0 else scale)


def _cancellation_room(oracle: torch.Tensor, absolute: float) -> tuple[float, float]:
    """(max-abs, rel-RMS) room for an absolute cancellation error: itself, and it over ``rms(oracle)``."""
    if not absolute:
        return 0.0, 0.0
    ref_rms = float(oracle.detach().to(torch.float64).norm()) / math.sqrt(max(oracle.numel(), 1))
    return absolute, absolute / ref_rms if ref_rms > 0 else absolute


def _judged(got: Errors, rule: Rule, base: Errors, dtype: torch.dtype, scale: float, floor_scale: float,
            extra: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float, float]:
    """(margin, max-abs threshold, rel-RMS threshold) of ``got`` under ``rule`` against ``base``;
    ``extra``: ``_cancellation_room``."""
    floor = rule.floor_ulps * torch.finfo(dtype).eps
    threshold = rule.k * base.max_abs + floor * scale + extra[0]
    rel_threshold = rule.rms_k * base.rel_rms + floor * floor_scale + extra[1]
    return 1.0 - max(got.max_abs / threshold, got.rel_rms / rel_threshold), threshold, rel_threshold


def _ratio(got: Errors, base: Errors, floor: float, scale: float, floor_scale: float) -> float:
    """The worse of ``err / max(err(base), floor)`` over max-abs and relative RMS: how many
    times the baseline's error, never dividing by less than the grade's floor (a
    baseline that happens to be exact says nothing about the variant)."""
    return max(got.max_abs / max(base.max_abs, floor * scale), got.rel_rms / max(base.rel_rms, floor * floor_scale))


def exact_zero(check: str, target: str, actual: torch.Tensor, must_be_zero: torch.Tensor) -> Comparison:
    """Exact: every element of ``actual`` where ``must_be_zero`` is True equals 0 (``==``)."""
    selected = actual.detach()[must_be_zero.expand_as(actual)]
    nonzero = selected != 0  # NaN != 0 is True, so NaN fails too
    if not bool(nonzero.any()):
        return Comparison(check, target, PASS, error=0.0, threshold=0.0, detail=f"{selected.numel()} element(s) exactly 0")
    where = (actual.detach() != 0) & must_be_zero.expand_as(actual)
    index = tuple(int(i) for i in where.nonzero()[0])
    worst = float(selected[nonzero].abs().max())
    return Comparison(check, target, FAIL, error=worst, threshold=0.0, worst_index=index,
                      detail=f"{int(nonzero.sum())} of {selected.numel()} element(s) that must be exactly 0 are not; first at index {index}")


def all_finite(check: str, target: str, tensors: dict[str, torch.Tensor]) -> Comparison:
    """Exact: no NaN or Inf in any of ``tensors``."""
    for name, x in tensors.items():
        count, index = _first_nonfinite(x)
        if count:
            return Comparison(check, target, FAIL, error=float(count), threshold=0.0, worst_index=index,
                              detail=f"{name}: {count} non-finite value(s); first at index {index}")
    return Comparison(check, target, PASS, error=0.0, threshold=0.0, detail=f"{', '.join(tensors)} finite")
