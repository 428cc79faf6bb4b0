"""Query-sliced attention in the style of seed 003: queries in chunks, never Lq x Lk.

Each chunk of ``CHUNK`` query rows builds its own ``[B, H, chunk, Lk]`` scores, so the
largest intermediate is O(chunk x Lk) per head. Computes in the input dtype.
"""

from __future__ import annotations

import math

import torch

from harness.registry import variant
from harness.variants._long import materialises_scores
from harness.variants._masks import rows_visible

CHUNK = 16


@variant("attention", "sliced_attention", dtypes=("float32", "bfloat16", "float16", "float64"), precision="naive",
         limitations=[materialises_scores("autograd, saving every chunk's scores,", checks={"backward"})])
def sliced_attention(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """Plain torch attention with the queries processed CHUNK rows at a time (seed 003)."""
    len_q, len_k = q.shape[-2], k.shape[-2]
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    chunks = []
    for start in range(0, len_q, CHUNK):
        rows = torch.arange(start, min(start + CHUNK, len_q), device=q.device)
        scores = (q[:, :, start:start + len(rows)] @ k.transpose(-1, -2)) * scale
        if softcap is not None:
            scores = softcap * torch.tanh(scores / softcap)
        keep = rows_visible(rows, len_q, len_k, causal=causal, window=window, alignment=alignment)
        if mask is not None:
            part = mask[..., start:start + len(rows), :]
            if mask.dtype == torch.bool:
                keep = keep & part
            else:
                scores = scores + part
        scores = scores.masked_fill(~keep, -math.inf)
        # softmax of an all -inf row is NaN; such a row attends to nothing and is 0.
        empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
        probs = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
        chunks.append(probs @ v)
    return torch.cat(chunks, dim=2) if chunks else q.new_zeros(*q.shape[:-1], v.shape[-1])
