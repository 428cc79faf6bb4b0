"""The equivalence suite as one pytest test, for this repository and for any project.

A project opts in with a test module of one line::

    # tests/test_attn_oracle.py
    from harness.pytest_suite import test_equivalence  # noqa: F401

pytest collects it as any test of the project, so ``-k``, ``-n``, ``--deselect``, markers
and the project's conftest work as usual and the node ids are the project's. The plugin
(``harness.plugin``) parametrizes it with the chosen variants x cases x checks
(``--variants-from``, ``[tool.attn-oracle]``).

A test fails when any target of its check fails, and names the adapter when the
adapter's own code raised; it is skipped, with the limitation's reason, when every
target is unsupported; it is a strict xfail when every failing target is a declared
known failure (and fails if a declared one passes).
"""

import pytest

from harness.status import ADAPTER_ERROR, ERROR, FAIL, UNSUPPORTED


def test_equivalence(attn_item, attn_session):
    records = attn_session.records(attn_item.case, attn_item.variant, attn_item.check)
    assert records, f"no records for {attn_item.id}"
    if all(r.status == UNSUPPORTED for r in records):
        pytest.skip(records[0].detail)
    adapter = [r for r in records if r.status == ADAPTER_ERROR]
    if adapter:
        pytest.fail(f"adapter error (a mistake in the adapter's own code, not a caught bug): {adapter[0].detail}",
                    pytrace=False)
    bad = [r for r in records if r.status in (FAIL, ERROR)]
    declared = [r for r in records if r.known_failure]
    if declared and not [r for r in declared if r.status in (FAIL, ERROR)]:
        pytest.fail(f"declared known failure did not fail, remove the declaration: {declared[0].known_failure}")
    if bad and all(r.known_failure for r in bad):
        pytest.xfail(f"known failure: {bad[0].known_failure} ({bad[0].status}: {bad[0].detail[:200]})")
    assert not bad, "\n".join(
        f"{r.check}:{r.target} {r.status}: error={r.error:.3g} threshold={r.threshold:.3g} margin={r.margin:.3g} "
        f"worst at {r.worst_index} {r.detail}\n  case: {r.case}\n  reproduce: {r.reproduce}" for r in bad)
