"""ExecuTorch's KV caches: the ``KVCache`` and ``RingKVCache`` modules of its llama
example, driven the way its ``AttentionMHA`` drives them, and the C++ ``llama.*`` ops.

Conventions converted here: the modules keep ``[B, Hkv, S, D]``, the ops ``[B, S, Hkv, D]``
(the family's order). ``RingKVCache(window)`` always allocates 2 x window slots.
"""

from __future__ import annotations

import torch

from harness.native_io import native_stderr_silenced
from harness.registry import KnownFailure, Limitation, variant
from harness.variants.kv_cache_torch import SMALL_RING, PositionedCache, run_calls

MODULES = ("executorch.examples.models.llama.attention",)
OPS = ("executorch.extension.llm.custom_ops.custom_ops",)
STATIC_ONLY = Limitation("writes contiguous slots and masks causally over them: static caches only",
                         features={"kind:sliding", "kind:ring"})
FIXED_SCALE = Limitation("ExecuTorch's SDPA module (AttentionMHA's) takes no scale: it always scales by 1/sqrt(head_dim)",
                         features={"custom_scale"})


# Reproduced with executorch 1.5.1 (tests/test_kv_cache.py pins it): a finding.
RING_EXTEND_OVERWRITES_ITS_WINDOW = KnownFailure(
    "RingKVCache (2 x window slots) accepts a call of more than window + 1 tokens once the window is full, writes it "
    "whole, then attends: keys the call's first queries must see were overwritten by the same call, so their outputs "
    "are wrong (the caches are right); executorch 1.5.1, a finding",
    features={"ring_call_overwrites_window"}, checks={"SPLIT", "INV", "GUARD:nan", "GUARD:huge", "UNINIT"})


def _aborts_on_empty_calls(op: str, where: str) -> Limitation:
    """Reproduced with executorch 1.5.1: the op aborts the whole process, so such a case is not run."""
    return Limitation(f"{op} aborts the process on a call of 0 tokens (ET_CHECK \"projected_value data is null\", "
                      f"{where}; executorch 1.5.1)", features={"zero_length_call"})


def _load(module_cache, k_cache, v_cache):
    """Copy the family's initial contents ``[B, S, Hkv, D]`` into a module's ``[B, Hkv, S, D]`` buffers."""
    with torch.no_grad():
        module_cache.k_cache.copy_(k_cache.transpose(1, 2))
        module_cache.v_cache.copy_(v_cache.transpose(1, 2))


