"""Qwen3.5 Gated DeltaNet block: the reference's pieces by hand, and the block checks against mutants."""

import pytest
import torch

import mutants_gated_delta as m
from harness.families import get_family
from harness.families.gdn_block import BlockCase, case_from_id
from harness.registry import Variant, variants
from harness.runner import OracleCache, evaluate
from harness.tolerance import FAIL, PASS
from reference.gated_deltanet_block import gated_deltanet_block, short_conv

CASE = BlockCase(2, 32, 2, 4, 8, 12, schedule=((0, 5), (5, 1), (6, 3), (0, 4)), seed=7)
GUARD_CASE = BlockCase(1, 32, 1, 2, 24, 40, schedule=((0, 3), (3, 1), (4, 17)), seed=8)  # K, V not powers of two; 17 = 16 + 1
RESET_CASE = BlockCase(2, 32, 2, 4, 8, 12, schedule=((0, 2), (2, 1), (3, 4), (0, 1), (1, 2)), seed=9)  # resets shorter than W - 1
NO_BOUNDARY_CASE = BlockCase(2, 32, 2, 4, 8, 12, schedule=((0, 5), (5, 1), (6, 2)), seed=9)  # no call of exactly W - 1 = 3
ORACLES = OracleCache()
block_steps = m.block_steps


def no_reset_at_position_zero(weights, steps, **kw):
    return block_steps(weights, steps, **kw, reset=False)


def conv_state_not_carried(weights, steps, **kw):
    return block_steps(weights, steps, **kw, carry_conv=False)


def _records(fn, case=CASE):
    variant = Variant("gdn_block", fn.__name__, fn, dtypes=("float32", "float64"))
    return {f"{r.check}:{r.target}": r for r in evaluate(case, variant, ORACLES)}


OLD_CHECKS = ("OUT", "STATE", "FIN")
# (mutant, case, the new check that catches it, new checks it passes); every old check passes.
CAUGHT_MEMORY = [
    (m.block_reads_past_the_end, GUARD_CASE, "GUARD:nan", ["UNINIT:out", "DET:out"]),
    (m.block_reads_past_the_end, CASE, "GUARD:nan", []),
    (m.block_reads_past_the_end_nan_scrubbed, GUARD_CASE, "GUARD:huge", ["GUARD:nan", "UNINIT:out", "DET:out"]),
    (m.block_conv_state_unwritten_at_reset, RESET_CASE, "UNINIT:out", ["GUARD:nan", "GUARD:huge", "DET:out"]),
    (m.block_output_order_depends_on_the_call_count, CASE, "DET:out", ["GUARD:nan", "UNINIT:out"]),
]


@pytest.mark.parametrize("mutant, case, catching, passing", CAUGHT_MEMORY,
                         ids=[f"{c[0].__name__}-{c[2]}-{c[1].id}" for c in CAUGHT_MEMORY])
def test_memory_check_catches_mutant_the_old_checks_miss(mutant, case, catching, passing):
    records = _records(mutant, case)
    assert records[catching].status == FAIL, records[catching]
    keys = [k for k in records if k.split(":")[0] in OLD_CHECKS] + passing
    assert not [k for k in keys if records[k].status != PASS], {k: records[k].detail for k in keys if records[k].status != PASS}


def test_a_call_exactly_as_long_as_the_conv_state_is_where_a_boundary_bug_shows():
    # the catalogue's boundary schedule: calls of exactly W - 1 = 3 tokens at positions 0 and 4, and after the reset
    boundary = BlockCase(2, 32, 1, 2, 24, 40, schedule=((0, 3), (3, 1), (4, 3), (7, 4), (11, 1), (0, 3), (3, 2)), seed=10)
    caught = _records(m.block_conv_state_kept_when_the_call_fills_it, boundary)["STATE:conv"]
    assert caught.status == FAIL and caught.detail in [f"worst after call {i} (input_pos {p})" for i, p in ((0, 0), (2, 4), (5, 0))], caught
    assert {r.status for r in _records(m.block_conv_state_kept_when_the_call_fills_it, NO_BOUNDARY_CASE).values()} == {PASS}


@pytest.mark.parametrize("case", [CASE, GUARD_CASE, RESET_CASE,
                                  BlockCase(1, 32, 1, 2, 16, 24, schedule=((0, 4), (4, 0), (4, 1), (0, 0), (0, 2)), seed=15),
                                  BlockCase(2, 32, 1, 2, 16, 24, schedule=((0, 1), (1, 1), (2, 2)), width=2, seed=13)],
                         ids=lambda c: c.id)
