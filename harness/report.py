"""Render records for people (one self-contained HTML file) and machines (CSV, JSON).

The page has: the environment of the run, totals, a variant x check matrix (pass /
fail / unsupported with the reason / not run; a cell opens its cases), how close the
passes came to their thresholds per check and variant, plots (``harness.report_plots``),
the findings (failures of real libraries, one per distinct bug, with the smallest failing
case and a standalone repro script: ``harness.findings``, read from the run's
``findings.json``), the failures with their figures, the layout drawn
(``harness.report_layouts``), the pinned regression and a command that reproduces each,
and the limitations table generated from the registry. Every string is HTML-escaped by the template engine; the
cases are embedded as JSON with ``<``, ``>`` and ``&`` escaped.

What describes the run (its environment, command line, Hypothesis profile and seed,
the registry's limitations) is saved beside the records as ``context.json`` when the
run starts, so ``attn-oracle report`` re-renders saved records with the run's context
and without importing torch or any implementation.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from harness import records as record_store
from harness.status import ADAPTER_ERROR, ERROR, FAIL, PASS, UNSUPPORTED

STATUS_ORDER = (FAIL, ERROR, ADAPTER_ERROR, PASS, UNSUPPORTED)
CONTEXT_FILE = "context.json"
_CHECK_ORDER = ("OUT", "GRAD", "FIN", "ZERO", "INV", "LAYOUT")


def matrix(frame: pd.DataFrame) -> dict:
    """{(family, variant): {check: cell}} and the ordered check names. A cell: its state
    (pass, fail, known, adapter_error, unsupported), counts by status, reasons (declared known failures
    first, then limitations) and the smallest margin of its passes."""
    checks = [c for c in _CHECK_ORDER if c in set(frame["check"])]
    checks += sorted(set(frame["check"]) - set(checks))
    keys = ["family", "variant", "check"]
    counts = frame.groupby(keys + ["status"]).size().unstack(fill_value=0)
    failing = frame["status"].isin([FAIL, ERROR])
    declared = frame[failing & (frame["known_failure"] != "")]
    known = declared.groupby(keys).size()
    known_reasons = declared.groupby(keys)["known_failure"].agg(lambda r: sorted(set(r)))
    limits = frame[frame["status"] == UNSUPPORTED].groupby(keys)["detail"].agg(lambda r: sorted(set(r)))
    min_margin = frame[frame["status"] == PASS].groupby(keys)["margin"].min()
    rows: dict = {}
    for key, row in counts.iterrows():
        n = {s: int(row.get(s, 0)) for s in STATUS_ORDER}
        bad = n[FAIL] + n[ERROR]
        n_known = int(known.get(key, 0))
        state = (("known" if n_known == bad else "fail") if bad else ADAPTER_ERROR if n[ADAPTER_ERROR]
                 else "pass" if n[PASS] else "unsupported")
        margin = min_margin.get(key, np.nan)
        rows.setdefault(key[:2], {})[key[2]] = {
            "state": state, "counts": n, "min_margin": None if pd.isna(margin) else float(margin),
            "reasons": (known_reasons.get(key, []) if n_known else []) + limits.get(key, [])}
    return {"checks": checks, "rows": dict(sorted(rows.items()))}


def margins_table(frame: pd.DataFrame) -> list[dict]:
    """Per check, family and variant with passes: how close they came (smallest margin first)."""
    passes = frame[(frame["status"] == PASS) & np.isfinite(frame["margin"])]
    rows = []
    for (check, family, variant), group in passes.groupby(["check", "family", "variant"], sort=True):
        margins = group["margin"]
        closest = group.loc[margins.idxmin()]
        rows.append({"check": check, "family": family, "variant": variant, "passes": len(group),
                     "min": float(margins.min()), "p05": float(margins.quantile(0.05)),
                     "median": float(margins.median()), "closest": f"{closest['case_id']} ({closest['target']})"})
    return sorted(rows, key=lambda r: r["min"])


LOW_DTYPES = ("bfloat16", "float16")  # the dtypes with an fp32-accumulate baseline (harness.tolerance)
KERNEL, NAIVE = "kernel", "naive"  # harness.tolerance's grades, by name (the report imports no torch)


def grades_table(frame: pd.DataFrame) -> list[dict]:
    """Per family, variant and low dtype: the grade its rows were judged by, its worst
    ``kernel_ratio`` (error / the fp32-accumulate baseline's: 1 = as good as float32
    accumulation) and where, the smallest margin under that grade and under the naive
    rule, and its failures. Worst ratio first; saved results without the columns give none."""
    if "kernel_ratio" not in frame.columns:
        return []
    ratios = pd.to_numeric(frame["kernel_ratio"], errors="coerce")
    rated = frame[frame["dtype"].isin(LOW_DTYPES) & ratios.notna()].assign(kernel_ratio=ratios)
    rows = []
    for (family, variant, dtype), group in rated.groupby(["family", "variant", "dtype"], sort=True):
        worst = group.loc[group["kernel_ratio"].idxmax()]
        rows.append({"family": family, "variant": variant, "dtype": dtype,
                     "grade": KERNEL if (group["grade"] == KERNEL).any() else NAIVE,  # SPLIT rows stay naive
                     "rows": len(group), "worst_ratio": float(worst["kernel_ratio"]),
                     "worst": f"{worst['case_id']} ({worst['check']}:{worst['target']})",
                     "min_margin": float(group["margin"].min()), "min_naive_margin": float(group["naive_margin"].min()),
                     "failures": int(group["status"].isin([FAIL, ERROR]).sum())})
    return sorted(rows, key=lambda r: -r["worst_ratio"])


def cases_json(frame: pd.DataFrame) -> str:
    """The records a matrix cell opens, as compact JSON rows keyed by "family/variant/check"."""
    columns = ["family", "variant", "check", "case_id", "target", "status", "error", "threshold", "margin", "detail"]
    table: dict[str, list] = {}
    for row in frame[columns].itertuples(index=False):
        detail = row.detail if row.status != PASS else ""
        table.setdefault(f"{row.family}/{row.variant}/{row.check}", []).append(
            [row.case_id, row.target, row.status, _number(row.error), _number(row.threshold), _number(row.margin),
             detail[:300]])
    text = json.dumps(table, separators=(",", ":"))
    # inside <script>: no "</script>" or "<!--" can come from a string
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _number(value):
    return None if value is None or not np.isfinite(value) else float(f"{value:.4g}")


def limitations_table() -> list[dict]:
    """The registry's declarations: limitations, known failures, dtypes and the packages a
    variant needs (found by name, not imported: importing them is what a run does)."""
    from harness.registry import variants

    rows = []
    for v in variants():
        if v.requires:
            tops = sorted({m.split(".")[0] for m in v.requires})
            missing = [t for t in tops if importlib.util.find_spec(t) is None]
            rows.append({"family": v.family, "variant": v.name, "applies": "requires",
                         "reason": ", ".join(tops) + (f" (not installed here: {', '.join(missing)})" if missing else "")})
        if v.device != "cpu":
            rows.append({"family": v.family, "variant": v.name, "applies": "device", "reason": f"runs on {v.device}"})
        for lim in v.limitations:
            rows.append({"family": v.family, "variant": v.name, "applies": lim.describe(), "reason": lim.reason})
        for known in v.known_failures:
            rows.append({"family": v.family, "variant": v.name, "applies": "known failure: " + known.describe(),
                         "reason": known.reason})
        rows.append({"family": v.family, "variant": v.name, "applies": "dtypes", "reason": "takes " + ", ".join(v.dtypes)})
    return rows


def run_context(command: str, hypothesis: dict | None = None) -> dict:
    """What describes a run, for its report: environment, command, Hypothesis, limitations, regressions."""
    from harness import regressions
    from harness.environment import describe

    pinned = [{"family": e["family"], "case_id": e["case_id"], "variant": e.get("variant", ""),
               "found": e.get("found", ""), "shrunk": e.get("shrunk"), "reproduce": e.get("hypothesis_reproduce", ""),
               "file": str(path)} for path, _, e in regressions.entries()]
    return {"environment": describe(), "command": command, "hypothesis": hypothesis or {},
            "limitations": limitations_table(), "regressions": pinned}


def save_context(results_dir: str | Path, context: dict) -> Path:
    path = Path(results_dir) / CONTEXT_FILE
    path.write_text(json.dumps(context, indent=1), encoding="utf-8")
    return path


def load_context(sources) -> dict | None:
    """The saved context of the first source that has one (a folder or a file inside one);
    the limitations and regressions of all of them."""
    found = []
    for source in sources:
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
        if (folder / CONTEXT_FILE).is_file():
            found.append(json.loads((folder / CONTEXT_FILE).read_text(encoding="utf-8")))
    if not found:
        return None
    merged = dict(found[0])
    for key in ("limitations", "regressions"):
        rows = {json.dumps(r, sort_keys=True): r for c in found for r in c.get(key, [])}
        merged[key] = list(rows.values())
    if len({c.get("command") for c in found}) > 1:
        merged["command"] = " + ".join(c.get("command", "?") for c in found)
    return merged


def _failures(frame: pd.DataFrame, regressions: list[dict]) -> list[dict]:
    from harness.report_layouts import draw_case

    pinned = {(r["family"], r["case_id"]): r for r in regressions}
    failing = frame[frame["status"].isin([FAIL, ERROR])].sort_values(["variant", "case_id", "check", "target"])
    rows = failing.to_dict("records")
    for row in rows:
        row["layout_svg"] = draw_case(row["family"], row["case_params"])
        row["regression"] = pinned.get((row["family"], row["case_id"]))
    return rows


def _findings(index: dict | None) -> dict | None:
    """The findings index as the page shows it: known ones counted, layouts drawn."""
    from harness.report_layouts import draw_case

    if index is None:
        return None
    rows = [dict(f, layout_svg=draw_case(f["family"], f["case_params"])) for f in index["findings"]]
    return {"rows": rows, "known": sum(1 for f in rows if f["known"]), "left_out": index.get("left_out", {})}


def render_html(frame: pd.DataFrame, context: dict, rendered_by: str = "", findings: dict | None = None) -> str:
    """The page; ``findings`` is the run's findings index (``harness.findings.load``), None
    when the records came without one."""
    from harness.report_layouts import SLACK_PATTERN
    from harness.report_plots import plots

    env = jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    totals = {s: int((frame["status"] == s).sum()) for s in STATUS_ORDER}
    known = int((frame["status"].isin([FAIL, ERROR]) & (frame["known_failure"] != "")).sum())
    return env.get_template("report.html.j2").render(
        environment=context.get("environment", {}), command=context.get("command", ""), rendered_by=rendered_by,
        hypothesis=context.get("hypothesis", {}), totals=totals, known=known, total=len(frame), matrix=matrix(frame),
        margins=margins_table(frame), grades=grades_table(frame), plots=plots(frame), failures=_failures(frame, context.get("regressions", [])),
        findings=_findings(findings),
        limitations=context.get("limitations", []), cases=frame["case_id"].nunique(),
        variants=frame["variant"].nunique(), cases_json=cases_json(frame), slack_pattern=SLACK_PATTERN,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_outputs(results_dir: str | Path, frame: pd.DataFrame | None = None, context: dict | None = None,
                  rendered_by: str = "", findings: dict | None = None) -> dict[str, Path]:
    """Write results.csv, results.json and report.html into ``results_dir``. The records
    default to the folder's own, the context to the folder's ``context.json``, the
    findings to its ``findings.json`` (written before, by ``harness.findings.write``)."""
    from harness import findings as findings_store

    results_dir = Path(results_dir)
    frame = record_store.load(results_dir) if frame is None else frame
    context = context or load_context([results_dir]) or {}
    findings = findings if findings is not None else findings_store.load(results_dir)
    csv_path = record_store.save_csv(frame, results_dir / "results.csv")
    json_path = results_dir / "results.json"
    frame.to_json(json_path, orient="records", indent=None)
    html_path = results_dir / "report.html"
    html_path.write_text(render_html(frame, context, rendered_by, findings), encoding="utf-8")
    paths = {"report": html_path, "results": csv_path, "json": json_path}
    if findings is not None:
        paths["findings"] = results_dir / findings_store.INDEX
    return paths
