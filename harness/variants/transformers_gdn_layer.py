"""transformers' Qwen3.5 Gated DeltaNet layer driven with its own cache, as the model drives it.

``Qwen3_5GatedDeltaNet(config, layer_idx=0)`` with the case's weights, called once per
step with one ``DynamicCache(config=...)`` (its ``LinearAttentionLayer`` keeps the conv
and recurrent states): prefill, single-token decode (the layer's ``causal_conv1d_update``
and recurrent path), multi-token extends on a warm cache (concatenated conv history and
the chunked rule), and a reset (a new cache, as a new sequence gets). The cache keeps W
conv inputs and reads the last W-1, so ``conv_state[..., 1:]`` is reported.

Provenance: the layer calls module-level functions that transformers' hub dispatcher
binds at import time to fla's kernels when fla is importable, else to the torch code.
``transformers_qwen3_5_gdn_layer`` pins the torch code for the duration of the call
(each function's ``__wrapped__``); ``transformers_qwen3_5_gdn_layer_fla`` leaves the
dispatcher's choice and is a GPU variant (fla's chunk kernel needs a GPU driver). Each
call checks which implementation ran and says it in the description.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect

import torch

from harness import provenance
from harness.registry import Limitation, variant

MODULE = "transformers.models.qwen3_5.modeling_qwen3_5"
DISPATCHED = ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule", "causal_conv1d_fn", "causal_conv1d_update")
EMPTY_CALLS = Limitation("Qwen3_5GatedDeltaNet.forward raises on a zero-length call: z.reshape(B, 0, -1, V) (RuntimeError: "
                         "cannot reshape tensor of 0 elements ...; transformers 5.24)", features={"empty_call"})


def _layer(weights, heads_k, heads_v, dim_k, dim_v, eps):
    from transformers.models.qwen3_5.configuration_qwen3_5 import Qwen3_5TextConfig

    hidden, width = weights["out_proj"].shape[0], weights["conv"].shape[1]
    config = Qwen3_5TextConfig(hidden_size=hidden, num_hidden_layers=1, layer_types=["linear_attention"],
                               linear_num_key_heads=heads_k, linear_num_value_heads=heads_v, linear_key_head_dim=dim_k,
                               linear_value_head_dim=dim_v, linear_conv_kernel_dim=width, rms_norm_eps=eps,
                               hidden_act="silu")
    layer = importlib.import_module(MODULE).Qwen3_5GatedDeltaNet(config, layer_idx=0).eval()
    with torch.no_grad():
        for name in ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj"):
            getattr(layer, name).weight.copy_(weights[name])
        layer.A_log.copy_(weights["A_log"])
        layer.dt_bias.copy_(weights["dt_bias"])
        layer.norm.weight.copy_(weights["norm"])
        layer.conv1d.weight.copy_(weights["conv"][:, None, :])
    return layer.to(weights["conv"].dtype), config


def _bound(fn) -> str:
    """The implementation transformers' dispatcher bound ``fn`` to, as module.name."""
    target = inspect.getclosurevars(fn).nonlocals.get("implementation", fn) if hasattr(fn, "__wrapped__") else fn
    return f"{target.__module__}.{target.__qualname__}"


@contextlib.contextmanager
def _torch_path():
    """Bind the layer's dispatched functions to their plain torch code while the block runs."""
    module = importlib.import_module(MODULE)
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


def _run(weights, steps, heads_k, heads_v, dim_k, dim_v, eps):
    from transformers.cache_utils import DynamicCache

    layer, config = _layer(weights, heads_k, heads_v, dim_k, dim_v, eps)
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


@variant("gdn_block", "transformers_qwen3_5_gdn_layer", requires=(MODULE,), dtypes=("float32", "bfloat16"),
         limitations=[EMPTY_CALLS],
         description=f"{MODULE}.Qwen3_5GatedDeltaNet with DynamicCache, its torch path pinned "
                     "(torch_chunk/recurrent_gated_delta_rule and causal_conv1d_fn/update .__wrapped__)")
def transformers_qwen3_5_gdn_layer(weights, steps, *, heads_k, heads_v, dim_k, dim_v, eps, **_):
    with _torch_path():
        return _run(weights, steps, heads_k, heads_v, dim_k, dim_v, eps)


@variant("gdn_block", "transformers_qwen3_5_gdn_layer_fla", device="cuda", requires=(MODULE, "fla"),
         dtypes=("float32", "bfloat16"), limitations=[EMPTY_CALLS],
         description=f"{MODULE}.Qwen3_5GatedDeltaNet with DynamicCache as transformers dispatches it with fla "
                     "installed (fla's chunk and fused recurrent kernels)")
def transformers_qwen3_5_gdn_layer_fla(weights, steps, *, heads_k, heads_v, dim_k, dim_v, eps, **_):
    module = importlib.import_module(MODULE)
    bound = {name: _bound(getattr(module, name)) for name in DISPATCHED}
    if not all(bound[name].startswith("fla.") for name in DISPATCHED[:2]):
        raise RuntimeError(f"transformers' dispatcher did not bind fla's kernels (bound: {bound}): the fla path is not what runs")
    for name in DISPATCHED:
        provenance.note(bound[name])
    return _run(weights, steps, heads_k, heads_v, dim_k, dim_v, eps)
