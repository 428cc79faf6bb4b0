"""``attn-oracle fuzz``: a short seeded session finds a broken KV cache, shrinks the case,
pins it as a regression, and the suite's catalogue then holds that case."""

import json

import pytest

import mutants_kv_cache as m
from cases import catalogue
from harness import fuzz
from harness.cli import main
from harness.families.kv_cache import case_from_id
from harness.records import Record
from harness.regressions import ENV, RegressionError
from harness.registry import Variant, variants
from harness.suite import suite_items

# An extend after the first call attends to the old cache only: invisible to OUT, to
# every single-call schedule and to decode steps; seeded, Hypothesis finds it in ~1 s.
EXTEND_MUTANT = Variant("kv_cache", "extend_ignores_new_keys", m.extend_ignores_new_keys, dtypes=("float32",))


def _session(tmp_path, variant, minutes=0.5, **kw):
    lines = []
    kw.setdefault("seed", 0)
    results = fuzz.fuzz([variant], minutes, regressions_dir=tmp_path / "regressions", report=lines.append, **kw)
    return results, lines


def test_a_short_session_finds_the_mutant_and_pins_the_shrunk_case(tmp_path, monkeypatch):
    (result,), lines = _session(tmp_path, EXTEND_MUTANT)
    assert result.case is not None and result.shrunk, lines
    assert result.failed[0].check == "SPLIT" and "first diverging call: call 1" in result.failed[0].detail
    # shrunk: one row, one head, a first call and one extend of 2 tokens, nothing more
    case = result.case
    # one row, one head, a first token then one extend (the strategy draws extends at tile edges, 15 the least)
    assert (case.batch, case.heads, len(case.schedule), case.schedule[0]) == (1, 1, 2, 1) and case.schedule[1] > 1, case
    assert result.blob.startswith("@reproduce_failure(")

    (pinned,) = (tmp_path / "regressions").glob("*.jsonl")
    (entry,) = [json.loads(line) for line in pinned.read_text().splitlines()]
    assert pinned.name == "kv_cache.jsonl" and entry["variant"] == "extend_ignores_new_keys"
    assert entry["check"] == "SPLIT:steps" and entry["found"] and entry["shrunk"] is True
    assert case_from_id(entry["case_id"]) == case

    # the suite's catalogue runs it, for every kv_cache variant
    assert case in catalogue("kv_cache", tmp_path / "regressions") and case not in catalogue("kv_cache")
    monkeypatch.setenv(ENV, str(tmp_path / "regressions"))
    items = [i for i in suite_items(["kv_cache"]) if i.case == case]
    assert {i.variant.name for i in items} == {v.name for v in variants("kv_cache")}

    # found again: not pinned twice
    (again,), _ = _session(tmp_path, EXTEND_MUTANT)
    assert again.case == case and again.regression is None
    assert len(pinned.read_text().splitlines()) == 1


def test_the_example_database_replays_a_failure_first(tmp_path):
    database = tmp_path / "db"
    (first,), _ = _session(tmp_path, EXTEND_MUTANT, seed=None, database=database)
    assert first.case is not None and any(database.rglob("*"))
    (second,), _ = _session(tmp_path, EXTEND_MUTANT, seed=None, database=database)
    assert second.case == first.case and second.progress.examples <= 3  # the stored failure, then its replay


def test_a_correct_variant_fuzzed_briefly_finds_nothing_and_writes_nothing(tmp_path):
    (plain,) = variants("kv_cache", ["index_copy_cache"])
    (block,) = variants("gdn_block")[:1]
    results, lines = _session(tmp_path, plain, minutes=0.05)
    skipped, _ = _session(tmp_path, block, minutes=0.05)
    (result,) = results
    assert result.case is None and result.progress.supported > 0 and 0 <= result.progress.best_margin <= 1
    assert 2.5 < result.seconds < 20
    assert "no failure" in fuzz.summary(results, tmp_path / "regressions")[0]
    assert "has no Hypothesis case strategy" in skipped[0].skipped
    assert not (tmp_path / "regressions").exists()


def test_steering_ignores_exact_unsupported_and_known_failing_records():
    def record(check, margin, status="pass", known=""):
        return Record("c", "kv_cache", "v", check, "t", status, "float32", margin=margin, known_failure=known)

    margins = fuzz.steering_margins([record("OUT", 0.5), record("OUT", 0.2), record("SLOT", float("nan")),
                                     record("FIN", float("-inf"), "fail"), record("STATE", -3.0, "fail", known="declared"),
                                     record("INV", 0.1, "unsupported")])
    assert margins == {"OUT": 0.2}


def test_a_malformed_regressions_file_is_named_with_its_line(tmp_path):
    (tmp_path / "kv_cache.jsonl").write_text('{"family": "kv_cache", "case_id": "kv-static-b1-zz"}\n')
    with pytest.raises(RegressionError, match=r"kv_cache.jsonl line 1: malformed kv cache case id"):
        catalogue("kv_cache", tmp_path)
    (tmp_path / "kv_cache.jsonl").write_text('\n{"family": "kv_cache"\n')
    with pytest.raises(RegressionError, match=r"kv_cache.jsonl line 2: not JSON"):
        catalogue("attention", tmp_path)


@pytest.mark.parametrize("args, expected", [
    (["fuzz", "--family", "nope"], "unknown family 'nope'; known families: attention"),
    (["fuzz", "--family", "programs"], "family 'programs' has no Hypothesis case strategy to fuzz with"),
    (["fuzz", "--family", "kv_cache", "--minutes", "0"], "--minutes must be more than 0"),
])
def test_bad_fuzz_arguments_get_one_clear_line(capsys, args, expected):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attn-oracle: error: ") and expected in err and len(err.splitlines()) == 1
