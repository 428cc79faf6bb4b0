"""pytest plugin (entry point ``pytest11: attn_oracle``). Imports nothing heavy.

The equivalence suite is ``harness.pytest_suite.test_equivalence``: a project opts in with a
test module of one line (see that module). This plugin parametrizes it and keeps the records.

Options (each overrides its key of the project's ``[tool.attn-oracle]``, see ``harness.config``):
  --variants-from PATH   load a file of variants (repeatable); a bad file is a usage error
  --attn-builtins        with variant files, also run attn-oracle's own variants
  --attn-family NAME     only these families (repeatable or comma-separated)
  --attn-results DIR     where records, results.csv and report.html go (default reports/pytest in the rootdir)
  --attn-no-results      keep no records
  --attn-profile long    the equivalence suite on the production-length cases (cases/long.py)

Every process appends its records to its own file in DIR; under pytest-xdist the
controller hands DIR to each worker and, at the end, gathers all files into one
table and one report.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_RESULTS = "reports/pytest"
SUITE_HINT = ("attn-oracle: variant files were named but no equivalence test was collected; opt in with a test "
              "module of one line: from harness.pytest_suite import test_equivalence  # noqa: F401")
_CONTROLLER: dict = {}  # the controller's config, for hooks that are not handed it


def pytest_addoption(parser):
    group = parser.getgroup("attn-oracle")
    group.addoption("--variants-from", action="append", default=[], metavar="PATH",
                    help="load variants from a Python file outside the project (repeatable)")
    group.addoption("--attn-builtins", action="store_true", default=None,
                    help="with variant files, also run attn-oracle's own variants (default: only the files' ones)")
    group.addoption("--attn-family", action="append", default=[], metavar="NAME",
                    help="run only these families (repeatable or comma-separated; default all)")
    group.addoption("--attn-results", metavar="DIR",
                    help=f"folder for records, results.csv and report.html (default {DEFAULT_RESULTS} in the rootdir)")
    group.addoption("--attn-no-results", action="store_true", help="do not write records or a report")
    group.addoption("--attn-profile", choices=("default", "long"), default="default",
                    help="the equivalence suite's cases: the catalogue (default) or the production-length cases of "
                         "cases/long.py (long; not part of CI)")


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def _choose_variants(config, project) -> None:
    """Load the variant files (flags, else the project's) and decide which variants the suite runs."""
    from harness.registry import VariantError, load_file

    files = config.getoption("variants_from") or [str(path) for path in project.variants]
    try:
        loaded = [v for path in files for v in load_file(path)]
    except VariantError as exc:
        raise pytest.UsageError(str(exc)) from None
    builtins = config.getoption("attn_builtins") or project.with_builtins(files)
    config._attn_files = files
    config._attn_variant_names = None if builtins else sorted({v.name for v in loaded})
    families = [f for value in config.getoption("attn_family") for f in value.split(",") if f]
    config._attn_families = families or list(project.families) or None


def pytest_configure(config):
    config.addinivalue_line("markers", "equivalence: a variant x case x check comparison against the oracle")
    from harness import config as project_config

    project_config.use_root(config.rootpath)
    try:
        project = project_config.load()
    except project_config.ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    if project.profile:
        os.environ.setdefault("HYPOTHESIS_PROFILE", project.profile)  # read by harness.strategies
    _choose_variants(config, project)
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
        chosen = config.getoption("attn_results") or project.results or config.rootpath / DEFAULT_RESULTS
        results = Path(chosen).resolve()
        if results.exists():
            for old in results.glob("records-*.jsonl"):
                old.unlink()
        results.mkdir(parents=True, exist_ok=True)
        config._attn_results = str(results)


def pytest_generate_tests(metafunc):
    """Parametrize ``harness.pytest_suite.test_equivalence`` (any test taking ``attn_item``):
    the chosen variants x their families' cases x checks. Items of one case share a
    pytest-xdist group, so the case's oracle is computed once."""
    if "attn_item" not in metafunc.fixturenames:
        return
    from harness.suite import suite_items

    config = metafunc.config
    items = suite_items(config._attn_families, config._attn_variant_names,
                        profile=config.getoption("attn_profile", "default"))
    metafunc.parametrize("attn_item", [pytest.param(i, id=i.id, marks=[pytest.mark.xdist_group(i.case.id),
                                                                       pytest.mark.equivalence])
                                       for i in items])


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Make ``--dist loadgroup`` group again under pytest >= 9.

    pytest-xdist (3.8) marks a grouped item by assigning ``item._nodeid = "<id>@<group>"``; pytest 9
    keeps a node's id in ``item._id`` and no longer reads ``_nodeid``, so the groups are lost and every
    worker computes the same cases' oracles. Copy the grouped id over where it was dropped."""
    if not _is_worker(config):
        return
    try:
        from _pytest.nodeid import coerce_node_id
    except ImportError:  # pytest < 9 reads _nodeid itself
        return
    for item in items:
        grouped = item.__dict__.get("_nodeid")
        if isinstance(grouped, str) and grouped != item.nodeid and getattr(item, "_id", None) is not None:
            item._id = coerce_node_id(grouped)


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
    item = next((i for i in suite_items(profile=config.getoption("attn_profile")) if i.id == param), None)
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
    from harness.faults import summary_lines
    from harness.report import run_context, write_outputs
    from harness.strategies import hypothesis_settings

    command = "pytest " + " ".join(config.invocation_params.args)
    seed = config.getoption("hypothesis_seed", None)  # pytest's hypothesis plugin: --hypothesis-seed
    frame = records.load(results)
    findings.write(results, frame)  # findings.json and findings/*.py, read by the report
    paths = write_outputs(results, frame=frame, context=run_context(command, hypothesis_settings(seed, "--hypothesis-seed")))
    config._attn_outputs = paths
    config._attn_lines = summary_lines(frame)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    ran = (r for reports in terminalreporter.stats.values() for r in reports if hasattr(r, "keywords"))
    if config._attn_files and not any("equivalence" in r.keywords for r in ran):
        terminalreporter.write_line(SUITE_HINT, yellow=True)
    paths = getattr(config, "_attn_outputs", None)
    if paths:
        terminalreporter.write_sep("-", "attn-oracle")
        for line in config._attn_lines:
            terminalreporter.write_line(line, red=True)
        for label, path in paths.items():
            terminalreporter.write_line(f"{label}: {path}")


@pytest.fixture(scope="session")
def attn_session(request):
    """The evaluator shared by the equivalence tests of this process (oracle once per case)."""
    from harness.session import EquivalenceSession

    return EquivalenceSession(getattr(request.config, "_attn_results", None))
