"""Packed-document attention in plain torch: the implementations seed 002 compares.

All narrow K/V by ``first_document_begin`` first, so ``cu_seqlens_k`` indexes the
narrowed rows (the canonical layout every public varlen API documents).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness.registry import KnownFailure, Limitation, variant
from harness.variants._documents import document_mask
from harness.variants._long import materialises_scores
from harness.variants.flex import FLEX_FORWARD_CHECKS, NO_FILLED_ALLOCATIONS, NORMALISED_P_ROUNDED

DTYPES = ("float32", "bfloat16", "float16", "float64")


def _heads_first(x):
    return x.transpose(0, 1)[None]  # [T, H, D] -> [1, H, T, D]


def _tokens_first(x):
    return x[0].transpose(0, 1)  # [1, H, T, D] -> [T, H, D]


@variant("documents", "per_document_sdpa", dtypes=DTYPES)
def per_document_sdpa(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """One torch SDPA (math backend) call per document, bottom-right causal via an explicit mask."""
    k, v = k[first_document_begin:], v[first_document_begin:]
    out = q.new_zeros(q.shape[0], q.shape[1], v.shape[2])
    cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for i in range(len(cu_q) - 1):
        lq, lk = cu_q[i + 1] - cu_q[i], cu_k[i + 1] - cu_k[i]
        if lq == 0:
            continue
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq) if causal else None
        with sdpa_kernel(SDPBackend.MATH):
            o = F.scaled_dot_product_attention(_heads_first(q[cu_q[i]:cu_q[i + 1]]), _heads_first(k[cu_k[i]:cu_k[i + 1]]),
                                               _heads_first(v[cu_k[i]:cu_k[i + 1]]), attn_mask=mask, scale=scale,
                                               enable_gqa=q.shape[1] != k.shape[1])
        out[cu_q[i]:cu_q[i + 1]] = _tokens_first(o)
    return out


@variant("documents", "sdpa_dense", dtypes=DTYPES, limitations=[materialises_scores("one dense call over the step")])
def sdpa_dense(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """One dense SDPA call with a block-diagonal (causal) boolean mask over the narrowed K (seed 002's sdpa_dense)."""
    k, v = k[first_document_begin:], v[first_document_begin:]
    mask = document_mask(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], causal)
    with sdpa_kernel(SDPBackend.MATH):
        o = F.scaled_dot_product_attention(_heads_first(q), _heads_first(k), _heads_first(v), attn_mask=mask,
                                           scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return _tokens_first(o)


@variant("documents", "backup_explicit_mask", dtypes=DTYPES, precision="naive",  # every step in the input dtype
         limitations=[materialises_scores("one dense call over the step")])
def backup_explicit_mask(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """Seed 002's 'backup': scores, an additive 0 / -inf mask, softmax, all written out."""
    k, v = k[first_document_begin:], v[first_document_begin:]
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    allowed = document_mask(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], causal)
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    scores = scores + torch.zeros_like(allowed, dtype=scores.dtype).masked_fill(~allowed, -math.inf)
    empty = ~allowed.any(-1, keepdim=True)  # slack rows: no key at all
    probs = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return torch.einsum("hqk,khd->qhd", probs, v)


@variant("documents", "flex_document_mask", dtypes=DTYPES, limitations=[
    Limitation("flex_attention has no backward on CPU (NotImplementedError in torch 2.13)", checks={"backward"}),
    *NO_FILLED_ALLOCATIONS,
    materialises_scores("a dense document mask and eager flex_attention over the step"),
], known_failures=[
    KnownFailure(NORMALISED_P_ROUNDED + ": on this draw, 5.3x the fp32-accumulate error in bfloat16, past the kernel "
                 "grade and worse than the naive bfloat16 reference",
                 cases={"docs64_64_15-t3-m23_86-h6x2-d8v8-bf16-sc0.125-s368"}, checks=FLEX_FORWARD_CHECKS,
                 versions="torch==2.13.0"),
])
def flex_document_mask(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """flex_attention with a document mask_mod over the narrowed K."""
    from harness.variants.flex import run_flex_with_mask

    k, v = k[first_document_begin:], v[first_document_begin:]
    mask = document_mask(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], causal)
    return _tokens_first(run_flex_with_mask(_heads_first(q), _heads_first(k), _heads_first(v), mask[None, None], scale))


@variant("documents", "sdpa_nested_jagged", dtypes=DTYPES, limitations=[
    Limitation("nested-jagged SDPA refuses is_causal=True on CPU (torch 2.13)", features={"causal"}),
], known_failures=[
    KnownFailure("nested-jagged SDPA raises on a nested tensor of no document rows, a step that is only slack "
                 "(IndexError 'Dimension out of range' in get_strided_layout_nested_tensor; a finding)",
                 features={"no_documents"}, versions="torch==2.13.0"),
])
def sdpa_nested_jagged(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """torch.nested jagged tensors through SDPA, one nested row per document (non-causal only on CPU)."""
    k, v = k[first_document_begin:], v[first_document_begin:]
    end = int(cu_seqlens_q[-1])

    def nested(x, cu):
        return torch.nested.nested_tensor_from_jagged(x[:int(cu[-1])], cu.long()).transpose(1, 2)  # [N, H, (L), D]

    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    o = F.scaled_dot_product_attention(nested(q, cu_seqlens_q), nested(k, cu_seqlens_k), nested(v, cu_seqlens_k), scale=scale)
    out = q.new_zeros(q.shape[0], q.shape[1], v.shape[2])
    out[:end] = o.transpose(1, 2).values()
    return out


@variant("documents", "flash_attn_varlen", device="cuda", requires=("flash_attn",), dtypes=("bfloat16", "float16"))
def flash_attn_varlen(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """flash_attn.flash_attn_varlen_func on the narrowed K/V."""
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func(q, k[first_document_begin:], v[first_document_begin:], cu_seqlens_q, cu_seqlens_k,
                                  max_seqlen_q, max_seqlen_k, softmax_scale=scale, causal=causal)
