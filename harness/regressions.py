"""Pinned regressions: failing cases found by ``attn-oracle fuzz``, kept as data.

A regressions folder holds JSON Lines files, ``<family>.jsonl``, one failure a line::

    {"family": "kv_cache", "case_id": "kv-sliding-b1-...", "variant": "...", "check": "SPLIT:steps",
     "detail": "...", "variants_from": "tests/registered_mutants.py", "found": "2025-01-31",
     "hypothesis_reproduce": "@reproduce_failure(...)"}

``family`` and ``case_id`` are required (the family's ``case_from_id`` must parse the
id); the rest says where the case came from. The suite's catalogue (``cases.catalogue``)
adds every case of the folder to its family, so every variant of the family runs it.

The folder the suite reads is ``$ATTN_ORACLE_REGRESSIONS`` when set, else the project's
(``harness.config``: ``regressions`` in ``[tool.attn-oracle]``, default ``regressions/`` in
the project root: the user's project, never the installed package).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "ATTN_ORACLE_REGRESSIONS"
REQUIRED = ("family", "case_id")


class RegressionError(ValueError):
    """A regressions file that cannot be read; the message names the file and line."""


def folder() -> Path:
    """The regressions folder the suite reads."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    from harness.config import load

    return load().regressions_folder


def entries(where: str | Path | None = None) -> list[tuple[Path, int, dict]]:
    """Every line of every ``*.jsonl`` file in the folder as (file, line number, entry);
    no folder means no entries."""
    where = folder() if where is None else Path(where)
    if not where.is_dir():
        return []
    found = []
    for path in sorted(where.glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    found.append((path, number, _parse(path, number, line)))
    return found


def _parse(path: Path, number: int, line: str) -> dict:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RegressionError(f"regressions file {path} line {number}: not JSON ({exc.msg})") from None
    if not isinstance(entry, dict):
        raise RegressionError(f"regressions file {path} line {number}: not a JSON object")
    missing = [k for k in REQUIRED if not isinstance(entry.get(k), str) or not entry[k]]
    if missing:
        raise RegressionError(f"regressions file {path} line {number}: missing {', '.join(missing)}")
    return entry


def cases(family: str, where: str | Path | None = None) -> list:
    """The cases pinned for ``family``, each once, in file order."""
    from harness.families import family_names, get_family

    chosen: dict[str, object] = {}
    for path, number, entry in entries(where):
        if entry["family"] not in family_names():
            raise RegressionError(f"regressions file {path} line {number}: unknown family {entry['family']!r}")
        if entry["family"] != family or entry["case_id"] in chosen:
            continue
        try:
            chosen[entry["case_id"]] = get_family(family).case_from_id(entry["case_id"])
        except ValueError as exc:
            raise RegressionError(f"regressions file {path} line {number}: {exc}") from None
    return list(chosen.values())


def add(where: str | Path, entry: dict) -> Path | None:
    """Append ``entry`` to ``<where>/<family>.jsonl``; the file written, or None when the
    same family, case and variant is already pinned there."""
    where = Path(where)
    key = (entry["family"], entry["case_id"], entry.get("variant"))
    if any((e["family"], e["case_id"], e.get("variant")) == key for _, _, e in entries(where)):
        return None
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{entry['family']}.jsonl"
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry, allow_nan=True) + "\n")
    return path
