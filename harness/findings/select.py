"""Which records are findings, and how they group into distinct bugs (no torch here).

* A finding is a ``fail`` or ``error`` record (declared known failures included, marked
  known) of a *real* variant: one registered from ``harness/variants/`` (a built-in) or
  from a user's file. A *mutant* is a variant whose source file lies in this
  repository's ``tests/`` folder (``tests/mutants_*.py``, registered by
  ``tests/registered_mutants.py``): its failures are the harness's own tests, never
  findings. A variant the process did not register cannot be classified and is left out.
* An ``adapter_error`` record (the adapter's own code raised; ``harness.faults`` decides,
  from the exception, when it happens) is never a finding, nor are the errors of a variant
  that raised on every case it ran (``faults.erring_everywhere``): those are listed apart. An
  ``error`` raised inside the library, and a worker that died (a native crash), are findings.
* A distinct bug is a signature: ``(family, variant, check:target, "mismatch")`` for a
  ``fail`` (the library answered and that check disagreed); for an ``error`` it is
  ``(family, variant, kind)`` whichever checks met it, kind being ``crash`` for a worker
  that died, else the exception's type and message with numbers and addresses replaced
  by ``N``: an exception stops the call, whichever check made it, so it is one bug (the
  finding lists the checks; its check is the first of them, by ``CHECK_ORDER``).
* Its smallest failing case is the one with the fewest elements by ``case_size``
  (then the shortest id); cases that ``attn-oracle fuzz`` pinned were already shrunk by
  Hypothesis, so among them this is the shrunk one.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from harness.faults import erring_everywhere
from harness.status import ADAPTER_ERROR, ERROR, FAIL

REPOSITORY = Path(__file__).resolve().parents[2]
MUTANTS_FOLDER = REPOSITORY / "tests"
BUILTIN_ADAPTERS = REPOSITORY / "harness" / "variants"
CRASH_MARKS = ("worker process died", "worker died")


def origin(variant) -> str:
    """"built-in", "user file PATH" or "mutant" (a source under this repository's tests/)."""
    source = Path(variant.source).resolve() if variant.source and not variant.source.startswith("<") else None
    if source is not None and source.is_relative_to(MUTANTS_FOLDER):
        return "mutant"
    if source is not None and source.is_relative_to(BUILTIN_ADAPTERS):
        return "built-in"
    return f"user file {variant.source}" if source is not None else "registered in code"


def kind(status: str, detail: str) -> str:
    """The normalised part of a bug's signature; see the module docstring."""
    if status == FAIL:
        return "mismatch"
    if any(mark in detail for mark in CRASH_MARKS):
        return "crash"
    text = re.sub(r"0x[0-9a-fA-F]+", "N", detail.strip().splitlines()[0] if detail.strip() else "error")
    text = re.sub(r"(?<![A-Za-z_])[-+]?\d+(\.\d+)?([eE][-+]?\d+)?", "N", text)
    return re.sub(r"\s+", " ", text)[:200]


def case_size(params: dict) -> int:
    """Elements of a case, as a proxy from its parameters: the product of its positive
    integer fields (the seed aside) and of the totals of its integer lists."""
    size = 1
    for name, value in params.items():
        if name == "seed" or isinstance(value, bool):
            continue
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            value = sum(value)
        if isinstance(value, int) and value > 0:
            size *= value
    return size


def collect(frame: pd.DataFrame, lookup) -> tuple[list[dict], dict]:
    """(findings, what was left out and why) from the records; ``lookup(family, name)``
    returns the registered Variant or None. A finding is a dict; see ``finding_row``."""
    failing = frame[frame["status"].isin([FAIL, ERROR])]
    groups: dict[tuple, list[dict]] = {}
    left_out = {"mutant records": 0, "unregistered variants": [], "adapter errors": []}
    everywhere = erring_everywhere(frame)
    for row in frame[(frame["status"] == ADAPTER_ERROR) | frame["variant"].isin(everywhere)
                     & (frame["status"] == ERROR)].to_dict("records"):
        entry = {"variant": row["variant"], "check": f"{row['check']}:{row['target']}", "detail": row["detail"]}
        if entry not in left_out["adapter errors"]:
            left_out["adapter errors"].append(entry)
    for row in failing[~failing["variant"].isin(everywhere)].to_dict("records"):
        variant = lookup(row["family"], row["variant"])
        if variant is None:
            if row["variant"] not in left_out["unregistered variants"]:
                left_out["unregistered variants"].append(row["variant"])
            continue
        if origin(variant) == "mutant":
            left_out["mutant records"] += 1
            continue
        row["kind"] = kind(row["status"], row["detail"])
        groups.setdefault(signature(row), []).append(row)
    findings = [finding_row(rows, lookup(rows[0]["family"], rows[0]["variant"])) for rows in groups.values()]
    return sorted(findings, key=_order), left_out


def signature(row: dict) -> tuple:
    """A record's (or a finding's) distinct bug; see the module docstring."""
    if row["kind"] == "mismatch":
        return row["family"], row["variant"], row["check"], row["target"], row["kind"]
    return row["family"], row["variant"], row["kind"]


CHECK_ORDER = ("OUT", "STATE", "GRAD", "FIN", "ZERO", "INV", "LAYOUT", "PACK", "SPLIT", "SLOT", "GUARD", "UNINIT", "DET")


def _check_rank(check: str) -> int:
    return CHECK_ORDER.index(check) if check in CHECK_ORDER else len(CHECK_ORDER)


def _order(f: dict) -> tuple:
    return f["family"], f["variant"], _check_rank(f["check"]), f["check"], f["target"], f["kind"]


def finding_row(rows: list[dict], variant) -> dict:
    """One distinct bug (``rows`` share a signature and carry their ``kind``): its
    smallest failing record, the checks it met and its counts."""
    for row in rows:
        row["_size"] = case_size(row["case_params"])
    smallest = min(rows, key=lambda r: (r["_size"], len(r["case_id"]), r["case_id"], _check_rank(r["check"]), r["target"]))
    checks = sorted({(r["check"], r["target"]) for r in rows}, key=lambda c: (_check_rank(c[0]), c))
    declared = [r["known_failure"] for r in rows if r["known_failure"]]
    known = declared[0] if len(declared) == len(rows) else ""
    versions = next((k.versions or "" for k in variant.known_failures if k.reason == known), "") if known else ""
    return {
        "family": smallest["family"], "variant": smallest["variant"], "check": smallest["check"],
        "target": smallest["target"], "kind": smallest["kind"], "checks": [f"{c}:{t}" for c, t in checks],
        "status": smallest["status"], "origin": origin(variant), "known": known, "known_versions": versions,
        "known_records": len(declared), "records": len(rows), "cases": len({r["case_id"] for r in rows}),
        "case_id": smallest["case_id"], "case": smallest["case"], "case_params": smallest["case_params"],
        "size": smallest["_size"], "dtype": smallest["dtype"], "error": _number(smallest["error"]),
        "threshold": _number(smallest["threshold"]), "margin": _number(smallest["margin"]),
        "worst_index": smallest["worst_index"], "detail": smallest["detail"], "reproduce": smallest["reproduce"],
        "script": "", "no_script": "",
    }


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None if math.isnan(value) else value


def merge(findings: list[dict]) -> list[dict]:
    """Findings of several runs (shards): one per signature, its smallest case kept, counts summed."""
    merged: dict[tuple, dict] = {}
    for f in findings:
        key = signature(f)
        if key not in merged:
            merged[key] = dict(f)
            continue
        kept = merged[key]
        counts = {n: kept[n] + f[n] for n in ("records", "cases", "known_records")}
        counts["checks"] = sorted(set(kept["checks"]) | set(f["checks"]),
                                  key=lambda c: (_check_rank(c.split(":")[0]), c))
        if (f["size"], len(f["case_id"]), f["case_id"]) < (kept["size"], len(kept["case_id"]), kept["case_id"]):
            kept = merged[key] = dict(f)
        kept.update(counts)
        kept["known"] = kept["known"] if kept["known_records"] == kept["records"] else ""
    return sorted(merged.values(), key=_order)
