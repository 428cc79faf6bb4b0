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
