"""The row-blocked oracles (reference/attention_blocked.py) against the plain ones.

Every catalogue case of attention and documents, in float64, outputs, lse and the
gradients of q, k and v, with blocks of a third of the query rows (so most cases have
two full blocks and a shorter tail, and documents' longer ones too). The largest
difference measured here, relative to each tensor's largest magnitude (at least 1):
attention 1.9e-15 (b2-h8x2-q65-k63-d40v40-f16-tl-w3_4-sc1-s7, 28 cases; 3.1e-15 with the
reference of an earlier round), documents 8.3e-16 (docs63_0_65_64-t7-m100-h3x1-d72v72-f16-sc1-s5, the whole
sequence). Non-finite entries (lse of fully-masked rows) must sit
at the same places with the same values; NaN never passes.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from cases import catalogue
from harness.export import MemoryMeter
from harness.dtypes import TORCH_DTYPES
from harness.families.attention import _kwargs, make_inputs
from harness.families.documents import make_inputs as document_inputs
from reference.attention import attention, visibility
from reference.attention_blocked import (blocked_attention, blocked_attention_with_grads, blocked_document_attention, coverage,
                                        rows_per_block)
from reference.documents import document_attention, document_attention_with_grads

TOLERANCE = 1e-13  # relative to max(1, max |plain|), float64; measured at most 1.9e-15 (module docstring)


def _largest_difference(plain: list[torch.Tensor], blocked: list[torch.Tensor]) -> float:
    """Max |plain - blocked| / max(1, max |plain|) over each tensor's finite entries; non-finite
    ones (and NaN anywhere) must agree exactly."""
    worst = 0.0
    for a, b in zip(plain, blocked, strict=True):
        assert a.shape == b.shape
        assert not a.isnan().any() and not b.isnan().any(), "NaN in an oracle"
        finite = torch.isfinite(a)
        assert torch.equal(finite, torch.isfinite(b)) and torch.equal(a[~finite], b[~finite])
        if finite.any():
            scale = max(1.0, float(a[finite].abs().max()))
            worst = max(worst, float((a[finite] - b[finite]).abs().max()) / scale)
    return worst


def _run(fn, inputs: dict, names=("q", "k", "v")) -> list[torch.Tensor]:
    """fn's outputs and the gradients of ``names`` for the upstream gradient ``inputs['dout']``."""
    leaves = [inputs[n].clone().requires_grad_() for n in names]
    outputs = fn(*leaves)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    if outputs[0].requires_grad:  # not when no query row belongs to a document
        outputs[0].backward(inputs["dout"])
    return [o.detach() for o in outputs] + [torch.zeros_like(leaf) if leaf.grad is None else leaf.grad for leaf in leaves]


def _third(rows: int) -> int:
    return max(1, math.ceil(rows / 3))


def test_blocked_attention_equals_the_plain_oracle_on_every_catalogue_case():
    worst = {}
    for case in catalogue("attention"):
        x = make_inputs(case)
        kw = _kwargs(case, x["mask"])
        plain = _run(lambda q, k, v: attention(q, k, v, **kw), x)
        blocked = _run(lambda q, k, v: blocked_attention(q, k, v, **kw, block_rows=_third(case.len_q)), x)
        out, lse, grads = blocked_attention_with_grads(x["q"], x["k"], x["v"], x["dout"], **kw,
                                                       block_rows=_third(case.len_q))
        worst[case.id] = max(_largest_difference(plain, blocked),
                             _largest_difference(plain, [out, lse, grads["dq"], grads["dk"], grads["dv"]]))
    case_id, largest = max(worst.items(), key=lambda item: item[1])
    assert largest <= TOLERANCE, f"largest difference {largest:.3g} on {case_id}"
    print(f"blocked attention vs plain: largest difference {largest:.3g} ({case_id}, {len(worst)} cases)")


def test_blocked_documents_equal_the_plain_oracle_on_every_catalogue_case():
    worst = {}
    for case in catalogue("documents"):
        x = document_inputs(case)
        layout = case.layout
        for step in (case.step, layout.step(0, layout.total)):
            kw = dict(cu_seqlens_q=step.cu_seqlens_q, cu_seqlens_k=step.cu_seqlens_k,
                      first_document_begin=step.first_document_begin, scale=case.resolved_scale, causal=case.causal)
            inputs = dict(x, q=x["q"][step.start:step.end], dout=x["dout"][step.start:step.end], k=x["k"][:step.end],
                          v=x["v"][:step.end])
            plain = _run(lambda q, k, v: document_attention(q, k, v, **kw), inputs)
            rows = _third(max(step.doc_query_lengths, default=1))
            blocked = _run(lambda q, k, v: blocked_document_attention(q, k, v, **kw, block_rows=rows), inputs)
            out, grads = document_attention_with_grads(
                *(inputs[n] for n in ("q", "k", "v", "dout")), **kw,
                attend=functools.partial(blocked_attention_with_grads, block_rows=rows))
            worst[f"{case.id} rows {step.start}:{step.end}"] = max(
                _largest_difference(plain, blocked), _largest_difference(plain, [out, grads["dq"], grads["dk"], grads["dv"]]))
    where, largest = max(worst.items(), key=lambda item: item[1])
    assert largest <= TOLERANCE, f"largest difference {largest:.3g} on {where}"
    print(f"blocked documents vs plain: largest difference {largest:.3g} ({where}, {len(worst)} calls)")


