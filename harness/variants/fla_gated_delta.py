"""flash-linear-attention (fla-core) gated delta rule (``pip install 'attn-oracle[fla]'``).

fla's conventions are the family's (time-first, log-space gates, state ``[N, HV, K, V]``,
``cu_seqlens``), so nothing is converted but the names. Without a GPU the Triton
kernel runs under the Triton interpreter: ``TRITON_INTERPRET=1`` must be set before
triton is first imported, so this module sets it on import when CUDA is absent.
"""

from __future__ import annotations

import os

import torch

from harness.registry import Limitation, variant

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

NO_BACKWARD_HERE = Limitation("not differentiated here: fla's backward kernels are not run under the Triton interpreter",
                              checks={"backward"})


@variant("gated_delta", "fla_fused_recurrent", requires=("fla.ops.gated_delta_rule",), dtypes=("float32",),
         limitations=[NO_BACKWARD_HERE])
def fla_fused_recurrent(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens):
    """fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule (Triton; interpreted on CPU)."""
    from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule

    gates = {"gk": g} if g.dim() == 4 else {"g": g}
    return fused_recurrent_gated_delta_rule(q, k, v, beta=beta, scale=scale, initial_state=initial_state,
                                            output_final_state=True, use_qk_l2norm_in_kernel=use_qk_l2norm,
                                            cu_seqlens=None if cu_seqlens is None else cu_seqlens.long(), **gates)


@variant("gated_delta", "fla_naive_recurrent", requires=("fla.ops.gated_delta_rule.naive",),
         dtypes=("float32", "bfloat16", "float16"), limitations=[
             Limitation("fla's naive reference takes one gate per head", features={"channel_gate"}),
             Limitation("fla's naive reference has no cu_seqlens", features={"varlen", "padding"}),
             Limitation("fla's naive reference has no in-kernel L2 norm", features={"l2norm"}),
         ])
def fla_naive_recurrent(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens):
    """fla.ops.gated_delta_rule.naive.naive_recurrent_gated_delta_rule (fla's own torch reference)."""
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

    group = v.shape[2] // k.shape[2]  # the naive reference wants one key head per value head
    return naive_recurrent_gated_delta_rule(q.repeat_interleave(group, 2), k.repeat_interleave(group, 2), v, beta=beta, g=g,
                                            scale=scale, initial_state=initial_state, output_final_state=True)


@variant("gated_delta", "fla_chunk", device="cuda", requires=("fla.ops.gated_delta_rule",),
         dtypes=("float32", "bfloat16", "float16"),
         limitations=[Limitation("chunk_gated_delta_rule takes one gate per head", features={"channel_gate"})])
def fla_chunk(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens):
    """fla.ops.gated_delta_rule.chunk_gated_delta_rule (Triton, GPU only: its autotuner needs a GPU driver)."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    return chunk_gated_delta_rule(q, k, v, g=g, beta=beta, scale=scale, initial_state=initial_state,
                                  output_final_state=True, use_qk_l2norm_in_kernel=use_qk_l2norm,
                                  cu_seqlens=None if cu_seqlens is None else cu_seqlens.long())
