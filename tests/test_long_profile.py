"""The ``long`` profile (cases/long.py): production-length cases outside the default suite,
selected by ``attn-oracle run --profile long`` and pytest's ``--attn-profile long``.

The long cases themselves take minutes (README: "The long profile"); these tests check
the selection with the profile's catalogue patched to small cases, and the long cases'
own shapes and features without computing them.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import cases.long as long
from cases import catalogue, long_catalogue
from harness.cli import main
from harness.families import get_family
from harness.registry import variants
from harness.suite import suite_items

SMALL = "b1-h2x1-q20-k33-d16v16-f32-br-causal-s7"


def test_the_long_cases_reach_32k_tokens_on_the_cpu_and_128k_with_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert long.lengths() == (8192, 16384, 32768)
    for family in ("attention", "documents"):
        found = long_catalogue(family)
        assert found and not {c.id for c in found} & {c.id for c in catalogue(family)}
        for case in found:
            assert get_family(family).case_from_id(case.id) == case
    tokens = [case.layout.total for case in long_catalogue("documents")]
    assert tokens == [8192, 16384, 32768]
    assert max(c.len_k for c in long_catalogue("attention")) == 32768
    rings = long_catalogue("kv_cache")
    assert [c.length for c in rings] == [8192, 16384] and all(c.length >= 8 * c.capacity for c in rings)
    assert long_catalogue("gated_delta") == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert max(c.len_k for c in long_catalogue("attention")) == 131072


def test_variants_that_materialise_the_scores_declare_the_long_cases_a_limitation():
    case = next(c for c in long_catalogue("attention") if c.len_q == c.len_k == 16384 and c.causal)
    features = get_family("attention").case_features(case)
    assert "long" in features
    by_name = {v.name: v for v in variants("attention")}
    assert by_name["sdpa_math"].limitation_for(features, case.dtype) is not None
    assert by_name["sdpa_flash_cpu"].limitation_for(features, case.dtype) is None
    assert "long" not in get_family("attention").case_features(catalogue("attention")[0])


@pytest.fixture
def small_long_profile(monkeypatch):
    """The long profile's catalogue replaced by one small attention case."""
    small = get_family("attention").case_from_id(SMALL)
    monkeypatch.setattr(long, "catalogue", lambda family: [small] if family == "attention" else [])
    return small


def test_run_with_the_long_profile_runs_the_long_cases_instead_of_the_catalogue(tmp_path, small_long_profile):
    import json

    out = tmp_path / "run"
    assert main(["run", "--family", "attention", "--variants", "sdpa_math", "--profile", "long", "--out", str(out)]) == 0
    assert set(pd.read_csv(out / "results.csv")["case_id"]) == {SMALL}
    assert json.loads((out / "context.json").read_text())["hypothesis"]["profile"].startswith("long")


def test_the_long_profile_draws_no_cases_so_takes_no_seed(capsys):
    assert main(["run", "--profile", "long", "--seed", "3"]) == 2
    assert "the long profile draws none" in capsys.readouterr().err


def test_the_suite_of_the_long_profile_holds_the_long_cases_only(small_long_profile):
    items = suite_items(families=["attention"], variant_names=["sdpa_math"], profile="long")
    assert items and {i.case.id for i in items} == {SMALL}
    assert SMALL not in {i.case.id for i in suite_items(families=["attention"], variant_names=["sdpa_math"])}
