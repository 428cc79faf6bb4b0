"""The ``attn-oracle`` command line.

  attn-oracle run      the equivalence suite on the default variant set -> report
  attn-oracle list     families, variants, whether each runs here, limitations
  attn-oracle report   re-render a report from saved records (several run folders merge)
  attn-oracle compare  what got worse between two runs
  attn-oracle fuzz     a long Hypothesis session climbing toward failures; pins each as a regression
  attn-oracle findings the failures of real libraries a run found, with their repro scripts

Settings in the project's ``[tool.attn-oracle]`` (``harness.config``) fill what the
command line leaves out. Bad arguments get one line on stderr and exit status 2; a failing
check (or an adapter error) gives 1.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

DEFAULT_OUT = "reports/latest"


class UsageProblem(Exception):
    pass


def _family(name: str):
    from harness.families import get_family

    try:
        return get_family(name)
    except KeyError as exc:
        raise UsageProblem(exc.args[0]) from None


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part for value in values for part in value.split(",") if part]


def _chosen_variants(families: list[str], names: list[str] | None) -> list:
    """The registered variants of ``families`` (only ``names``, when given); an unknown name
    is a usage error that lists the known ones."""
    from harness.registry import variants

    chosen = [v for f in families for v in variants(f)]
    if not names:
        return chosen
    known = {v.name for v in chosen}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageProblem(f"unknown variant(s) {', '.join(unknown)} for families {', '.join(families)}; "
                           f"known: {', '.join(sorted(known))}")
    return [v for v in chosen if v.name in names]


def _load_variant_files(paths: list[str]) -> list:
    """The variants the files registered."""
    from harness.registry import load_file

    return [v for path in paths for v in load_file(path)]


def _project_defaults(args) -> None:
    """Fill what the command line left out from the project's ``[tool.attn-oracle]``."""
    from harness.config import load

    project = load()
    if hasattr(args, "variants_from") and not args.variants_from:
        args.variants_from = [str(path) for path in project.variants]
    if hasattr(args, "family") and not args.family and project.families:
        args.family = list(project.families)
    if args.command == "run":
        args.out = args.out or str(project.results or DEFAULT_OUT)
        if args.profile is None and project.profile in ("ci", "dev"):
            args.profile = project.profile
    if args.command == "fuzz" and args.regressions is None:
        args.regressions = str(project.regressions_folder)
    if hasattr(args, "builtins"):
        args.builtins = args.builtins or project.with_builtins(args.variants_from)


def _selected_names(args, loaded: list) -> list[str] | None:
    """--variants, else (variant files named, built-ins not asked for) the files' own variants."""
    names = _split(args.variants)
    if names or args.builtins:
        return names
    return sorted({v.name for v in loaded}) or None


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # N workers on N cores: one thread each, not N x N


_SESSIONS: dict = {}  # one per process and results folder, so oracles are shared across jobs


def _run_chunk(variant_files: list[str], families, variant_names, case_ids, results_dir: str) -> None:
    """Worker body: evaluate some cases for every chosen variant; records go to results_dir."""
    import warnings

    warnings.simplefilter("ignore")
    _load_variant_files(variant_files)
    from harness.session import EquivalenceSession
    from harness.suite import suite_items

    if results_dir not in _SESSIONS:
        _SESSIONS[results_dir] = EquivalenceSession(results_dir)
    session = _SESSIONS[results_dir]
    for item in suite_items(families, variant_names, case_ids):
        session.records(item.case, item.variant)


