r"""Softmax attention in blocks of query rows: the oracle's twin for long sequences.

``reference.attention`` materialises scores ``[B, Hq, Lq, Lk]`` and several temporaries
of that size; at 16k tokens that is gigabytes per tensor in float64. A row of the
softmax depends on its own scores only, so the rows can be computed a block at a time::

    for each block R of query rows:
        mask_R        = visibility(rows=R) as a mask (the causal diagonal, the window,
                        a boolean mask's rows; an additive mask's rows with -inf where hidden)
        out[R], lse[R] = reference.attention(q[:, :, R], k, v, mask=mask_R, softcap=...)

Each block *is* the plain oracle's computation on its rows, with the block's
visibility handed over as an explicit mask (``causal``, ``window`` and ``alignment``
become part of it, so a row keeps its place on the causal diagonal); a row's result
does not depend on the blocking, fully-masked rows included (output 0, lse -inf).
A block reads only the range of keys that some row of it sees (under a causal mask the
keys up to its last row's diagonal, under a window about the window): the keys left out
have weight exactly 0 in every row of the block (only the order in which the remaining
terms are summed may change: differences of a few units in the last place).

Memory: ``O(B Hq rows Lk)`` per block instead of ``O(B Hq Lq Lk)``. Under autograd the
backward recomputes each block (``_Recomputed``): autograd keeps only the inputs of a
block between forward and backward, and a block's temporaries live only while that
block is differentiated. ``blocked_attention_with_grads`` (what the oracles use) runs
each block's forward and written-out backward at once instead, without a graph.
Trusted only because ``tests/test_blocked_oracles.py`` holds both to the plain oracle on
every catalogue case.
"""

from __future__ import annotations

import functools
import math

import torch

from reference.attention import attention, attention_with_grads, visibility
from reference.documents import document_attention

BLOCK_SCORES = 2 ** 23  # scores per block, B * Hq * rows * Lk: 64 MiB in float64


def rows_per_block(batch: int, heads_q: int, len_k: int, scores: int | None = None) -> int:
    """Query rows per block so that a block holds about ``scores`` (default BLOCK_SCORES)
    scores, at least one row."""
    return max(1, (scores or BLOCK_SCORES) // max(1, batch * heads_q * len_k))


def _mask_rows(mask: torch.Tensor | None, rows: slice, len_q: int) -> torch.Tensor | None:
    """The rows ``rows`` of a mask broadcastable to ``[..., Lq, Lk]`` (a mask broadcast over the rows stays as it is)."""
    if mask is None or mask.dim() < 2 or mask.shape[-2] != len_q:
        return mask
    return mask[..., rows, :]


def block_mask(len_q: int, len_k: int, rows: slice, *, causal, window, alignment, mask, device) -> torch.Tensor:
    """Visibility of query rows ``rows`` as the mask ``reference.attention`` takes: bool
    ``[..., R, Lk]``, or for an additive mask its rows with ``-inf`` wherever a key is hidden."""
    given = _mask_rows(mask, rows, len_q)
    visible = visibility(len_q, len_k, causal=causal, window=window, alignment=alignment, mask=given,
                         device=device, rows=rows)
    if given is None or given.dtype == torch.bool:
        return visible
    return torch.where(visible, given, -math.inf)


def _visible_keys(mask: torch.Tensor) -> slice:
    """The smallest range of keys holding every key some row of ``mask`` ``[..., R, Lk]``
    (bool, or additive with -inf where hidden) sees; empty when none sees any."""
    visible = mask if mask.dtype == torch.bool else mask != -math.inf
    seen = visible.flatten(0, -2).any(0).nonzero()
    return slice(int(seen[0]), int(seen[-1]) + 1) if len(seen) else slice(0, 0)


class _Recomputed(torch.autograd.Function):
    """``block(q, k, v) -> (out, lse)`` run without a graph; its backward runs it again with
    one, so only the block's inputs are kept between forward and backward."""

    @staticmethod
    def forward(ctx, block, q, k, v):
        ctx.block = block
        ctx.save_for_backward(q, k, v)
        with torch.no_grad():
            return block(q, k, v)

    @staticmethod
    def backward(ctx, d_out, d_lse):
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(needed) for t, needed in zip(ctx.saved_tensors, ctx.needs_input_grad[1:])]
            out, lse = ctx.block(*leaves)
            wanted = [t for t in leaves if t.requires_grad]
            found = iter(torch.autograd.grad((out, lse), wanted, (d_out, d_lse)))
        return (None, *(next(found) if t.requires_grad else None for t in leaves))


