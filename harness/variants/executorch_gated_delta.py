"""ExecuTorch's C++ gated delta rule ops (``pip install 'attn-oracle[executorch]'``).

Conventions converted here, visibly: the ops take head-first ``[B, H, T, D]`` tensors,
a *linear* decay ``exp(g)``, no scale (q is pre-scaled) and one key head per state
head, with query heads a multiple of them; so q and k are repeated to the value heads
(value head h reads key head h // (HV // H), the oracle's mapping).
"""

from __future__ import annotations

import torch

from harness.native_io import native_stderr_silenced
from harness.registry import Limitation, variant

REQUIRES = ("executorch.extension.llm.custom_ops.custom_ops",)
LIMITATIONS = [
    Limitation("the op has no autograd formula", checks={"backward"}),
    Limitation("no in-kernel L2 normalisation of q and k", features={"l2norm"}),
    Limitation("no cu_seqlens: one sequence per batch row", features={"varlen", "padding"}),
]


def _heads_first(x):
    return x.transpose(1, 2).contiguous()


def _call(op, q, k, v, decay, beta, initial_state, scale):
    group = v.shape[2] // k.shape[2]
    q, k = q.repeat_interleave(group, dim=2) * scale, k.repeat_interleave(group, dim=2)
    with native_stderr_silenced():  # the kernels log 'No temp allocator provided' on every call
        out, state = op(_heads_first(q), _heads_first(k), _heads_first(v), _heads_first(decay), _heads_first(beta),
                        initial_state.contiguous())
    return out.transpose(1, 2), state


@variant("gated_delta", "executorch_gated_delta_rule", requires=REQUIRES, dtypes=("float32",), limitations=LIMITATIONS + [
    Limitation("llama.gated_delta_rule takes one gate per head; per-channel gates are the channelwise op", features={"channel_gate"}),
], repro="""
             from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers torch.ops.llama)
             # head-first [B, H, T, D] tensors, a linear decay exp(g), no scale (q pre-scaled), one key head per state head
             group = v.shape[2] // k.shape[2]
             q, k = q.repeat_interleave(group, dim=2) * scale, k.repeat_interleave(group, dim=2)
             out, final_state = torch.ops.llama.gated_delta_rule(
                 *(t.transpose(1, 2).contiguous() for t in (q, k, v, torch.exp(g), beta)), initial_state.contiguous())
             out = out.transpose(1, 2)
             """)
def executorch_gated_delta_rule(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens):
    """torch.ops.llama.gated_delta_rule (per-head gate)."""
    return _call(torch.ops.llama.gated_delta_rule, q, k, v, torch.exp(g), beta, initial_state, scale)


@variant("gated_delta", "executorch_channelwise_gated_delta_rule", requires=REQUIRES, dtypes=("float32",),
         limitations=LIMITATIONS + [Limitation("the channelwise op takes per-key-channel gates", features={"head_gate"})],
         repro="""
             from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers torch.ops.llama)
             # head-first [B, H, T, D] tensors, a linear decay exp(g), no scale (q pre-scaled), one key head per state head
             group = v.shape[2] // k.shape[2]
             q, k = q.repeat_interleave(group, dim=2) * scale, k.repeat_interleave(group, dim=2)
             out, final_state = torch.ops.llama.channelwise_gated_delta_rule(
                 *(t.transpose(1, 2).contiguous() for t in (q, k, v, torch.exp(g), beta)), initial_state.contiguous())
             out = out.transpose(1, 2)
             """)
def executorch_channelwise_gated_delta_rule(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens):
    """torch.ops.llama.channelwise_gated_delta_rule (per-key-channel gate)."""
    return _call(torch.ops.llama.channelwise_gated_delta_rule, q, k, v, torch.exp(g), beta, initial_state, scale)