def test_a_correct_driver_passes_every_check(case):
    records = _records(block_steps, case)
    assert {r.status for r in records.values()} == {PASS}, {k: r.detail for k, r in records.items() if r.status != PASS}
    assert {"GUARD", "UNINIT", "DET"} <= {k.split(":")[0] for k in records}


@pytest.mark.parametrize("mutant, catching", [
    (no_reset_at_position_zero, "STATE:recurrent"), (no_reset_at_position_zero, "OUT:steps"),
    (conv_state_not_carried, "OUT:steps"),
])
def test_block_checks_catch_state_handling_mutants(mutant, catching):
    record = _records(mutant)[catching]
    assert record.status == FAIL, record
    assert "worst" in record.detail and "call" in record.detail


def test_a_conv_state_that_keeps_the_oldest_inputs_is_caught_by_state():
    def oldest_kept(weights, steps, **kw):
        return [(y, torch.flip(conv, dims=[-1]), rec) for y, conv, rec in block_steps(weights, steps, **kw)]
    assert _records(oldest_kept)["STATE:conv"].status == FAIL


def test_every_check_of_the_family_has_a_mutant_here():
    produced = {s.key for s in get_family("gdn_block").checks_for(CASE)}
    assert {k for k in produced if k.split(":")[0] not in OLD_CHECKS} <= {c[2] for c in CAUGHT_MEMORY}
    assert {k.split(":")[0] for k in produced} <= {"OUT", "STATE", "FIN", "GUARD", "UNINIT", "DET"}
    def nan_out(weights, steps, **kw):
        return [(y * float("nan"), c, r) for y, c, r in block_steps(weights, steps, **kw)]
    assert _records(nan_out)["FIN:out"].status == FAIL


def test_short_conv_by_hand():
    x = torch.tensor([[[1.0], [2.0], [3.0]]], dtype=torch.float64)  # [B=1, T=3, C=1]
    weight = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)  # W = 3
    state = torch.tensor([[[4.0, 5.0]]], dtype=torch.float64)  # the two inputs before the call
    y, new_state = short_conv(x, weight, state)
    pre = [0.5 * 4 - 1 * 5 + 2 * 1, 0.5 * 5 - 1 * 1 + 2 * 2, 0.5 * 1 - 1 * 2 + 2 * 3]
    assert torch.allclose(y.flatten(), torch.nn.functional.silu(torch.tensor(pre, dtype=torch.float64)))
    assert new_state.flatten().tolist() == [2.0, 3.0]


def test_executorch_block_agrees_where_it_runs():
    (variant,) = variants("gdn_block", ["executorch_attention_gated_deltanet"])
    if variant.unavailable_reason():
        pytest.skip(variant.unavailable_reason())
    records = evaluate(CASE, variant, ORACLES)
    assert {r.status for r in records} == {PASS}, [(r.check, r.target, r.detail) for r in records]


def test_case_ids_round_trip():
    assert case_from_id(CASE.id) == CASE
    with pytest.raises(ValueError, match="the first call must start at position 0"):
        BlockCase(1, 8, 1, 1, 4, 4, schedule=((3, 1),))


def test_qwen3_next_layer_matches_qwen3_5_layer_on_the_same_weights():
    """The fused, per-group interleaved projections of Qwen3-Next are the case's rows permuted:
    on CASE (2 key heads, 4 value heads, so the interleave matters) both layers agree."""
    pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    from harness.families.gdn_block import make_inputs
    from harness.variants import transformers_gdn_layer as layers

    shape = dict(heads_k=CASE.heads_k, heads_v=CASE.heads_v, dim_k=CASE.dim_k, dim_v=CASE.dim_v)
    qkvz, ba = layers._qwen3_next_rows(**shape)
    assert sorted(qkvz.tolist()) == list(range(CASE.conv_dim + CASE.heads_v * CASE.dim_v))
    assert ba.tolist() == [0, 1, 4, 5, 2, 3, 6, 7]  # b of heads 0, 1, a of heads 0, 1; then heads 2, 3
    inputs = make_inputs(CASE)
    weights = {n: w.float() for n, w in inputs["weights"].items()}
    steps = [(x.float(), pos) for x, pos in inputs["steps"]]
    ours = layers.transformers_qwen3_5_gdn_layer(weights, steps, **shape, eps=1e-6)
    theirs = layers.transformers_qwen3_next_gdn_layer(weights, steps, **shape, eps=1e-6)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for name, x, y in zip(("y", "conv_state", "recurrent_state"), a, b):
            torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6, msg=lambda text: f"step {step} {name}: {text}")
