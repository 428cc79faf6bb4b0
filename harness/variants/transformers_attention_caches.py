"""transformers' attention caches driven as its decoder layers drive them, with its masks.

Per call, in the order a model's forward takes: the layer-level mask is built first from
the cache (``masking_utils.create_causal_mask`` / ``create_sliding_window_causal_mask``
with ``position_ids`` of the call, the sdpa mask interface, its ``is_causal`` skip
allowed as in a model), then the layer updates the cache (``Cache.update(k, v, 0)``)
and attends with ``integrations.sdpa_attention.sdpa_attention_forward`` over what the
update returned. The config is a one-layer ``MistralConfig`` (``sliding_window`` = the
case's window, ``_attn_implementation="sdpa"``); the caches are the ones a user gets:
``DynamicCache(config=...)`` (``DynamicLayer``, or ``DynamicSlidingWindowLayer`` when the
config has a window) and ``StaticCache(config=..., max_cache_len=S)`` (``StaticLayer`` or
``StaticSlidingWindowLayer``).

Storage: the full-attention layers keep position p in slot p ([B, Hkv, S, D]; the
dynamic one grows, so its unwritten slots are reported as the family handed them). The
sliding layers keep only the last w (static) or w-1 (dynamic) tokens, shifted, and never
read the cache they are handed: their contents cannot be read in the family's slot order,
so STATE, SLOT and INV are declared unsupported for them; their outputs (OUT, SPLIT) are
compared on the sliding and the ring schedules alike (a query's visible keys do not
depend on how a cache stores them).
"""

from __future__ import annotations

import torch

from harness.registry import KnownFailure, Limitation, variant

REQUIRES = ("transformers.cache_utils", "transformers.masking_utils", "transformers.integrations.sdpa_attention")
FULL_ONLY = Limitation("a full-attention layer: static caches only (the sliding layers are their own variants)",
                       features={"kind:sliding", "kind:ring"})
WINDOWED_ONLY = Limitation("a sliding-window layer: windowed caches only", features={"kind:static"})
SHIFTED = Limitation("the sliding layer keeps the last tokens shifted, not slot p, and never reads the cache it is "
                     "handed: its contents have no slot order to compare", checks={"STATE", "SLOT", "INV"})
NOT_PREFILLED = Limitation("a dynamic cache starts empty: it cannot be handed a pre-filled cache", checks={"SLOT", "INV"})
# An error of the library on an input its signature takes (a call of 0 tokens), not a refusal: a finding.
EMPTY_CALLS = KnownFailure("transformers' sdpa attention path raises on a call of 0 tokens (RuntimeError: cannot "
                           "reshape tensor of 0 elements ...)", features={"zero_length_call"}, versions="transformers==5.24.0")
DTYPES = ("float32", "bfloat16", "float16")


class _Attention(torch.nn.Module):
    """What sdpa_attention_forward reads from a decoder layer's attention module."""

    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups, self.is_causal = groups, True


def _config(heads, heads_kv, dim, capacity, window):
    from transformers import MistralConfig

    config = MistralConfig(hidden_size=heads * dim, num_attention_heads=heads, num_key_value_heads=heads_kv, head_dim=dim,
                           num_hidden_layers=1, sliding_window=window, max_position_embeddings=max(capacity, 1))
    config._attn_implementation = "sdpa"
    return config


