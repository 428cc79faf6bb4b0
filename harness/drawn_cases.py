"""Cases drawn from the families' Hypothesis strategies (``harness.fuzz.STRATEGIES``) for
``attn-oracle run --profile NAME``: the profile's ``max_examples`` cases per family,
added to the catalogue's, the same ones for the same seed."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed


def drawn_cases(family: str, count: int, seed: int) -> list:
    """Up to ``count`` distinct cases of ``family`` (none for a family without a strategy)."""
    from harness.fuzz import STRATEGIES

    if family not in STRATEGIES:
        return []
    strategy, dtypes = STRATEGIES[family]
    found: dict[str, object] = {}

    @hypothesis_seed(seed)
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy(dtypes))
    def collect(case):
        found.setdefault(case.id, case)

    collect()
    return list(found.values())
