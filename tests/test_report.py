"""The report's parts: plots, drawn layouts, the embedded cases, the saved run context,
and re-rendering saved records without torch. (The page in a browser: test_report_browser.)"""

import json
import math
import subprocess
import sys
from dataclasses import asdict

import pandas as pd

from harness.records import Record
from harness.report import CONTEXT_FILE, cases_json, load_context, margins_table, save_context
from harness.report_layouts import draw, draw_case
from harness.report_plots import plots, tolerance_used

HOSTILE = "<script>alert(1)</script>&"


def _frame() -> pd.DataFrame:
    rows = []
    for n, length in enumerate((8, 16, 32, 64)):
        params = {"len_k": length, "len_q": length}
        for variant, error in (("sdpa_math", 0.1 * (n + 1)), (HOSTILE, 0.05 * (n + 1))):
            rows.append(Record(case_id=f"c{length}", family="attention", variant=variant, check="OUT", target="out",
                               status="pass", dtype="float32" if n % 2 else "bfloat16", error=error, threshold=1.0,
                               margin=1 - error, case_params=params, detail="x" if variant == HOSTILE else ""))
    rows.append(Record(case_id="kv1", family="kv_cache", variant="index_copy_cache", check="SPLIT", target="steps",
                       status="fail", dtype="float32", error=2.0, threshold=1.0, margin=-1.0,
                       case_params={"schedule": [4, 1, 1]}, detail="first diverging call: call 1 " + HOSTILE))
    rows.append(Record(case_id="kv1", family="kv_cache", variant="index_copy_cache", check="SLOT", target="k_cache",
                       status="pass", dtype="float32", error=0.0, threshold=0.0, margin=math.nan,
                       case_params={"schedule": [4, 1, 1]}))
    return pd.DataFrame([asdict(r) for r in rows])


