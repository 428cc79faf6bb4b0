r"""The Qwen3.5 Gated DeltaNet block with its conv and recurrent state, in float64.

Short causal convolution (depthwise, width W, SiLU), with state: for channel c,
``y_t[c] = silu(sum_j w[c, j] x_{t-W+1+j}[c])``, where inputs before the call come from
``conv_state`` ``[B, C, W-1]`` (the previous W-1 inputs, oldest first; zeros at the start)
and the new state is the last W-1 inputs seen.

Gated RMSNorm over the value dim: ``rmsnorm(o) * weight * silu(z)``.

Block, for x ``[B, T, D]`` (weights as a dict, Linear weights ``[out, in]``)::

    qkv = short_conv(x W_qkv^T)  split into q, k [B, T, H, K] and v [B, T, HV, V]
    z = x W_z^T [B, T, HV, V];  beta = sigmoid(x W_b^T);  g = -exp(A_log) softplus(x W_a^T + dt_bias)
    o, S = gated_delta_rule(q, k, v, g, beta, scale=1/sqrt(K), initial_state=S, use_qk_l2norm=True)
    y = (gated_rmsnorm(o, z) reshaped [B, T, HV V]) W_out^T

Reset rule: a call whose first input position is 0 starts from zero conv and
recurrent states; any other call continues from the states the last call left.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reference.gated_delta import gated_delta_rule


def short_conv(x: torch.Tensor, weight: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x ``[B, T, C]``, weight ``[C, W]``, state ``[B, C, W-1]`` -> (y ``[B, T, C]``, new state)."""
    width = weight.shape[1]
    if x.shape[1] == 0:  # an empty call: no output, the state unchanged
        return x.new_zeros(x.shape), state
    history = torch.cat([state, x.transpose(1, 2)], dim=-1)  # [B, C, W-1+T]
    windows = history.unfold(-1, width, 1)  # [B, C, T, W]: window t ends at input t
    y = F.silu((windows * weight[None, :, None, :]).sum(-1)).transpose(1, 2)
    return y, history[..., history.shape[-1] - (width - 1):]


def gated_rmsnorm(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight * F.silu(gate)


def gated_deltanet_block(x, weights, conv_state, recurrent_state, *, heads_k, heads_v, dim_k, dim_v, eps=1e-6):
    """Return ``(y [B, T, D], conv_state [B, C, W-1], recurrent_state [B, HV, K, V])``."""
    batch, length, _ = x.shape
    mixed, conv_state = short_conv(x @ weights["in_proj_qkv"].T, weights["conv"], conv_state)
    q, k, v = torch.split(mixed, [heads_k * dim_k, heads_k * dim_k, heads_v * dim_v], dim=-1)
    q, k = q.reshape(batch, length, heads_k, dim_k), k.reshape(batch, length, heads_k, dim_k)
    v = v.reshape(batch, length, heads_v, dim_v)
    z = (x @ weights["in_proj_z"].T).reshape(batch, length, heads_v, dim_v)
    beta = torch.sigmoid(x @ weights["in_proj_b"].T)
    g = -torch.exp(weights["A_log"]) * F.softplus(x @ weights["in_proj_a"].T + weights["dt_bias"])
    o, recurrent_state = gated_delta_rule(q, k, v, g, beta, scale=dim_k ** -0.5, initial_state=recurrent_state,
                                          use_qk_l2norm=True)
    y = gated_rmsnorm(o, z, weights["norm"], eps).reshape(batch, length, heads_v * dim_v) @ weights["out_proj"].T
    return y, conv_state, recurrent_state