def _module_calls(cache, steps, mask_for, scale):
    """AttentionMHA's KV-cache path: update, then ExecuTorch's SDPA module with the mask."""
    from executorch.examples.models.llama.attention import SDPA

    batch, _, heads, dim = steps[0][0].shape
    heads_kv = steps[0][1].shape[2]
    if abs(scale - dim ** -0.5) > 1e-12:
        raise ValueError("ExecuTorch's SDPA module always scales by 1/sqrt(head_dim)")
    sdpa = SDPA(dim=heads * dim, head_dim=dim, n_rep=heads // heads_kv, max_context_len=cache.k_cache.shape[2])
    results = []
    with torch.no_grad():
        for q, k, v, start in steps:
            n = q.shape[1]
            input_pos = torch.tensor([start], dtype=torch.long)
            k_all, v_all = cache.update(input_pos, k.transpose(1, 2), v.transpose(1, 2))
            out = sdpa(input_pos, q.transpose(1, 2), k_all, v_all, batch, n, mask_for(start, n))
            results.append((out.view(batch, n, heads, dim), cache.k_cache.transpose(1, 2).clone(),
                            cache.v_cache.transpose(1, 2).clone()))
    return results


@variant("kv_cache", "executorch_kvcache", dtypes=("float32",), requires=MODULES, limitations=[STATIC_ONLY, FIXED_SCALE],
         repro="""
             from executorch.examples.models.llama.attention import SDPA, KVCache
             # the modules keep [B, HKV, S, D] buffers; AttentionMHA's path: cache.update, then its SDPA module with a mask
             batch, slots, heads_kv, dim = k_cache.shape
             heads = steps[0][0].shape[2]
             cache = KVCache(batch, slots, heads_kv, dim, enable_dynamic_shape=True, dtype=k_cache.dtype)
             sdpa = SDPA(dim=heads * dim, head_dim=dim, n_rep=heads // heads_kv, max_context_len=cache.k_cache.shape[2])
             causal = torch.tril(torch.ones(slots, slots, dtype=torch.bool))
             results = []
             with torch.no_grad():
                 cache.k_cache.copy_(k_cache.transpose(1, 2))
                 cache.v_cache.copy_(v_cache.transpose(1, 2))
                 for q, k, v, start in steps:
                     n = q.shape[1]
                     input_pos = torch.tensor([start], dtype=torch.long)
                     k_all, v_all = cache.update(input_pos, k.transpose(1, 2), v.transpose(1, 2))
                     out = sdpa(input_pos, q.transpose(1, 2), k_all, v_all, batch, n, causal.narrow(0, start, n))
                     results.append((out.view(batch, n, heads, dim), cache.k_cache.transpose(1, 2).clone(),
                                     cache.v_cache.transpose(1, 2).clone()))
             """)
def executorch_kvcache(steps, k_cache, v_cache, *, kind, window, scale):
    """executorch...llama.attention.KVCache (enable_dynamic_shape: index_copy_ at input_pos) with
    AttentionMHA's causal mask rows and ExecuTorch's SDPA module."""
    from executorch.examples.models.llama.attention import KVCache

    batch, slots, heads_kv, dim = k_cache.shape
    cache = KVCache(batch, slots, heads_kv, dim, enable_dynamic_shape=True, dtype=k_cache.dtype)
    _load(cache, k_cache, v_cache)
    causal = torch.tril(torch.ones(slots, slots, dtype=torch.bool))
    return _module_calls(cache, steps, lambda start, n: causal.narrow(0, start, n), scale)


@variant("kv_cache", "executorch_ring_kvcache", dtypes=("float32",), requires=MODULES, limitations=[
    Limitation("a ring buffer with a sliding-window mask: ring caches only", features={"kind:static", "kind:sliding"}),
    Limitation("RingKVCache(window) allocates exactly 2 x window slots", features={"ring_capacity_not_twice_window"}),
    FIXED_SCALE,
    Limitation("RingKVCache.update refuses a call longer than its 2 x window slots: AssertionError \"Update sequence "
               "length(n) for kv cache must be smaller than the cache size(2w)\"", features={"ring_call_longer_than_capacity"}),
], known_failures=[RING_EXTEND_OVERWRITES_ITS_WINDOW], repro="""
    from executorch.examples.models.llama.attention import SDPA, RingKVCache
    # the modules keep [B, HKV, S, D] buffers; AttentionMHA's path: cache.update, then its SDPA module with a mask
    batch, slots, heads_kv, dim = k_cache.shape
    heads = steps[0][0].shape[2]
    cache = RingKVCache(batch, window, heads_kv, dim, enable_dynamic_shape=True, dtype=k_cache.dtype)
    sdpa = SDPA(dim=heads * dim, head_dim=dim, n_rep=heads // heads_kv, max_context_len=cache.k_cache.shape[2])
    results = []
    with torch.no_grad():
        cache.k_cache.copy_(k_cache.transpose(1, 2))
        cache.v_cache.copy_(v_cache.transpose(1, 2))
        for q, k, v, start in steps:
            n = q.shape[1]
            input_pos = torch.tensor([start], dtype=torch.long)
            k_all, v_all = cache.update(input_pos, k.transpose(1, 2), v.transpose(1, 2))
            out = sdpa(input_pos, q.transpose(1, 2), k_all, v_all, batch, n, cache.create_causal_mask_for_ring_buffer(start, n))
            results.append((out.view(batch, n, heads, dim), cache.k_cache.transpose(1, 2).clone(),
                            cache.v_cache.transpose(1, 2).clone()))
    """)
def executorch_ring_kvcache(steps, k_cache, v_cache, *, kind, window, scale):
    """executorch...llama.attention.RingKVCache: slot p mod 2w, its own cache_positions and
    create_causal_mask_for_ring_buffer, ExecuTorch's SDPA module."""
    from executorch.examples.models.llama.attention import RingKVCache

    batch, _, heads_kv, dim = k_cache.shape
    cache = RingKVCache(batch, window, heads_kv, dim, enable_dynamic_shape=True, dtype=k_cache.dtype)
    _load(cache, k_cache, v_cache)
    return _module_calls(cache, steps, cache.create_causal_mask_for_ring_buffer, scale)


class _UpdateCacheOp(PositionedCache):
    """Writes with torch.ops.llama.update_cache: contiguous slots from start_pos."""

    def write(self, start, k, v):
        with native_stderr_silenced():
            torch.ops.llama.update_cache(k, self.k, start)
            torch.ops.llama.update_cache(v, self.v, start)
        self.remember(start, k.shape[1])


class _UpdateCacheWithIndicesOp(PositionedCache):
    """Writes with torch.ops.llama.update_cache_with_indices: slot p (or p mod S) of every batch row."""

    def write(self, start, k, v):
        indices = self.slots(start, k.shape[1])[None, :].expand(k.shape[0], -1).contiguous()
        with native_stderr_silenced():
            torch.ops.llama.update_cache_with_indices(k, self.k, start, indices)
            torch.ops.llama.update_cache_with_indices(v, self.v, start, indices)
        self.remember(start, k.shape[1])


@variant("kv_cache", "executorch_update_cache", dtypes=("float32",), requires=OPS, limitations=[
    Limitation("update_cache writes contiguous slots start_pos..; ring caches need update_cache_with_indices",
               features={"kind:ring"}),
    _aborts_on_empty_calls("torch.ops.llama.update_cache", "op_update_cache.cpp:131"),
], repro="""
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers torch.ops.llama)
    # the op writes the cache; torch SDPA then attends over the slots, masked by the position each slot holds
    positions = torch.full((k_cache.shape[1],), -1, device=k_cache.device)  # -1: never written
    results = []
    for q, k, v, start in steps:
        query = torch.arange(start, start + q.shape[1], device=q.device)
        torch.ops.llama.update_cache(k, k_cache, start)
        torch.ops.llama.update_cache(v, v_cache, start)
        positions[query] = query
        behind = query[:, None] - positions[None, :]  # how far back each slot's token lies
        mask = (positions[None, :] >= 0) & (behind >= 0)
        if window is not None:
            mask &= behind < window
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k_cache.transpose(1, 2), v_cache.transpose(1, 2), attn_mask=mask, scale=scale,
            enable_gqa=q.shape[2] != k_cache.shape[2]).transpose(1, 2)
        results.append((out, k_cache.clone(), v_cache.clone()))
    """)
def executorch_update_cache(steps, k_cache, v_cache, *, kind, window, scale):
    """torch.ops.llama.update_cache (C++) in place, then torch SDPA masked by the positions the slots hold."""
    return run_calls(_UpdateCacheOp(k_cache, v_cache, kind, window), steps, scale)


@variant("kv_cache", "executorch_update_cache_with_indices", dtypes=("float32",), requires=OPS,
         limitations=[SMALL_RING, _aborts_on_empty_calls("torch.ops.llama.update_cache_with_indices", "op_update_cache.cpp:131")],
         repro="""
             from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers torch.ops.llama)
             # the op writes slot p (or p mod S) of every batch row; torch SDPA then attends over the slots, masked by
             # the position each slot holds;
             # a ring attends before it overwrites: a call goes in pieces of at most S - window + 1 tokens
             positions = torch.full((k_cache.shape[1],), -1, device=k_cache.device)  # the position each slot holds; -1: never written
             piece = k_cache.shape[1] - window + 1 if kind == "ring" else None
             results = []
             for q, k, v, start in steps:
                 step, outs = piece or max(q.shape[1], 1), []
                 for a in range(0, q.shape[1], step):
                     qa, ka, va = q[:, a:a + step], k[:, a:a + step], v[:, a:a + step]
                     query = torch.arange(start + a, start + a + qa.shape[1], device=q.device)
                     slots = query % k_cache.shape[1] if kind == "ring" else query
                     indices = slots[None, :].expand(k.shape[0], -1).contiguous()
                     torch.ops.llama.update_cache_with_indices(ka, k_cache, start + a, indices)
                     torch.ops.llama.update_cache_with_indices(va, v_cache, start + a, indices)
                     positions[slots] = query
                     behind = query[:, None] - positions[None, :]  # how far back each slot's token lies
                     mask = (positions[None, :] >= 0) & (behind >= 0)
                     if window is not None:
                         mask &= behind < window
                     outs.append(torch.nn.functional.scaled_dot_product_attention(
                         qa.transpose(1, 2), k_cache.transpose(1, 2), v_cache.transpose(1, 2), attn_mask=mask, scale=scale,
                         enable_gqa=q.shape[2] != k_cache.shape[2]).transpose(1, 2))
                 out = torch.cat(outs, dim=1) if outs else q.new_zeros(q.shape)  # a call of 0 tokens: [B, 0, H, D]
                 results.append((out, k_cache.clone(), v_cache.clone()))
             """)
def executorch_update_cache_with_indices(steps, k_cache, v_cache, *, kind, window, scale):
    """torch.ops.llama.update_cache_with_indices (C++) writing slot p (or p mod S) of every batch
    row, then torch SDPA masked by the positions the slots hold."""
    return run_calls(_UpdateCacheWithIndicesOp(k_cache, v_cache, kind, window), steps, scale)


@variant("kv_cache", "executorch_sdpa_with_kv_cache", dtypes=("float32",), requires=OPS,
         limitations=[STATIC_ONLY, _aborts_on_empty_calls("torch.ops.llama.sdpa_with_kv_cache", "op_sdpa.cpp:311")],
         repro="""
             from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers torch.ops.llama)
             # writes the call's K/V at start_pos and attends causally over slots 0 .. start_pos + n - 1, in one op
             results = []
             for q, k, v, start in steps:
                 out = torch.ops.llama.sdpa_with_kv_cache(q, k, v, k_cache, v_cache, start, q.shape[1], None, 0.0, True, scale)
                 results.append((out, k_cache.clone(), v_cache.clone()))
             """)
def executorch_sdpa_with_kv_cache(steps, k_cache, v_cache, *, kind, window, scale):
    """torch.ops.llama.sdpa_with_kv_cache (C++): writes the call's K/V at start_pos and attends
    causally over slots 0 .. start_pos + n - 1, in one op."""
    results = []
    for q, k, v, start in steps:
        with native_stderr_silenced():
            out = torch.ops.llama.sdpa_with_kv_cache(q, k, v, k_cache, v_cache, start, q.shape[1], None, 0.0, True, scale)
        results.append((out, k_cache.clone(), v_cache.clone()))
    return results
