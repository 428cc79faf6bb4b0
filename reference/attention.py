r"""Softmax attention, written to be checked by eye against its equation.

For batch b, query head h, query row i and key column j::

    s[i, j]  = scale * <q[b, h, i], k[b, g(h), j]>
    s[i, j]  = softcap * tanh(s[i, j] / softcap)           (if softcap)
    s[i, j] += additive_mask[i, j]                         (if the mask is a float tensor)
    s[i, j]  = -inf   where not visible(i, j)
    p[i, :]  = softmax(s[i, :]),   out[i] = sum_j p[i, j] * v[b, g(h), j]
    lse[i]   = log(sum_j exp(s[i, j]))

``attention`` returns ``(out, lse)``; ``attention_with_grads`` also returns the gradients
of ``sum(out * dout)``, its backward written out step by step (bitwise what autograd
computes for ``attention``).

Conventions
-----------
* Shapes: q ``[B, Hq, Lq, D]``, k ``[B, Hkv, Lk, D]``, v ``[B, Hkv, Lk, Dv]``;
  out ``[B, Hq, Lq, Dv]``, lse ``[B, Hq, Lq]`` (natural log).
* Grouped-query mapping: Hq must be a multiple of Hkv, and query head ``h`` reads
  kv head ``g(h) = h // (Hq // Hkv)``: consecutive query heads share a kv head
  (the convention of torch SDPA's ``enable_gqa`` and of flash-attention).
* Alignment of the causal diagonal: query row ``i`` sits at key position
  ``d(i) = i + offset`` with ``offset = Lk - Lq`` for ``"bottom_right"`` (flash-
  attention's convention: the last query is aligned with the last key, as decode
  and chunked prefill need) and ``offset = 0`` for ``"top_left"`` (what torch SDPA's
  ``is_causal=True`` does when Lq != Lk).
* Visibility: ``j <= d(i)`` if causal; ``j >= d(i) - left`` and ``j <= d(i) + right``
  for a sliding window ``(left, right)`` where ``None`` means unbounded; and
  ``mask[..., i, j]`` if a boolean mask is given (True = may attend). All must hold.
* A float mask is added to the scores; ``-inf`` entries hide a key like ``False``
  in a boolean mask does. Masks broadcast to ``[B, Hq, Lq, Lk]``.
* A fully-masked row (no visible key) has output exactly 0 and lse ``-inf``;
  its gradients are exactly 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

ALIGNMENTS = ("bottom_right", "top_left")


def visibility(
    len_q: int,
    len_k: int,
    *,
    causal: bool = False,
    window: tuple[int | None, int | None] | None = None,
    alignment: str = "bottom_right",
    mask: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    rows: slice = slice(None),
) -> torch.Tensor:
    """Boolean ``[..., Lq, Lk]`` tensor: True where query i may attend to key j.

    A float ``mask`` contributes its ``-inf`` entries; a boolean one contributes itself.
    ``rows`` keeps only those query rows (``[..., len(rows), Lk]``, for a blocked twin);
    a mask given with it must already hold just those rows (or broadcast over them).
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    offset = len_k - len_q if alignment == "bottom_right" else 0
    i = torch.arange(len_q, device=device)[rows][:, None]
    j = torch.arange(len_k, device=device)[None, :]
    diagonal = i + offset
    visible = torch.ones(i.shape[0], len_k, dtype=torch.bool, device=device)
    if causal:
        visible &= j <= diagonal
    left, right = window if window is not None else (None, None)
    if left is not None:
        visible &= j >= diagonal - left
    if right is not None:
        visible &= j <= diagonal + right
    if mask is not None:
        visible = visible & (mask if mask.dtype == torch.bool else mask != -math.inf)
    return visible


class _Forward(NamedTuple):
    """What ``attention``'s forward computed, and what its backward reads."""
    out: torch.Tensor  # [B, Hq, Lq, Dv]
    lse: torch.Tensor  # [B, Hq, Lq]
    k: torch.Tensor  # [B, Hq, Lk, D]: the kv heads repeated over their group
    v: torch.Tensor  # [B, Hq, Lk, Dv]
    tanh: torch.Tensor | None  # [B, Hq, Lq, Lk], tanh(s / softcap) (with a softcap)
    visible: torch.Tensor  # bool [..., Lq, Lk]
    row_has_key: torch.Tensor  # bool [..., Lq, 1]
    p: torch.Tensor  # [B, Hq, Lq, Lk]
    scale: float