def _drive(cache, config, steps, scale, windowed):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    make_mask = create_sliding_window_causal_mask if windowed else create_causal_mask
    batch, _, heads, dim = steps[0][0].shape
    module = _Attention(heads // steps[0][1].shape[2])
    results = []
    with torch.no_grad():
        for q, k, v, start in steps:
            n = q.shape[1]
            embeds = q.new_zeros(batch, n, heads * dim)  # the mask reads its batch, length and dtype
            positions = torch.arange(start, start + n)[None].expand(batch, -1)
            mask = make_mask(config, embeds, None, cache, positions)
            keys, values = cache.update(k.transpose(1, 2), v.transpose(1, 2), 0)
            out, _ = sdpa_attention_forward(module, q.transpose(1, 2), keys, values, mask, scaling=scale)
            layer = cache.layers[0]
            results.append((out, layer.keys.transpose(1, 2).clone(), layer.values.transpose(1, 2).clone()))
    return results


def _in_slot_order(results, k_cache, v_cache):
    """A grown cache's [B, L, Hkv, D] placed into the family's [B, S, Hkv, D] (slots past L as handed)."""
    placed = []
    for out, k, v in results:
        k_full, v_full = k_cache.clone(), v_cache.clone()
        k_full[:, :k.shape[1]], v_full[:, :v.shape[1]] = k, v
        placed.append((out, k_full, v_full))
    return placed


def _shape(steps, k_cache):
    batch, slots, heads_kv, dim = k_cache.shape
    return steps[0][0].shape[2], heads_kv, dim, slots


@variant("kv_cache", "transformers_static_cache", dtypes=DTYPES, requires=REQUIRES, limitations=[FULL_ONLY], known_failures=[EMPTY_CALLS])
def transformers_static_cache(steps, k_cache, v_cache, *, kind, window, scale):
    """transformers.StaticCache (StaticLayer), create_causal_mask, sdpa_attention_forward."""
    from transformers import StaticCache

    heads, heads_kv, dim, slots = _shape(steps, k_cache)
    config = _config(heads, heads_kv, dim, slots, None)
    cache = StaticCache(config=config, max_cache_len=slots)
    first = steps[0]
    cache.layers[0].lazy_initialization(first[1].transpose(1, 2), first[2].transpose(1, 2))
    with torch.no_grad():
        cache.layers[0].keys.copy_(k_cache.transpose(1, 2))
        cache.layers[0].values.copy_(v_cache.transpose(1, 2))
    return _drive(cache, config, steps, scale, windowed=False)


@variant("kv_cache", "transformers_dynamic_cache", dtypes=DTYPES, requires=REQUIRES, limitations=[FULL_ONLY, NOT_PREFILLED], known_failures=[EMPTY_CALLS])
def transformers_dynamic_cache(steps, k_cache, v_cache, *, kind, window, scale):
    """transformers.DynamicCache (DynamicLayer: torch.cat per call), create_causal_mask, sdpa_attention_forward."""
    from transformers import DynamicCache

    heads, heads_kv, dim, slots = _shape(steps, k_cache)
    config = _config(heads, heads_kv, dim, slots, None)
    return _in_slot_order(_drive(DynamicCache(config=config), config, steps, scale, windowed=False), k_cache, v_cache)


@variant("kv_cache", "transformers_static_sliding_cache", dtypes=DTYPES, requires=REQUIRES,
         limitations=[WINDOWED_ONLY, SHIFTED], known_failures=[EMPTY_CALLS])
def transformers_static_sliding_cache(steps, k_cache, v_cache, *, kind, window, scale):
    """transformers.StaticCache with a sliding_window config (StaticSlidingWindowLayer: roll / cat of the last w),
    create_sliding_window_causal_mask, sdpa_attention_forward."""
    from transformers import StaticCache

    heads, heads_kv, dim, slots = _shape(steps, k_cache)
    config = _config(heads, heads_kv, dim, slots, window)
    return _drive(StaticCache(config=config, max_cache_len=slots), config, steps, scale, windowed=True)


@variant("kv_cache", "transformers_dynamic_sliding_cache", dtypes=DTYPES, requires=REQUIRES,
         limitations=[WINDOWED_ONLY, SHIFTED], known_failures=[EMPTY_CALLS])
def transformers_dynamic_sliding_cache(steps, k_cache, v_cache, *, kind, window, scale):
    """transformers.DynamicCache with a sliding_window config (DynamicSlidingWindowLayer: the last w-1 tokens),
    create_sliding_window_causal_mask, sdpa_attention_forward."""
    from transformers import DynamicCache

    heads, heads_kv, dim, slots = _shape(steps, k_cache)
    config = _config(heads, heads_kv, dim, slots, window)
    return _drive(DynamicCache(config=config), config, steps, scale, windowed=True)
