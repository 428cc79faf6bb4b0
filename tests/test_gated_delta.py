"""Gated delta rule: the oracle against independent computations, and every check against its mutant."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import mutants_gated_delta as m
from harness.families import get_family
from harness.families.gated_delta import GatedDeltaCase, case_from_id
from harness.registry import Variant, variants
from harness.runner import OracleCache, evaluate
from harness.strategies import gated_delta_cases
from harness.tolerance import ERROR, FAIL, PASS, UNSUPPORTED
from reference.gated_delta import gated_delta_rule

LONG = GatedDeltaCase(1, 37, 1, 2, 8, 12, split=20, seed=1)  # Dk != Dv, grouped heads, random h0, split
PACKED = GatedDeltaCase(1, 20, 1, 2, 8, 12, documents=(7, 0, 1, 9), padding=3, seed=6)  # varlen with padding
ORACLES = OracleCache()


def _records(fn, case):
    variant = Variant("gated_delta", fn.__name__, fn, dtypes=("float32", "bfloat16", "float16", "float64"))
    return {f"{r.check}:{r.target}": r for r in evaluate(case, variant, ORACLES)}


CAUGHT = [
    (m.decay_after_update, "OUT:out", ["FIN:out"]),
    (m.beta_dropped, "OUT:out", []),
    (m.initial_state_ignored, "STATE:final", []),
    (m.initial_state_ignored, "SPLIT:out", []),
    (m.initial_state_ignored, "SPLIT:tokens_state", []),
    (m.initial_state_counted_twice_across_chunks, "OUT:out", ["FIN:out"]),
    (m.state_kept_in_bf16, "STATE:final", ["FIN:out"]),
    (m.initial_state_read_transposed, "STATE:final", []),
    (m.beta_gradient_lost, "GRAD:dbeta", ["OUT:out", "STATE:final", "GRAD:dq", "GRAD:dinitial_state"]),
    (m.gate_gradient_lost, "GRAD:dg", ["OUT:out", "GRAD:dv"]),
]


CAUGHT_VARLEN = [
    (m.state_not_reset_between_documents, "OUT:out", []),
    (m.state_not_reset_between_documents, "STATE:final", []),
    (m.padding_updates_the_state, "STATE:final", ["OUT:out"]),
    (m.initial_state_ignored_without_cu_seqlens, "PACK:documents", ["OUT:out", "STATE:final"]),
]


@pytest.mark.parametrize("mutant, catching, passing", CAUGHT_VARLEN, ids=[f"{c[0].__name__}-{c[1]}" for c in CAUGHT_VARLEN])
def test_varlen_check_catches_mutant(mutant, catching, passing):
    records = _records(mutant, PACKED)
    assert records[catching].status in (FAIL, ERROR), records[catching]
    for key in passing:
        assert records[key].status == PASS, records[key]


@pytest.mark.parametrize("mutant, catching, passing", CAUGHT, ids=[f"{c[0].__name__}-{c[1]}" for c in CAUGHT])
def test_check_catches_mutant(mutant, catching, passing):
    records = _records(mutant, LONG)
    assert records[catching].status in (FAIL, ERROR), records[catching]
    for key in passing:
        assert records[key].status == PASS, records[key]


@pytest.mark.parametrize("case", [LONG, GatedDeltaCase(2, 5, 2, 2, 8, 8, channel_gate=True, gates="extreme", split=2, seed=2),
                                  GatedDeltaCase(1, 9, 1, 1, 8, 8, l2norm=True, gates="zero", seed=3), PACKED], ids=lambda c: c.id)
def test_a_correct_differentiable_implementation_passes_every_check(case):
    records = _records(m.plain_gated_delta, case)
    assert {r.status for r in records.values()} == {PASS}, {k: r.detail for k, r in records.items() if r.status != PASS}
    assert {"OUT", "STATE", "FIN", "GRAD"} <= {k.split(":")[0] for k in records}


def test_every_check_of_the_family_has_a_mutant():
    family = get_family("gated_delta")
    produced = {s.check for case in (LONG, PACKED) for s in family.checks_for(case)}
    caught = {c[1].split(":")[0] for c in CAUGHT + CAUGHT_VARLEN}
    assert produced <= caught | {"FIN"}  # FIN: test_fin_catches_overflow


def test_fin_catches_overflow():
    def overflowing(q, k, v, g, beta, **kw):
        out, state = m.plain_gated_delta(q, k, v, g, beta, **kw)
        return out * float("inf"), state
    assert _records(overflowing, LONG)["FIN:out"].status == FAIL


def test_executorch_ops_agree_with_the_oracle_where_they_run():
    ran = 0
    for variant in variants("gated_delta"):
        if variant.unavailable_reason():
            continue
        for case in (LONG, GatedDeltaCase(2, 65, 1, 1, 16, 32, channel_gate=True, split=21, seed=4)):
            records = evaluate(case, variant, ORACLES)
            assert not [r for r in records if r.status not in (PASS, UNSUPPORTED)]
            ran += sum(r.status == PASS for r in records)
    if ran == 0:
        pytest.skip("ExecuTorch is not installed here")


def test_oracle_matches_a_hand_computed_two_token_example():
    # K = V = 1, one head: S1 = e^g1 S0 + b1 k1 (v1 - e^g1 S0 k1), o_t = S_t q_t * scale
    q, k, v = (torch.tensor(x, dtype=torch.float64).reshape(1, 2, 1, 1) for x in ([1.0, 2.0], [1.0, 0.5], [3.0, -1.0]))
    g = torch.log(torch.tensor([0.5, 0.25], dtype=torch.float64)).reshape(1, 2, 1)
    beta = torch.tensor([0.5, 1.0], dtype=torch.float64).reshape(1, 2, 1)
    h0 = torch.tensor([[[[2.0]]]], dtype=torch.float64)
    s1 = 0.5 * 2.0 + 0.5 * 1.0 * (3.0 - 0.5 * 2.0 * 1.0)  # 2.0
    s2 = 0.25 * s1 + 1.0 * 0.5 * (-1.0 - 0.25 * s1 * 0.5)  # 0.5 - 0.625 = -0.125
    out, state = gated_delta_rule(q, k, v, g, beta, scale=1.0, initial_state=h0)
    assert out.flatten().tolist() == [s1 * 1.0, s2 * 2.0] and state.item() == s2


def test_oracle_equals_a_loop_over_heads_and_batch_with_grouped_heads():
    torch.manual_seed(0)
    B, T, H, HV, K, V = 2, 6, 2, 4, 3, 5
    q, k = torch.randn(B, T, H, K, dtype=torch.float64), torch.randn(B, T, H, K, dtype=torch.float64) * 0.3
    v, g = torch.randn(B, T, HV, V, dtype=torch.float64), -torch.rand(B, T, HV, K, dtype=torch.float64)
    beta, h0 = torch.rand(B, T, HV, dtype=torch.float64), torch.randn(B, HV, K, V, dtype=torch.float64)
    out, state = gated_delta_rule(q, k, v, g, beta, scale=0.7, initial_state=h0)
    for b in range(B):
        for h in range(HV):
            s = h0[b, h].clone()
            for t in range(T):
                kt, qt = k[b, t, h // 2], q[b, t, h // 2]
                s = torch.diag(torch.exp(g[b, t, h])) @ s
                s = s + torch.outer(kt, beta[b, t, h] * (v[b, t, h] - s.T @ kt))
                assert torch.allclose(out[b, t, h], s.T @ (0.7 * qt), atol=1e-12)
            assert torch.allclose(state[b, h], s, atol=1e-12)


def test_case_ids_round_trip():
    for case in (LONG, PACKED, GatedDeltaCase(2, 5, 2, 2, 8, 8, channel_gate=True, gates="extreme", initial_state=False, l2norm=True, seed=9)):
        assert case_from_id(case.id) == case
    with pytest.raises(ValueError, match="malformed gated delta case id"):
        case_from_id("b1-zz")


@pytest.mark.parametrize("length, chunk, gates", [(1, 64, "mild"), (37, 8, "mild"), (65, 64, "zero"), (130, 64, "extreme"), (64, 16, "mild")])
def test_the_chunked_twin_equals_the_recurrence_in_float64(length, chunk, gates):
    from harness.families.gated_delta import make_inputs
    from reference.gated_delta import chunked_gated_delta_rule

    case = GatedDeltaCase(2, length, 2, 4, 8, 12, gates=gates, l2norm=length == 37, seed=length)
    x = make_inputs(case)
    leaves = [{n: x[n].clone().requires_grad_() for n in ("q", "k", "v", "g", "beta", "initial_state")} for _ in range(2)]
    results = []
    for rule, inputs in ((gated_delta_rule, leaves[0]), (lambda *a, **kw: chunked_gated_delta_rule(*a, **kw, chunk_size=chunk), leaves[1])):
        out, state = rule(inputs["q"], inputs["k"], inputs["v"], inputs["g"], inputs["beta"], scale=0.3,
                          initial_state=inputs["initial_state"], use_qk_l2norm=case.l2norm)
        torch.autograd.backward([out, state], [x["dout"], x["dstate"]])
        results.append([out, state] + [inputs[n].grad for n in inputs])
    for plain, chunked in zip(*results):
        assert torch.allclose(plain, chunked, rtol=1e-9, atol=1e-11), (plain - chunked).abs().max()


def test_the_chunked_twin_refuses_per_channel_gates():
    from reference.gated_delta import chunked_gated_delta_rule

    x = torch.zeros(1, 2, 1, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="one gate per head"):
        chunked_gated_delta_rule(x, x, x, torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1))


@pytest.mark.parametrize("name", ["chunked_twin", "executorch_gated_delta_rule", "executorch_channelwise_gated_delta_rule"])
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=gated_delta_cases())
def test_implementations_pass_drawn_cases(name, case):
    (variant,) = variants("gated_delta", [name])
    bad = [r for r in evaluate(case, variant, ORACLES) if r.status in (FAIL, ERROR)]
    assert not bad, [(r.check, r.target, r.detail, r.reproduce) for r in bad]
