"""Masks for packed documents, built from cu_seqlens (independently of harness.layouts)."""

from __future__ import annotations

import torch


def document_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """[total] long: the document of each row; rows past cu_seqlens[-1] get -1."""
    rows = torch.arange(total, device=cu_seqlens.device)
    if len(cu_seqlens) < 2:
        return torch.full_like(rows, -1)
    ids = torch.searchsorted(cu_seqlens[1:].long(), rows, right=True)
    return torch.where(rows < cu_seqlens[-1], ids, -1)


def document_mask(cu_q: torch.Tensor, cu_k: torch.Tensor, len_q: int, len_k: int, causal: bool) -> torch.Tensor:
    """Bool [len_q, len_k] over the narrowed K: same document and, if causal, a key no
    later than the query, counting both from the document's end (bottom-right)."""
    if len(cu_q) < 2:  # no document at all: every row is slack
        return torch.zeros(len_q, len_k, dtype=torch.bool, device=cu_q.device)
    dq, dk = document_ids(cu_q, len_q), document_ids(cu_k, len_k)
    same = (dq[:, None] == dk[None, :]) & (dq[:, None] >= 0)
    if not causal:
        return same
    q_end = cu_q[1:].long()[dq.clamp(min=0)]  # end row of each query's document
    k_end = cu_k[1:].long()[dk.clamp(min=0)]
    q_from_end = torch.arange(len_q, device=cu_q.device) - q_end
    k_from_end = torch.arange(len_k, device=cu_k.device) - k_end
    return same & (k_from_end[None, :] <= q_from_end[:, None])
