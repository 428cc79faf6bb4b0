"""Render records for people (one self-contained HTML file) and machines (CSV).

The page has: the environment, totals, a variant x check matrix (pass / fail /
unsupported with the reason / not run), the failures with their figures and a
command that reproduces each, and the limitations table generated from the
registry. Every string is HTML-escaped by the template engine.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import jinja2
import pandas as pd

from harness import records as record_store
from harness.tolerance import ERROR, FAIL, PASS, UNSUPPORTED

STATUS_ORDER = (FAIL, ERROR, PASS, UNSUPPORTED)


def _cell(group: pd.DataFrame) -> dict:
    counts = group["status"].value_counts().to_dict()
    bad = counts.get(FAIL, 0) + counts.get(ERROR, 0)
    failing = group["status"].isin([FAIL, ERROR])
    known = int((failing & (group["known_failure"] != "")).sum()) if "known_failure" in group else 0
    state = ("known" if known == bad else "fail") if bad else "pass" if counts.get(PASS, 0) else "unsupported"
    reasons = sorted(set(group.loc[group["status"] == UNSUPPORTED, "detail"]))
    margins = group.loc[group["status"] == PASS, "margin"].dropna()
    if known:
        reasons = sorted(set(group.loc[failing, "known_failure"]) - {""}) + reasons
    return {"state": state, "counts": {s: counts.get(s, 0) for s in STATUS_ORDER}, "reasons": reasons,
            "min_margin": float(margins.min()) if len(margins) else None}


def matrix(frame: pd.DataFrame) -> dict:
    """{(family, variant): {check: cell}} and the ordered check names."""
    checks = [c for c in ("OUT", "GRAD", "FIN", "ZERO", "INV", "LAYOUT") if c in set(frame["check"])]
    checks += sorted(set(frame["check"]) - set(checks))
    rows = {}
    for (family, variant), group in frame.groupby(["family", "variant"], sort=True):
        rows[(family, variant)] = {check: _cell(g) for check, g in group.groupby("check")}
    return {"checks": checks, "rows": rows}


def limitations_table() -> list[dict]:
    from harness.registry import variants

    rows = []
    for v in variants():
        unavailable = v.unavailable_reason()
        if unavailable:
            rows.append({"family": v.family, "variant": v.name, "applies": "everywhere here", "reason": unavailable})
        for lim in v.limitations:
            rows.append({"family": v.family, "variant": v.name, "applies": lim.describe(), "reason": lim.reason})
        for known in v.known_failures:
            rows.append({"family": v.family, "variant": v.name, "applies": "known failure: " + known.describe(),
                         "reason": known.reason})
        rows.append({"family": v.family, "variant": v.name, "applies": "dtypes", "reason": "takes " + ", ".join(v.dtypes)})
    return rows


def render_html(frame: pd.DataFrame, environment: dict, command: str) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    failures = frame[frame["status"].isin([FAIL, ERROR])].sort_values(["variant", "case_id", "check", "target"])
    totals = {s: int((frame["status"] == s).sum()) for s in STATUS_ORDER}
    return env.get_template("report.html.j2").render(
        environment=environment, command=command, totals=totals, total=len(frame), matrix=matrix(frame),
        failures=failures.to_dict("records"), limitations=limitations_table(),
        cases=frame["case_id"].nunique(), variants=frame["variant"].nunique(),
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_outputs(results_dir: str | Path, command: str, frame: pd.DataFrame | None = None) -> dict[str, Path]:
    """Gather the run folder's records and write results.csv and report.html into it."""
    from harness.environment import describe

    results_dir = Path(results_dir)
    frame = record_store.load(results_dir) if frame is None else frame
    csv_path = record_store.save_csv(frame, results_dir / "results.csv")
    json_path = results_dir / "results.json"
    frame.to_json(json_path, orient="records", indent=None)
    html_path = results_dir / "report.html"
    html_path.write_text(render_html(frame, describe(), command), encoding="utf-8")
    return {"report": html_path, "results": csv_path, "json": json_path}
