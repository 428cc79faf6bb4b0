"""Records from every pytest-xdist worker reach one results table."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_records_from_two_workers_reach_one_table(tmp_path):
    results = tmp_path / "results"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_equivalence.py", "-n", "2", "-q", "-p", "no:cacheprovider",
         "-k", "sdpa_math and (OUT and not LAYOUT or GRAD) and f32", "--attn-results", str(results)],
        cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(results.glob("records-*.jsonl"))
    assert {f.name.split("-")[1] for f in files} == {"gw0", "gw1"}, files
    table = pd.read_csv(results / "results.csv")
    summary = proc.stdout.strip().splitlines()[-1]
    ran = sum(int(part.split()[0]) for part in summary.split(",") if " passed" in part or " skipped" in part)
    # one OUT record per OUT test, three GRAD records (dq, dk, dv) per GRAD test,
    # unsupported (skipped) ones included
    outs, grads = (table["check"] == "OUT").sum(), (table["check"] == "GRAD").sum()
    assert outs + grads // 3 == ran and grads == 3 * outs, summary
    assert set(table["variant"]) == {"sdpa_math"} and (results / "report.html").is_file()
