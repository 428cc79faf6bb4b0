"""pytest plugin (entry point ``pytest11: attn_oracle``). Imports nothing heavy.

Options:
  --variants-from PATH   load a file of variants (repeatable); a bad file is a usage error
  --attn-results DIR     where records, results.csv and report.html go (default reports/pytest)
  --attn-no-results      keep no records

Every process appends its records to its own file in DIR; under pytest-xdist the
controller hands DIR to each worker and, at the end, gathers all files into one
table and one report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DEFAULT_RESULTS = "reports/pytest"


def pytest_addoption(parser):
    group = parser.getgroup("attn-oracle")
    group.addoption("--variants-from", action="append", default=[], metavar="PATH",
                    help="load variants from a Python file outside the project (repeatable)")
    group.addoption("--attn-results", default=DEFAULT_RESULTS, metavar="DIR",
                    help=f"folder for records, results.csv and report.html (default {DEFAULT_RESULTS})")
    group.addoption("--attn-no-results", action="store_true", help="do not write records or a report")


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config):
    config.addinivalue_line("markers", "equivalence: a variant x case x check comparison against the oracle")
    for path in config.getoption("variants_from"):
        from harness.registry import VariantError, load_file

        try:
            load_file(path)
        except VariantError as exc:
            raise pytest.UsageError(str(exc)) from None
    if config.getoption("attn_no_results"):
        config._attn_results = None
    elif _is_worker(config):
        config._attn_results = config.workerinput.get("attn_results")
    else:
        results = Path(config.getoption("attn_results")).resolve()
        if results.exists():
            for old in results.glob("records-*.jsonl"):
                old.unlink()
        results.mkdir(parents=True, exist_ok=True)
        config._attn_results = str(results)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist: tell each worker where the controller's results folder is."""
    node.workerinput["attn_results"] = node.config._attn_results


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    results = getattr(config, "_attn_results", None)
    if _is_worker(config) or not results or not any(Path(results).glob("records-*.jsonl")):
        return
    from harness.report import write_outputs

    paths = write_outputs(results, command="pytest " + " ".join(config.invocation_params.args))
    config._attn_outputs = paths


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    paths = getattr(config, "_attn_outputs", None)
    if paths:
        terminalreporter.write_sep("-", "attn-oracle")
        for label, path in paths.items():
            terminalreporter.write_line(f"{label}: {path}")


@pytest.fixture(scope="session")
def attn_session(request):
    """The evaluator shared by the equivalence tests of this process (oracle once per case)."""
    from harness.session import EquivalenceSession

    return EquivalenceSession(getattr(request.config, "_attn_results", None))
