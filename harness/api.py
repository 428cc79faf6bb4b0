"""attn-oracle from Python: hold one implementation to the oracles, get the records.

    import harness

    def my_attention(q, k, v, *, scale, causal, window, alignment, mask, softcap):
        ...  # the attention family's contract (see harness.families.attention)

    frame = harness.check(my_attention, "attention", dtypes=["float32"])   # a pandas DataFrame
    harness.assert_equivalent(my_attention, "attention", checks=["OUT", "GRAD"])

``check`` evaluates the variant (a function with the family's adapter contract, or the name
of a registered variant) on the family's catalogue cases (or the cases given) and returns
one row per check target, with the columns of ``harness.records.Record``. Limitations and
known failures are the registry's (``harness.registry.Limitation``, ``KnownFailure``), given
here as arguments for a plain function. ``assert_equivalent`` raises ``AssertionError`` with
a summary of the failing rows, in the spirit of ``torch.testing.assert_close``.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict
from typing import Callable, Iterable

import pandas as pd

from harness.families import get_family
from harness.records import Record
from harness.registry import DTYPES, KnownFailure, Limitation, Variant, VariantError, variants
from harness.runner import OracleCache, evaluate
from harness.status import ADAPTER_ERROR, ERROR, FAIL, PASS, UNSUPPORTED

_ORACLES = OracleCache()  # shared by every call in the process: a case's oracle is computed once


def _variant(variant: Callable | str | Variant, family: str | None, dtypes, limitations, known_failures,
             device: str) -> Variant:
    if isinstance(variant, Variant):
        return variant
    if isinstance(variant, str):
        found = [v for v in variants(family) if v.name == variant]
        if not found:
            raise VariantError(f"no registered variant {variant!r}" + (f" in family {family!r}" if family else "")
                               + "; `attn-oracle list` shows them")
        if len(found) > 1:
            raise VariantError(f"variant {variant!r} is registered in families "
                               f"{', '.join(v.family for v in found)}: name one with family=")
        return found[0]
    if family is None:
        raise VariantError("a function needs its family: check(fn, 'attention', ...)")
    if not callable(variant):
        raise VariantError(f"check() takes a function or a registered variant's name, not {type(variant).__name__}")
    problem = get_family(family).signature_problem(variant)  # an unknown family: a KeyError naming the known ones
    if problem:
        raise VariantError(f"{getattr(variant, '__name__', variant)!r} for family {family!r}: {problem}")
    source = inspect.getsourcefile(variant) or "<unknown>"
    return Variant(family, getattr(variant, "__name__", "variant"), variant, tuple(dtypes or DTYPES[:3]), device,
                   limitations=tuple(limitations), known_failures=tuple(known_failures), source=source)


def check(variant: Callable | str, family: str | None = None, *, cases: Iterable | None = None,
          checks: Iterable[str] | None = None, dtypes: Iterable[str] | None = None,
          limitations: Iterable[Limitation] = (), known_failures: Iterable[KnownFailure] = (),
          device: str = "cpu") -> pd.DataFrame:
    """The records of ``variant`` on ``cases`` (default: the family's catalogue), one row per
    check target; ``checks`` keeps only these checks (``OUT``, ``GRAD``, ...); ``dtypes``
    narrows the cases to these dtypes (and, for a function, says which it takes)."""
    from cases import catalogue

    chosen = _variant(variant, family, dtypes, limitations, known_failures, device)
    spec_family = get_family(chosen.family)
    listed = list(cases) if cases is not None else catalogue(chosen.family)
    listed = [spec_family.case_from_id(c) if isinstance(c, str) else c for c in listed]
    if dtypes is not None:
        listed = [c for c in listed if c.dtype in set(dtypes)]
    wanted = set(checks) if checks is not None else None
    rows: list[Record] = []
    for case in listed:
        rows += [r for r in evaluate(case, chosen, _ORACLES) if wanted is None or r.check in wanted]
    return pd.DataFrame([asdict(r) for r in rows], columns=list(Record.__dataclass_fields__))


def assert_equivalent(variant: Callable | str, family: str | None = None, **options) -> pd.DataFrame:
    """``check``, then raise ``AssertionError`` if a row failed, errored or met an adapter error
    (declared known failures aside), or if nothing was compared at all; returns the records."""
    frame = check(variant, family, **options)
    bad = frame[frame["status"].isin([FAIL, ERROR, ADAPTER_ERROR]) & (frame["known_failure"] == "")]
    if len(frame) == 0 or not (frame["status"] == PASS).any() and not len(bad):
        reasons = sorted(set(frame.loc[frame["status"] == UNSUPPORTED, "detail"]))[:3]
        raise AssertionError(f"nothing was compared: {len(frame)} rows, none passed or failed"
                             + (f"; unsupported: {'; '.join(reasons)}" if reasons else ""))
    if len(bad):
        lines = [f"{len(bad)} of {len(frame)} check targets failed ({bad['case_id'].nunique()} of "
                 f"{frame['case_id'].nunique()} cases):"]
        for row in bad.sort_values("margin").head(10).itertuples():
            lines.append(f"  {row.check}:{row.target} {row.status} on {row.case_id}: error={row.error:.3g} "
                         f"threshold={row.threshold:.3g} margin={row.margin:.3g} {row.detail[:200]}")
        if len(bad) > 10:
            lines.append(f"  ... and {len(bad) - 10} more")
        raise AssertionError("\n".join(lines))
    return frame
