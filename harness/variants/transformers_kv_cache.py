"""transformers' static KV-cache layer (``transformers.cache_utils.StaticLayer``).

Conventions converted here: the layer keeps ``[B, Hkv, S, D]`` and writes each call at
its own running length (``cumulative_length``), not at a given position, so calls
must come in order from position 0 (they do in this family). Attention is torch SDPA
with a causal mask over the slots, as transformers' sdpa attention path applies it.
Its sliding-window layer keeps a shift register (the window rolled left), a storage
kind this family does not define, so it is not adapted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.registry import Limitation, variant


@variant("kv_cache", "transformers_static_layer", dtypes=("float32", "bfloat16", "float16", "float64"),
         requires=("transformers.cache_utils",), limitations=[
             Limitation("StaticLayer is a linear cache with a causal mask: static caches only",
                        features={"kind:sliding", "kind:ring"})])
def transformers_static_layer(steps, k_cache, v_cache, *, kind, window, scale):
    """transformers.cache_utils.StaticLayer.update (index_copy_ at its running length), then SDPA."""
    from transformers.cache_utils import StaticLayer

    layer = StaticLayer(max_cache_len=k_cache.shape[1])
    first_k, first_v = steps[0][1].transpose(1, 2), steps[0][2].transpose(1, 2)
    layer.lazy_initialization(first_k, first_v)
    with torch.no_grad():
        layer.keys.copy_(k_cache.transpose(1, 2))
        layer.values.copy_(v_cache.transpose(1, 2))
    slots = torch.arange(k_cache.shape[1])
    results = []
    for q, k, v, start in steps:
        keys, values = layer.update(k.transpose(1, 2), v.transpose(1, 2))
        mask = slots[None, :] <= torch.arange(start, start + q.shape[1])[:, None]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask, scale=scale,
                                             enable_gqa=q.shape[2] != k.shape[2])
        results.append((out.transpose(1, 2), keys.transpose(1, 2).clone(), values.transpose(1, 2).clone()))
    return results
