r"""The gated delta rule as a per-token recurrence, from its equation.

For each value head h (reading key head ``g(h) = h // (HV // H)``) and token t, with
the state ``S`` of shape ``[K, V]`` (key channels by value channels)::

    S    <- diag(exp(g_t)) S                 decay first; g_t is a log-decay <= 0,
                                             one per head [B, T, HV] or per key channel [B, T, HV, K]
    v'_t  = S^T k_t                          what the state predicts for k_t
    S    <- S + k_t (beta_t (v_t - v'_t))^T  the delta-rule update
    o_t   = S^T (scale q_t)

Shapes: q, k ``[B, T, H, K]``; v ``[B, T, HV, V]``; g ``[B, T, HV]`` or ``[B, T, HV, K]``;
beta ``[B, T, HV]``; initial_state ``[B, HV, K, V]`` (zeros if None); out ``[B, T, HV, V]``;
final state ``[B, HV, K, V]``. ``scale`` defaults to 1/sqrt(K). With ``use_qk_l2norm`` q
and k are divided by their L2 norm over K first (``eps`` guards a zero vector).

Varlen: with ``cu_seqlens`` (canonical, [N+1]) the batch is one packed row (B = 1);
document i is tokens ``[cu[i], cu[i+1])``, starts from ``initial_state[i]`` (so
initial_state is ``[N, HV, K, V]``) and ends in ``final_state[i]``: the state is reset
at every document boundary. Tokens past ``cu[-1]`` are padding: they update no state
and their outputs are 0.
"""

from __future__ import annotations

import math

