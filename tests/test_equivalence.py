"""The equivalence suite (every registered variant x catalogue case x check): the same one line a user's project writes."""

from harness.pytest_suite import test_equivalence  # noqa: F401
