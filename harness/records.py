"""Records: one row per (case, variant, check, target), and where they are stored.

Each process (a pytest-xdist worker, the controller, a CLI worker) appends its rows
to its own JSON-lines file in a run folder; ``load`` gathers every file of the
folder into one table, so no row is lost whichever process produced it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Record:
    case_id: str
    family: str
    variant: str
    check: str
    target: str
    status: str  # pass, fail, error, unsupported
    dtype: str
    error: float = math.nan
    threshold: float = math.nan
    rel_rms: float = math.nan
    rel_rms_threshold: float = math.nan
    margin: float = math.nan
    worst_index: str = ""
    detail: str = ""  # failure detail, or the limitation's reason when unsupported
    seconds: float = math.nan  # wall time of all the variant's calls for the case (the same on each of its rows)
    case: str = ""  # the case in words
    case_params: dict = field(default_factory=dict)
    reproduce: str = ""  # a command that runs just this case and variant
    known_failure: str = ""  # the declared reason when a KnownFailure of the variant covers this row
    provenance: str = ""  # which implementation ran, as the adapter observed it (harness.provenance)
    grade: str = ""  # the tolerance grade that judged the row: kernel or naive ("" for exact checks)
    kernel_ratio: float = math.nan  # error / the fp32-accumulate baseline's (harness.tolerance.compare)
    naive_margin: float = math.nan  # the margin under the naive rule, whatever the grade

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, allow_nan=True)


def append(path: str | Path, records: list[Record]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for r in records:
            f.write(r.to_json() + "\n")


def process_file(run_dir: str | Path) -> Path:
    """This process's own JSON-lines file in ``run_dir``."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return Path(run_dir) / f"records-{worker}-{os.getpid()}.jsonl"


def load(source: str | Path) -> pd.DataFrame:
    """All records under a run folder (or one .jsonl / .csv file) as a DataFrame."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no results at {source}")
    if source.suffix == ".csv":
        frame = pd.read_csv(source)
        text_columns = [name for name, f in Record.__dataclass_fields__.items() if f.type == "str"]
        for name in text_columns:  # results saved before a column existed read it as empty
            if name not in frame.columns:
                frame[name] = ""
        frame[text_columns] = frame[text_columns].fillna("").astype(str)
        for name in [n for n, f in Record.__dataclass_fields__.items() if f.type == "float"]:
            if name not in frame.columns:  # likewise a figure saved before it existed: NaN
                frame[name] = math.nan
        frame["case_params"] = frame["case_params"].map(lambda s: json.loads(s) if s else {})
        return frame
    files = [source] if source.is_file() else sorted(source.glob("records-*.jsonl"))
    if not files and (source / "results.csv").is_file():  # a folder of saved results only
        return load(source / "results.csv")
    rows = []
    for path in files:
        with path.open(encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    columns = list(Record.__dataclass_fields__)
    return pd.DataFrame(rows, columns=columns)


def save_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    out = frame.copy()
    out["case_params"] = out["case_params"].map(json.dumps)
    out.to_csv(path, index=False)
    return path