def _row_blocks(q, k, *, causal, window, alignment, mask, block_rows):
    """Each block of query rows as ``(rows, rows_mask)``: ``rows`` a slice of the queries
    (one empty block when there are none), ``rows_mask()`` the block's visibility as
    ``reference.attention`` takes it (``block_mask``), computed when called, so that a
    caller under autograd can compute it again in the backward rather than keep it."""
    batch, heads_q, len_q, _ = q.shape
    len_k = k.shape[2]
    step = block_rows or rows_per_block(batch, heads_q, len_k)
    for start in range(0, max(len_q, 1), step):
        rows = slice(start, min(start + step, len_q))
        yield rows, functools.partial(block_mask, len_q, len_k, rows, causal=causal, window=window,
                                      alignment=alignment, mask=mask, device=q.device)


def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    window: tuple[int | None, int | None] | None = None,
    alignment: str = "bottom_right",
    mask: torch.Tensor | None = None,
    softcap: float | None = None,
    block_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``reference.attention`` a block of ``block_rows`` query rows at a time (default:
    ``rows_per_block``); returns ``(out [B, Hq, Lq, Dv], lse [B, Hq, Lq])``."""
    differentiable = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    outs, lses = [], []
    for rows, rows_mask in _row_blocks(q, k, causal=causal, window=window, alignment=alignment, mask=mask,
                                       block_rows=block_rows):
        keys = _visible_keys(rows_mask())  # keys outside it have weight exactly 0 in every row of the block

        def one_block(q_rows, k_keys, v_keys, rows_mask=rows_mask, keys=keys):
            return attention(q_rows, k_keys, v_keys, scale=scale, mask=rows_mask()[..., keys], softcap=softcap)

        inputs = (q[:, :, rows], k[:, :, keys], v[:, :, keys])
        out, lse = _Recomputed.apply(one_block, *inputs) if differentiable else one_block(*inputs)
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def blocked_attention_with_grads(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dout: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    window: tuple[int | None, int | None] | None = None,
    alignment: str = "bottom_right",
    mask: torch.Tensor | None = None,
    softcap: float | None = None,
    block_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``reference.attention.attention_with_grads`` a block of query rows at a time, as
    ``blocked_attention`` blocks them: ``(out, lse, {"dq", "dk", "dv"})``. A block's rows
    own their dq rows; dk and dv add up each block's gradient over the keys it reads, in
    block order. No graph is kept: memory is one block's forward and backward."""
    out, lse = q.new_zeros(*q.shape[:3], v.shape[-1]), q.new_zeros(q.shape[:3])
    grads = {"dq": torch.zeros_like(q), "dk": torch.zeros_like(k), "dv": torch.zeros_like(v)}
    for rows, rows_mask in _row_blocks(q, k, causal=causal, window=window, alignment=alignment, mask=mask,
                                       block_rows=block_rows):
        visible = rows_mask()
        keys = _visible_keys(visible)
        out[:, :, rows], lse[:, :, rows], block = attention_with_grads(
            q[:, :, rows], k[:, :, keys], v[:, :, keys], dout[:, :, rows], scale=scale, mask=visible[..., keys],
            softcap=softcap)
        grads["dq"][:, :, rows] = block["dq"]
        grads["dk"][:, :, keys] += block["dk"]
        grads["dv"][:, :, keys] += block["dv"]
    return out, lse, grads


def blocked_document_attention(q, k, v, *, cu_seqlens_q, cu_seqlens_k, first_document_begin=0, scale=None,
                               causal=True, block_rows=None) -> torch.Tensor:
    """``reference.documents.document_attention`` with each document through ``blocked_attention``:
    q ``[Tq, Hq, D]``, k ``[Tk, Hkv, D]``, v ``[Tk, Hkv, Dv]`` -> out ``[Tq, Hq, Dv]``."""
    def attend(*args, **kwargs):
        return blocked_attention(*args, **kwargs, block_rows=block_rows)

    return document_attention(q, k, v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                              first_document_begin=first_document_begin, scale=scale, causal=causal, attend=attend)


def coverage(len_q: int, len_k: int, *, causal=False, window=None, alignment="bottom_right", mask=None,
             block_rows: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """``(row_has_key [..., Lq], key_seen [..., Lk])``: whether each query sees some key and
    each key is seen by some query, ``visibility``'s rows ``any`` a block at a time
    (leading dims those of ``mask``; none without one)."""
    rows_any, keys_any = [], None
    device = mask.device if mask is not None else "cpu"
    for start in range(0, max(len_q, 1), block_rows):
        rows = slice(start, min(start + block_rows, len_q))
        visible = visibility(len_q, len_k, causal=causal, window=window, alignment=alignment,
                             mask=_mask_rows(mask, rows, len_q), device=device, rows=rows)
        rows_any.append(visible.any(-1))
        seen = visible.any(-2)
        keys_any = seen if keys_any is None else keys_any | seen
    return torch.cat(rows_any, dim=-1), keys_any
