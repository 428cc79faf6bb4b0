"""KV caches and cross-attention caches: the oracle by hand, every check against its
mutants, Hypothesis step schedules, and seed 004's eager-copy vs in-place contract."""

import pytest
import torch
from hypothesis import find, given, settings

import mutants_kv_cache as m
from harness.families import get_family
from harness.families.cross_cache import CrossCase
from harness.families.cross_cache import case_from_id as cross_case_from_id
from harness.families.kv_cache import KVCase, case_from_id
from harness.registry import Variant, variants
from harness.runner import OracleCache, evaluate
from harness.strategies import kv_cases
from harness.tolerance import ERROR, FAIL, PASS
from reference.kv_cache import cache_after, call_attention

ORACLES = OracleCache(capacity=16)
STATIC = KVCase(2, 4, 2, 8, "static", capacity=16, schedule=(5, 1, 1, 3, 1), seed=11)
SLIDING = KVCase(2, 2, 1, 8, "sliding", capacity=20, window=3, schedule=(6, 1, 3, 1), seed=12)
RING = KVCase(2, 2, 1, 8, "ring", capacity=6, window=3, schedule=(2, 1, 1, 4, 1, 1, 2, 1), seed=13)
CROSS = CrossCase(2, 2, 8, encoder_len=6, encoder_dim=12, schedule=(1, 1, 1), seed=14)


def _records(fn, case):
    variant = Variant(case.family, fn.__name__, fn, dtypes=("float32", "float64"))
    return {f"{r.check}:{r.target}": r for r in evaluate(case, variant, ORACLES)}


# The oracle, by hand -------------------------------------------------------------------

def test_a_sliding_window_of_w_admits_exactly_w_keys():
    q = torch.zeros(1, 1, 1, 1, dtype=torch.float64)  # equal scores: out = mean of the visible values
    k = torch.zeros(1, 6, 1, 1, dtype=torch.float64)
    v = torch.arange(6, dtype=torch.float64).view(1, 6, 1, 1)
    out = call_attention(q, k, v, window=3, scale=1.0)  # query at position 5 sees 3, 4, 5
    assert out.item() == pytest.approx((3 + 4 + 5) / 3)
    assert call_attention(q, k, v, window=None, scale=1.0).item() == pytest.approx(sum(range(6)) / 6)


def test_a_ring_keeps_the_latest_token_of_each_slot():
    values = torch.arange(7, dtype=torch.float64).view(1, 7, 1, 1)
    ring = cache_after("ring", 3, values, 7, torch.full((1, 3, 1, 1), -1.0, dtype=torch.float64))
    assert ring.flatten().tolist() == [6.0, 4.0, 5.0]  # slots hold positions 6, 4, 5
    static = cache_after("static", 9, values, 4, torch.full((1, 9, 1, 1), -1.0, dtype=torch.float64))
    assert static.flatten().tolist() == [0.0, 1.0, 2.0, 3.0] + [-1.0] * 5


def test_case_ids_round_trip_and_bad_cases_are_named():
    for case in (STATIC, SLIDING, RING):
        assert case_from_id(case.id) == case
    assert cross_case_from_id(CROSS.id) == CROSS
    with pytest.raises(ValueError, match="do not fit a static cache of 4 slots"):
        KVCase(1, 1, 1, 4, "static", capacity=4, schedule=(3, 2))
    with pytest.raises(ValueError, match="cannot hold a window of 4 for a call of 3 tokens"):
        KVCase(1, 1, 1, 4, "ring", capacity=5, window=4, schedule=(3,))
    with pytest.raises(ValueError, match="kind 'paged'"):
        KVCase(1, 1, 1, 4, "paged", capacity=5, schedule=(3,))
    with pytest.raises(ValueError, match="malformed kv cache case id"):
        case_from_id("kv-static-b1-zz")


# Checks against mutants -----------------------------------------------------------------

@pytest.mark.parametrize("case", [STATIC, SLIDING, RING], ids=lambda c: c.kind)
def test_the_plain_cache_passes_every_check(case):
    (variant,) = variants("kv_cache", ["index_copy_cache"])
    records = evaluate(case, variant, ORACLES)
    assert {r.status for r in records} == {PASS}, [(r.check, r.target, r.detail) for r in records if r.status != PASS]


@pytest.mark.parametrize("mutant, case, catching, passing", [
    (m.window_admits_one_more, SLIDING, ["OUT:prefill", "SPLIT:steps"], ["STATE:k_cache", "SLOT:k_cache"]),
    (m.window_admits_one_more, RING, ["SPLIT:steps"], ["STATE:k_cache", "SLOT:v_cache"]),
    (m.ring_wraps_early, RING, ["STATE:k_cache", "SLOT:k_cache", "SPLIT:steps"], ["OUT:prefill"]),
    (m.writes_one_slot_late, STATIC, ["STATE:k_cache", "STATE:v_cache", "SLOT:k_cache"], ["OUT:prefill", "SPLIT:steps"]),
    (m.decode_writes_swapped_rows, STATIC, ["SLOT:k_cache", "SLOT:v_cache", "SPLIT:steps"], ["OUT:prefill"]),
    (m.extend_ignores_new_keys, STATIC, ["SPLIT:steps"], ["OUT:prefill", "STATE:k_cache", "SLOT:k_cache"]),
    (m.reads_unwritten_slots, STATIC, ["INV:unused_slots"], ["STATE:k_cache", "SLOT:k_cache"]),
    (m.scales_its_query_in_place, STATIC, ["ALIAS:inputs"], ["OUT:prefill", "SPLIT:steps"]),
    (m.nan_after_prefill, STATIC, ["FIN:out", "SPLIT:steps"], ["OUT:prefill"]),
])
def test_kv_cache_checks_catch_their_mutants(mutant, case, catching, passing):
    records = _records(mutant, case)
    for key in catching:
        assert records[key].status == FAIL, (key, records[key])
    for key in passing:
        assert records[key].status == PASS, (key, records[key])


