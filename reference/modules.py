r"""Reference computations as ``torch.nn.Module``s, for programs: what gets exported,
compiled and lowered, and what float64 eager runs as the oracle.

Each module calls the reference functions, so its float64 eager run is the truth, its
run in the case dtype the same-dtype baseline, and a transformed program of it the
variant. State is either passed in and returned (the seed-000 attention layer, like a
``state_names`` export) or kept in buffers (the Gated DeltaNet block, like
ExecuTorch's mutable buffers); buffered state is also returned so that every form,
ExecuTorch's runtime included, shows it.
"""

from __future__ import annotations

import torch
from torch import nn

from reference.attention import attention
from reference.gated_deltanet_block import gated_deltanet_block


class ReferenceAttention(nn.Module):
    """``reference.attention`` as a submodule (the unit seed 000 re-exports standalone):
    q ``[B, H, Lq, D]``, k, v ``[B, Hkv, Lk, D]`` -> ``[B, H, Lq, D]``, causal, bottom-right."""

    def forward(self, q, k, v):
        return attention(q, k, v, causal=True, alignment="bottom_right")[0]


class CachedAttentionLayer(nn.Module):
    """Seed 000's layer: a static query block of ``Lq`` tokens against a dynamic context.

    x ``[B, Lq, E]``; position_ids ``[B, ctx]`` (only its length matters: the context so
    far, queries included); k_cache, v_cache ``[B, Hkv, S, D]``. The call writes its K/V
    at positions ``ctx - Lq .. ctx - 1`` and attends over positions ``0 .. ctx - 1``.
    Returns ``(out [B, Lq, E], k_cache, v_cache)`` (new caches; the inputs are not written).
    RoPE and the q/k norms of the seed are left out: they do not touch the shapes.
    """

    def __init__(self, weights: dict[str, torch.Tensor], heads: int, heads_kv: int, head_dim: int):
        super().__init__()
        for name, w in weights.items():
            self.register_buffer(name, w.clone())
        self.heads, self.heads_kv, self.head_dim = heads, heads_kv, head_dim
        self.attend = ReferenceAttention()

    def forward(self, x, position_ids, k_cache, v_cache):
        batch, query_len, _ = x.shape
        context = position_ids.shape[-1]
        torch._check(context >= query_len)
        offset = context - query_len
        q = (x @ self.wq.T).view(batch, query_len, self.heads, self.head_dim).transpose(1, 2)
        k = (x @ self.wk.T).view(batch, query_len, self.heads_kv, self.head_dim).transpose(1, 2)
        v = (x @ self.wv.T).view(batch, query_len, self.heads_kv, self.head_dim).transpose(1, 2)
        k_cache = k_cache.slice_scatter(k, dim=2, start=offset, end=context)
        v_cache = v_cache.slice_scatter(v, dim=2, start=offset, end=context)
        out = self.attend(q, k_cache.narrow_copy(2, 0, context), v_cache.narrow_copy(2, 0, context))
        return out.transpose(1, 2).reshape(batch, query_len, -1) @ self.wo.T, k_cache, v_cache


class BufferedCacheAttention(nn.Module):
    """A KV-cached attention layer with its caches in buffers, as ExecuTorch's AttentionMHA
    keeps them (RoPE left out: the peer runs with the identity rotation).

    x ``[B, T, E]``, input_pos ``[1]`` (long, the first token's position p): the call writes
    its K/V at positions ``p .. p+T-1`` and its queries attend over ``0 .. p+T-1``
    (bottom-right causal). Returns ``(out [B, T, E], k_cache, v_cache [B, Hkv, S, D])``
    after the call. Eager only: it is the truth for the peer, not a program input.
    """

    def __init__(self, weights: dict[str, torch.Tensor], heads: int, heads_kv: int, head_dim: int, capacity: int,
                 batch: int = 1):
        super().__init__()
        for name, w in weights.items():
            self.register_buffer(name, w.clone())
        self.heads, self.heads_kv, self.head_dim = heads, heads_kv, head_dim
        dtype = weights["wq"].dtype
        self.register_buffer("k_cache", torch.zeros(batch, heads_kv, capacity, head_dim, dtype=dtype))
        self.register_buffer("v_cache", torch.zeros(batch, heads_kv, capacity, head_dim, dtype=dtype))

    def forward(self, x, input_pos):
        batch, length, _ = x.shape
        start = int(input_pos[0])
        q = (x @ self.wq.T).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        self.k_cache[:, :, start:start + length] = (x @ self.wk.T).view(batch, length, self.heads_kv, -1).transpose(1, 2)
        self.v_cache[:, :, start:start + length] = (x @ self.wv.T).view(batch, length, self.heads_kv, -1).transpose(1, 2)
        end = start + length
        out = attention(q, self.k_cache[:, :, :end], self.v_cache[:, :, :end], causal=True, alignment="bottom_right")[0]
        return out.transpose(1, 2).reshape(batch, length, -1) @ self.wo.T, self.k_cache.clone(), self.v_cache.clone()


class GatedDeltaNetBlock(nn.Module):
    """``reference.gated_deltanet_block`` with its conv and recurrent state in buffers.

    x ``[B, T, D]``, input_pos ``[1]`` (long): 0 resets both states first. Returns
    ``(y [B, T, D], conv_state [B, C, W-1], recurrent_state [B, HV, K, V])`` after the call.
    """

    def __init__(self, weights: dict[str, torch.Tensor], batch: int, heads_k: int, heads_v: int, dim_k: int, dim_v: int):
        super().__init__()
        for name, w in weights.items():
            self.register_buffer(name, w.clone())
        self.names = tuple(weights)
        conv_dim, width = weights["conv"].shape
        dtype = weights["conv"].dtype
        self.register_buffer("conv_state", torch.zeros(batch, conv_dim, width - 1, dtype=dtype))
        self.register_buffer("recurrent_state", torch.zeros(batch, heads_v, dim_k, dim_v, dtype=dtype))
        self.shape = dict(heads_k=heads_k, heads_v=heads_v, dim_k=dim_k, dim_v=dim_v)

    def forward(self, x, input_pos):
        keep = (input_pos[0] != 0).to(x.dtype)  # position 0: start from zero states
        weights = {n: getattr(self, n) for n in self.names}
        y, conv, rec = gated_deltanet_block(x, weights, self.conv_state * keep, self.recurrent_state * keep, **self.shape)
        self.conv_state.copy_(conv)
        self.recurrent_state.copy_(rec)
        return y, conv.clone(), rec.clone()


class QuerySlicedAttention(nn.Module):
    """Seed 003's attention with a static length, computed ``chunk`` queries at a time:
    q, k, v ``[B, H, L, D]`` -> ``[B, H, L, D]``, causal. The largest intermediate is a
    ``[B, H, chunk, L]`` score block, not ``[B, H, L, L]``; ``chunk >= L`` is unsliced."""

    def __init__(self, chunk: int):
        super().__init__()
        self.chunk = chunk

    def forward(self, q, k, v):
        length = q.shape[2]
        blocks = []
        for start in range(0, length, self.chunk):
            end = min(start + self.chunk, length)  # queries start..end-1 see keys 0..end-1
            blocks.append(attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end], causal=True)[0])
        return torch.cat(blocks, dim=2)
