"""The attn-oracle command line, run as a user runs it."""

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from harness.cli import main

CASE = "b2-h4x2-q7-k19-d16v16-f32-br-causal-s1"


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args, expected", [
    (["run", "--family", "nope"], "unknown family 'nope'; known families: attention"),
    (["run", "--family", "attention", "--case", "b2-zz"], "malformed attention case id 'b2-zz'"),
    (["run", "--variants", "no_such_variant"], "unknown variant(s) no_such_variant"),
    (["run", "--variants-from", "/nonexistent/variants.py"], "variants file /nonexistent/variants.py: no such file"),
    (["report", "/nonexistent/results"], "no results at /nonexistent/results"),
    (["findings", "/nonexistent/results"], "no results at /nonexistent/results"),
    (["run", "--workers", "0"], "--workers must be at least 1"),
    (["run", "--seed", "3"], "--seed chooses the drawn cases: it needs --profile"),
])
def test_bad_arguments_get_one_clear_line(capsys, args, expected):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"attn-oracle: error: {err.split('error: ', 1)[1]}" and expected in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_run_writes_report_and_table_then_report_rerenders(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--family", "attention", "--variants", "sdpa_math,sliced_attention", "--case", CASE, "--out", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert set(table["variant"]) == {"sdpa_math", "sliced_attention"} and set(table["status"]) == {"pass"}
    assert {"OUT", "GRAD", "FIN", "LAYOUT"} <= set(table["check"])
    html = (out / "report.html").read_text()
    assert "sdpa_math" in html and "Variants x checks" in html and "torch" in html
    (out / "report.html").unlink()
    assert main(["report", str(out / "results.csv"), "--out", str(tmp_path / "again")]) == 0
    assert "sliced_attention" in (tmp_path / "again" / "report.html").read_text()


BROKEN = '''
"""A user's kernel with the scale applied twice (its gradients declared a known failure), an
error message with markup in it, and a known failure that no longer fails."""
import torch
from harness.registry import KnownFailure, variant
from reference import attention


@variant("attention", "users_double_scale", dtypes=("float32",), known_failures=[
    KnownFailure("the scale is squared: confirmed, not fixed upstream", checks={"GRAD"}, versions="torch>=2.0")],
    repro="""
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=top_left_only, scale=scale * scale, enable_gqa=q.shape[1] != k.shape[1])
        """)
def users_double_scale(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return attention(q, k, v, scale=scale * scale, causal=causal, window=window, alignment=alignment, mask=mask)[0]


@variant("attention", "users_fixed_upstream", dtypes=("float32",),
         known_failures=[KnownFailure("once wrong, fixed since", checks={"OUT"})])
def users_fixed_upstream(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return attention(q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask)[0]


@variant("attention", "users_raiser", dtypes=("float32",))
def users_raiser(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    raise RuntimeError("<script>alert(1)</script> kernel refused")
'''


def test_a_variant_file_outside_the_repository_gets_its_own_verdicts(tmp_path, capsys):
    path = tmp_path / "elsewhere" / "my_variants.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(BROKEN))
    out = tmp_path / "out"
    result = run_cli("run", "--variants-from", str(path), "--family", "attention", "--case", CASE, "--variants",
                     "users_double_scale,users_raiser,users_fixed_upstream,sdpa_math", "--out", str(out), "--workers", "2",
                     cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # a failing check fails the run
    # strict: a declared known failure that passes is reported, and fails the run on its own
    assert f"declared known failure did not fail, remove the declaration: users_fixed_upstream OUT on {CASE}" in result.stdout
    table = pd.read_csv(out / "results.csv")
    verdict = table.set_index(["variant", "check", "target"])["status"]
    assert verdict["users_double_scale", "OUT", "out"] == "fail"
    assert verdict["users_raiser", "OUT", "out"] == "adapter_error"  # its own raise: the adapter's, not the library's
    assert (table[table.variant == "sdpa_math"]["status"] == "pass").all()
    html = (out / "report.html").read_text()
    assert "users_double_scale" in html and f"--variants-from {path}" in html  # the reproduce command
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html

    # Findings: the real failures, one per bug, each with its script; the adapter's own raise is not one
    index = json.loads((out / "findings.json").read_text())
    found = {(f["variant"], f["check"], f["target"]): f for f in index["findings"]}
    assert {v for v, _, _ in found} == {"users_double_scale"}
    assert {e["variant"] for e in index["left_out"]["adapter errors"]} == {"users_raiser"}
    assert found["users_double_scale", "OUT", "out"]["known"] == ""
    assert found["users_double_scale", "GRAD", "dq"]["known_versions"] == "torch>=2.0"  # known, and still listed
    script = out / "findings" / "users_double_scale-OUT-out.py"
    assert script.is_file() and 'id="findings-section"' in html and "findings/users_double_scale-OUT-out.py" in html
    assert main(["findings", str(out)]) == 0
    listed = capsys.readouterr().out
    assert f"finding(s) in {out} (3 known):" in listed and f"repro: {script}" in listed
    assert "users_double_scale GRAD:dq mismatch  [known failure (torch>=2.0): the scale is squared" in listed


def test_list_names_every_variant_and_why_it_cannot_run_here():
    result = run_cli("list")
    assert result.returncode == 0
    for name in ("sdpa_math", "sdpa_flash_cpu", "flex_attention", "sliced_attention", "executorch_custom_sdpa", "flash_attn"):
        assert name in result.stdout
    assert "has no backward on CPU" in result.stdout


CRASHING_VARIANT = '''
import os
from harness.registry import variant

@variant("attention", "aborts_on_causal", dtypes=("float32",))
def aborts_on_causal(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    os.abort()  # a native crash, as a C++ kernel's abort would be
'''


def test_a_worker_that_dies_is_recorded_and_the_run_goes_on(tmp_path):
    variants_file = tmp_path / "crashing.py"
    variants_file.write_text(CRASHING_VARIANT)
    out = tmp_path / "run"
    result = run_cli("run", "--family", "attention", "--variants", "aborts_on_causal,sdpa_math", "--variants-from",
                     str(variants_file), "--case", CASE, "--workers", "2", "--out", str(out))
    assert result.returncode == 1, result.stderr[-2000:]
    table = pd.read_csv(out / "results.csv")
    crashed = table[table["variant"] == "aborts_on_causal"]
    assert len(crashed) and set(crashed["status"]) == {"error"} and crashed["detail"].str.contains("worker process died").all()
    assert set(table.loc[table["variant"] == "sdpa_math", "status"]) == {"pass"}


CRASHING_ON_CAUSAL = '''
import os
from harness.registry import variant
from reference import attention

@variant("attention", "aborts_when_causal", dtypes=("float32",))
def aborts_when_causal(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    if causal:
        os.abort()
    return attention(q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)[0]
'''


def test_each_crash_is_pinned_on_its_own_case_once_and_the_other_cases_are_judged(tmp_path):
    from cases import catalogue

    variants_file = tmp_path / "crashing_on_causal.py"
    variants_file.write_text(CRASHING_ON_CAUSAL)
    plain = [c.id for c in catalogue("attention") if c.dtype == "float32" and not c.causal][:1]
    causal = [c.id for c in catalogue("attention") if c.dtype == "float32" and c.causal][:2]
    out = tmp_path / "run"
    result = run_cli("run", "--family", "attention", "--variants-from", str(variants_file),
                     "--out", str(out), *(arg for case in plain + causal for arg in ("--case", case)))
    assert result.returncode == 1, result.stderr[-2000:]
    table = pd.read_csv(out / "results.csv")
    per_case = table.groupby("case_id")["status"].agg(set).to_dict()
    assert all(per_case[c] == {"error"} for c in causal) and all("error" not in per_case[c] for c in plain), per_case
    crashes = table[table["status"] == "error"]
    assert crashes["detail"].str.contains("worker process died").all()
    assert not crashes.duplicated(["case_id", "check", "target"]).any()  # recorded once, no re-run twice


def test_shards_partition_the_cases_and_report_merges_them(tmp_path, capsys):
    common = ["run", "--family", "kv_cache", "--variants", "index_copy_cache"]
    for shard in ("1/2", "2/2"):
        assert main(common + ["--shard", shard, "--out", str(tmp_path / shard.replace("/", "of"))]) == 0
    first, second = (pd.read_csv(tmp_path / f"{i}of2" / "results.csv") for i in (1, 2))
    from cases import catalogue

    shares = set(first["case_id"]) | set(second["case_id"])
    assert set(first["case_id"]).isdisjoint(second["case_id"]) and len(shares) == len(catalogue("kv_cache"))
    assert main(["report", str(tmp_path / "1of2"), str(tmp_path / "2of2"), "--out", str(tmp_path / "merged")]) == 0
    merged = pd.read_csv(tmp_path / "merged" / "results.csv")
    assert len(merged) == len(first) + len(second) and (tmp_path / "merged" / "results.json").exists()
    with pytest.raises(SystemExit):  # argparse's own one-line usage error
        main(["run", "--shard", "3/2"])


def test_compare_names_new_failures_and_shrunk_margins(tmp_path, capsys):
    old = pd.DataFrame([
        dict(family="kv_cache", variant="v", case_id="c1", check="OUT", target="prefill", status="pass", margin=0.9),
        dict(family="kv_cache", variant="v", case_id="c2", check="OUT", target="prefill", status="pass", margin=0.9),
        dict(family="kv_cache", variant="v", case_id="c3", check="OUT", target="prefill", status="fail", margin=-1.0),
    ])
    new = old.copy()
    new.loc[0, ["status", "margin"]] = ["fail", -0.5]
    new.loc[1, "margin"] = 0.2
    new.loc[2, ["status", "margin"]] = ["pass", 0.8]
    for frame, name in ((old, "old.csv"), (new, "new.csv")):
        for column in ("detail", "reproduce", "known_failure", "worst_index", "case", "dtype"):
            frame[column] = ""
        frame["case_params"] = "{}"
        frame.to_csv(tmp_path / name, index=False)
    assert main(["compare", str(tmp_path / "old.csv"), str(tmp_path / "new.csv")]) == 1
    text = capsys.readouterr().out
    assert "new failures: 1" in text and "c1 pass -> fail" in text
    assert "shrunk: 1" in text and "c2" in text and "margin 0.9 -> 0.2" in text
    assert "fixed: 1" in text
    assert main(["compare", str(tmp_path / "old.csv"), str(tmp_path / "old.csv")]) == 0


def test_a_folder_without_records_is_one_clear_line(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"attn-oracle: error: no records in {tmp_path}"
    assert main(["findings", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"attn-oracle: error: no findings in {tmp_path} (attn-oracle run") and len(err.splitlines()) == 1


def test_a_profile_adds_cases_drawn_from_the_strategies_the_same_for_a_seed(tmp_path):
    import json

    from cases import catalogue
    from harness.drawn_cases import drawn_cases
    from harness.families import get_family
    from harness.registry import variants

    assert [c.id for c in drawn_cases("kv_cache", 5, 3)] == [c.id for c in drawn_cases("kv_cache", 5, 3)]
    assert drawn_cases("gdn_block", 5, 3) == []  # no strategy: the catalogue only
    ring_only = variants("kv_cache", ["executorch_ring_kvcache"])
    features = get_family("kv_cache").case_features
    drawn = drawn_cases("kv_cache", 10, 3, ring_only)
    assert drawn and all(ring_only[0].limitation_for(features(c), c.dtype) is None for c in drawn)
    listed = {c.id for c in catalogue("kv_cache")}

    def drawn_by_a_run(out):
        # a fresh process each: Hypothesis also draws constants from the local modules a process has
        # loaded, so the same seed gives the same cases for the same command, not across contexts
        result = run_cli("run", "--family", "kv_cache", "--variants", "index_copy_cache", "--profile", "ci",
                         "--seed", "3", "--out", str(out))
        assert result.returncode == 0, result.stdout + result.stderr
        ran = set(pd.read_csv(out / "results.csv")["case_id"])
        assert listed < ran
        return ran - listed

    out = tmp_path / "run"
    first = drawn_by_a_run(out)
    assert first and first == drawn_by_a_run(tmp_path / "again")
    (chosen,) = variants("kv_cache", ["index_copy_cache"])  # drawn within what the chosen variant takes
    drawn_cases_ = [get_family("kv_cache").case_from_id(c) for c in first]
    assert all(chosen.limitation_for(features(c), c.dtype) is None for c in drawn_cases_)
    context = json.loads((out / "context.json").read_text())
    assert context["hypothesis"] == {"profile": "ci (max_examples=15)", "seed": "3 (the drawn cases' seed)"}