def _forward(q, k, v, *, scale, causal, window, alignment, mask, softcap) -> _Forward:
    batch, heads_q, len_q, dim = q.shape
    heads_kv, len_k = k.shape[1], k.shape[2]
    if heads_q % heads_kv:
        raise ValueError(f"Hq={heads_q} is not a multiple of Hkv={heads_kv}")
    group = heads_q // heads_kv
    if group > 1:
        k = k.repeat_interleave(group, dim=1)  # [B, Hq, Lk, D]: query head h reads kv head h // group
        v = v.repeat_interleave(group, dim=1)  # [B, Hq, Lk, Dv]
    scale = 1.0 / math.sqrt(dim) if scale is None else scale

    s = scale * (q @ k.transpose(-1, -2))  # [B, Hq, Lq, Lk]
    tanh = None
    if softcap is not None:
        tanh = torch.tanh(s / softcap)
        s = softcap * tanh
    if mask is not None and mask.dtype != torch.bool:
        s = s + mask
    visible = visibility(len_q, len_k, causal=causal, window=window, alignment=alignment, mask=mask, device=q.device)
    row_has_key = visible.any(dim=-1, keepdim=True)
    # Hidden keys get -inf. A fully-masked row gets 0 for every score instead, so that its
    # log-sum-exp is finite (no -inf - -inf, NaN, forward or backward); its output is set
    # to 0 below, which also makes every gradient through it 0. (p = exp(s - lse) rather
    # than torch.softmax: the same-dtype baselines are this code in the dtype, and the
    # tolerance's thresholds were measured with these numerics; softmax rounds less in a
    # low dtype, which would tighten every threshold.)
    s = torch.where(visible, s, torch.where(row_has_key, -math.inf, 0.0).to(s.dtype))
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    p = torch.exp(s - lse)
    out = torch.where(row_has_key, p @ v, 0.0)
    lse = lse.squeeze(-1).masked_fill(~row_has_key.squeeze(-1), -math.inf)
    return _Forward(out, lse, k, v, tanh, visible, row_has_key, p, scale)


def attention(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(out [B, Hq, Lq, Dv], lse [B, Hq, Lq])``; see the module docstring."""
    f = _forward(q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)
    return f.out, f.lse


def attention_with_grads(
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
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    r"""``attention``'s ``(out, lse)`` and the gradients of ``sum(out * dout)``,
    ``{"dq": [B, Hq, Lq, D], "dk": [B, Hkv, Lk, D], "dv": [B, Hkv, Lk, Dv]}``, by the chain
    rule written out (``dout`` ``[B, Hq, Lq, Dv]``)::

        dO      = dout on rows that see a key, 0 on fully-masked rows
        dv      = p^T dO                         dp = dO v^T
        ds      = p * dp - p * rowsum(p * dp)     on visible entries, 0 on hidden ones
        ds      = softcap * ds * (1 - tanh^2) / softcap      (if softcap)
        dq      = (scale * ds) k                 dk = (scale * ds)^T q
        dk, dv  summed over the query heads that share a kv head

    Each step is the operation autograd runs for ``attention`` in the same order, so the
    two agree bitwise in every dtype (``tests/test_attention_backward.py``): the
    same-dtype baselines keep the numerics the tolerance was measured with, without the
    cost of recording a graph.
    """
    f = _forward(q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)
    d_out = torch.where(f.row_has_key, dout, 0.0)
    dv = f.p.transpose(-1, -2) @ d_out
    dp = d_out @ f.v.transpose(-1, -2)
    p_dp = dp * f.p
    ds = torch.where(f.visible, p_dp + (-p_dp.sum(-1, keepdim=True)) * f.p, 0.0)
    if softcap is not None:
        ds = torch.ops.aten.tanh_backward(ds * softcap, f.tanh) / softcap
    ds = ds * f.scale
    dq = ds @ f.k
    dk = (q.transpose(-1, -2) @ ds).transpose(-1, -2)
    heads_kv = k.shape[1]
    if q.shape[1] > heads_kv:
        dk, dv = (g.unflatten(1, (heads_kv, -1)).sum(2) for g in (dk, dv))
    return f.out, f.lse, {"dq": dq, "dk": dk, "dv": dv}
