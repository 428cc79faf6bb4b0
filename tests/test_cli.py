"""The attn-oracle command line, run as a user runs it."""

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
    (["run", "--workers", "0"], "--workers must be at least 1"),
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
"""A user's kernel with the scale applied twice, and an error message with markup in it."""
import torch
from harness.registry import variant
from reference import attention


@variant("attention", "users_double_scale", dtypes=("float32",))
def users_double_scale(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return attention(q, k, v, scale=scale * scale, causal=causal, window=window, alignment=alignment, mask=mask)[0]


@variant("attention", "users_raiser", dtypes=("float32",))
def users_raiser(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    raise RuntimeError("<script>alert(1)</script> kernel refused")
'''


def test_a_variant_file_outside_the_repository_gets_its_own_verdicts(tmp_path):
    path = tmp_path / "elsewhere" / "my_variants.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(BROKEN))
    out = tmp_path / "out"
    result = run_cli("run", "--variants-from", str(path), "--family", "attention", "--case", CASE,
                     "--variants", "users_double_scale,users_raiser,sdpa_math", "--out", str(out), "--workers", "2", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # a failing check fails the run
    table = pd.read_csv(out / "results.csv")
    verdict = table.set_index(["variant", "check", "target"])["status"]
    assert verdict["users_double_scale", "OUT", "out"] == "fail"
    assert verdict["users_raiser", "OUT", "out"] == "error"
    assert (table[table.variant == "sdpa_math"]["status"] == "pass").all()
    html = (out / "report.html").read_text()
    assert "users_double_scale" in html and f"--variants-from {path}" in html  # the reproduce command
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


def test_list_names_every_variant_and_why_it_cannot_run_here():
    result = run_cli("list")
    assert result.returncode == 0
    for name in ("sdpa_math", "sdpa_flash_cpu", "flex_attention", "sliced_attention", "executorch_custom_sdpa", "flash_attn"):
        assert name in result.stdout
    assert "has no backward on CPU" in result.stdout
