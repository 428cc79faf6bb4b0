"""Qwen3.5 Gated DeltaNet block: the reference's pieces by hand, and the block checks against mutants."""

import pytest
import torch

from harness.families import get_family
from harness.families.gdn_block import BlockCase, case_from_id
from harness.registry import Variant, variants
from harness.runner import OracleCache, evaluate
from harness.tolerance import FAIL, PASS
from reference.gated_deltanet_block import gated_deltanet_block, short_conv

CASE = BlockCase(2, 32, 2, 4, 8, 12, schedule=((0, 5), (5, 1), (6, 3), (0, 4)), seed=7)
ORACLES = OracleCache()


def block_steps(weights, steps, *, heads_k, heads_v, dim_k, dim_v, eps, reset=True, carry_conv=True):
    """The reference block driven step by step in the input dtype; the knobs are bugs."""
    batch, width = steps[0][0].shape[0], weights["conv"].shape[1]
    conv = steps[0][0].new_zeros(batch, weights["conv"].shape[0], width - 1)
    rec = steps[0][0].new_zeros(batch, heads_v, dim_k, dim_v)
    out = []
    for x, pos in steps:
        if pos == 0 and reset:
            conv, rec = torch.zeros_like(conv), torch.zeros_like(rec)
        if not carry_conv:
            conv = torch.zeros_like(conv)
        y, conv, rec = gated_deltanet_block(x, weights, conv, rec, heads_k=heads_k, heads_v=heads_v, dim_k=dim_k, dim_v=dim_v, eps=eps)
        out.append((y, conv, rec))
    return out


def no_reset_at_position_zero(weights, steps, **kw):
    return block_steps(weights, steps, **kw, reset=False)


def conv_state_not_carried(weights, steps, **kw):
    return block_steps(weights, steps, **kw, carry_conv=False)


def _records(fn):
    variant = Variant("gdn_block", fn.__name__, fn, dtypes=("float32", "float64"))
    return {f"{r.check}:{r.target}": r for r in evaluate(CASE, variant, ORACLES)}


def test_a_correct_driver_passes_every_check():
    assert {r.status for r in _records(block_steps).values()} == {PASS}


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
    assert {s.check for s in get_family("gdn_block").checks_for(CASE)} <= {"OUT", "STATE", "FIN"}
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
