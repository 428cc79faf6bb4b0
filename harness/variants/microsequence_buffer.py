"""Seed 002's micro-sequence attention, written from its description.

One K/V buffer per layer is allocated for the whole sequence. Each micro-sequence
writes its K/V rows into the next slice of the buffer and attends to the buffer
narrowed by ``first_document_begin`` (canonical ``cu_seqlens_k``). Backward
accumulates each micro-sequence's K/V gradient into one shared gradient buffer; a
micro-sequence hands back the rows of that buffer it wrote, after every later
micro-sequence (which may read them) has added its part. The steps are chained by
a token tensor so autograd runs their backward passes last-to-first.
"""

from __future__ import annotations

import torch

from harness.layouts import DocumentLayout
from harness.registry import variant
from harness.variants.documents_torch import sdpa_dense


class _SharedBuffers:
    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k = torch.empty_like(k, requires_grad=False)
        self.v = torch.empty_like(v, requires_grad=False)
        self.grad_k = torch.zeros_like(self.k)
        self.grad_v = torch.zeros_like(self.v)


class _MicroSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k_new, v_new, token, buffers, step, scale, causal):
        start, end = step.start, step.end
        buffers.k[start:end].copy_(k_new)
        buffers.v[start:end].copy_(v_new)
        ctx.buffers, ctx.step, ctx.scale, ctx.causal = buffers, step, scale, causal
        ctx.save_for_backward(q)
        out = _attend(q, buffers.k[:end], buffers.v[:end], step, scale, causal)
        return out, token.clone()

    @staticmethod
    def backward(ctx, grad_out, grad_token):
        (q,) = ctx.saved_tensors
        buffers, step = ctx.buffers, ctx.step
        fdb, start, end = step.first_document_begin, step.start, step.end
        with torch.enable_grad():
            q_ = q.detach().requires_grad_()
            k_ = buffers.k[fdb:end].detach().requires_grad_()
            v_ = buffers.v[fdb:end].detach().requires_grad_()
            out = _attend(q_, k_, v_, step, ctx.scale, ctx.causal, narrowed=True)
            dq, dk, dv = torch.autograd.grad(out, (q_, k_, v_), grad_out)
        buffers.grad_k[fdb:end] += dk
        buffers.grad_v[fdb:end] += dv
        return dq, buffers.grad_k[start:end].clone(), buffers.grad_v[start:end].clone(), grad_token, None, None, None, None


def _attend(q, k, v, step, scale, causal, narrowed=False):
    kw = dict(cu_seqlens_q=step.cu_seqlens_q.to(q.device), cu_seqlens_k=step.cu_seqlens_k.to(q.device),
              max_seqlen_q=max(step.doc_query_lengths, default=0), max_seqlen_k=max(step.doc_key_lengths, default=0),
              scale=scale, causal=causal)
    return sdpa_dense(q, k, v, first_document_begin=0 if narrowed else step.first_document_begin, **kw)


@variant("microsequences", "shared_kv_buffer", dtypes=("float32", "bfloat16", "float16", "float64"))
def shared_kv_buffer(q, k, v, *, documents, slack, boundaries, scale, causal):
    """Seed 002's design: one pre-allocated K/V buffer, K narrowed by first_document_begin, a shared gradient buffer."""
    buffers = _SharedBuffers(k.detach(), v.detach())
    token = torch.zeros((), dtype=q.dtype, device=q.device, requires_grad=True)
    outs = []
    for step in DocumentLayout(tuple(documents), slack, tuple(boundaries)).steps():
        out, token = _MicroSequence.apply(q[step.start:step.end], k[step.start:step.end], v[step.start:step.end],
                                          token, buffers, step, scale, causal)
        outs.append(out)
    return torch.cat(outs, dim=0)


@variant("microsequences", "concatenated_past", dtypes=("float32", "bfloat16", "float16", "float64"))
def concatenated_past(q, k, v, *, documents, slack, boundaries, scale, causal):
    """The plain alternative: each micro-sequence concatenates the past K/V with its own (torch.cat) and lets autograd split the gradients."""
    outs, past_k, past_v = [], k[:0], v[:0]
    for step in DocumentLayout(tuple(documents), slack, tuple(boundaries)).steps():
        past_k = torch.cat([past_k, k[step.start:step.end]])
        past_v = torch.cat([past_v, v[step.start:step.end]])
        outs.append(_attend(q[step.start:step.end], past_k, past_v, step, scale, causal))
    return torch.cat(outs, dim=0)
