"""``attn-oracle fuzz``: a long Hypothesis session that climbs toward failures.

A *target* is one (family, variant). For each, Hypothesis draws cases from the
family's strategy (``STRATEGIES``, over ``harness.strategies``), the variant is
evaluated on each (``harness.runner.evaluate``) and every check's smallest margin
steers the search: ``hypothesis.target(-margin, label="-margin CHECK")``, since the
margin is 1 for an exact match, 0 at the tolerance limit and negative past it, so
the smaller it is the closer the variant is to failing. Exact checks (margin NaN),
unsupported records and declared known failures do not steer. A ``fail`` or
``error`` record that is not a declared known failure fails the example; Hypothesis
shrinks it, and the shrunk case is pinned as a regression (``harness.regressions``)
that the normal suite then runs for every variant of the family.

Time: ``minutes`` is the whole session; each target gets an equal share of what is
left when it starts (a target that fails early leaves its time to the next). When a
target's share is spent, its next example stops it (``StopFuzz``), unless a failure
is being shrunk: shrinking may go on for ``SHRINK_GRACE`` seconds more (and
Hypothesis stops shrinking after 5 minutes in any case); past that, the latest
failing case is pinned unshrunk. Ctrl-C ends the session; what was found is pinned.

Example database: one folder per target under ``database``. It keeps each failure and
the examples closest to failing (Hypothesis's pareto front of the target scores), so
a later session starts where the last one stopped. A ``seed`` makes a session
reproducible and, as with Hypothesis's own ``@seed``, then neither reads nor writes
the database.
"""

from __future__ import annotations

import datetime
import math
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hypothesis import HealthCheck, Phase, Verbosity, given, settings, target
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.errors import Flaky

from harness import regressions
from harness.registry import Variant
from harness.runner import OracleCache, evaluate
from harness.strategies import attention_cases, documents_cases, gated_delta_cases, kv_cases
from harness.tolerance import ERROR, FAIL, UNSUPPORTED

DEFAULT_DATABASE = ".hypothesis/attn-oracle"
DEFAULT_REGRESSIONS = "regressions"
SHRINK_GRACE = 120.0  # seconds a target may overrun its share while shrinking a failure
REPORT_EVERY = 10.0  # seconds between progress lines

# family -> (the case strategy for some dtypes, the dtypes it draws unless the variant narrows them)
STRATEGIES: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "attention": (lambda dtypes: attention_cases(dtypes=dtypes), ("float32", "bfloat16", "float16")),
    "documents": (lambda dtypes: documents_cases(dtypes=dtypes, causal=st.booleans()), ("float32", "bfloat16", "float16")),
    # the microsequences catalogue holds causal layouts cut into micro-sequences; so does this
    "microsequences": (lambda dtypes: documents_cases(dtypes=dtypes).filter(lambda c: bool(c.boundaries)),
                       ("float32", "bfloat16", "float16")),
    "gated_delta": (lambda dtypes: gated_delta_cases(dtypes=dtypes), ("float32",)),
    "kv_cache": (lambda dtypes: kv_cases(dtypes=dtypes), ("float32",)),
}


class StopFuzz(BaseException):
    """Raised in the test body when the target's time is spent. A BaseException, so that
    Hypothesis lets it through instead of counting it as a failure and shrinking it."""


class VariantFailed(AssertionError):
    """An example on which the variant fails a check (not a declared known failure)."""


def no_strategy(family: str) -> str:
    return f"family {family!r} has no Hypothesis case strategy to fuzz with; fuzzable families: {', '.join(STRATEGIES)}"


def supported_by(variants: list[Variant]):
    """A predicate on cases: some of ``variants`` takes the case (no whole-case limitation)."""
    from harness.families import get_family

    def supported(case) -> bool:
        features = get_family(case.family).case_features(case)
        return any(v.limitation_for(features, case.dtype) is None for v in variants)

    return supported


def strategy_for(variant: Variant):
    """The family's case strategy, drawing only cases the variant takes (its dtypes, none of
    its whole-case limitations): a variant without soft-caps spends no examples on them."""
    make, dtypes = STRATEGIES[variant.family]
    wanted = tuple(d for d in dtypes if d in variant.dtypes) or tuple(variant.dtypes)
    return make(wanted).filter(supported_by([variant]))


@dataclass
class Progress:
    """What one target's session has seen so far."""

    examples: int = 0  # cases evaluated, including Hypothesis's shrinking and replays
    supported: int = 0  # of them, cases with at least one supported check
    best_margin: float = math.inf  # the smallest finite margin seen (closest to failing)
    best_check: str = ""
    failing: tuple | None = None  # (case, bad records) of the latest failing example
    first_failure_after: float | None = None  # seconds from the target's start

    def observe(self, margins: dict[str, float]) -> None:
        for check, margin in margins.items():
            if margin < self.best_margin:
                self.best_margin, self.best_check = margin, check


