"""The torch gated delta rule functions shipped in transformers (Qwen3.5), pinned to torch.

``transformers.models.qwen3_5.modeling_qwen3_5.torch_{recurrent,chunk}_gated_delta_rule``
are wrapped by a hub-kernel dispatcher that silently routes the call to fla's Triton
kernels whenever fla is importable (and drops keyword arguments the substitute does
not name). These adapters call ``fn.__wrapped__``, the plain torch code, so what is
tested is what the variant's name says (provenance in each description). The
functions always scale q by 1/sqrt(K) and take no cu_seqlens or per-channel gates.
"""

from __future__ import annotations

from harness.registry import Limitation, variant

MODULE = "transformers.models.qwen3_5.modeling_qwen3_5"
LIMITATIONS = [
    Limitation("one gate per head only (decay[..., None, None])", features={"channel_gate"}),
    Limitation("no cu_seqlens", features={"varlen", "padding"}),
    Limitation("no scale argument: q is always scaled by 1/sqrt(K)", features={"custom_scale"}),
]


def _plain(name: str):
    import importlib

    fn = getattr(importlib.import_module(MODULE), name)
    return getattr(fn, "__wrapped__", fn)  # bypass the hub-kernel dispatcher


def _check_scale(q, scale):
    if abs(scale - q.shape[-1] ** -0.5) > 1e-12:
        raise ValueError(f"transformers' functions always scale by 1/sqrt(K); the case asks for {scale}")


@variant("gated_delta", "transformers_torch_recurrent", requires=(MODULE,), dtypes=("float32", "bfloat16", "float16"),
         limitations=LIMITATIONS,
         description=f"{MODULE}.torch_recurrent_gated_delta_rule.__wrapped__ (plain torch; the hub dispatcher bypassed)")
def transformers_torch_recurrent(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens):
    _check_scale(q, scale)
    return _plain("torch_recurrent_gated_delta_rule")(q, k, v, g=g, beta=beta, initial_state=initial_state,
                                                      output_final_state=True, use_qk_l2norm_in_kernel=use_qk_l2norm)


@variant("gated_delta", "transformers_torch_chunk", requires=(MODULE,), dtypes=("float32", "bfloat16", "float16"),
         limitations=LIMITATIONS,
         description=f"{MODULE}.torch_chunk_gated_delta_rule.__wrapped__ (plain torch, chunks of 64; the hub dispatcher bypassed)")
def transformers_torch_chunk(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens):
    _check_scale(q, scale)
    return _plain("torch_chunk_gated_delta_rule")(q, k, v, g=g, beta=beta, initial_state=initial_state,
                                                  output_final_state=True, use_qk_l2norm_in_kernel=use_qk_l2norm)
