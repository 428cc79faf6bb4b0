"""Explicit masks for kernels that take one, built from the attention contract.

Written independently of ``reference.attention.visibility`` on purpose: an adapter
that reused the oracle's own mask would share the oracle's mistakes.
"""

from __future__ import annotations

import math

import torch


def rows_visible(rows: torch.Tensor, len_q: int, len_k: int, *, causal, window, alignment) -> torch.Tensor:
    """Bool ``[len(rows), Lk]``: which keys each query row in ``rows`` may see (masks aside)."""
    shift = len_k - len_q if alignment == "bottom_right" else 0
    diag = (rows + shift)[:, None]
    cols = torch.arange(len_k, device=rows.device)[None, :]
    keep = torch.ones(len(rows), len_k, dtype=torch.bool, device=rows.device)
    left, right = window if window is not None else (None, None)
    if causal:
        keep &= cols <= diag
    if left is not None:
        keep &= cols >= diag - left
    if right is not None:
        keep &= cols <= diag + right
    return keep


def combined_mask(len_q, len_k, *, causal, window, alignment, mask, device, dtype):
    """One SDPA-style mask: None, bool (True = attend) or additive float in ``dtype``."""
    structural = None
    if causal or window is not None:
        rows = torch.arange(len_q, device=device)
        structural = rows_visible(rows, len_q, len_k, causal=causal, window=window, alignment=alignment)
    if mask is None:
        return structural
    if mask.dtype == torch.bool:
        return mask if structural is None else mask & structural
    additive = mask.to(dtype)
    return additive if structural is None else additive.masked_fill(~structural, -math.inf)