def cmd_run(args) -> int:
    import warnings

    warnings.simplefilter("ignore")
    from harness.families import family_names, get_family

    from harness.strategies import hypothesis_settings, register_profiles

    if args.seed is not None and not args.profile:
        raise UsageProblem("--seed chooses the drawn cases: it needs --profile")
    if args.seed is not None and args.profile == "long":
        raise UsageProblem("--seed chooses the drawn cases: the long profile draws none")
    register_profiles()
    loaded = _load_variant_files(args.variants_from)
    families = _split(args.family) or family_names()
    for name in families:
        _family(name)
    variant_names = _selected_names(args, loaded)
    _chosen_variants(families, variant_names)  # unknown names are a usage error before anything runs
    if args.case:
        if len(families) != 1:
            raise UsageProblem("--case needs exactly one --family")
        case_ids = []
        for text in args.case:
            try:
                case_ids.append(get_family(families[0]).case_from_id(text).id)
            except ValueError as exc:
                raise UsageProblem(str(exc)) from None
    else:
        case_ids = None
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("records-*.jsonl"):
        old.unlink()
    from harness.report import run_context, save_context

    command = "attn-oracle " + " ".join(shlex.quote(a) for a in args.argv)
    seed = 0 if args.seed is None else args.seed
    if args.profile == "long":
        hypothesis = {"profile": "long: the production-length cases of cases/long.py, none drawn"}
    elif args.profile:
        hypothesis = hypothesis_settings(seed, "the drawn cases' seed" + (", the default" if args.seed is None else ""),
                                         args.profile)
    else:
        hypothesis = {"profile": "none: catalogue cases only (--profile draws more from the strategies)"}
    save_context(out, run_context(command, hypothesis))
    # One job per case, with every family whose catalogue has it (documents and
    # microsequences share cases), so a case's oracle is computed once.
    families_of: dict[str, list[str]] = {}
    for family in families:
        for case_id in case_ids or _case_ids(family, args.profile, variant_names, seed):
            families_of.setdefault(case_id, []).append(family)
    jobs = [(fams, [case_id]) for case_id, fams in families_of.items()]
    if args.shard:
        index, count = args.shard
        jobs = [job for n, job in enumerate(sorted(jobs, key=lambda j: j[1][0])) if n % count == index - 1]
    start = time.perf_counter()
    _progress(0, len(jobs), start)
    try:
        _run_jobs(jobs, args, variant_names, out, start)
    except KeyboardInterrupt:  # keep what finished: its records and a report of them
        sys.stderr.write("\ninterrupted: writing the report of the records finished so far\n")
        interrupted = True
    else:
        interrupted = False
    sys.stderr.write("\n")
    from harness import findings, records
    from harness.faults import summary_lines
    from harness.report import write_outputs

    frame = records.load(out)
    found = findings.write(out, frame)
    paths = write_outputs(out, frame=frame)
    counts = frame["status"].value_counts().to_dict()
    bad = frame["status"].isin(["fail", "error", "adapter_error"])
    known = int((bad & (frame["known_failure"] != "")).sum())
    stale = _stale_declarations(frame)
    print(", ".join(f"{counts.get(s, 0)} {s}" for s in ("pass", "fail", "error", "unsupported"))
          + (f", {counts['adapter_error']} adapter_error" if counts.get("adapter_error") else "")
          + (f" ({known} of the failures declared known)" if known else "")
          + f" ({len(frame)} records, {frame['case_id'].nunique()} cases, {frame['variant'].nunique()} variants,"
          f" {time.perf_counter() - start:.1f} s)")
    if found:
        print(f"{len(found)} finding(s) of real libraries ({sum(1 for f in found if f['known'])} known), with their repro "
              f"scripts: attn-oracle findings {shlex.quote(str(out))}")
    for line in stale + summary_lines(frame):
        print(line)
    for label, path in paths.items():
        print(f"{label}: {path}")
    if interrupted:
        return 130
    return 1 if int(bad.sum()) > known or stale else 0


def _case_ids(family: str, profile: str | None, variant_names, seed: int) -> list[str]:
    """The ids of the cases a run takes from ``family``: its catalogue (the long profile's with
    ``long``), and with ``ci`` / ``dev`` as many cases drawn from its strategy as the profile's
    max_examples, within what the chosen runnable variants take."""
    from cases import catalogue, long_catalogue

    listed = [c.id for c in (long_catalogue if profile == "long" else catalogue)(family)]
    if profile not in ("ci", "dev"):
        return listed
    from hypothesis import settings

    from harness.drawn_cases import drawn_cases
    from harness.registry import variants

    runnable = [v for v in variants(family) if (not variant_names or v.name in variant_names) and not v.unavailable_reason()]
    if not runnable:
        return listed
    drawn = drawn_cases(family, settings.get_profile(profile).max_examples, seed, runnable)
    return listed + [c.id for c in drawn if c.id not in listed]


