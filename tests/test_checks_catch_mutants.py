"""Every check can fail: each mutant is caught by the check named for it, and correct
variants pass the very same cases. A check with no mutant here is a defect."""

import pytest

import mutants_attention as m
from harness.families import get_family
from harness.families.attention import AttentionCase
from harness.registry import Variant, variants
from harness.runner import OracleCache, evaluate
from harness.tolerance import ERROR, FAIL, PASS, UNSUPPORTED

BOTTOM_RIGHT = AttentionCase(2, 6, 2, 7, 19, 16, 16, causal=True, alignment="bottom_right", seed=1)
# top-left causal with Lq < Lk: keys Lq.. are seen by no query, and no row is empty
UNSEEN_KEYS = AttentionCase(2, 4, 2, 5, 13, 16, 16, causal=True, alignment="top_left", seed=2)
# a bool mask with a fully-masked row and a key column no query sees
MASKED = AttentionCase(2, 4, 2, 9, 11, 16, 16, mask="bool", seed=3)
PLAIN = AttentionCase(2, 4, 4, 6, 10, 16, 16, seed=4)
# one key past a tile of 16, a head dim that is not a power of two, Dk != Dv
TAIL = AttentionCase(2, 4, 2, 9, 17, 24, 40, causal=True, alignment="bottom_right", seed=5)
CASES = (BOTTOM_RIGHT, UNSEEN_KEYS, MASKED, PLAIN, TAIL)
# the checks that ordinary inputs drive, which the memory-condition mutants must pass
ORDINARY = ["OUT:out", "FIN:out", "GRAD:dq", "GRAD:dk", "GRAD:dv", "FIN:grads", "LAYOUT:strided", "LAYOUT:expanded"]

# (mutant, case, the check:target that must catch it, check:targets that must still pass)
CAUGHT = [
    (m.top_left_instead_of_bottom_right, BOTTOM_RIGHT, "OUT:out", []),
    (m.scale_applied_twice, PLAIN, "OUT:out", ["FIN:out"]),
    (m.gqa_heads_tiled, BOTTOM_RIGHT, "OUT:out", ["FIN:out"]),
    (m.nan_on_fully_masked_row, MASKED, "FIN:out", []),
    (m.nan_on_fully_masked_row, MASKED, "ZERO:out", []),
    (m.masked_keys_leak_through_finite_bias, UNSEEN_KEYS, "INV:poison", ["OUT:out", "GRAD:dq"]),
    (m.masked_scores_filled_with_minus_90, UNSEEN_KEYS, "ZERO:dv", ["OUT:out", "INV:poison", "GRAD:dv"]),
    (m.masked_scores_biased_by_minus_90, UNSEEN_KEYS, "ZERO:dk", ["OUT:out", "GRAD:dk"]),
    (m.nan_gradient_on_fully_masked_row, MASKED, "FIN:grads", ["OUT:out", "ZERO:out"]),
    (m.nan_gradient_on_fully_masked_row, MASKED, "ZERO:dq", ["OUT:out"]),
    (m.key_detached, PLAIN, "GRAD:dk", ["OUT:out", "GRAD:dq", "GRAD:dv"]),
    (m.gqa_gradient_not_summed, BOTTOM_RIGHT, "GRAD:dv", ["OUT:out", "GRAD:dq"]),
    (m.gqa_gradient_not_summed, BOTTOM_RIGHT, "GRAD:dk", ["OUT:out"]),
    (m.softmax_backward_without_centering, PLAIN, "GRAD:dq", ["OUT:out", "GRAD:dv"]),
    (m.assumes_contiguous_inputs, PLAIN, "LAYOUT:strided", ["OUT:out", "GRAD:dq"]),
    (m.assumes_contiguous_inputs, PLAIN, "LAYOUT:expanded", ["OUT:out"]),
    # memory conditions: each mutant is right on ordinary inputs
    (m.reads_past_the_key_tail, TAIL, "GUARD:nan", ORDINARY + ["GUARD:huge", "UNINIT:out", "DET:out"]),
    (m.nan_skipping_max_over_the_key_tile, TAIL, "GUARD:huge", ORDINARY + ["GUARD:nan", "UNINIT:out", "DET:out"]),
    (m.backward_reads_past_the_key_tail, TAIL, "GUARD:grads", ORDINARY + ["GUARD:nan", "UNINIT:grads", "DET:grads"]),
    (m.fully_masked_rows_left_unwritten, MASKED, "UNINIT:out",
     ORDINARY + ["ZERO:out", "ZERO:dq", "INV:poison", "GUARD:nan", "UNINIT:grads", "DET:out"]),
    (m.dq_of_fully_masked_rows_left_unwritten, MASKED, "UNINIT:grads",
     ORDINARY + ["ZERO:out", "ZERO:dq", "INV:poison", "UNINIT:out", "GUARD:grads", "DET:grads"]),
    (m.split_order_follows_a_call_counter, TAIL, "DET:out", ORDINARY + ["GUARD:nan", "GUARD:huge", "UNINIT:out"]),
    (m.dq_order_follows_a_call_counter, TAIL, "DET:grads", ORDINARY + ["DET:out", "GUARD:grads", "UNINIT:grads"]),
]

ORACLES = OracleCache()


def _records(fn, case):
    variant = Variant("attention", fn.__name__, fn, dtypes=("float32", "bfloat16", "float16", "float64"))
    return {f"{r.check}:{r.target}": r for r in evaluate(case, variant, ORACLES)}


@pytest.mark.parametrize("mutant, case, catching, passing", CAUGHT,
                         ids=[f"{c[0].__name__}-{c[2]}" for c in CAUGHT])
def test_check_catches_mutant(mutant, case, catching, passing):
    records = _records(mutant, case)
    assert records[catching].status in (FAIL, ERROR), f"{catching} missed {mutant.__name__}: {records[catching]}"
    for key in passing:  # the mutant is subtle: other checks do not see it
        assert records[key].status == PASS, f"{key} was expected to pass for {mutant.__name__}: {records[key]}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("name", ["plain_attention", "sdpa_math", "sliced_attention"])
def test_correct_variants_pass_the_mutant_cases(name, case):
    if name == "plain_attention":
        records = _records(m.plain_attention, case)
    else:
        (variant,) = variants("attention", [name])
        records = {f"{r.check}:{r.target}": r for r in evaluate(case, variant, ORACLES)}
    bad = {k: r for k, r in records.items() if r.status not in (PASS, UNSUPPORTED)}
    assert not bad, bad
    assert sum(r.status == PASS for r in records.values()) >= 6


def test_every_check_target_of_the_family_has_a_mutant():
    family = get_family("attention")
    produced = {spec.key for case in CASES for spec in family.checks_for(case)}
    caught = {catching for _, _, catching, _ in CAUGHT}
    assert produced <= caught, f"check targets no mutant exercises: {sorted(produced - caught)}"
