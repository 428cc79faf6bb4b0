"""The parametrisation of the equivalence suite: variants x cases x checks.

Used by ``tests/test_equivalence.py``; kept here so that the CLI and the tests
agree on what "the default suite" is.
"""

from __future__ import annotations

from dataclasses import dataclass

from cases import catalogue, long_catalogue
from harness.families import family_names, get_family
from harness.registry import Variant, variants


@dataclass(frozen=True)
class SuiteItem:
    variant: Variant
    case: object
    check: str

    @property
    def id(self) -> str:
        return f"{self.variant.name}-{self.check}-{self.case.id}"


def suite_items(families=None, variant_names=None, case_ids=None, profile: str = "default") -> list[SuiteItem]:
    """``profile`` "long": the production-length cases of ``cases/long.py`` instead of the catalogue."""
    cases_of = long_catalogue if profile == "long" else catalogue
    items = []
    for family_name in families or family_names():
        family = get_family(family_name)
        cases = [family.case_from_id(c) for c in case_ids] if case_ids else cases_of(family_name)
        for variant in variants(family_name):
            if variant_names and variant.name not in variant_names:
                continue
            for case in cases:
                checks = dict.fromkeys(spec.check for spec in family.checks_for(case))
                items.extend(SuiteItem(variant, case, check) for check in checks)
    return items
