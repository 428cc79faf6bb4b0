"""ExecuTorch's whole ``AttentionMHA`` layer over the kv_cache schedules: its cache, its
mask, its SDPA, wired as its llama example wires them.

The layer computes ``q, k, v`` from one input ``x``; the adapter feeds
``x = [q | k | v]`` (flattened per token) with ``wq``, ``wk``, ``wv`` that select each
part and ``wo`` that returns the attention output in the first ``H D`` features: every
projection multiplies by exactly one 1 and adds zeros, so it is exact. RoPE is the
identity (cos 1, sin 0): the family has no positions in its keys. ``input_pos`` is the
call's first position, as the llama runner passes it.

Wirings: the example's default (``KVCache`` with ``enable_dynamic_shape``, the causal
``mask`` rows from ``input_pos``, its ``SDPA`` module); its ring (``RingKVCache`` of
2 x window slots, swapped in as ``replace_kv_cache_with_ring_kv_cache`` does, the
layer computing the ring's own mask after the update); and the export's custom ops
(``replace_kv_cache_with_custom_kv_cache`` + ``replace_sdpa_with_custom_op``:
``CustomKVCache`` / ``CustomRingKVCache`` and ``SDPACustom`` over ``llama.update_cache*``
and ``llama.custom_sdpa``).
"""

from __future__ import annotations

import inspect

import torch

from harness.native_io import native_stderr_silenced
from harness.registry import KnownFailure, Limitation, variant
from harness.variants.executorch_kv_cache import RING_EXTEND_OVERWRITES_ITS_WINDOW

REQUIRES = ("executorch.examples.models.llama.attention", "executorch.extension.llm.custom_ops.custom_ops")
NO_SCALE = Limitation("the layer has no scale argument: its SDPA scales by 1/sqrt(head_dim)", features={"custom_scale"})
STATIC = Limitation("the layer's KVCache writes slot p and masks causally: static caches only (ring caches are the ring wirings)",
                    features={"kind:sliding", "kind:ring"})
RING = [Limitation("a ring buffer with a sliding-window mask: ring caches only", features={"kind:static", "kind:sliding"}),
        Limitation("RingKVCache(window) allocates exactly 2 x window slots", features={"ring_capacity_not_twice_window"})]
ABORTS_ON_EMPTY_CALLS = Limitation("llama.update_cache aborts the process on a call of 0 tokens (ET_CHECK \"projected_value "
                                   "data is null\"; executorch 1.5.1)", features={"zero_length_call"})
# Reproduced with executorch 1.5.1, standalone (see the note of issue 13): a finding.
CUSTOM_RING_NEVER_WRITES_BATCHES = KnownFailure(
    "CustomRingKVCache.update hands llama.update_cache_with_indices indices of shape [1, n] whatever the batch; with "
    "more than one batch row the op logs 'Check failed (indices_tensor.size(0) == quantized_value.size(0))' and returns "
    "without writing and without raising, so the cache is never written and every call attends to stale slots; "
    "executorch 1.5.1, a finding", features={"batch_rows"},
    checks={"OUT", "SPLIT", "STATE", "SLOT", "INV", "GUARD:nan", "GUARD:huge", "UNINIT"}, versions="executorch==1.5.1")


def _calls(steps, k_cache, v_cache, window, ring: bool, custom_ops: bool):
    """Run the wiring's repro snippet itself: the adapter is exactly the script a finding gets."""
    scope = {"torch": torch, "steps": steps, "k_cache": k_cache, "v_cache": v_cache, "window": window}
    with native_stderr_silenced():  # the C++ ops log on every call
        exec(compile(_repro(ring, custom_ops), f"<AttentionMHA wiring ring={ring} custom_ops={custom_ops}>", "exec"), scope)
    return scope["results"]


