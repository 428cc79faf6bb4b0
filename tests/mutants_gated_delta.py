"""Deliberately broken gated delta rule adapters, one bug each."""

from __future__ import annotations

import torch


def plain_gated_delta(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens=None,
                      reset_between_documents=True, padding_updates_state=False, **knobs):
    """Correct with the defaults; varlen runs one document at a time from its own initial state."""
    if cu_seqlens is None:
        return _one_sequence(q, k, v, g, beta, scale=scale, initial_state=initial_state, use_qk_l2norm=use_qk_l2norm, **knobs)
    bounds = cu_seqlens.tolist()
    if padding_updates_state:
        bounds[-1] = q.shape[1]  # the last document runs on through the padding
    outs, states, state = [], [], None
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        h0 = initial_state[i:i + 1] if reset_between_documents or state is None else state
        out, state = _one_sequence(q[:, start:end], k[:, start:end], v[:, start:end], g[:, start:end], beta[:, start:end],
                                   scale=scale, initial_state=h0, use_qk_l2norm=use_qk_l2norm, **knobs)
        outs.append(out)
        states.append(state)
    outs.append(v.new_zeros(1, q.shape[1] - bounds[-1], v.shape[2], v.shape[3]))
    return torch.cat(outs, 1), torch.cat(states, 0)


def _one_sequence(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm,
                      decay_after_update=False, use_beta=True, use_initial_state=True, chunk_readds_initial=0,
                      state_dtype=None, initial_state_transposed=False, detach=()):
    """Correct with the defaults (computes in the input dtype); each keyword after use_qk_l2norm is a bug knob."""
    if use_qk_l2norm:
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    if "beta" in detach:
        beta = beta.detach()
    if "g" in detach:
        g = g.detach()
    group = v.shape[2] // k.shape[2]
    q, k = q.repeat_interleave(group, 2), k.repeat_interleave(group, 2)
    decay = torch.exp(g)
    if decay.dim() == 3:
        decay = decay[..., None].expand(*decay.shape, k.shape[-1])
    h0 = initial_state
    if initial_state_transposed:  # reads [K, V] memory as if it were [V, K]
        h0 = h0.reshape(h0.shape[0], h0.shape[1], h0.shape[3], h0.shape[2]).transpose(-1, -2)
    state = h0 if use_initial_state else torch.zeros_like(h0)
    carried = torch.ones_like(decay[:, 0]) if decay.shape[1] else None
    outs = []
    for t in range(q.shape[1]):
        if chunk_readds_initial and t and t % chunk_readds_initial == 0:
            state = state + carried[..., None] * h0  # the initial state's contribution added again
        if not decay_after_update:
            state = decay[:, t, :, :, None] * state
        carried = carried * decay[:, t]
        b = beta[:, t, :, None] if use_beta else 1.0
        delta = b * (v[:, t] - torch.einsum("bhkv,bhk->bhv", state, k[:, t]))
        state = state + torch.einsum("bhk,bhv->bhkv", k[:, t], delta)
        if decay_after_update:
            state = decay[:, t, :, :, None] * state
        if state_dtype is not None:
            state = state.to(state_dtype).to(q.dtype)
        outs.append(torch.einsum("bhkv,bhk->bhv", state, scale * q[:, t]))
    out = torch.stack(outs, 1) if outs else v.new_zeros(v.shape[0], 0, v.shape[2], v.shape[3])
    return out, state


def decay_after_update(*a, **kw):
    return plain_gated_delta(*a, **kw, decay_after_update=True)


def beta_dropped(*a, **kw):
    return plain_gated_delta(*a, **kw, use_beta=False)


def initial_state_ignored(*a, **kw):
    return plain_gated_delta(*a, **kw, use_initial_state=False)


def initial_state_counted_twice_across_chunks(*a, **kw):
    return plain_gated_delta(*a, **kw, chunk_readds_initial=16)


def state_kept_in_bf16(*a, **kw):
    return plain_gated_delta(*a, **kw, state_dtype=torch.bfloat16)


def initial_state_read_transposed(*a, **kw):
    return plain_gated_delta(*a, **kw, initial_state_transposed=True)


def beta_gradient_lost(*a, **kw):
    return plain_gated_delta(*a, **kw, detach=("beta",))


def gate_gradient_lost(*a, **kw):
    return plain_gated_delta(*a, **kw, detach=("g",))


def state_not_reset_between_documents(*a, **kw):
    return plain_gated_delta(*a, **kw, reset_between_documents=False)


def padding_updates_the_state(*a, **kw):
    return plain_gated_delta(*a, **kw, padding_updates_state=True)


def initial_state_ignored_without_cu_seqlens(q, k, v, g, beta, *, cu_seqlens=None, initial_state, **kw):
    """Right on packed rows; a plain (non-varlen) call drops its initial state."""
    if cu_seqlens is None:
        initial_state = torch.zeros_like(initial_state)
    return plain_gated_delta(q, k, v, g, beta, cu_seqlens=cu_seqlens, initial_state=initial_state, **kw)