import torch


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    use_qk_l2norm: bool = False,
    eps: float = 1e-6,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(out [B, T, HV, V], final_state [B, HV, K, V])``."""
    if cu_seqlens is not None:
        return _by_document(gated_delta_rule, q, k, v, g, beta, cu_seqlens, initial_state,
                            scale=scale, use_qk_l2norm=use_qk_l2norm, eps=eps)
    batch, length, heads_k, dim_k = q.shape
    heads_v, dim_v = v.shape[2], v.shape[3]
    if heads_v % heads_k:
        raise ValueError(f"value heads HV={heads_v} are not a multiple of key heads H={heads_k}")
    scale = 1.0 / math.sqrt(dim_k) if scale is None else scale
    if use_qk_l2norm:
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + eps)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + eps)
    group = heads_v // heads_k
    q = q.repeat_interleave(group, dim=2)  # [B, T, HV, K]: value head h reads key head h // group
    k = k.repeat_interleave(group, dim=2)
    decay = torch.exp(g if g.dim() == 4 else g[..., None].expand(batch, length, heads_v, dim_k))  # [B, T, HV, K]
    state = q.new_zeros(batch, heads_v, dim_k, dim_v) if initial_state is None else initial_state
    outputs = []
    for t in range(length):
        state = decay[:, t, :, :, None] * state  # [B, HV, K, V]
        predicted = torch.einsum("bhkv,bhk->bhv", state, k[:, t])
        delta = beta[:, t, :, None] * (v[:, t] - predicted)  # [B, HV, V]
        state = state + torch.einsum("bhk,bhv->bhkv", k[:, t], delta)
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, scale * q[:, t]))
    out = torch.stack(outputs, dim=1) if outputs else v.new_zeros(batch, 0, heads_v, dim_v)
    return out, state


def chunked_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    use_qk_l2norm: bool = False,
    eps: float = 1e-6,
    chunk_size: int = 64,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The same rule in chunks (WY form); per-head gates only. A fast twin of
    ``gated_delta_rule``, trusted only because tests hold it to the recurrence.

    Inside a chunk with cumulative log-decay ``G_t`` and ``S_0`` the state at its start,
    the pseudo-values ``u_i = beta_i (v_i - k_i^T S'_i)`` solve the unit lower-triangular
    system ``(I + A) U = beta * (V - exp(G) K S_0)`` with
    ``A_ij = beta_i exp(G_i - G_j) k_i . k_j`` for j < i; then
    ``o_t = exp(G_t) S_0^T q_t + sum_{i<=t} exp(G_t - G_i) (q_t . k_i) u_i`` (q scaled) and
    ``S_C = exp(G_C) S_0 + sum_i exp(G_C - G_i) k_i u_i^T``.
    """
    if g.dim() != 3:
        raise ValueError("the chunked form takes one gate per head ([B, T, HV]); use gated_delta_rule for per-channel gates")
    if cu_seqlens is not None:
        return _by_document(chunked_gated_delta_rule, q, k, v, g, beta, cu_seqlens, initial_state,
                            scale=scale, use_qk_l2norm=use_qk_l2norm, eps=eps, chunk_size=chunk_size)
    batch, length, heads_k, dim_k = q.shape
    heads_v, dim_v = v.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(dim_k) if scale is None else scale
    if use_qk_l2norm:
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + eps)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + eps)
    group = heads_v // heads_k
    # heads first: [B, HV, T, D]
    q = (scale * q).repeat_interleave(group, dim=2).transpose(1, 2)
    k = k.repeat_interleave(group, dim=2).transpose(1, 2)
    v, g, beta = v.transpose(1, 2), g.transpose(1, 2), beta.transpose(1, 2)
    state = q.new_zeros(batch, heads_v, dim_k, dim_v) if initial_state is None else initial_state
    outputs = []
    for start in range(0, length, chunk_size):
        part = slice(start, min(start + chunk_size, length))
        qc, kc, vc, bc = q[:, :, part], k[:, :, part], v[:, :, part], beta[:, :, part]
        G = g[:, :, part].cumsum(-1)  # [B, HV, C]
        size = G.shape[-1]
        diff = G[..., :, None] - G[..., None, :]  # G_t - G_i
        strict = torch.ones(size, size, dtype=torch.bool, device=q.device).tril(-1)
        inclusive = torch.ones(size, size, dtype=torch.bool, device=q.device).tril(0)
        decay_strict = torch.exp(diff.masked_fill(~strict, -math.inf))
        decay_inclusive = torch.exp(diff.masked_fill(~inclusive, -math.inf))
        a = bc[..., :, None] * decay_strict * (kc @ kc.transpose(-1, -2))
        rhs = bc[..., None] * (vc - torch.exp(G)[..., None] * (kc @ state))
        eye = torch.eye(size, dtype=q.dtype, device=q.device)
        u = torch.linalg.solve_triangular(eye + a, rhs, upper=False, unitriangular=True)  # [B, HV, C, V]
        outputs.append(torch.exp(G)[..., None] * (qc @ state) + (decay_inclusive * (qc @ kc.transpose(-1, -2))) @ u)
        state = (torch.exp(G[..., -1])[..., None, None] * state
                 + (kc * torch.exp(G[..., -1:] - G)[..., None]).transpose(-1, -2) @ u)
    out = torch.cat(outputs, dim=2).transpose(1, 2) if outputs else v.new_zeros(batch, 0, heads_v, dim_v)
    return out, state


def _by_document(rule, q, k, v, g, beta, cu_seqlens, initial_state, **kwargs):
    """Run ``rule`` once per document of a packed row; see the module docstring."""
    if q.shape[0] != 1:
        raise ValueError(f"with cu_seqlens the batch must be one packed row, got B={q.shape[0]}")
    bounds = cu_seqlens.tolist()
    outs, states = [], []
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        h0 = None if initial_state is None else initial_state[i:i + 1]
        out, state = rule(q[:, start:end], k[:, start:end], v[:, start:end], g[:, start:end], beta[:, start:end],
                          initial_state=h0, **kwargs)
        outs.append(out)
        states.append(state)
    outs.append(v.new_zeros(1, q.shape[1] - bounds[-1], v.shape[2], v.shape[3]))  # padding rows
    return torch.cat(outs, dim=1), torch.cat(states, dim=0)
