"""Comparisons over a schedule of calls: one verdict per check, naming the first call
where the variant and the oracle diverge.

Each argument is a list with one tensor per call. The verdict is the tolerance rule
applied to all calls at once (concatenated along ``dim``); when it fails, the detail
names the first call that fails on its own, which is where a cache bug shows first.
"""

from __future__ import annotations

from typing import Callable

import torch

from harness.tolerance import FAIL, PASS, Comparison, compare


def _with_detail(result: Comparison, text: str) -> Comparison:
    return Comparison(**{**result.__dict__, "detail": "; ".join(t for t in (result.detail, text) if t)})


def compare_calls(check: str, target: str, got: list, truth: list, baseline: list, dtype: torch.dtype,
                  describe_call: Callable[[int], str], dim: int = 1, base32: list | None = None) -> Comparison:
    """Tolerance rule over every call; on failure the detail says which call diverged first.
    ``base32``: the fp32-accumulate baseline per call (low dtypes), else None."""
    if len(got) != len(truth):
        return Comparison(check, target, FAIL, detail=f"{len(got)} call results for {len(truth)} calls")
    whole = compare(check, target, torch.cat(got, dim), torch.cat(truth, dim), torch.cat(baseline, dim), dtype,
                    base32=None if base32 is None else torch.cat(base32, dim))
    if whole.status == PASS:
        return whole
    for call, (g, t, b) in enumerate(zip(got, truth, baseline)):
        alone = compare(check, target, g, t, b, dtype, base32=None if base32 is None else base32[call])
        if alone.status != PASS:
            where = f" at index {alone.worst_index}" if alone.worst_index else ""
            return _with_detail(whole, f"first diverging call: {describe_call(call)} (error {alone.error:.3g}{where})")
    return _with_detail(whole, "no single call fails on its own: the error is spread over the schedule")


def exact_calls(check: str, target: str, got: list, expected: list, describe_call: Callable[[int], str],
                describe_index: Callable[[tuple], str] = str) -> Comparison:
    """Exact (``==``) over every call; the first call and element that differ are named."""
    if len(got) != len(expected):
        return Comparison(check, target, FAIL, detail=f"{len(got)} call results for {len(expected)} calls")
    for call, (g, e) in enumerate(zip(got, expected)):
        if g.shape != e.shape:
            return Comparison(check, target, FAIL, detail=f"{describe_call(call)}: shape {tuple(g.shape)} != {tuple(e.shape)}")
        differ = g.to(torch.float64) != e.to(torch.float64)  # NaN != anything: NaN fails
        if bool(differ.any()):
            index = tuple(int(i) for i in differ.nonzero()[0])
            error = float((g.to(torch.float64) - e.to(torch.float64))[differ].abs().nan_to_num(float("inf")).max())
            return Comparison(check, target, FAIL, error=error, threshold=0.0, worst_index=(call, *index),
                              detail=f"first differing call: {describe_call(call)}; {int(differ.sum())} element(s) differ, "
                                     f"first at {describe_index(index)}")
    return Comparison(check, target, PASS, error=0.0, threshold=0.0, detail=f"all {len(got)} call(s) exact")


def worst(results: dict[str, Comparison]) -> Comparison:
    """One verdict for several tensors (name -> comparison): the first that does not
    pass, else the one with the smallest margin; the detail names it."""
    bad = [name for name, r in results.items() if r.status != PASS]
    name = bad[0] if bad else min(results, key=lambda n: results[n].margin if results[n].margin == results[n].margin else 1.0)
    what = f"{'failing' if bad else 'smallest margin'}: {name}"
    return _with_detail(results[name], what)