def _stale_declarations(frame) -> list[str]:
    """A declared known failure that did not fail (per variant, case and check, as pytest's
    strict xfail judges it): the library was fixed, and the declaration must go."""
    declared = frame[frame["known_failure"] != ""]
    lines = []
    for (variant, case_id, check), group in declared.groupby(["variant", "case_id", "check"], sort=True):
        if not group["status"].isin(["fail", "error"]).any():
            lines.append(f"declared known failure did not fail, remove the declaration: {variant} {check} on {case_id}: "
                         f"{group['known_failure'].iloc[0]}")
    return lines


def _run_jobs(jobs, args, variant_names, out, start) -> None:
    """Run the jobs (family list, case ids) in worker processes. A worker that dies (a native
    crash) breaks the pool, and every job not finished by then fails with it. Those are split
    into one job per variant not yet recorded and run again in one worker, in order, so that
    each crash names its job: that variant gets ``error`` records on that case, and the rest
    of the run goes on (one pool restart per crash, not one per job)."""
    unfinished = _pool_run([(*job, variant_names) for job in jobs], args.workers, args.variants_from, out, start)
    if not unfinished:
        return
    from harness.suite import suite_items

    done = _recorded(out)
    singles = {}
    for families, case_ids, names in unfinished:
        for item in suite_items(families, names, case_ids):
            if (item.variant.family, item.variant.name, case_ids[0]) not in done:
                singles.setdefault((item.variant.family, item.variant.name, case_ids[0]), item.variant)
    jobs = [([family], [case_id], [name]) for family, name, case_id in singles]
    while jobs:
        unfinished = _pool_run(jobs, 1, args.variants_from, out, None)
        if not unfinished:
            break
        (family, ), (case_id, ), (name, ) = unfinished[0]  # one worker, in order: the first unfinished job crashed
        _record_crash(singles[(family, name, case_id)], case_id, out)
        jobs = unfinished[1:]


def _pool_run(jobs, workers, variant_files, out, start) -> list:
    """The jobs (families, case ids, variant names) not finished because a worker died, in the
    order given; progress is drawn when ``start`` is given."""
    from concurrent.futures.process import BrokenProcessPool

    broken = set()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        futures = [pool.submit(_run_chunk, variant_files, fam, names, ids, str(out)) for fam, ids, names in jobs]
        for n, future in enumerate(as_completed(futures), 1):
            try:
                future.result()
            except BrokenProcessPool:
                broken.add(future)
            if start is not None:
                _progress(n, len(jobs), start)
    return [job for job, future in zip(jobs, futures) if future in broken]


def _recorded(out) -> set:
    from harness import records

    frame = records.load(out)
    return set(zip(frame["family"], frame["variant"], frame["case_id"]))


def _record_crash(variant, case_id: str, out) -> None:
    from harness import records
    from harness.families import get_family
    from harness.runner import crash_records

    case = get_family(variant.family).case_from_id(case_id)
    detail = ("the worker process died while running this variant on this case (a native crash: a segfault or an "
              "abort in a kernel); the rest of the run went on")
    records.append(Path(out) / f"records-crashes-{os.getpid()}.jsonl", crash_records(case, variant, detail))


def _progress(done: int, total: int, start: float) -> None:
    if not sys.stderr.isatty() and done not in (0, total) and done % 10:
        return
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} cases {time.perf_counter() - start:.0f}s")
    sys.stderr.flush()


def cmd_list(args) -> int:
    from harness.families import family_names
    from harness.registry import variants

    _load_variant_files(args.variants_from)
    for family in _split(args.family) or family_names():
        _family(family)
        print(f"{family}")
        for v in variants(family):
            reason = v.unavailable_reason()
            print(f"  {v.name:<32} {'available' if not reason else 'unavailable: ' + reason}")
            print(f"  {'':<32} {v.description}  [{v.device}; {', '.join(v.dtypes)}]")
            for lim in v.limitations:
                print(f"  {'':<32} - {lim.reason} ({lim.describe()})")
            for known in v.known_failures:
                print(f"  {'':<32} - known failure: {known.reason} ({known.describe()})")
    return 0


