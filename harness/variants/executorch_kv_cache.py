"""ExecuTorch's KV caches: the ``KVCache`` and ``RingKVCache`` modules of its llama
example, driven the way its ``AttentionMHA`` drives them, and the C++ ``llama.*`` ops.

Conventions converted here: the modules keep ``[B, Hkv, S, D]``, the ops ``[B, S, Hkv, D]``
(the family's order). ``RingKVCache(window)`` always allocates 2 x window slots.
"""

from __future__ import annotations

import torch

from harness.native_io import native_stderr_silenced
from harness.registry import Limitation, variant
from harness.variants.kv_cache_torch import PositionedCache, run_calls

MODULES = ("executorch.examples.models.llama.attention",)
OPS = ("executorch.extension.llm.custom_ops.custom_ops",)
STATIC_ONLY = Limitation("writes contiguous slots and masks causally over them: static caches only",
                         features={"kind:sliding", "kind:ring"})


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


@variant("kv_cache", "executorch_kvcache", dtypes=("float32",), requires=MODULES, limitations=[STATIC_ONLY])
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
])
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
])
def executorch_update_cache(steps, k_cache, v_cache, *, kind, window, scale):
    """torch.ops.llama.update_cache (C++) in place, then torch SDPA masked by the positions the slots hold."""
    return run_calls(_UpdateCacheOp(k_cache, v_cache, kind, window), steps, scale)


@variant("kv_cache", "executorch_update_cache_with_indices", dtypes=("float32",), requires=OPS)
def executorch_update_cache_with_indices(steps, k_cache, v_cache, *, kind, window, scale):
    """torch.ops.llama.update_cache_with_indices (C++) writing slot p (or p mod S) of every batch
    row, then torch SDPA masked by the positions the slots hold."""
    return run_calls(_UpdateCacheWithIndicesOp(k_cache, v_cache, kind, window), steps, scale)


@variant("kv_cache", "executorch_sdpa_with_kv_cache", dtypes=("float32",), requires=OPS, limitations=[STATIC_ONLY])
def executorch_sdpa_with_kv_cache(steps, k_cache, v_cache, *, kind, window, scale):
    """torch.ops.llama.sdpa_with_kv_cache (C++): writes the call's K/V at start_pos and attends
    causally over slots 0 .. start_pos + n - 1, in one op."""
    results = []
    for q, k, v, start in steps:
        with native_stderr_silenced():
            out = torch.ops.llama.sdpa_with_kv_cache(q, k, v, k_cache, v_cache, start, q.shape[1], None, 0.0, True, scale)
        results.append((out, k_cache.clone(), v_cache.clone()))
    return results
