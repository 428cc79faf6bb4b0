"""torch flex_attention with the case's masking as a mask_mod and a score_mod.

On CPU it runs eagerly (unfused, materialising the scores) and has no backward.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from harness.registry import KnownFailure, Limitation, variant
from harness.variants._long import materialises_scores
from harness.variants._masks import combined_mask

# Eager flex_attention pays a large one-off cost (about a second) for every new
# mask_mod / score_mod function object it sees. The mods are therefore defined once
# here and read this call's tensors from _ACTIVE, set just before each call.
_ACTIVE = SimpleNamespace(keep=None, bias=None, softcap=None)


def _filled_allocations_reach_flex() -> bool:
    """Whether DET's ``filled_allocations`` mode can run flex_attention: its eager path is
    ``torch.compile(fullgraph=True)`` around a higher-order op, which a Python dispatch mode
    only passes when the mode says ``ignore_compile_internals`` and
    ``supports_higher_order_operators``."""
    from harness.memory_checks import _FillAllocations

    return bool(getattr(_FillAllocations, "supports_higher_order_operators", False)) and _FillAllocations.ignore_compile_internals()


# Until then DET is not run at all: the refused call also leaves dynamo refusing every
# later flex_attention call in the process ("Attempted to call function marked as skipped").
NO_FILLED_ALLOCATIONS = [] if _filled_allocations_reach_flex() else [Limitation(
    "flex_attention refuses to run under DET's filled_allocations dispatch mode (torch 2.13: NotImplementedError "
    "'There was no rule registered for HigherOrderOperator flex_attention and mode _FillAllocations'; with the HOP "
    "let through, 'torch.compile with fullgraph=True found no compiled frames')", checks={"DET"})]


def _mask_mod(b, h, q_idx, kv_idx):
    return _ACTIVE.keep[b, 0, q_idx, kv_idx]


def _score_bias(score, b, h, q_idx, kv_idx):
    return score + _ACTIVE.bias[b, 0, q_idx, kv_idx]


def _score_softcap_bias(score, b, h, q_idx, kv_idx):
    return _ACTIVE.softcap * torch.tanh(score / _ACTIVE.softcap) + _ACTIVE.bias[b, 0, q_idx, kv_idx]


def run_flex_with_mask(q, k, v, keep, scale, bias=None, softcap=None):
    """flex_attention on [B, H, L, D] tensors; ``keep`` bool [B or 1, 1, Lq, Lk], ``bias`` float like it."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    batch, len_q, len_k = q.shape[0], q.shape[-2], k.shape[-2]
    _ACTIVE.keep = keep.expand(batch, 1, len_q, len_k)
    _ACTIVE.bias = (torch.zeros((), dtype=q.dtype, device=q.device) if bias is None else bias).expand(batch, 1, len_q, len_k)
    _ACTIVE.softcap = softcap
    block_mask = create_block_mask(_mask_mod, batch, None, len_q, len_k, device=q.device)
    return flex_attention(q, k, v, score_mod=_score_bias if softcap is None else _score_softcap_bias,
                          block_mask=block_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


# A finding, declared on the draws that found it (no case feature picks out the rows it
# needs: a softmax peaked on a key whose probability rounds far in the dtype).
NORMALISED_P_ROUNDED = (
    "eager flex_attention rounds the normalised probabilities to the input dtype before P @ V (math_attention in "
    "torch/_higher_order_ops/flex_attention.py), a rounding that a kernel keeping P in float32, or rounding "
    "exp(s - max) whose largest entry is exactly 1, does not make (that order reproduces its output bitwise; a "
    "finding)")
FLEX_FORWARD_CHECKS = {"OUT", "INV", "GUARD", "UNINIT", "PACK"}  # every check that compares its output


@variant("attention", "flex_attention", dtypes=("float32", "bfloat16", "float16", "float64"), limitations=[
    Limitation("flex_attention has no backward on CPU (NotImplementedError in torch 2.13)", checks={"backward"}),
    *NO_FILLED_ALLOCATIONS,
    materialises_scores("eager flex_attention (unfused)"),
], known_failures=[
    # Errors of the library on inputs its signature takes (an empty sequence), not refusals: findings.
    KnownFailure("flex_attention raises on a call with no keys (IndexError 'max(): Expected reduction dim 3 to have "
                 "non-zero size' in its math path)", features={"no_keys"}, versions="torch==2.13.0"),
    KnownFailure("create_block_mask raises on a call with no queries when the mask_mod reads a captured mask tensor "
                 "(IndexError 'shape mismatch: indexing tensors could not be broadcast together' under vmap)",
                 features={"no_queries"}, versions="torch==2.13.0"),
    KnownFailure(NORMALISED_P_ROUNDED + ": on this draw, 3.3x the fp32-accumulate error in float16, past the kernel grade",
                 cases={"b2-h4x2-q37-k15-d16v8-f16-tl-madditive-shared-s151"}, checks=FLEX_FORWARD_CHECKS,
                 versions="torch==2.13.0"),
], repro="""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    batch, len_q, len_k = q.shape[0], q.shape[-2], k.shape[-2]
    if top_left_only:
        attn_mask = torch.ones(len_q, len_k, dtype=torch.bool, device=q.device).tril()
    if attn_mask is None:
        attn_mask = torch.ones(len_q, len_k, dtype=torch.bool, device=q.device)
    keep = (attn_mask if attn_mask.dtype == torch.bool else ~torch.isneginf(attn_mask)).expand(batch, 1, len_q, len_k)
    bias = (torch.zeros((), dtype=q.dtype) if attn_mask.dtype == torch.bool
            else attn_mask.masked_fill(~keep, 0.0)).expand(batch, 1, len_q, len_k)

    def mask_mod(b, h, i, j):
        return keep[b, 0, i, j]

    def score_mod(s, b, h, i, j):
        return (s if softcap is None else softcap * torch.tanh(s / softcap)) + bias[b, 0, i, j]

    block_mask = create_block_mask(mask_mod, batch, None, len_q, len_k, device=q.device)
    out = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                         enable_gqa=q.shape[1] != k.shape[1])
    """)
def flex(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """torch.nn.attention.flex_attention, eager, with a mask_mod and a score_mod."""
    len_q, len_k = q.shape[-2], k.shape[-2]
    full = combined_mask(len_q, len_k, causal=causal, window=window, alignment=alignment, mask=mask,
                         device=q.device, dtype=q.dtype)
    if full is None:
        full = torch.ones(len_q, len_k, dtype=torch.bool, device=q.device)
    keep = full if full.dtype == torch.bool else ~torch.isneginf(full)
    bias = None if full.dtype == torch.bool else full.masked_fill(~keep, 0.0)
    return run_flex_with_mask(q, k, v, keep.expand(q.shape[0], 1, len_q, len_k),
                              scale, None if bias is None else bias.expand(q.shape[0], 1, len_q, len_k), softcap)
