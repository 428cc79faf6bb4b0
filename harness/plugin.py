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

import os
from pathlib import Path

import pytest

DEFAULT_RESULTS = "reports/pytest"
_CONTROLLER: dict = {}  # the controller's config, for hooks that are not handed it


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
    if _is_worker(config):
        # One intra-op thread per pytest-xdist worker, as the CLI's workers: N workers with torch's default
        # threads each oversubscribe the cores (measured: about 3x slower on 2 cores).
        import torch

        torch.set_num_threads(1)
    else:
        _CONTROLLER["config"] = config
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


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
    """pytest-xdist, on the controller: a worker died (a native crash) while running
    ``crashitem``. An equivalence item becomes ``error`` records of its variant, case and
    check, so the crash reaches the report as a failure of that variant on that case."""
    config = _CONTROLLER.get("config")
    results = getattr(config, "_attn_results", None)
    if not results or "[" not in crashitem:
        return
    from harness import records
    from harness.runner import crash_records
    from harness.suite import suite_items

    param = crashitem[crashitem.index("[") + 1:crashitem.rindex("]")]
    item = next((i for i in suite_items() if i.id == param), None)
    if item is None:
        return
    detail = (f"the pytest-xdist worker died while running {crashitem} (a native crash: a segfault or an abort in a "
              "kernel); the rest of the run went on")
    records.append(Path(results) / f"records-crashes-{os.getpid()}.jsonl",
                   crash_records(item.case, item.variant, detail, item.check))


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    results = getattr(config, "_attn_results", None)
    if _is_worker(config) or not results or not any(Path(results).glob("records-*.jsonl")):
        return
    from harness import findings, records
    from harness.report import run_context, write_outputs
    from harness.strategies import hypothesis_settings

    command = "pytest " + " ".join(config.invocation_params.args)
    seed = config.getoption("hypothesis_seed", None)  # pytest's hypothesis plugin: --hypothesis-seed
    frame = records.load(results)
    findings.write(results, frame)  # findings.json and findings/*.py, read by the report
    paths = write_outputs(results, frame=frame, context=run_context(command, hypothesis_settings(seed, "--hypothesis-seed")))
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
