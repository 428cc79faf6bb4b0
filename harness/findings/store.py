"""Where findings go: ``findings.json`` beside a run's records, and one script per
finding in ``findings/`` (``findings/<variant>-<check>-<target>.py``).

``write`` is called where the registry is loaded (``attn-oracle run``, the pytest
plugin); ``load`` and ``merge_into`` read saved findings without torch (``attn-oracle
report``, ``attn-oracle findings``). A script written here starts with ``MARK``; the
next ``write`` into the folder removes those, and only those, first.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd

from harness.findings import scripts, select

INDEX = "findings.json"
FOLDER = "findings"
MARK = "# attn-oracle finding"


def write(results_dir: str | Path, frame: pd.DataFrame, lookup=None) -> list[dict]:
    """Find the findings among ``frame``'s records, write their scripts and the index into
    ``results_dir``; return the findings. ``lookup(family, name)`` defaults to the registry."""
    results_dir = Path(results_dir)
    lookup = lookup or _registry_lookup()
    findings, left_out = select.collect(frame, lookup)
    folder = results_dir / FOLDER
    _remove_scripts(folder)
    taken: set[str] = set()
    for finding in findings:
        variant = lookup(finding["family"], finding["variant"])
        reason = scripts.no_script_reason(finding, variant)
        if reason:
            finding["no_script"] = reason
            continue
        name = _file_name(finding, taken)
        try:
            text = scripts.render(finding, variant, header(finding, variant, name))
        except Exception as exc:  # a script that cannot be written must not cost the run its report
            finding["no_script"] = f"the script could not be written: {type(exc).__name__}: {exc}"
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
        finding["script"] = f"{FOLDER}/{name}"
    _save(results_dir, findings, left_out)
    return findings


def load(source: str | Path) -> dict | None:
    """The saved index of a run folder (or of the folder of a file in it), or None.
    Each finding gets ``script_text``: its script, read back (empty without one)."""
    folder = Path(source) if Path(source).is_dir() else Path(source).parent
    path = folder / INDEX
    if not path.is_file():
        return None
    index = json.loads(path.read_text(encoding="utf-8"))
    for finding in index["findings"]:
        script = folder / finding["script"] if finding["script"] else None
        finding["script_text"] = script.read_text(encoding="utf-8") if script and script.is_file() else ""
    return index


def merge_into(sources, out: str | Path) -> dict | None:
    """The findings of several run folders as one index in ``out`` (their scripts copied
    there); None when no source has saved findings. One source that is ``out`` is read as is."""
    out = Path(out)
    folders = [Path(s) if Path(s).is_dir() else Path(s).parent for s in sources]
    indexes = [(folder, load(folder)) for folder in folders]
    indexes = [(folder, index) for folder, index in indexes if index is not None]
    if not indexes:
        return None
    if len(indexes) == 1 and indexes[0][0].resolve() == out.resolve():
        return indexes[0][1]
    for folder, index in indexes:
        for finding in index["findings"]:
            finding["_from"] = str(folder)
    findings = select.merge([f for _, index in indexes for f in index["findings"]])
    _remove_scripts(out / FOLDER)
    taken: set[str] = set()
    for finding in findings:
        source = Path(finding.pop("_from")) / finding["script"] if finding["script"] else None
        if source is not None and source.is_file():
            name = _free_name(source.name, taken)
            (out / FOLDER).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, out / FOLDER / name)
            finding["script"] = f"{FOLDER}/{name}"
    left_out = {"mutant records": sum(i["left_out"]["mutant records"] for _, i in indexes),
                "unregistered variants": sorted({v for _, i in indexes for v in i["left_out"]["unregistered variants"]}),
                "adapter errors": list({json.dumps(e, sort_keys=True): e for _, i in indexes
                                        for e in i["left_out"]["adapter errors"]}.values())}
    _save(out, [{k: v for k, v in f.items() if k != "script_text"} for f in findings], left_out)
    return load(out)


def script_for(record: dict, variant) -> tuple[str, str]:
    """(the repro script of one record, "") or ("", why there is none). Any status: the
    script of a passing record is one that exits 0."""
    finding = select.finding_row([dict(record, kind=select.kind(record["status"], record["detail"]))], variant)
    reason = scripts.no_script_reason(finding, variant)
    if reason:
        return "", reason
    return scripts.render(finding, variant, header(finding, variant, _file_name(finding, set()))), ""


def header(finding: dict, variant, name: str) -> str:
    """The script's opening comment: what failed, where, what the harness measured."""
    def figure(value):
        return "n/a" if value is None else f"{value:.3g}"

    lines = [
        f"{MARK[2:]}: {finding['variant']} fails {finding['check']}:{finding['target']} ({finding['status']}: "
        f"{finding['kind']})",
        f"Family {finding['family']}; variant {finding['variant']} ({finding['origin']}): {variant.description}",
        f"The smallest of its {finding['records']} failing record(s), over {finding['cases']} case(s): "
        f"{finding['case_id']}",
        f"  {finding['case']}",
        f"The harness measured: error {figure(finding['error'])}, threshold {figure(finding['threshold'])}, "
        f"margin {figure(finding['margin'])}" + (f", worst at {finding['worst_index']}" if finding["worst_index"] else ""),
    ]
    if finding["detail"]:
        lines.append(f"  {finding['detail']}")
    if len(finding["checks"]) > 1:
        lines.append(f"The same bug in the checks {', '.join(finding['checks'])}")
    if finding["known"]:
        lines.append(f"Declared a known failure ({finding['known_versions'] or 'every version'}): {finding['known']}")
    lines += [
        f"In the harness: {finding['reproduce']}",
        "",
        "Standalone: it imports torch and the library under test, never attn-oracle. Run",
        f"`python {name}`: it rebuilds the case's inputs from its seed, computes the float64",
        "reference written out below, calls the library the way the check does, prints the",
        "disagreement and exits 1 when it shows (0: it does not reproduce on this machine).",
    ]
    return "\n".join("# " + _one_line(line) if line else "#" for line in lines)


def _one_line(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]+", " ", str(text))


def _file_name(finding: dict, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{finding['variant']}-{finding['check']}-{finding['target']}")[:120]
    return _free_name(f"{stem}.py", taken)


def _free_name(name: str, taken: set[str]) -> str:
    """``name``, or ``<stem>-2.py``, ``-3`` ... when it is taken; marked taken."""
    stem, n = name[:-3], 2
    while name in taken:
        name, n = f"{stem}-{n}.py", n + 1
    taken.add(name)
    return name


def _remove_scripts(folder: Path) -> None:
    if not folder.is_dir():
        return
    for path in folder.glob("*.py"):
        with path.open(encoding="utf-8", errors="replace") as f:
            if f.readline().startswith(MARK):
                path.unlink()


def _save(results_dir: Path, findings: list[dict], left_out: dict) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in f.items()} for f in findings]
    (results_dir / INDEX).write_text(json.dumps({"findings": clean, "left_out": left_out}, indent=1, default=str),
                                     encoding="utf-8")


def _registry_lookup():
    from harness.registry import variants

    table = {(v.family, v.name): v for v in variants()}
    return lambda family, name: table.get((family, name))
