"""What the equivalence tests call: evaluate once per (case, variant), record, report.

The same ``EquivalenceSession`` backs the pytest suite and ``attn-oracle run``; each
(variant, case) is evaluated once per process and each case's oracle is shared by
all variants of that case.
"""

from __future__ import annotations

from harness import records as record_store
from harness.records import Record
from harness.registry import Variant
from harness.runner import OracleCache, evaluate


class EquivalenceSession:
    def __init__(self, results_dir: str | None = None):
        self.results_dir = results_dir
        self.oracles = OracleCache()
        self._evaluated: dict[tuple[str, str], list[Record]] = {}
        self._written: set[tuple[str, str, str]] = set()

    def records(self, case, variant: Variant, check: str | None = None) -> list[Record]:
        """Records of ``variant`` on ``case`` (all checks, or one), stored once each."""
        key = (variant.family, variant.name, case.id)
        if key not in self._evaluated:
            self._evaluated[key] = evaluate(case, variant, self.oracles)
        chosen = [r for r in self._evaluated[key] if check is None or r.check == check]
        self._store(key, check, chosen)
        return chosen

    def _store(self, key, check, chosen):
        mark = (*key, check or "*")
        if not self.results_dir or mark in self._written or (*key, "*") in self._written:
            return
        self._written.add(mark)
        record_store.append(record_store.process_file(self.results_dir), chosen)