def cmd_report(args) -> int:
    import pandas as pd

    from harness import records
    from harness.report import write_outputs

    sources = [Path(r) for r in args.results]
    frame = pd.concat([records.load(source) for source in sources], ignore_index=True)
    if frame.empty:
        raise UsageProblem(f"no records in {', '.join(map(str, sources))}")
    if len(sources) > 1 and not args.out:
        raise UsageProblem("merging several results needs --out")
    source = sources[0]
    out = Path(args.out) if args.out else (source if source.is_dir() else source.parent)
    out.mkdir(parents=True, exist_ok=True)
    from harness.report import load_context, run_context

    from harness import findings

    command = "attn-oracle " + " ".join(shlex.quote(a) for a in args.argv)
    context = load_context(sources) or run_context("(not saved with these records)")
    paths = write_outputs(out, frame=frame, context=context, rendered_by=command,
                          findings=findings.merge_into(sources, out))
    for label, path in paths.items():
        print(f"{label}: {path}")
    return 0


def cmd_findings(args) -> int:
    """List each run folder's findings: what failed, the smallest case, the repro script."""
    from harness import findings

    listed = 0
    for source in args.results:
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
        if not Path(source).exists():
            raise FileNotFoundError(f"no results at {source}")
        index = findings.load(folder)
        if index is None:
            continue
        listed += 1
        rows = index["findings"]
        known = sum(1 for f in rows if f["known"])
        print(f"{len(rows)} finding(s) in {folder}" + (f" ({known} known)" if known else "") + (":" if rows else ""))
        for f in rows:
            status = f"known failure ({f['known_versions'] or 'every version'}): {f['known']}" if f["known"] else f["status"]
            print(f"  {f['variant']} {f['check']}:{f['target']} {f['kind']}  [{status}]")
            print(f"    smallest failing case: {f['case_id']} ({f['records']} record(s) in {f['cases']} case(s)"
                  + (f"; checks {', '.join(f['checks'])}" if len(f.get("checks", [])) > 1 else "") + ")")
            print(f"    repro: {folder / f['script']}" if f["script"] else f"    no repro script: {f['no_script']}")
        left = index.get("left_out", {})
        if left.get("mutant records") or left.get("adapter errors"):
            print(f"  not findings: {left.get('mutant records', 0)} failing record(s) of the harness's own mutants, "
                  f"{len(left.get('adapter errors', []))} error(s) raised by adapter or harness code")
    if not listed:
        raise UsageProblem(f"no findings in {', '.join(args.results)} (attn-oracle run and the pytest plugin write "
                           f"findings.json beside the records)")
    return 0


def cmd_compare(args) -> int:
    from harness import records
    from harness.compare import compare, summary

    result = compare(records.load(args.old), records.load(args.new), margin_drop=args.margin_drop)
    print(summary(result))
    return 1 if len(result["new_failures"]) else 0


