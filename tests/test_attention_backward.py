"""``reference.attention.attention_with_grads`` against autograd of ``reference.attention``.

The written-out backward must be bitwise autograd's: the oracle computes the float64
truth and the same-dtype and fp32-accumulate baselines with it, and the tolerance's
thresholds were measured on autograd's numerics. Held on the reference tests' configs
and on every attention catalogue case, in every dtype the oracle computes in.
"""

from __future__ import annotations

import pytest
import torch

from cases import catalogue
from harness.dtypes import TORCH_DTYPES
from harness.families.attention import _kwargs, make_inputs
from harness.gradients import gradients
from reference.attention import attention, attention_with_grads
from reference.documents import document_attention, document_attention_with_grads
from tests.test_reference_attention import CONFIGS, make_mask, randn

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def _autograd(q, k, v, dout, **kwargs):
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out, lse = attention(*leaves, **kwargs)
    out.backward(dout)
    return out.detach(), lse.detach(), {f"d{n}": t.grad for n, t in zip("qkv", leaves)}


def _assert_bitwise(got, want):
    (out, lse, grads), (want_out, want_lse, want_grads) = got, want
    assert torch.equal(out, want_out) and torch.equal(lse, want_lse)
    for name in ("dq", "dk", "dv"):
        assert grads[name].shape == want_grads[name].shape
        assert torch.equal(grads[name], want_grads[name]), f"{name} differs by {(grads[name] - want_grads[name]).abs().max()}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, kwargs, mask_kind", CONFIGS)
def test_the_written_out_backward_is_autograd_bitwise(shape, kwargs, mask_kind, dtype):
    B, Hq, Hkv, Lq, Lk, D, Dv = shape
    q, k, v = (randn(*s, seed=i).to(dtype) for i, s in enumerate([(B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv)]))
    dout = randn(B, Hq, Lq, Dv, seed=3).to(dtype)
    mask = make_mask(mask_kind, B, Hq, Lq, Lk, seed=4)
    mask = mask if mask is None or mask.dtype == torch.bool else mask.to(dtype)
    _assert_bitwise(attention_with_grads(q, k, v, dout, mask=mask, **kwargs), _autograd(q, k, v, dout, mask=mask, **kwargs))


@pytest.mark.parametrize("len_q, len_k", [(0, 5), (3, 0), (0, 0)])
def test_zero_length_calls_have_zero_gradients_of_their_shapes(len_q, len_k):
    q, k, v = randn(2, 4, len_q, 6, seed=0), randn(2, 2, len_k, 6, seed=1), randn(2, 2, len_k, 3, seed=2)
    dout = randn(2, 4, len_q, 3, seed=3)
    _assert_bitwise(attention_with_grads(q, k, v, dout, causal=True), _autograd(q, k, v, dout, causal=True))


@pytest.mark.parametrize("case", catalogue("attention"), ids=lambda c: c.id)
def test_every_catalogue_case_in_the_oracle_dtypes(case):
    x = make_inputs(case)
    for dtype in {torch.float64, torch.float32, TORCH_DTYPES[case.dtype]}:
        mask = x["mask"] if x["mask"] is None or x["mask"].dtype == torch.bool else x["mask"].to(dtype)
        q, k, v, dout = (x[n].to(dtype) for n in ("q", "k", "v", "dout"))
        _assert_bitwise(attention_with_grads(q, k, v, dout, **_kwargs(case, mask)),
                        _autograd(q, k, v, dout, **_kwargs(case, mask)))


def test_bitwise_is_not_vacuous_the_factored_softmax_backward_differs_in_bfloat16():
    """ds = p * (dp - rowsum(p * dp)) is the same equation as the written-out
    p * dp - p * rowsum(p * dp), but not the same rounding: the comparison above would
    catch a backward that changed the order."""
    p = torch.softmax(randn(4, 64, seed=5), -1).to(torch.bfloat16)
    dp = randn(4, 64, seed=6).to(torch.bfloat16)
    p_dp = dp * p
    written_out = p_dp + (-p_dp.sum(-1, keepdim=True)) * p
    factored = p * (dp - p_dp.sum(-1, keepdim=True))
    assert not torch.equal(written_out, factored)


@pytest.mark.parametrize("case", catalogue("documents"), ids=lambda c: c.id)
def test_every_documents_catalogue_case_step_and_whole(case):
    from harness.families.documents import _step_kwargs, make_inputs as document_inputs
    x = document_inputs(case)
    for step in (case.step, case.layout.step(0, case.layout.total)):
        kw = _step_kwargs(case, step)
        kw = {n: kw[n] for n in ("cu_seqlens_q", "cu_seqlens_k", "first_document_begin", "scale")}
        for dtype in {torch.float64, torch.float32, TORCH_DTYPES[case.dtype]}:
            q, dout = (x[n][step.start:].to(dtype) for n in ("q", "dout"))
            k, v = x["k"].to(dtype), x["v"].to(dtype)
            out, grads = document_attention_with_grads(q, k, v, dout, causal=case.causal, **kw)
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            want = document_attention(*leaves, causal=case.causal, **kw)
            assert torch.equal(out, want.detach())
            want_grads = gradients([want], [dout], dict(zip("qkv", leaves)))  # zeros where no document is
            for name in ("dq", "dk", "dv"):
                assert torch.equal(grads[name], want_grads[name]), f"{name} of {step} in {dtype}"