def test_coverage_is_visibility_any_along_each_axis():
    for case in catalogue("attention"):
        mask = make_inputs(case)["mask"]
        kw = dict(causal=case.causal, window=case.window, alignment=case.alignment, mask=mask)
        visible = visibility(case.len_q, case.len_k, **kw)
        rows, keys = coverage(case.len_q, case.len_k, **kw, block_rows=_third(case.len_q))
        assert torch.equal(rows, visible.any(-1)) and torch.equal(keys, visible.any(-2)), case.id


def test_a_block_holds_rows_times_keys_scores_and_the_backward_too():
    """The largest tensor of forward and backward is one block's scores, [B, Hq, rows, Lk]
    (the plain oracle's is [B, Hq, Lq, Lk], 8 times larger here); an additive mask is only sliced."""
    from harness.families.attention import AttentionCase

    case = AttentionCase(1, 4, 2, 128, 128, 16, 16, dtype="float64", causal=True, mask="additive", seed=3)
    x = make_inputs(case)
    kw = _kwargs(case, x["mask"])
    largest = {}
    for name, fn in (("plain", attention), ("blocked", lambda *a, **k: blocked_attention(*a, **k, block_rows=16))):
        with MemoryMeter() as meter:
            _run(lambda q, k, v: fn(q, k, v, **kw), x)
        largest[name] = meter.largest
    with MemoryMeter() as meter:  # what the oracle runs: each block's forward and written-out backward, no graph
        blocked_attention_with_grads(x["q"], x["k"], x["v"], x["dout"], **kw, block_rows=16)
    largest["blocked_with_grads"] = meter.largest
    assert largest == {"plain": 4 * 128 * 128, "blocked": 4 * 16 * 128, "blocked_with_grads": 4 * 16 * 128}


def test_rows_per_block_bounds_the_scores_of_a_block():
    assert rows_per_block(2, 8, 32768, scores=2 ** 23) == 16
    assert rows_per_block(1, 1, 10 ** 9, scores=2 ** 23) == 1  # at least one row
    assert rows_per_block(1, 1, 0) >= 1


def _tensors(value, name: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of an oracle result (fields, dict entries, list items, nested), by path."""
    if isinstance(value, torch.Tensor):
        return {name: value}
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif hasattr(value, "__dict__"):
        items = vars(value).items()
    else:
        return {}
    return {path: t for key, item in items for path, t in _tensors(item, f"{name}.{key}").items()}


@pytest.mark.parametrize("family, case_id", [
    ("attention", "b2-h12x3-q33-k65-d64v64-bf16-br-causal-mbool-s1001"),
    ("documents", "docs63_0_65_64-t7-m100-h3x1-d72v72-f16-sc1-s5"),
    ("kv_cache", "kv-ring-b2-h4x2-d16-c8-w4-n1_3_1_1_3_1_2_1_4_1_5_1-f32-s7"),
])
def test_a_family_above_its_threshold_gives_the_same_oracle_through_the_blocked_twin(monkeypatch, family, case_id):
    """With the threshold at 1 score every case takes the blocked path: float64 truths
    agree to 1e-13, masks exactly, and the same-dtype baselines within 4 units of the
    dtype's rounding (measured: 1.2 in fp16 dk, dv, which the blocked backward sums a
    block at a time; outputs and dq are bitwise the same)."""
    import harness.families.attention as attention_family
    import harness.families.documents as documents_family
    import harness.families.kv_cache as kv_cache_family
    from harness.families import get_family

    case = get_family(family).case_from_id(case_id)
    plain_oracle = get_family(family).oracle(case)
    plain = _tensors(plain_oracle)
    for module in (attention_family, documents_family, kv_cache_family):
        monkeypatch.setattr(module, "BLOCKED_ORACLE_FROM", 1)
    monkeypatch.setattr("reference.attention_blocked.BLOCK_SCORES", 2000)  # several blocks even on small cases
    blocked = _tensors(get_family(family).oracle(case))
    assert plain.keys() == blocked.keys()
    for name, a in plain.items():
        b = blocked[name]
        if name.endswith("stored_output_delta"):  # a rounding residue of the fp32-accumulate output:
            # a last-bit difference of the twin's float32 output moves it by up to an ulp of the dtype
            eps = torch.finfo(TORCH_DTYPES[case.dtype]).eps
            bound = eps * float(plain_oracle.inputs["dout"].abs().max()) * float(plain_oracle.out.abs().max())
            assert float((a - b).abs().max()) <= bound, name
        elif a.dtype == torch.float64:
            assert _largest_difference([a], [b]) <= TOLERANCE, name
        elif a.dtype.is_floating_point:
            assert _largest_difference([a.double()], [b.double()]) <= 4 * torch.finfo(a.dtype).eps, name
        else:
            assert torch.equal(a, b), name
