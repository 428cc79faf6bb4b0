"""``[tool.attn-oracle]``: the project's settings, found from the working directory, overridden by flags."""

import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from harness import config, regressions
from harness.config import ConfigError

KERNELS = '''
from harness.registry import variant
from reference import attention


@variant("attention", "project_reference", dtypes=("float32",))
def project_reference(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return attention(q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)[0]
'''
CASE = "b1-h2x1-q9-k13-d16v16-f32-br-s2"


def _project(tmp_path, table: str):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'theirs'\n\n[tool.attn-oracle]\n" + textwrap.dedent(table))
    (tmp_path / "sub").mkdir(exist_ok=True)
    return tmp_path


def test_the_table_is_read_from_the_nearest_pyproject_with_paths_against_its_folder(tmp_path):
    _project(tmp_path, 'variants = ["k/mine.py"]\nfamilies = ["attention"]\nresults = "out"\nprofile = "dev"\n')
    got = config.load(tmp_path / "sub")  # from a folder below the project's
    assert got.root == tmp_path.resolve() and got.variants == ((tmp_path / "k" / "mine.py").resolve(),)
    assert got.families == ("attention",) and got.results == (tmp_path / "out").resolve() and got.profile == "dev"
    assert got.regressions_folder == tmp_path.resolve() / "regressions"  # the project's root, not site-packages
    assert got.with_builtins(["mine.py"]) is False and got.with_builtins([]) is True


def test_the_regressions_folder_is_the_projects(tmp_path, monkeypatch):
    _project(tmp_path, 'regressions = "pinned"\n')
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.setattr(config, "_ROOT", [])  # outside pytest: the project around the working directory
    monkeypatch.delenv(regressions.ENV, raising=False)
    assert regressions.folder() == (tmp_path / "pinned").resolve()


@pytest.mark.parametrize("table, expected", [
    ('variant = ["x.py"]\n', "has no key 'variant'; known keys: variants, families"),
    ('families = "attention"\n', "families must be a list of strings, not 'attention'"),
    ('builtins = "yes"\n', "builtins must be true or false"),
    ('results = [\n', "not valid TOML"),
])
def test_a_bad_table_is_named_with_its_file_and_key(tmp_path, table, expected):
    _project(tmp_path, table)
    with pytest.raises(ConfigError, match=expected) as info:
        config.load(tmp_path)
    assert str(tmp_path / "pyproject.toml") in str(info.value)


def test_the_command_line_reads_the_table_and_its_flags_override_it(tmp_path):
    _project(tmp_path, 'variants = ["mine.py"]\nfamilies = ["attention"]\nresults = "out/attn"\n')
    (tmp_path / "mine.py").write_text(KERNELS)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "harness.cli", "run", "--case", CASE, *args], cwd=tmp_path,
                              capture_output=True, text=True)

    proc = run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = pd.read_csv(tmp_path / "out" / "attn" / "results.csv")
    assert set(table["variant"]) == {"project_reference"} and set(table["family"]) == {"attention"}
    proc = run("--out", "elsewhere", "--builtins", "--variants", "project_reference,sdpa_math")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(pd.read_csv(tmp_path / "elsewhere" / "results.csv")["variant"]) == {"project_reference", "sdpa_math"}
    (tmp_path / "pyproject.toml").write_text("[tool.attn-oracle]\nfamily = 1\n")
    proc = run()
    assert proc.returncode == 2 and "has no key 'family'" in proc.stderr and "Traceback" not in proc.stderr