@dataclass
class TargetResult:
    family: str
    variant: str
    progress: Progress = field(default_factory=Progress)
    seconds: float = 0.0
    case: object | None = None  # the failing case, shrunk unless ``shrunk`` is False
    failed: list = field(default_factory=list)  # its fail/error records
    shrunk: bool = False
    blob: str = ""  # Hypothesis's @reproduce_failure(...) line for the failing example
    regression: Path | None = None  # the regressions file it was added to; None if already there
    skipped: str = ""  # why the target did not run
    note: str = ""  # how the session ended, when not by time or a failure
    interrupted: bool = False  # Ctrl-C: the session stops after pinning what was found


def steering_margins(records) -> dict[str, float]:
    """Per check, the smallest finite margin of its records that may steer (see module doc)."""
    margins: dict[str, float] = {}
    for r in records:
        if r.status == UNSUPPORTED or r.known_failure or not math.isfinite(r.margin):
            continue
        margins[r.check] = min(r.margin, margins.get(r.check, math.inf))
    return margins


class _Clock:
    """The target's time share, and when to print the next progress line."""

    def __init__(self, seconds: float, grace: float):
        self.start = time.monotonic()
        self.stop_at = self.start + seconds
        self.hard_stop_at = self.stop_at + grace
        self.next_report = self.start + REPORT_EVERY

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def check(self, seen: Progress) -> None:
        if time.monotonic() >= (self.hard_stop_at if seen.failing else self.stop_at):
            raise StopFuzz

    def report_due(self) -> bool:
        if time.monotonic() < self.next_report:
            return False
        self.next_report = time.monotonic() + REPORT_EVERY
        return True


def _examine(case, variant: Variant, oracles: OracleCache, seen: Progress, clock: _Clock) -> None:
    """The test body proper: evaluate, steer, fail on a real failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = [r for r in evaluate(case, variant, oracles) if r.status != UNSUPPORTED]
    seen.examples += 1
    if not records:
        return
    seen.supported += 1
    margins = steering_margins(records)
    for check, margin in margins.items():
        target(-margin, label=f"-margin {check}")
    seen.observe(margins)
    bad = [r for r in records if r.status in (FAIL, ERROR) and not r.known_failure]
    if bad:
        seen.failing = (case, bad)
        if seen.first_failure_after is None:
            seen.first_failure_after = clock.elapsed()
        raise VariantFailed("; ".join(f"{r.check}:{r.target} {r.status}: {r.detail[:200]}" for r in bad))


def _settings(database: str | Path | None, variant: Variant) -> settings:
    """Every setting given explicitly, so the session does not depend on the loaded profile."""
    db = None if database is None else DirectoryBasedExampleDatabase(str(Path(database) / variant.family / variant.name))
    return settings(max_examples=100_000_000, deadline=None, database=db, derandomize=False,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
                    report_multiple_bugs=False, print_blob=True, verbosity=Verbosity.quiet,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example, HealthCheck.filter_too_much])


def _blob(exc: BaseException) -> str:
    text = " ".join(getattr(exc, "__notes__", []))
    found = re.search(r"@reproduce_failure\(.*?\)", text)
    return found.group(0) if found else ""


def fuzz_target(variant: Variant, seconds: float, *, database: str | Path | None = DEFAULT_DATABASE,
                seed: int | None = None, grace: float = SHRINK_GRACE, report: Callable[[str], None] = print) -> TargetResult:
    """Fuzz one variant for about ``seconds`` (plus up to ``grace`` to shrink a failure)."""
    result = TargetResult(variant.family, variant.name)
    seen, oracles, clock = result.progress, OracleCache(capacity=8), _Clock(seconds, grace)
    name = f"{variant.family}/{variant.name}"

    def body(case):
        clock.check(seen)
        _examine(case, variant, oracles, seen, clock)
        if clock.report_due():
            report(progress_line(name, seen, clock.elapsed()))

    test = _settings(None if seed is not None else database, variant)(given(case=strategy_for(variant))(body))
    if seed is not None:
        test = hypothesis_seed(seed)(test)
    report(f"{name}: fuzzing for {seconds:.0f} s" + (f" (seed {seed}, no database)" if seed is not None else ""))
    try:
        test()
        result.note = "Hypothesis ran out of new cases to draw"
    except StopFuzz:
        result.shrunk = False  # a failure, if any, was still being shrunk when time ran out
    except VariantFailed as exc:
        result.shrunk, result.blob = True, _blob(exc)
    except Flaky as exc:  # the failure did not happen again on replay
        result.note = "flaky: " + (str(exc).splitlines() or [""])[0]
    except KeyboardInterrupt:
        result.interrupted, result.note = True, "interrupted"
    if seen.failing:
        result.case, result.failed = seen.failing
    result.seconds = clock.elapsed()
    return result


def progress_line(name: str, seen: Progress, elapsed: float) -> str:
    best = f"best margin {seen.best_margin:.3g} ({seen.best_check})" if seen.best_check else "no margin yet"
    return f"{name}: {seen.examples} examples ({seen.supported} supported), {best}, {elapsed:.0f} s"


def _variants_from(variant: Variant) -> str:
    """The file that registered a variant that is not built in, relative to here if inside."""
    if not variant.source or "/harness/variants/" in variant.source or not Path(variant.source).is_file():
        return ""
    path = Path(variant.source).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def regression_entry(result: TargetResult, variant: Variant) -> dict:
    """The pinned-regression line of a target's failure (format: ``harness.regressions``)."""
    first = result.failed[0]
    return {"family": variant.family, "case_id": result.case.id, "variant": variant.name,
            "check": f"{first.check}:{first.target}", "status": first.status, "detail": first.detail,
            "failing": [f"{r.check}:{r.target}" for r in result.failed], "case": result.case.describe(),
            "variants_from": _variants_from(variant), "found": datetime.date.today().isoformat(),
            "shrunk": result.shrunk, "hypothesis_reproduce": result.blob, "reproduce": first.reproduce}


