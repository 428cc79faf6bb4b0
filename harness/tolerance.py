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

A value that is not finite fails, whatever the figures. Exact checks (``exact_zero``)
compare with ``==`` and have no tolerance at all.

The margin ``1 - max(err / threshold)`` is 1 for a perfect match, 0 at the limit and
negative for a failure, so a report can show how close a pass came.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.status import ERROR, FAIL, PASS, UNSUPPORTED  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Rule:
    k: float  # allowed multiple of the same-dtype baseline's error
    floor_ulps: float  # floor, in units of the dtype's machine epsilon


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
) -> Comparison:
    """Apply the policy of ``check`` (or of the row ``policy``: GUARD on a gradient is
    judged by the GRAD row) to a variant's tensor; see the module docstring."""
    if actual.shape != oracle.shape:
        return Comparison(check, target, FAIL, detail=f"shape {tuple(actual.shape)} != expected {tuple(oracle.shape)}")
    count, index = _first_nonfinite(actual)
    if count:
        return Comparison(check, target, FAIL, error=math.inf, worst_index=index, margin=-math.inf,
                          detail=f"{count} non-finite value(s); first at index {index}")
    if _first_nonfinite(baseline)[0]:
        return Comparison(check, target, ERROR, detail=f"the {dtype} baseline is not finite: the case is outside the dtype's range")
    rule = POLICY[policy or check]
    eps = torch.finfo(dtype).eps
    got, base = measure(actual, oracle), measure(baseline, oracle)
    rel_floor = rule.floor_ulps * eps
    if magnitude is None:
        magnitude = float(oracle.detach().abs().max()) if oracle.numel() else 0.0
        scale = max(magnitude, 1.0)
    else:
        scale = max(magnitude, 1.0)
        ref_rms = float(oracle.detach().to(torch.float64).norm()) / math.sqrt(max(oracle.numel(), 1))
        rel_floor = max(rel_floor, rule.floor_ulps * eps * (scale / ref_rms if ref_rms > 0 else scale))
    threshold = rule.k * base.max_abs + rule.floor_ulps * eps * scale
    rel_threshold = rule.k * base.rel_rms + rel_floor
    margin = 1.0 - max(got.max_abs / threshold, got.rel_rms / rel_threshold)
    return Comparison(
        check, target, PASS if margin >= 0 else FAIL,
        error=got.max_abs, threshold=threshold, rel_rms=got.rel_rms, rel_rms_threshold=rel_threshold,
        margin=margin, worst_index=got.worst_index,
    )


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
