"""The limitation of variants that materialise the scores, for the ``long`` profile's cases.

A case has the feature ``long`` when one call holds ``LONG_SCORES`` scores or more
(``harness.families.attention``: 2^27, 512 MiB per float32 score tensor); a variant
that builds ``[.., Lq, Lk]`` tensors (and keeps several for its backward) would need
several GiB there, more than the machines the long profile runs on.
"""

from __future__ import annotations

from harness.registry import Limitation


def materialises_scores(what: str, checks=None) -> Limitation:
    """``what`` (e.g. "the math backend") cannot run the long profile's cases (or only ``checks`` of them)."""
    return Limitation(f"{what} materialises the [Lq, Lk] scores per head (and keeps them for its backward): several "
                      "GiB at the long profile's lengths", features={"long"}, checks=checks)
