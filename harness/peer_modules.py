"""The peers' modules as program inputs: ExecuTorch's ``AttentionMHA`` and
``AttentionGatedDeltaNet`` loaded with a case's weights, behind the call signature of
the reference module that is their truth (``reference.modules``).

Conventions converted here, visibly: AttentionMHA gets RoPE frequencies of the identity
rotation (cos 1, sin 0: the reference has no RoPE) and returns its KV cache buffers
``[B, Hkv, S, D]``; AttentionGatedDeltaNet keeps W conv inputs and reads the last W-1,
so its conv state is reported as ``conv_state[..., 1:]``; its conv weight is ``[C, 1, W]``.
Both need ExecuTorch (the ``executorch`` extra).
"""

from __future__ import annotations

import torch
from torch import nn

REQUIRES = ("executorch.examples.models.llama.attention", "executorch.extension.llm.custom_ops.custom_ops")

_GDN_PARAMETERS = {"in_proj_qkv": "in_proj_qkv.weight", "in_proj_z": "in_proj_z.weight",
                   "in_proj_b": "in_proj_b.weight", "in_proj_a": "in_proj_a.weight", "A_log": "A_log",
                   "dt_bias": "dt_bias", "norm": "norm.weight", "out_proj": "out_proj.weight"}


def gated_deltanet_block(weights: dict[str, torch.Tensor], batch: int, heads_k: int, heads_v: int, dim_k: int,
                         dim_v: int, eps: float = 1e-6):
    """ExecuTorch's AttentionGatedDeltaNet with the reference block's weights (``reference.gated_deltanet_block``)."""
    from executorch.examples.models.llama.attention import AttentionGatedDeltaNet
    from executorch.examples.models.llama.model_args import ModelArgs

    hidden = weights["out_proj"].shape[0]
    args = ModelArgs(dim=hidden, n_heads=1, head_dim=hidden, linear_conv_kernel_dim=weights["conv"].shape[1],
                     linear_key_head_dim=dim_k, linear_value_head_dim=dim_v, linear_num_key_heads=heads_k,
                     linear_num_value_heads=heads_v, norm_eps=eps, max_batch_size=batch)
    block = AttentionGatedDeltaNet(args, 0, None).eval()
    with torch.no_grad():
        params = dict(block.named_parameters())
        for name, path in _GDN_PARAMETERS.items():
            params[path].copy_(weights[name])
        params["conv1d.weight"].copy_(weights["conv"][:, None, :])
    return block.to(weights["conv"].dtype)


class ExecuTorchGatedDeltaNet(nn.Module):
    """x ``[B, T, D]``, input_pos ``[1]`` -> ``(y, conv_state [B, C, W-1], recurrent_state [B, HV, K, V])``,
    as ``reference.modules.GatedDeltaNetBlock``."""

    def __init__(self, weights, batch, heads_k, heads_v, dim_k, dim_v):
        super().__init__()
        self.block = gated_deltanet_block(weights, batch, heads_k, heads_v, dim_k, dim_v)
        self.batch = batch

    def forward(self, x, input_pos):
        y, _ = self.block(x, None, None, input_pos=input_pos)
        return y, self.block.conv_state[:self.batch, :, 1:].clone(), self.block.recurrent_state[:self.batch].clone()


class ExecuTorchAttentionMHA(nn.Module):
    """x ``[B, T, E]``, input_pos ``[1]`` -> ``(out [B, T, E], k_cache, v_cache)``, as
    ``reference.modules.BufferedCacheAttention``: AttentionMHA with a KV cache of ``capacity``
    slots, dynamic-shape cache updates, and ExecuTorch's SDPA module."""

    def __init__(self, weights: dict[str, torch.Tensor], heads: int, heads_kv: int, head_dim: int, capacity: int,
                 batch: int = 1):
        super().__init__()
        from executorch.examples.models.llama.attention import AttentionMHA
        from executorch.examples.models.llama.model_args import ModelArgs

        dim = weights["wq"].shape[1]
        args = ModelArgs(dim=dim, n_heads=heads, n_kv_heads=heads_kv, head_dim=head_dim, max_batch_size=batch,
                         max_context_len=capacity, max_seq_len=capacity, use_kv_cache=True, enable_dynamic_shape=True)
        self.attention = AttentionMHA(args, 0, _IdentityRope()).eval()
        with torch.no_grad():
            for name in ("wq", "wk", "wv", "wo"):
                getattr(self.attention, name).weight.copy_(weights[name])
        self.attention.to(weights["wq"].dtype)
        self.half_dim = head_dim // 2

    def forward(self, x, input_pos):
        length = x.shape[1]
        cos = torch.ones(length, self.half_dim, dtype=x.dtype)
        sin = torch.zeros(length, self.half_dim, dtype=x.dtype)
        out, _ = self.attention(x, cos, sin, input_pos=input_pos)
        cache = self.attention.kv_cache
        return out, cache.k_cache.clone(), cache.v_cache.clone()


class _IdentityRope(nn.Module):
    """AttentionMHA's rope argument: ExecuTorch's own rotation, given cos 1 and sin 0 by the caller."""

    def forward(self, q, k, freqs_cos, freqs_sin):
        from executorch.examples.models.llama.rope import apply_rotary_emb

        return apply_rotary_emb(q, k, freqs_cos, freqs_sin)
