"""The pytest plugin: light to import, clear about bad variant files."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_plugin_entry_module_imports_nothing_heavy():
    code = "import sys, harness.plugin; print(sorted(m for m in ('torch', 'pandas', 'numpy', 'hypothesis', 'jinja2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_plugin_is_registered_through_the_pytest11_entry_point():
    from importlib.metadata import entry_points

    assert any(ep.value == "harness.plugin" for ep in entry_points(group="pytest11"))


def test_a_bad_variants_file_is_a_usage_error_naming_it(tmp_path):
    bad = tmp_path / "bad_variants.py"
    bad.write_text("from harness.registry import variant\n\n@variant('attention', 'x')\ndef x(q, k, v):\n    return q\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--variants-from", str(bad), "--collect-only", "-q",
                           "tests/test_plugin.py"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 4  # pytest's usage-error status
    assert f"variants file {bad}" in proc.stderr and "must accept keyword argument(s) scale" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_users_variant_joins_the_equivalence_suite(tmp_path):
    mine = tmp_path / "mine.py"
    mine.write_text(
        "from harness.registry import variant\nfrom reference import attention\n\n"
        "@variant('attention', 'users_reference_copy', dtypes=('float32',))\n"
        "def users_reference_copy(q, k, v, *, scale, causal, window, alignment, mask, softcap):\n"
        "    return attention(q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)[0]\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--variants-from", str(mine), "-q", "-p", "no:cacheprovider",
                           "--attn-results", str(tmp_path / "results"), "tests/test_equivalence.py",
                           "-k", "users_reference_copy and OUT and not LAYOUT"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary
    assert "users_reference_copy" in (tmp_path / "results" / "report.html").read_text()


def test_an_xdist_worker_that_dies_is_recorded_as_an_error_of_its_item(tmp_path):
    crashing = tmp_path / "crashing.py"
    crashing.write_text(
        "import os\nfrom harness.registry import variant\n\n"
        "@variant('attention', 'aborts_in_c', dtypes=('float32',))\n"
        "def aborts_in_c(q, k, v, *, scale, causal, window, alignment, mask, softcap):\n"
        "    os.abort()  # as a C++ kernel's abort would\n")
    from cases import catalogue

    # a plain float32 case of the attention catalogue, whatever the catalogue holds today
    case = next(c.id for c in catalogue("attention") if c.dtype == "float32" and c.mask == "none" and not c.causal
                and c.window is None and c.softcap is None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "--variants-from", str(crashing), "--attn-builtins", "-q", "-n", "2", "--dist", "load",
                           "--attn-results", str(tmp_path / "results"),
                           *(f"tests/test_equivalence.py::test_equivalence[{v}-OUT-{case}]" for v in ("aborts_in_c", "sdpa_math"))],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "worker" in proc.stdout and "crashed" in proc.stdout, proc.stdout[-2000:]
    import pandas as pd

    table = pd.read_csv(tmp_path / "results" / "results.csv")
    crashed = table[table["variant"] == "aborts_in_c"]
    assert set(zip(crashed["check"], crashed["status"], crashed["case_id"])) == {("OUT", "error", case)}
    assert crashed["detail"].str.contains("pytest-xdist worker died").all()
    assert set(table.loc[table["variant"] == "sdpa_math", "status"]) == {"pass"}  # the rest of the run went on


def test_variant_files_without_the_suite_module_get_a_hint_not_silence(tmp_path):
    (tmp_path / "mine.py").write_text(
        "from harness.registry import variant\n\n@variant('attention', 'mine', dtypes=('float32',))\n"
        "def mine(q, k, v, *, scale, causal, window, alignment, mask, softcap):\n    return q\n")
    (tmp_path / "test_other.py").write_text("def test_other():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--variants-from", "mine.py"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "from harness.pytest_suite import test_equivalence" in proc.stdout  # how to opt in, said once
