"""Cases drawn from the families' Hypothesis strategies (``harness.fuzz.STRATEGIES``) for
``attn-oracle run --profile NAME``: the profile's ``max_examples`` cases per family,
added to the catalogue's, the same ones for the same seed and command line (Hypothesis also
draws constants found in the local modules a process has imported, so a process that has
imported other modules may draw other cases from the same seed)."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Unsatisfiable


def drawn_cases(family: str, count: int, seed: int, variants: list | None = None) -> list:
    """Up to ``count`` distinct cases of ``family`` (none for a family without a strategy);
    with ``variants``, only cases one of them takes (see ``harness.fuzz.supported_by``)."""
    from harness.fuzz import STRATEGIES, supported_by

    if family not in STRATEGIES:
        return []
    strategy, dtypes = STRATEGIES[family]
    drawn = strategy(dtypes) if variants is None else strategy(dtypes).filter(supported_by(variants))
    found: dict[str, object] = {}

    @hypothesis_seed(seed)
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck))  # every setting given: the draws follow the seed, not the profile
    @given(drawn)
    def collect(case):
        found.setdefault(case.id, case)

    try:
        collect()
    except Unsatisfiable:  # the variants take none of the cases the strategy draws
        pass
    return list(found.values())