def test_a_failure_names_the_first_diverging_call():
    record = _records(m.decode_writes_swapped_rows, STATIC)["SLOT:k_cache"]
    assert "first differing call: call 1 (1 token(s) at position 5)" in record.detail
    assert "batch row" in record.detail and "slot 5" in record.detail
    split = _records(m.extend_ignores_new_keys, STATIC)["SPLIT:steps"]
    assert "first diverging call: call 3 (3 token(s) at position 7)" in split.detail


def test_every_kv_cache_check_is_exercised_here():
    exercised = {"OUT", "SPLIT", "STATE", "SLOT", "INV", "ALIAS", "FIN"}
    assert {s.check for s in get_family("kv_cache").checks_for(STATIC)} == exercised


@pytest.mark.parametrize("mutant, catching, passing", [
    (m.recomputed_every_call, ["REUSE:poisoned_encoder"], ["OUT:steps", "STATE:k_cache", "REUSE:cache"]),
    (m.never_filled, ["STATE:k_cache", "STATE:v_cache", "REUSE:poisoned_encoder"], ["OUT:steps"]),
    (m.appends_decoder_keys, ["REUSE:cache", "STATE:k_cache"], ["OUT:steps", "REUSE:poisoned_encoder"]),
    (m.zeroes_the_encoder_states, ["ALIAS:inputs"], ["OUT:steps", "STATE:k_cache", "REUSE:cache"]),
    (m.causal_cross_attention, ["OUT:steps", "REUSE:poisoned_encoder"], ["STATE:k_cache", "REUSE:cache", "ALIAS:inputs"]),
])
def test_cross_cache_checks_catch_their_mutants(mutant, catching, passing):
    records = _records(mutant, CROSS)
    for key in catching:
        assert records[key].status == FAIL, (key, records[key])
    for key in passing:
        assert records[key].status == PASS, (key, records[key])


def test_a_correct_cross_cache_passes_and_every_check_is_exercised():
    records = _records(m.cross_driver, CROSS)
    assert {r.status for r in records.values()} == {PASS}, records
    assert {k.split(":")[0] for k in records} == {"OUT", "STATE", "REUSE", "ALIAS", "FIN"}
    def nan_out(weights, steps, **kw):
        return [(o * float("nan"), k, v) for o, k, v in m.cross_driver(weights, steps, **kw)]
    assert _records(nan_out, CROSS)["FIN:out"].status == FAIL


# Hypothesis step schedules ----------------------------------------------------------------

@given(case=kv_cases())
def test_the_plain_cache_passes_drawn_schedules(case):
    (variant,) = variants("kv_cache", ["index_copy_cache"])
    bad = [r for r in evaluate(case, variant, ORACLES) if r.status in (FAIL, ERROR)]
    assert not bad, [(r.check, r.target, r.detail, r.reproduce) for r in bad]


@given(case=kv_cases())
def test_executorch_cache_ops_pass_drawn_schedules(case):
    (variant,) = variants("kv_cache", ["executorch_update_cache_with_indices"])
    if variant.unavailable_reason():
        pytest.skip(variant.unavailable_reason())
    bad = [r for r in evaluate(case, variant, ORACLES) if r.status in (FAIL, ERROR)]
    assert not bad, [(r.check, r.target, r.detail, r.reproduce) for r in bad]


def test_a_window_one_too_wide_shrinks_to_one_call_of_w_plus_one_tokens():
    mutant = Variant("kv_cache", "window_admits_one_more", m.window_admits_one_more, dtypes=("float32",))

    def fails(case):
        return any(r.status == FAIL for r in evaluate(case, mutant, OracleCache(1)))

    minimal = find(kv_cases(kinds=("sliding",)), fails, settings=settings(database=None, max_examples=300, derandomize=True))
    assert len(minimal.schedule) == 1 and minimal.schedule[0] == minimal.window + 1, minimal


# Seed 004: what the ops promise, eager and lowered ------------------------------------------

def _custom_ops():
    (variant,) = variants("cross_cache", ["seed004_cond_eager"])
    if variant.unavailable_reason():
        pytest.skip(variant.unavailable_reason())
    return variant


def test_seed_004_eager_update_writes_in_place_and_returns_a_copy():
    _custom_ops()
    cache, value = torch.zeros(2, 1, 4, 3), torch.randn(2, 1, 2, 3)
    returned = torch.ops.executorch.update_cross_attn_cache(value, cache)
    assert torch.equal(cache[:, :, :2], value) and torch.equal(cache[:, :, 2:], torch.zeros(2, 1, 2, 3))
    assert torch.equal(returned, cache) and returned.untyped_storage().data_ptr() != cache.untyped_storage().data_ptr()


def test_seed_004_inductor_update_writes_the_cache_itself():
    _custom_ops()
    cache, value = torch.zeros(2, 1, 4, 3), torch.randn(2, 1, 2, 3)
    compiled = torch.compile(lambda v, c: torch.ops.executorch.update_cross_attn_cache(v, c), backend="inductor")
    returned = compiled(value, cache)
    assert torch.equal(cache[:, :, :2], value) and torch.equal(returned, cache)


def test_seed_004_eager_alias_is_rejected_by_torch_as_declared():
    """The declared known failure of seed004_cond_eager, reproduced directly."""
    variant = _custom_ops()
    x, y = torch.zeros(2), torch.ones(2)
    with pytest.raises(RuntimeError, match="may not alias any inputs"):
        torch.ops.executorch.alias(x, y)
    assert variant.known_failures and "alias" in variant.known_failures[0].reason
