"""case -> oracle -> variant -> checks -> records.

``OracleCache`` computes each case's oracle once and shares it between every
variant of the case; ``evaluate`` runs one variant on one case and returns its
records, with limitations turned into ``unsupported`` rows.
"""

from __future__ import annotations

import shlex
import time
from collections import OrderedDict

from harness import faults, provenance
from harness.families import get_family
from harness.oracle_device import oracle_device
from harness.records import Record
from harness.registry import Variant
from harness.tolerance import UNSUPPORTED, graded


class OracleCache:
    """Oracle results by case id; bounded so a long session does not grow without end."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()  # key -> (oracle, whether it holds gradients)
        self.computed = 0  # how many oracles were actually run

    def get(self, case, device: str = "cpu", backward: bool = True):
        """The oracle of ``case``; a family with ``oracle_on_device`` computes it on
        ``oracle_device(device)`` (the variant's GPU, else the CPU) the first time. With
        ``backward=False`` a family with ``oracle_without_backward`` skips the gradients;
        a later call that needs them computes the oracle again, with them, in its place."""
        key = (case.family, case.id)
        if key in self._items and (self._items[key][1] or not backward):
            self._items.move_to_end(key)
            return self._items[key][0]
        family = get_family(case.family)  # the case type's own family computes the truth
        kwargs = {"device": oracle_device(device)} if family.oracle_on_device else {}
        if family.oracle_without_backward:
            kwargs["backward"] = backward
        value = family.oracle(case, **kwargs)
        self.computed += 1
        self._items[key] = (value, backward or not family.oracle_without_backward)
        self._items.move_to_end(key)
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value


def reproduce_command(case, variant: Variant) -> str:
    extra = f" --variants-from {shlex.quote(str(variant.source))}" if variant.source and "/harness/variants/" not in variant.source else ""
    return f"attn-oracle run --family {variant.family} --variants {shlex.quote(variant.name)} --case {shlex.quote(case.id)}{extra}"


def _identity(case, variant: Variant) -> dict:
    """The fields every record of ``variant`` on ``case`` shares."""
    return dict(case_id=case.id, family=variant.family, variant=variant.name, dtype=case.dtype,
                case=case.describe(), case_params=case.params(), reproduce=reproduce_command(case, variant))


def evaluate(case, variant: Variant, oracles: OracleCache) -> list[Record]:
    """Every applicable check of ``variant`` on ``case``, one record per check target."""
    family = get_family(variant.family)  # a family may reuse another's case type (microsequences)
    specs = family.checks_for(case)
    features = family.case_features(case)
    common = _identity(case, variant)

    def unsupported(spec, reason):
        return Record(check=spec.check, target=spec.target, status=UNSUPPORTED, detail=reason, **common)

    reason = variant.unavailable_reason() or get_family(case.family).case_unavailable(case)
    whole = variant.limitation_for(features, case.dtype)
    if reason or whole:
        return [unsupported(s, reason or whole.reason) for s in specs]
    records, wanted = [], []
    for spec in specs:
        limitation = variant.limitation_for(features, case.dtype, spec.tags)
        if limitation:
            records.append(unsupported(spec, limitation.reason))
        else:
            wanted.append(spec)
    if not wanted:
        return records
    oracle = oracles.get(case, variant.device, backward=any(spec.backward for spec in wanted))
    start = time.perf_counter()
    with provenance.collected() as ran, faults.adapter(variant.source), graded(variant.precision):
        comparisons = family.run(case, variant.fn, variant.device, oracle, wanted)
    seconds = time.perf_counter() - start
    for spec in wanted:
        c = comparisons[spec.key]
        known = variant.known_failure_for(features, case.dtype, spec.tags, case.id)
        records.append(Record(check=c.check, target=c.target, status=c.status, error=c.error, threshold=c.threshold,
                              rel_rms=c.rel_rms, rel_rms_threshold=c.rel_rms_threshold, margin=c.margin,
                              worst_index=str(c.worst_index) if c.worst_index is not None else "",
                              detail=c.detail, seconds=seconds, known_failure=known.reason if known else "",
                              provenance="; ".join(ran), grade=c.grade, kernel_ratio=c.kernel_ratio,
                              naive_margin=c.naive_margin, **common))
    return records


def crash_records(case, variant: Variant, detail: str, check: str | None = None) -> list[Record]:
    """``error`` records for a variant whose process died on ``case`` (every check, or
    only ``check``): a native crash is a result of that variant on that case."""
    family = get_family(variant.family)
    return [Record(check=s.check, target=s.target, status="error", detail=detail, **_identity(case, variant))
            for s in family.checks_for(case) if check is None or s.check == check]