def test_plots_are_deterministic_inline_svg_with_names_escaped():
    first, second = plots(_frame()), plots(_frame())
    assert first == second and len(first) == 4
    for svg in first.values():
        assert svg.startswith("<svg") and "<?xml" not in svg and "<!DOCTYPE" not in svg
        assert "<script" not in svg and "xlink:href=\"http" not in svg
    legend = first["Tolerance used against sequence length, a colour per variant"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in legend  # the variant name, as text


def test_tolerance_used_keeps_numeric_finite_results_only():
    used = tolerance_used(_frame())
    assert len(used) == 9  # 8 passes and the failure; the exact SLOT check (threshold 0) has no ratio
    assert used.loc[used["status"] == "fail", "used"].tolist() == [2.0]


def test_a_layout_is_drawn_cell_by_cell():
    svg = draw([3, 0, 4], slack=2, boundaries=[5])
    assert svg.count("<title>") == 5  # two documents (the empty one has no cells), slack, a cut, the step
    assert "document 2: tokens 3..6" in svg and "slack: tokens 7..8" in svg
    assert "the micro-sequence under test: tokens 5..8" in svg
    assert draw_case("attention", {"len_k": 3}) == ""
    assert draw_case("microsequences", {"documents": [2], "slack": 0, "boundaries": []}).startswith("<svg")


def test_the_embedded_cases_hold_no_markup_and_parse_back():
    text = cases_json(_frame())
    assert "<" not in text and ">" not in text and "&" not in text
    table = json.loads(text)
    (row,) = table["kv_cache/index_copy_cache/SPLIT"]
    assert row[0] == "kv1" and row[2] == "fail" and row[-1].endswith(HOSTILE)
    assert table["attention/sdpa_math/OUT"][0][-1] == ""  # a pass carries no detail


def test_margins_table_lists_the_closest_pass_first():
    rows = margins_table(_frame())
    assert [r["variant"] for r in rows] == ["sdpa_math", HOSTILE]
    assert math.isclose(rows[0]["min"], 0.6) and rows[0]["closest"] == "c64 (out)"


def test_saved_contexts_merge_their_limitations(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    save_context(one, {"command": "attn-oracle run --shard 1/2", "environment": {"torch": "2.13.0"},
                       "limitations": [{"variant": "a", "reason": "x"}], "regressions": []})
    save_context(two, {"command": "attn-oracle run --shard 2/2", "environment": {"torch": "2.13.0"},
                       "limitations": [{"variant": "a", "reason": "x"}, {"variant": "b", "reason": "y"}],
                       "regressions": []})
    merged = load_context([one / "results.csv", two])
    assert merged["command"] == "attn-oracle run --shard 1/2 + attn-oracle run --shard 2/2"
    assert merged["limitations"] == [{"variant": "a", "reason": "x"}, {"variant": "b", "reason": "y"}]
    assert load_context([tmp_path]) is None


def test_rerendering_saved_records_uses_their_context_and_imports_no_torch(tmp_path):
    from harness import records

    run = tmp_path / "run"
    run.mkdir()
    records.save_csv(_frame(), run / "results.csv")
    save_context(run, {"command": "attn-oracle run --family attention", "environment": {"device": "the run's"},
                       "hypothesis": {"profile": "ci"}, "limitations": [], "regressions": []})
    code = ("import sys; from harness.cli import main; code = main(['report', sys.argv[1], '--out', sys.argv[2]]); "
            "print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(run), str(tmp_path / "out")], capture_output=True, text=True)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stderr
    html = (tmp_path / "out" / "report.html").read_text()
    assert "the run&#39;s" in html and "attn-oracle run --family attention" in html and "re-rendered by" in html
    assert not (tmp_path / "out" / CONTEXT_FILE).exists()


def _findings_index() -> dict:
    common = dict(family="documents", check="OUT", target="out", kind="mismatch", checks=["OUT:out"], status="fail", known_records=0,
                  records=3, cases=2, case_id="docs3_0_4-m5-h2x1-d8v8-f32-s0", size=42, dtype="float32", error=2.0,
                  threshold=1.0, margin=-1.0, worst_index="(0, 1)", reproduce="attn-oracle run --family documents",
                  case_params={"documents": [3, 0, 4], "slack": 2, "boundaries": [5]})
    return {"findings": [
        dict(common, variant=HOSTILE, origin="user file /x/" + HOSTILE, known="", known_versions="", case="docs " + HOSTILE,
             detail="detail " + HOSTILE, script="findings/x.py", no_script="", script_text="print('" + HOSTILE + "')"),
        dict(common, variant="executorch_op", origin="built-in", known="confirmed upstream " + HOSTILE,
             known_versions="executorch==1.5.1", known_records=3, case="docs", detail="", script="",
             no_script="no repro script for the programs family yet", script_text=""),
    ], "left_out": {"mutant records": 4, "unregistered variants": [],
                    "adapter errors": [{"variant": "r", "check": "OUT:out", "detail": "ValueError: " + HOSTILE}]}}


def test_the_findings_section_lists_each_bug_with_its_script_escaped():
    from harness.report import render_html

    html = render_html(_frame(), {}, findings=_findings_index())
    section = html[html.index('id="findings-section"'):html.index('id="failures-section"')]
    assert "Findings (2, 1 known)" in section and "<script>alert" not in section
    assert section.count("&lt;script&gt;alert(1)&lt;/script&gt;&amp;") >= 5  # variant, origin, case, detail, script text
    assert 'href="findings/x.py"' in section and "<details><summary>the script</summary><pre>print(" in section
    assert "known failure (executorch==1.5.1): confirmed upstream" in section
    assert "no repro script: no repro script for the programs family yet" in section
    assert "4 failing record(s) of the harness's own mutants" in section and "ValueError: &lt;script&gt;" in section
    assert section.count('class="layout"') == 2  # the smallest case's layout drawn
    assert "No findings index came with these records" in render_html(_frame(), {})


def test_rerendering_merged_runs_merges_their_findings_and_copies_the_scripts(tmp_path):
    from harness import records
    from harness.cli import main

    index = _findings_index()
    for n, name in enumerate(("one", "two")):
        run = tmp_path / name
        (run / "findings").mkdir(parents=True)
        records.save_csv(_frame(), run / "results.csv")
        shard = [dict(f, records=1, known_records=int(bool(f["known"])), size=f["size"] + n,
                      case_id=f"{f['case_id']}-{name}") for f in index["findings"]]
        for f in shard:
            f.pop("script_text")
        (run / "findings.json").write_text(json.dumps({"findings": shard, "left_out": index["left_out"]}))
        (run / "findings" / "x.py").write_text(f"# attn-oracle finding: from {name}\n")
    assert main(["report", str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "findings.json").read_text())
    assert [(f["records"], f["case_id"].rsplit("-", 1)[1]) for f in merged["findings"]] == [(2, "one"), (2, "one")]
    assert (tmp_path / "merged" / "findings" / "x.py").read_text() == "# attn-oracle finding: from one\n"
    html = (tmp_path / "merged" / "report.html").read_text()
    assert "Findings (2, 1 known)" in html and "# attn-oracle finding: from one" in html