def cmd_fuzz(args) -> int:
    import warnings

    warnings.simplefilter("ignore")
    from harness import fuzz
    from harness.families import family_names

    if not args.minutes > 0:
        raise UsageProblem(f"--minutes must be more than 0, not {args.minutes:g}")
    loaded = _load_variant_files(args.variants_from)
    families = _split(args.family) or [f for f in family_names() if f in fuzz.STRATEGIES]
    for name in families:
        _family(name)
        if name not in fuzz.STRATEGIES:
            raise UsageProblem(fuzz.no_strategy(name))
    chosen = _chosen_variants(families, _selected_names(args, loaded))
    results = fuzz.fuzz(chosen, args.minutes, regressions_dir=args.regressions, database=args.database,
                        seed=args.seed, report=fuzz.stderr_line)
    for line in fuzz.summary(results, args.regressions):
        print(line)
    if any(r.case is not None for r in results):
        return 1
    return 130 if any(r.interrupted for r in results) else 0


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N, like 2/4, not {text!r}") from None
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"--shard {text}: I must be between 1 and N")
    return index, count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attn-oracle", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the equivalence suite and write the report")
    run.add_argument("--family", action="append", help="families to run (repeatable or comma-separated; default all)")
    run.add_argument("--variants", action="append", help="variant names (repeatable or comma-separated; default all)")
    run.add_argument("--variants-from", action="append", default=[], metavar="PATH", help="load variants from a file")
    run.add_argument("--case", action="append", help="run only this case id (repeatable); needs one --family")
    run.add_argument("--workers", type=int, default=1,
                     help="worker processes (default 1); a worker that dies is recorded, the run goes on")
    run.add_argument("--out", help=f"output folder (default: the project's results, else {DEFAULT_OUT})")
    run.add_argument("--builtins", action="store_true", default=None,
                     help="with --variants-from, also run attn-oracle's own variants (default: only the files' ones)")
    run.add_argument("--profile", choices=("ci", "dev", "long"),
                     help="ci, dev: also run cases drawn from the Hypothesis strategies, as many per family as the "
                          "profile's max_examples (ci 15, dev 40); long: instead of the catalogue, the production-length "
                          "cases of cases/long.py (8k, 16k and 32k tokens; 64k and 128k with a GPU); default: the catalogue only")
    run.add_argument("--seed", type=int, help="the seed of the drawn cases (default 0: the same cases every run)")
    run.add_argument("--shard", type=_shard, metavar="I/N",
                     help="run the I-th of N deterministic shares of the cases (merge with attn-oracle report)")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="families, variants, availability and limitations")
    lst.add_argument("--family", action="append")
    lst.add_argument("--variants-from", action="append", default=[], metavar="PATH")
    lst.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", help="re-render a report from saved records (a run folder or results.csv)")
    rep.add_argument("results", nargs="+", help="run folders or results.csv files; several are merged")
    rep.add_argument("--out", help="output folder (default: beside the results; required to merge)")
    rep.set_defaults(func=cmd_report)

    fnd = sub.add_parser("findings", help="the failures of real libraries a run found, each with its smallest case and "
                                           "its standalone repro script")
    fnd.add_argument("results", nargs="+", help="run folders (or a file in one) holding findings.json")
    fnd.set_defaults(func=cmd_findings)

    cmp = sub.add_parser("compare", help="what got worse between two runs: new failures, margins that shrank")
    cmp.add_argument("old", help="the earlier run (folder or results.csv)")
    cmp.add_argument("new", help="the later run")
    cmp.add_argument("--margin-drop", type=float, default=0.1, help="report passes whose margin fell by more (default 0.1)")
    cmp.set_defaults(func=cmd_compare)

    fz = sub.add_parser("fuzz", help="a long Hypothesis session steered toward failures; each failure, shrunk, "
                                     "becomes a pinned regression the suite runs")
    fz.add_argument("--family", action="append", help="families to fuzz (repeatable or comma-separated; "
                                                      "default every family with a case strategy)")
    fz.add_argument("--variants", action="append", help="variant names (repeatable or comma-separated; default all)")
    fz.add_argument("--variants-from", action="append", default=[], metavar="PATH", help="load variants from a file")
    fz.add_argument("--minutes", type=float, default=5.0, help="the whole session, split over the variants (default 5)")
    fz.add_argument("--regressions", metavar="DIR",
                    help="where failures are pinned, as DIR/<family>.jsonl (default: the project's regressions "
                         "folder, regressions/ in its root)")
    fz.add_argument("--builtins", action="store_true", default=None,
                    help="with --variants-from, also fuzz attn-oracle's own variants (default: only the files' ones)")
    fz.add_argument("--database", default=".hypothesis/attn-oracle", metavar="DIR",
                    help="Hypothesis example database (default .hypothesis/attn-oracle)")
    fz.add_argument("--seed", type=int, help="a reproducible session from this seed (the database is then not used)")
    fz.set_defaults(func=cmd_fuzz)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "workers", 1) < 1:
        return _usage("--workers must be at least 1")
    try:
        _project_defaults(args)
        return args.func(args)
    except UsageProblem as exc:
        return _usage(str(exc))
    except FileNotFoundError as exc:
        return _usage(str(exc))
    except Exception as exc:
        from harness.config import ConfigError
        from harness.regressions import RegressionError
        from harness.registry import VariantError

        if isinstance(exc, (VariantError, RegressionError, ConfigError)):
            return _usage(str(exc))
        raise


def _usage(message: str) -> int:
    print(f"attn-oracle: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