def _repro(ring: bool, custom_ops: bool) -> str:
    """The adapter's body with torch and ExecuTorch only, for the findings' scripts."""
    swaps = ["custom_kv_cache._replace_kv_cache_with_ring_kv_cache(layer, window)"] if ring else []
    if custom_ops:
        swaps += ["holder = torch.nn.Module()", "holder.attention = layer",
                  "custom_kv_cache.replace_kv_cache_with_custom_kv_cache(holder)",
                  f"sdpa.replace_sdpa_with_custom_op(holder, use_attention_mask={ring})"]
    swapped = "\n".join(swaps)
    return inspect.cleandoc(f"""
        from executorch.examples.models.llama.attention import AttentionMHA
        from executorch.examples.models.llama.model_args import ModelArgs
        from executorch.examples.models.llama.source_transformation import custom_kv_cache, sdpa
        # AttentionMHA whose projections select q, k, v out of x = [q | k | v] (identity rope)
        batch, slots, heads_kv, dim = k_cache.shape
        heads = steps[0][0].shape[2]
        width = (heads + 2 * heads_kv) * dim
        args = ModelArgs(dim=width, n_heads=heads, n_kv_heads=heads_kv, head_dim=dim, max_batch_size=batch,
                         max_context_len=slots, max_seq_len=slots, use_kv_cache=True, enable_dynamic_shape=True)

        class IdentityRope(torch.nn.Module):
            def forward(self, q, k, freqs_cos, freqs_sin):
                return q, k

        layer = AttentionMHA(args, 0, IdentityRope()).eval()
        eye = torch.eye(width)
        with torch.no_grad():
            layer.wq.weight.copy_(eye[:heads * dim])
            layer.wk.weight.copy_(eye[heads * dim:(heads + heads_kv) * dim])
            layer.wv.weight.copy_(eye[(heads + heads_kv) * dim:])
            layer.wo.weight.copy_(eye[:, :heads * dim])
        {swapped.replace(chr(10), chr(10) + " " * 8)}
        layer.to(k_cache.dtype)
        bhsd = type(layer.kv_cache).__name__ in ("KVCache", "RingKVCache")  # the custom caches keep [B, S, H, D]
        with torch.no_grad():
            layer.kv_cache.k_cache.copy_(k_cache.transpose(1, 2) if bhsd else k_cache)
            layer.kv_cache.v_cache.copy_(v_cache.transpose(1, 2) if bhsd else v_cache)
        results = []
        with torch.no_grad():
            for q, k, v, start in steps:
                n = q.shape[1]
                x = torch.cat([t.reshape(batch, n, t.shape[2] * dim) for t in (q, k, v)], dim=-1)
                cos = torch.ones(n, dim // 2, dtype=x.dtype)
                y, _ = layer(x, cos, torch.zeros_like(cos), input_pos=torch.tensor([start], dtype=torch.long))
                k_now = layer.kv_cache.k_cache.transpose(1, 2) if bhsd else layer.kv_cache.k_cache
                v_now = layer.kv_cache.v_cache.transpose(1, 2) if bhsd else layer.kv_cache.v_cache
                results.append((y[..., :heads * dim].reshape(batch, n, heads, dim), k_now.clone(), v_now.clone()))
        """)


@variant("kv_cache", "executorch_attention_mha", dtypes=("float32", "bfloat16", "float16"), requires=REQUIRES,
         repro=_repro(ring=False, custom_ops=False), limitations=[STATIC, NO_SCALE])
def executorch_attention_mha(steps, k_cache, v_cache, *, kind, window, scale):
    """executorch...llama.attention.AttentionMHA (KVCache, causal mask rows, SDPA module), x = [q | k | v]."""
    return _calls(steps, k_cache, v_cache, window, ring=False, custom_ops=False)


@variant("kv_cache", "executorch_attention_mha_ring", dtypes=("float32", "bfloat16", "float16"), requires=REQUIRES,
         repro=_repro(ring=True, custom_ops=False),
         limitations=[*RING, NO_SCALE], known_failures=[RING_EXTEND_OVERWRITES_ITS_WINDOW])
def executorch_attention_mha_ring(steps, k_cache, v_cache, *, kind, window, scale):
    """AttentionMHA with RingKVCache(window) swapped in (the layer builds the ring's mask after each update)."""
    return _calls(steps, k_cache, v_cache, window, ring=True, custom_ops=False)


@variant("kv_cache", "executorch_attention_mha_custom_ops", dtypes=("float32", "bfloat16", "float16"), requires=REQUIRES,
         repro=_repro(ring=False, custom_ops=True),
         limitations=[STATIC, NO_SCALE, ABORTS_ON_EMPTY_CALLS])
def executorch_attention_mha_custom_ops(steps, k_cache, v_cache, *, kind, window, scale):
    """AttentionMHA after replace_kv_cache_with_custom_kv_cache + replace_sdpa_with_custom_op
    (CustomKVCache: llama.update_cache; SDPACustom: llama.custom_sdpa causal from start_pos)."""
    return _calls(steps, k_cache, v_cache, window, ring=False, custom_ops=True)


@variant("kv_cache", "executorch_attention_mha_custom_ring", dtypes=("float32", "bfloat16", "float16"), requires=REQUIRES,
         repro=_repro(ring=True, custom_ops=True),
         limitations=[*RING, NO_SCALE, ABORTS_ON_EMPTY_CALLS],
         known_failures=[CUSTOM_RING_NEVER_WRITES_BATCHES, RING_EXTEND_OVERWRITES_ITS_WINDOW])
def executorch_attention_mha_custom_ring(steps, k_cache, v_cache, *, kind, window, scale):
    """AttentionMHA with the ring swapped in, then the custom ops (CustomRingKVCache:
    llama.update_cache_with_indices; SDPACustom with the ring's mask: llama.custom_sdpa)."""
    return _calls(steps, k_cache, v_cache, window, ring=True, custom_ops=True)
