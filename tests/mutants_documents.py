"""Deliberately broken packed-document adapters, one bug each (seed 002's failure modes)."""

from __future__ import annotations

import math

import torch

from harness.variants._documents import document_ids, document_mask
from harness.variants.documents_torch import backup_explicit_mask


def _attend(q, k, v, allowed, scale):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    scores = scores.masked_fill(~allowed, -math.inf)
    empty = ~allowed.any(-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return torch.einsum("hqk,khd->qhd", probs, v)


def non_canonical_cu_seqlens_k(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """Seed 002's bug: cu_seqlens_k shifted to start at first_document_begin and K left
    un-narrowed; the mask builder then counts the dropped prefix into document 0."""
    cu_k = cu_seqlens_k + first_document_begin
    dq, dk = document_ids(cu_seqlens_q, q.shape[0]), document_ids(cu_k, k.shape[0])
    dk = torch.where(torch.arange(k.shape[0]) < cu_k[-1], dk, -1)
    allowed = (dq[:, None] == dk[None, :]) & (dq[:, None] >= 0)
    return _attend(q, k, v, allowed, scale)


def leaks_across_documents(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """A causal mask over the packed rows with no document boundaries."""
    k, v = k[first_document_begin:], v[first_document_begin:]
    lq, lk = q.shape[0], k.shape[0]
    allowed = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
    allowed[int(cu_seqlens_q[-1]):] = False
    return _attend(q, k, v, allowed, scale)


class _GradientGarbage(torch.autograd.Function):
    """Identity forward; backward writes a constant into the gradient rows it is given."""

    @staticmethod
    def forward(ctx, x, rows):
        ctx.rows = rows
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        grad[ctx.rows] = 1e-3
        return grad, None


def prefix_gradient_not_zeroed(q, k, v, **kw):
    """Right output; the K/V gradient of the dropped prefix is left as garbage."""
    prefix = slice(0, kw["first_document_begin"])
    return backup_explicit_mask(q, _GradientGarbage.apply(k, prefix), _GradientGarbage.apply(v, prefix), **kw)


def slack_gradient_garbage(q, k, v, **kw):
    """Right output; the query gradient of the slack tail is left as garbage."""
    return backup_explicit_mask(_GradientGarbage.apply(q, slice(int(kw["cu_seqlens_q"][-1]), None)), k, v, **kw)


def forgets_past_kv(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """Treats every micro-sequence as the start of the sequence: K/V = its own rows only."""
    k, v = k[-q.shape[0]:], v[-q.shape[0]:]
    return _attend(q, k, v, document_mask(cu_seqlens_q, cu_seqlens_q, q.shape[0], q.shape[0], causal), scale)


def nan_in_slack_rows(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """Softmax over the slack rows' all -inf scores gives NaN there; the rows are not
    compared, but P^T dO spreads the NaN into every key's dV."""
    k, v = k[first_document_begin:], v[first_document_begin:]
    allowed = document_mask(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], causal)
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = (torch.einsum("qhd,khd->hqk", q, k) * scale).masked_fill(~allowed, -math.inf)
    return torch.einsum("hqk,khd->qhd", torch.softmax(scores, dim=-1), v)
