"""The equivalence suite: every registered variant x every catalogue case x every check.

A test fails when any target of its check fails; it is skipped, with the
limitation's reason, when every target is unsupported; it is a strict xfail when
every failing target is a declared known failure (and fails if a declared one passes). Tests of one case share a
pytest-xdist group so the case's oracle is computed once.
"""

import pytest

from harness.suite import suite_items
from harness.tolerance import FAIL, ERROR, UNSUPPORTED


def pytest_generate_tests(metafunc):
    if "item" in metafunc.fixturenames:
        items = suite_items()
        metafunc.parametrize("item", [pytest.param(i, id=i.id, marks=[pytest.mark.xdist_group(i.case.id), pytest.mark.equivalence])
                                      for i in items])


def test_equivalence(item, attn_session):
    records = attn_session.records(item.case, item.variant, item.check)
    assert records, f"no records for {item.id}"
    if all(r.status == UNSUPPORTED for r in records):
        pytest.skip(records[0].detail)
    bad = [r for r in records if r.status in (FAIL, ERROR)]
    declared = [r for r in records if r.known_failure]
    if declared and not [r for r in declared if r.status in (FAIL, ERROR)]:
        pytest.fail(f"declared known failure did not fail, remove the declaration: {declared[0].known_failure}")
    if bad and all(r.known_failure for r in bad):
        pytest.xfail(f"known failure: {bad[0].known_failure} ({bad[0].status}: {bad[0].detail[:200]})")
    assert not bad, "\n".join(
        f"{r.check}:{r.target} {r.status}: error={r.error:.3g} threshold={r.threshold:.3g} margin={r.margin:.3g} "
        f"worst at {r.worst_index} {r.detail}\n  case: {r.case}\n  reproduce: {r.reproduce}" for r in bad)