def skip_reason(variant: Variant) -> str:
    if variant.family not in STRATEGIES:
        return no_strategy(variant.family)
    reason = variant.unavailable_reason()
    return f"unavailable here: {reason}" if reason else ""


def fuzz(variants: list[Variant], minutes: float, *, regressions_dir: str | Path = DEFAULT_REGRESSIONS,
         database: str | Path | None = DEFAULT_DATABASE, seed: int | None = None, grace: float = SHRINK_GRACE,
         report: Callable[[str], None] = print) -> list[TargetResult]:
    """Fuzz each variant in turn for a share of ``minutes``; pin each failure found."""
    regressions.entries(regressions_dir)  # a malformed file is reported now, not after the session
    results, runnable = [], []
    for variant in variants:
        reason = skip_reason(variant)
        if reason:
            report(f"{variant.family}/{variant.name}: skipped: {reason}")
            results.append(TargetResult(variant.family, variant.name, skipped=reason))
        else:
            runnable.append(variant)
    end = time.monotonic() + 60.0 * minutes
    for n, variant in enumerate(runnable):
        share = max(end - time.monotonic(), 0.0) / (len(runnable) - n)
        result = fuzz_target(variant, share, database=database, seed=seed, grace=grace, report=report)
        if result.case is not None:
            result.regression = regressions.add(regressions_dir, regression_entry(result, variant))
        report(progress_line(f"{variant.family}/{variant.name}", result.progress, result.seconds))
        results.append(result)
        if result.interrupted:
            break
    return results


def summary(results: list[TargetResult], regressions_dir: str | Path = DEFAULT_REGRESSIONS) -> list[str]:
    """The lines printed at the end of a session."""
    lines = []
    for r in results:
        name = f"{r.family}/{r.variant}"
        if r.skipped:
            lines.append(f"{name}: skipped ({r.skipped})")
        elif r.case is None:
            lines.append(f"{name}: no failure in {r.progress.examples} examples, {r.seconds:.0f} s; "
                         + (f"closest: margin {r.progress.best_margin:.3g} on {r.progress.best_check}"
                            if r.progress.best_check else "no supported case drawn")
                         + (f" ({r.note})" if r.note else ""))
        else:
            first = r.failed[0]
            pinned = f"pinned in {r.regression}" if r.regression else f"already pinned in {regressions_dir}"
            lines += [f"{name}: FAILED {first.check}:{first.target} ({first.status}) after {r.progress.first_failure_after:.1f} s; "
                      f"{r.progress.examples} examples in {r.seconds:.1f} s with shrinking"
                      + ("" if r.shrunk else " (time ran out while shrinking: the latest failing case, not minimal)"),
                      f"  case {r.case.id}: {r.case.describe()}",
                      f"  {first.detail[:300]}",
                      f"  {pinned}; reproduce: {first.reproduce}"]
    found = sum(r.case is not None for r in results)
    lines.append(f"{found} failure(s) found in {sum(1 for r in results if not r.skipped)} target(s)")
    if found and Path(regressions_dir).resolve() != regressions.folder().resolve():
        lines.append(f"note: the suite reads regressions from {regressions.folder()}, not {regressions_dir} "
                     f"(set {regressions.ENV} to use this one)")
    return lines


def stderr_line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
