"""attn-oracle as a user gets it: a wheel, installed beside the torch a project already has,
and the equivalence suite in that project's own pytest.

The fresh venv reuses this environment's packages (torch among them) through a ``.pth``
line, so the install downloads nothing; torch must be left exactly as it was.
"""

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One worker builds the wheel once for the module's tests (a build writes build/ and *.egg-info beside the sources).
pytestmark = pytest.mark.xdist_group("wheel")

KERNELS = '''
import torch.nn.functional as F
from harness.registry import Limitation, variant

PLAIN = [Limitation("no masking here", features={"causal", "window", "mask:bool", "mask:additive", "softcap"})]


@variant("attention", "my_sdpa", dtypes=("float32",), limitations=PLAIN)
def my_sdpa(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)


@variant("attention", "my_sdpa_wrong_scale", dtypes=("float32",), limitations=PLAIN)
def my_sdpa_wrong_scale(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return F.scaled_dot_product_attention(q, k, v, scale=scale * 1.1, enable_gqa=True)


@variant("attention", "my_sdpa_typo", dtypes=("float32",), limitations=PLAIN)
def my_sdpa_typo(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return F.scaled_dot_product_attention(q, k, v, scal=scale, enable_gqa=True)
'''

PYPROJECT = '''
[tool.attn-oracle]
variants = ["my_kernels.py"]
families = ["attention"]
results = "out/attn"
'''


def _run(*args, cwd, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory) -> Path:
    """A venv holding the wheel built from this repository, beside this environment's torch."""
    where = tmp_path_factory.mktemp("wheel")
    sources = where / "sources"  # a copy, so that the build leaves this checkout as it was
    shutil.copytree(ROOT, sources, ignore=shutil.ignore_patterns(".git", ".venv", "reports", "build", "*.egg-info",
                                                                 ".hypothesis", "__pycache__", "regressions"))
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", where / "dist", sources, cwd=where)
    (wheel,) = (where / "dist").glob("attn_oracle-*.whl")
    _run(sys.executable, "-m", "venv", where / "venv", cwd=where)
    python = where / "venv" / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=where).stdout.strip()
    (Path(purelib) / "reuse_existing_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    torch_before = _torch(python, where)
    _run(python, "-m", "pip", "install", "-q", wheel, cwd=where)  # from the registries only what torch lacks here
    assert _torch(python, where) == torch_before  # the user's torch, untouched
    return python


def _torch(python, cwd) -> dict:
    code = "import json, torch; print(json.dumps({'version': torch.__version__, 'file': torch.__file__}))"
    return json.loads(_run(python, "-c", code, cwd=cwd).stdout)


def test_the_wheel_installs_beside_an_existing_torch_and_imports_from_site_packages(user_venv, tmp_path):
    where = _run(user_venv, "-c", "import harness; print(harness.__file__)", cwd=tmp_path).stdout.strip()
    assert "site-packages" in where and not where.startswith(str(ROOT))


def test_a_users_project_runs_the_suite_in_its_own_pytest(user_venv, tmp_path):
    (tmp_path / "my_kernels.py").write_text(KERNELS)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "test_attn_oracle.py").write_text("from harness.pytest_suite import test_equivalence  # noqa: F401\n")
    proc = _run(user_venv, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider", "-k", "OUT and q37",
                cwd=tmp_path, check=False)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]  # the wrong scale is caught
    summary = out.strip().splitlines()[-1]
    assert " failed" in summary and " passed" in summary and " skipped" in summary, summary  # limitations: skips
    lines = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert lines and all("my_sdpa_wrong_scale" in line or "my_sdpa_typo" in line for line in lines), lines
    assert any("my_sdpa_wrong_scale" in line for line in lines) and any("my_sdpa_typo" in line for line in lines)
    assert "adapter error: my_sdpa_typo" in out and "my_kernels.py:" in out  # one line, naming the user's frame
    report = tmp_path / "out" / "attn" / "report.html"
    assert report.is_file() and "my_sdpa_wrong_scale" in report.read_text()
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "attn" / "results.csv")
    assert set(table["variant"]) == {"my_sdpa", "my_sdpa_wrong_scale", "my_sdpa_typo"}  # the project's only
    ran = table[table["status"] != "unsupported"]
    assert set(ran.loc[ran["variant"] == "my_sdpa", "status"]) == {"pass"}
    assert set(ran.loc[ran["variant"] == "my_sdpa_typo", "status"]) == {"adapter_error"}


def test_the_python_api_works_from_the_installed_package(user_venv, tmp_path):
    code = textwrap.dedent('''
        import torch.nn.functional as F
        import harness

        def mine(q, k, v, *, scale, causal, window, alignment, mask, softcap):
            return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)

        frame = harness.check(mine, "attention", cases=["b1-h2x1-q9-k13-d16v16-f32-br-s2"], checks=["OUT"])
        print(type(frame).__name__, list(frame["status"]))
    ''')
    out = _run(user_venv, "-c", code, cwd=tmp_path).stdout
    assert out.strip().splitlines()[-1] == "DataFrame ['pass']"
