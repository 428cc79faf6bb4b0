"""transformers' Gated DeltaNet layers (Qwen3.5, Qwen3-Next) driven with their own cache, as the model drives them.

``Qwen3_5GatedDeltaNet`` / ``Qwen3NextGatedDeltaNet`` ``(config, layer_idx=0)`` with the
case's weights, called once per step with one ``DynamicCache(config=...)`` (its
``LinearAttentionLayer`` keeps the conv and recurrent states; both models build that cache
in their forward): prefill, single-token decode (the layer's ``causal_conv1d_update`` and
recurrent path), multi-token extends on a warm cache (concatenated conv history and the
chunked rule), and a reset (a new cache, as a new sequence gets). The cache keeps W conv
inputs and reads the last W-1, so ``conv_state[..., 1:]`` is reported.

Qwen3.5 takes the case's weights as they are (separate ``in_proj_qkv``, ``in_proj_z``,
``in_proj_b``, ``in_proj_a``). Qwen3-Next fuses them and interleaves them per key-head
group: ``in_proj_qkvz`` rows are ``[H, q K | k K | v r V | z r V]`` and ``in_proj_ba``
rows ``[H, b r | a r]`` (r = HV // H; its ``fix_query_key_value_ordering`` undoes this),
so ``_qwen3_next_rows`` permutes the case's rows into that order. After the reordering
the conv channels are ``[q all | k all | v all]`` and value head j reads key head j // r,
as in Qwen3.5, so conv, A_log, dt_bias, norm and out_proj are copied unchanged.

Provenance: each layer calls module-level functions that transformers' hub dispatcher
binds at import time to fla's kernels when fla is importable, else to the torch code.
``transformers_qwen3_5_gdn_layer`` and ``transformers_qwen3_next_gdn_layer`` pin the torch
code of their own module for the duration of the call (each function's ``__wrapped__``);
``transformers_qwen3_5_gdn_layer_fla`` leaves the dispatcher's choice and is a GPU variant
(fla's chunk kernel needs a GPU driver). Each call checks which implementation ran and
says it in the description.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect

import torch

from harness import provenance
from harness.faults import LibraryFault
from harness.registry import KnownFailure, variant

QWEN3_5 = "transformers.models.qwen3_5.modeling_qwen3_5"
QWEN3_NEXT = "transformers.models.qwen3_next.modeling_qwen3_next"
DISPATCHED = ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule", "causal_conv1d_fn", "causal_conv1d_update")
# Errors of the library on an input its signature takes (a call of 0 tokens), not refusals: findings.
EMPTY_CALLS = KnownFailure("Qwen3_5GatedDeltaNet.forward raises on a zero-length call: z.reshape(B, 0, -1, V) (RuntimeError: "
                           "cannot reshape tensor of 0 elements ...)", features={"empty_call"}, versions="transformers==5.24.0")
NEXT_EMPTY_CALLS = KnownFailure("Qwen3NextGatedDeltaNet.forward raises on a zero-length call: fix_query_key_value_ordering's "
                                "value.reshape(B, 0, -1, V) (RuntimeError: cannot reshape tensor of 0 elements ...)",
                                features={"empty_call"}, versions="transformers==5.24.0")


def _qwen3_next_rows(heads_k, heads_v, dim_k, dim_v):
    """The row permutations from the case's layout to Qwen3-Next's fused, per-group one.

    Returns ``(qkvz, ba)``: ``in_proj_qkvz = cat([in_proj_qkv, in_proj_z])[qkvz]`` and
    ``in_proj_ba = cat([in_proj_b, in_proj_a])[ba]``. The case's rows are
    ``[q (H K) | k (H K) | v (HV V) | z (HV V)]`` and ``[b (HV) | a (HV)]``, heads in order;
    Qwen3-Next wants, for each key head g: its q and k rows, then the v and then the z rows
    of value heads g r .. g r + r - 1 (r = HV // H), and likewise b then a of those heads.
    """
    group = heads_v // heads_k
    q, k, v, z = torch.arange(2 * heads_k * dim_k + 2 * heads_v * dim_v).split(
        [heads_k * dim_k, heads_k * dim_k, heads_v * dim_v, heads_v * dim_v])
    qkvz = torch.cat([q.view(heads_k, dim_k), k.view(heads_k, dim_k), v.view(heads_k, group * dim_v),
                      z.view(heads_k, group * dim_v)], dim=1).flatten()
    b, a = torch.arange(2 * heads_v).view(2, heads_k, group)
    return qkvz, torch.cat([b, a], dim=1).flatten()


def _qwen3_5_projections(weights, heads_k, heads_v, dim_k, dim_v):
    return {name: weights[name] for name in ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a")}


def _qwen3_next_projections(weights, heads_k, heads_v, dim_k, dim_v):
    qkvz, ba = (rows.to(weights["in_proj_z"].device) for rows in _qwen3_next_rows(heads_k, heads_v, dim_k, dim_v))
    return {"in_proj_qkvz": torch.cat([weights["in_proj_qkv"], weights["in_proj_z"]])[qkvz],
            "in_proj_ba": torch.cat([weights["in_proj_b"], weights["in_proj_a"]])[ba]}


# module -> (its configuration module and config class, the layer class, the projections' weights)
LAYERS = {QWEN3_5: ("transformers.models.qwen3_5.configuration_qwen3_5", "Qwen3_5TextConfig", "Qwen3_5GatedDeltaNet",
                    _qwen3_5_projections),
          QWEN3_NEXT: ("transformers.models.qwen3_next.configuration_qwen3_next", "Qwen3NextConfig", "Qwen3NextGatedDeltaNet",
                       _qwen3_next_projections)}


def _layer(module, weights, heads_k, heads_v, dim_k, dim_v, eps):
    config_module, config_class, layer_class, projections = LAYERS[module]
    hidden, width = weights["out_proj"].shape[0], weights["conv"].shape[1]
    config = getattr(importlib.import_module(config_module), config_class)(
        hidden_size=hidden, num_hidden_layers=1, layer_types=["linear_attention"], linear_num_key_heads=heads_k,
        linear_num_value_heads=heads_v, linear_key_head_dim=dim_k, linear_value_head_dim=dim_v,
        linear_conv_kernel_dim=width, rms_norm_eps=eps, hidden_act="silu")
    layer = getattr(importlib.import_module(module), layer_class)(config, layer_idx=0).eval()
    with torch.no_grad():
        for name, weight in {**projections(weights, heads_k, heads_v, dim_k, dim_v), "out_proj": weights["out_proj"]}.items():
            getattr(layer, name).weight.copy_(weight)
        layer.A_log.copy_(weights["A_log"])
        layer.dt_bias.copy_(weights["dt_bias"])
        layer.norm.weight.copy_(weights["norm"])
        layer.conv1d.weight.copy_(weights["conv"][:, None, :])
    return layer.to(device=weights["conv"].device, dtype=weights["conv"].dtype), config


def _bound(fn) -> str:
    """The implementation transformers' dispatcher bound ``fn`` to, as module.name."""
    target = inspect.getclosurevars(fn).nonlocals.get("implementation", fn) if hasattr(fn, "__wrapped__") else fn
    return f"{target.__module__}.{target.__qualname__}"


@contextlib.contextmanager
def _torch_path(module_name):
    """Bind ``module_name``'s dispatched functions to their plain torch code while the block runs."""
    module = importlib.import_module(module_name)
    saved = {name: getattr(module, name) for name in DISPATCHED}
    try:
        for name, fn in saved.items():
            plain = getattr(fn, "__wrapped__", fn)
            setattr(module, name, plain)
            provenance.note(f"{plain.__module__}.{plain.__qualname__} (torch)")
        yield
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


def _run(module, weights, steps, heads_k, heads_v, dim_k, dim_v, eps):
    from transformers.cache_utils import DynamicCache

    layer, config = _layer(module, weights, heads_k, heads_v, dim_k, dim_v, eps)
    cache, results = None, []
    with torch.no_grad():
        for x, pos in steps:
            if pos == 0 or cache is None:
                cache = DynamicCache(config=config)
            y = layer(x, cache=cache)
            conv = cache.get_conv_state(0, state_idx=0)
            recurrent = cache.get_recurrent_state(0, state_idx=0)
            results.append((y, conv[..., 1:].clone(), recurrent.clone()))
    return results


@variant("gdn_block", "transformers_qwen3_5_gdn_layer", requires=(QWEN3_5,), dtypes=("float32", "bfloat16"),
         known_failures=[EMPTY_CALLS],
         description=f"{QWEN3_5}.Qwen3_5GatedDeltaNet with DynamicCache, its torch path pinned "
                     "(torch_chunk/recurrent_gated_delta_rule and causal_conv1d_fn/update .__wrapped__)")
def transformers_qwen3_5_gdn_layer(weights, steps, *, heads_k, heads_v, dim_k, dim_v, eps, **_):
    with _torch_path(QWEN3_5):
        return _run(QWEN3_5, weights, steps, heads_k, heads_v, dim_k, dim_v, eps)


@variant("gdn_block", "transformers_qwen3_5_gdn_layer_fla", device="cuda", requires=(QWEN3_5, "fla"),
         dtypes=("float32", "bfloat16"), known_failures=[EMPTY_CALLS],
         description=f"{QWEN3_5}.Qwen3_5GatedDeltaNet with DynamicCache as transformers dispatches it with fla "
                     "installed (fla's chunk and fused recurrent kernels)")
def transformers_qwen3_5_gdn_layer_fla(weights, steps, *, heads_k, heads_v, dim_k, dim_v, eps, **_):
    module = importlib.import_module(QWEN3_5)
    bound = {name: _bound(getattr(module, name)) for name in DISPATCHED}
    if not all(bound[name].startswith("fla.") for name in DISPATCHED[:2]):
        raise LibraryFault(f"transformers' dispatcher did not bind fla's kernels (bound: {bound}): the fla path is not what runs")
    for name in DISPATCHED:
        provenance.note(bound[name])
    return _run(QWEN3_5, weights, steps, heads_k, heads_v, dim_k, dim_v, eps)


@variant("gdn_block", "transformers_qwen3_next_gdn_layer", requires=(QWEN3_NEXT,), dtypes=("float32", "bfloat16"),
         known_failures=[NEXT_EMPTY_CALLS],
         description=f"{QWEN3_NEXT}.Qwen3NextGatedDeltaNet with DynamicCache (in_proj_qkvz / in_proj_ba: the case's rows "
                     "permuted per key-head group), its torch path pinned "
                     "(torch_chunk/recurrent_gated_delta_rule and causal_conv1d_fn/update .__wrapped__)")
def transformers_qwen3_next_gdn_layer(weights, steps, *, heads_k, heads_v, dim_k, dim_v, eps, **_):
    with _torch_path(QWEN3_NEXT):
        return _run(QWEN3_NEXT, weights, steps, heads_k, heads_v, dim_k, dim_v, eps)
