"""Deliberately broken gated delta rule and Gated DeltaNet block adapters, one bug each."""

from __future__ import annotations

import functools
import math

import torch


def plain_gated_delta(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens=None,
                      reset_between_documents=True, padding_updates_state=False, sequence=None, **knobs):
    """Correct with the defaults; varlen runs one document at a time from its own initial
    state. ``sequence`` replaces the per-token loop that runs each sequence."""
    one = sequence or _one_sequence
    if cu_seqlens is None:
        return one(q, k, v, g, beta, scale=scale, initial_state=initial_state, use_qk_l2norm=use_qk_l2norm, **knobs)
    bounds = cu_seqlens.tolist()
    if padding_updates_state:
        bounds[-1] = q.shape[1]  # the last document runs on through the padding
    outs, states, state = [], [], None
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        h0 = initial_state[i:i + 1] if reset_between_documents or state is None else state
        out, state = one(q[:, start:end], k[:, start:end], v[:, start:end], g[:, start:end], beta[:, start:end],
                         scale=scale, initial_state=h0, use_qk_l2norm=use_qk_l2norm, **knobs)
        outs.append(out)
        states.append(state)
    outs.append(v.new_zeros(1, q.shape[1] - bounds[-1], v.shape[2], v.shape[3]))
    return torch.cat(outs, 1), torch.cat(states, 0)


def _one_sequence(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm,
                      decay_after_update=False, use_beta=True, use_initial_state=True, chunk_readds_initial=0,
                      state_dtype=None, initial_state_transposed=False, detach=(), empty_state_unwritten=False,
                      wide_output=False, state_rounded_after_decay=False):
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
            if state_rounded_after_decay:  # a state buffer of state_dtype, written by the decay too
                state = state.to(state_dtype).to(q.dtype)
        carried = carried * decay[:, t]
        b = beta[:, t, :, None] if use_beta else 1.0
        delta = b * (v[:, t] - torch.einsum("bhkv,bhk->bhv", state, k[:, t]))
        state = state + torch.einsum("bhk,bhv->bhkv", k[:, t], delta)
        if decay_after_update:
            state = decay[:, t, :, :, None] * state
        if state_dtype is not None:
            state = state.to(state_dtype).to(q.dtype)
        if wide_output:
            outs.append(torch.einsum("bhkv,bhk->bhv", state.double(), (scale * q[:, t]).double()).to(q.dtype))
        else:
            outs.append(torch.einsum("bhkv,bhk->bhv", state, scale * q[:, t]))
    out = torch.stack(outs, 1) if outs else v.new_zeros(v.shape[0], 0, v.shape[2], v.shape[3])
    if empty_state_unwritten and not outs:  # forward value unwritten, gradient (a separate kernel) right
        state = state + (unwritten_like(state) - state).detach()
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


# ---------------------------------------------------------------------------------------
# Memory bugs (GUARD, UNINIT, DET): kernels that read past the end of their inputs, leave
# memory unwritten, or depend on what earlier calls left behind. Each is right on the
# ordinary inputs the old checks build, deterministically.

def unwritten_like(t: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(t)``: memory a kernel never wrote. Under
    ``poisoned_allocations`` it is NaN; elsewhere this emulates "the allocator returned
    zeros" (torch.zeros), so the old checks miss the bug deterministically instead of
    catching it by the luck of what the heap held."""
    if torch.utils.deterministic.fill_uninitialized_memory and torch.are_deterministic_algorithms_enabled():
        return torch.empty_like(t)
    return torch.zeros_like(t)


def read_in_tiles(x: torch.Tensor, tiles: dict[int, int]) -> torch.Tensor:
    """``x`` padded to a whole number of tiles along each dim of ``tiles``, the padding
    read straight from x's storage with x's strides (what an unmasked tile load reads:
    the next row, the next head, or whatever lies past the end of the allocation). Where
    the storage ends first, or x is not contiguous, the padding is zeros: the benign
    memory past the end of an ordinary input, emulated."""
    pad = []
    for dim in reversed(range(x.dim())):
        tile = tiles.get(dim)
        pad += [0, (-x.shape[dim]) % tile if tile else 0]
    zero_padded = torch.nn.functional.pad(x, pad)
    storage = x.untyped_storage().nbytes() // x.element_size()
    extent = x.storage_offset() + sum((n - 1) * s for n, s in zip(zero_padded.shape, x.stride())) + 1
    if x.numel() == 0 or not x.is_contiguous() or extent > storage:
        return zero_padded
    raw = torch.as_strided(x.detach(), zero_padded.shape, x.stride())
    inside = torch.ones((), dtype=torch.bool)
    for dim, tile in tiles.items():
        index = torch.arange(zero_padded.shape[dim]) < x.shape[dim]
        inside = inside & index.view(*[-1 if d == dim else 1 for d in range(x.dim())])
    return torch.where(inside, zero_padded, raw)


def masked_chunks(q, k, v, g, beta, valid, *, scale, state, l2norm, chunk=16, eps=1e-6):
    """The gated delta rule in chunks of ``chunk`` (WY form, per-head gates) over whole
    tiles: q, k ``[B, Tp, H, Kp]``, v ``[B, Tp, HV, V]``, g, beta ``[B, Tp, HV]``, ``state``
    ``[B, HV, Kp, V]``; tokens past the end (``valid`` 0) are masked by multiplying beta
    and g by 0, the usual trick that is exact for finite values and NaN for NaN. With
    ``l2norm`` q is normalised and k's norms are read off the diagonal of the chunk's
    raw Gram matrix (a fused kernel's shortcut), so a huge key overflows it to inf."""
    B, Tp, H, _ = q.shape
    HV = v.shape[2]
    beta, g = beta * valid[:, None], g * valid[:, None]
    group = HV // H
    q, k = q.repeat_interleave(group, 2).transpose(1, 2), k.repeat_interleave(group, 2).transpose(1, 2)
    v, g, beta = v.transpose(1, 2), g.transpose(1, 2), beta.transpose(1, 2)
    if l2norm:
        q = q * torch.rsqrt((q * q).sum(-1, keepdim=True) + eps)
    q = scale * q
    outs = []
    for start in range(0, Tp, chunk):
        part = slice(start, start + chunk)
        qc, kc, vc, bc = q[:, :, part], k[:, :, part], v[:, :, part], beta[:, :, part]
        gram = kc @ kc.transpose(-1, -2)
        if l2norm:
            r = torch.rsqrt(torch.diagonal(gram, dim1=-2, dim2=-1) + eps)  # [B, HV, C]
            gram = gram * r[..., :, None] * r[..., None, :]
            kc = kc * r[..., None]
        G = g[:, :, part].cumsum(-1)
        size = G.shape[-1]
        diff = G[..., :, None] - G[..., None, :]
        strict = torch.ones(size, size, dtype=torch.bool).tril(-1)
        inclusive = torch.ones(size, size, dtype=torch.bool).tril(0)
        a = bc[..., :, None] * torch.exp(diff.masked_fill(~strict, -math.inf)) * gram
        rhs = bc[..., None] * (vc - torch.exp(G)[..., None] * (kc @ state))
        eye = torch.eye(size, dtype=q.dtype)
        u = torch.linalg.solve_triangular(eye + a, rhs, upper=False, unitriangular=True)
        outs.append(torch.exp(G)[..., None] * (qc @ state)
                    + (torch.exp(diff.masked_fill(~inclusive, -math.inf)) * (qc @ kc.transpose(-1, -2))) @ u)
        state = torch.exp(G[..., -1])[..., None, None] * state + (kc * torch.exp(G[..., -1:] - G)[..., None]).transpose(-1, -2) @ u
    out = torch.cat(outs, 2).transpose(1, 2) if outs else v.new_zeros(B, 0, HV, v.shape[-1])
    return out, state


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _tiled_sequence(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, scrub_nan=False, tile_k=True):
    """One sequence through ``masked_chunks``, every input loaded in whole tiles of 16
    tokens (and q, k in a whole power-of-two tile of K, masked by multiplying the extra
    channels by 0) straight from its storage; ``scrub_nan`` zeroes NaN at the load."""
    if g.dim() == 4:
        raise ValueError("this chunked mutant takes one gate per head")
    T, K = q.shape[1], q.shape[-1]
    Kp = _next_power_of_two(K) if tile_k else K

    def load(x, along_k=False):
        x = read_in_tiles(x, {1: 16, **({3: Kp} if along_k and Kp != K else {})})
        return torch.where(torch.isnan(x), 0.0, x) if scrub_nan else x

    kvalid = (torch.arange(Kp) < K).to(q.dtype)
    qt, kt = load(q, True) * kvalid, load(k, True) * kvalid
    valid = (torch.arange(qt.shape[1]) < T).to(q.dtype)
    state = torch.nn.functional.pad(initial_state, (0, 0, 0, Kp - K))
    out, state = masked_chunks(qt, kt, load(v), load(g), load(beta), valid, scale=scale, state=state, l2norm=use_qk_l2norm)
    return out[:, :T], state[:, :, :K]


def chunk_reads_past_the_end(*a, **kw):
    """A chunked kernel that loads whole chunks of 16 tokens and whole power-of-two
    tiles of K straight from storage and masks the tail by multiplying by 0."""
    return plain_gated_delta(*a, **kw, sequence=_tiled_sequence)


def chunk_reads_past_the_end_nan_scrubbed(*a, **kw):
    """The same tile loads with NaN replaced by 0 at the load: a NaN tail is harmless,
    a huge finite one overflows the chunk's Gram matrix and its masking gives NaN."""
    return plain_gated_delta(*a, **kw, sequence=functools.partial(_tiled_sequence, scrub_nan=True, tile_k=False))


class _RecomputingBackward(torch.autograd.Function):
    """Forward: ``forward_fn`` without autograd; backward: autograd of ``backward_fn``
    recomputed on the saved inputs, then ``finish(grads, inputs)`` (a bug knob)."""

    @staticmethod
    def forward(ctx, spec, q, k, v, g, beta, h0):
        ctx.spec = spec
        ctx.save_for_backward(q, k, v, g, beta, h0)
        with torch.no_grad():
            return spec["forward_fn"](q, k, v, g, beta, initial_state=h0)

    @staticmethod
    def backward(ctx, dout, dstate):
        spec, saved = ctx.spec, ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in saved]  # the same storage as the inputs
            out, state = spec["backward_fn"](*leaves[:5], initial_state=leaves[5])
            grads = torch.autograd.grad([out, state], leaves, [dout, dstate], allow_unused=True)
        grads = [torch.zeros_like(t) if d is None else d for t, d in zip(saved, grads)]
        return (None, *spec.get("finish", lambda grads, inputs: grads)(grads, saved))


def _with_recomputed_backward(q, k, v, g, beta, *, initial_state, forward_fn, backward_fn, finish=None):
    spec = {"forward_fn": forward_fn, "backward_fn": backward_fn, **({"finish": finish} if finish else {})}
    return _RecomputingBackward.apply(spec, q, k, v, g, beta, initial_state)


def backward_reads_past_the_end(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens=None):
    """A right forward; its backward kernel recomputes in whole tiles loaded straight
    from the saved inputs' storage (chunk_reads_past_the_end's loads)."""
    kw = dict(scale=scale, use_qk_l2norm=use_qk_l2norm, cu_seqlens=cu_seqlens)
    return _with_recomputed_backward(q, k, v, g, beta, initial_state=initial_state,
                                     forward_fn=functools.partial(plain_gated_delta, **kw),
                                     backward_fn=functools.partial(chunk_reads_past_the_end, **kw))


def empty_call_leaves_the_state_unwritten(*a, **kw):
    """The final state of a zero-length call (and of an empty document) is allocated
    with torch.empty and never written: the kernel writes it at the end of its token
    loop, which never runs. (Its backward, a separate kernel, is right.) Emulated as
    zeros outside poisoned_allocations: right whenever the initial state is zero."""
    return plain_gated_delta(*a, **kw, empty_state_unwritten=True)


def padding_gradients_left_unwritten(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens=None):
    """A right forward; the backward allocates dq, dk, dv, dg, dbeta with torch.empty
    and writes only the documents' tokens, leaving the padding's gradients (exactly 0 by
    the contract) unwritten (zeros outside poisoned_allocations)."""
    kw = dict(scale=scale, use_qk_l2norm=use_qk_l2norm, cu_seqlens=cu_seqlens)
    end = int(cu_seqlens[-1]) if cu_seqlens is not None else q.shape[1]

    def finish(grads, inputs):
        written = []
        for d in grads[:5]:
            buffer = unwritten_like(d)
            buffer[:, :end] = d[:, :end]
            written.append(buffer)
        return (*written, grads[5])

    plain = functools.partial(plain_gated_delta, **kw)
    return _with_recomputed_backward(q, k, v, g, beta, initial_state=initial_state, forward_fn=plain, backward_fn=plain,
                                     finish=finish)


CALLS = [0]  # how many times output_order_depends_on_the_call_count has run


def output_order_depends_on_the_call_count(*a, **kw):
    """Every other call computes the outputs S^T q in float64 and rounds them (a split
    order chosen by a call counter, as a load balancer might): each call is accurate,
    two identical calls differ in the low bits."""
    CALLS[0] += 1
    return plain_gated_delta(*a, **kw, wide_output=CALLS[0] % 2 == 0)


WORKSPACES: dict = {}  # gradient_accumulates_into_an_uncleared_workspace's scratch, kept between calls


def gradient_accumulates_into_an_uncleared_workspace(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm,
                                                    cu_seqlens=None):
    """A right forward; the backward accumulates each gradient into a scratch buffer
    allocated (zeroed) on first use and kept, never cleared, between calls: the first
    backward is right, every later one adds the earlier gradients."""
    kw = dict(scale=scale, use_qk_l2norm=use_qk_l2norm, cu_seqlens=cu_seqlens)

    def finish(grads, inputs):
        out = []
        for i, d in enumerate(grads):
            buffer = WORKSPACES.setdefault((i, tuple(d.shape), d.dtype), torch.zeros_like(d))
            buffer += d
            out.append(buffer.clone())
        return tuple(out)

    plain = functools.partial(plain_gated_delta, **kw)
    return _with_recomputed_backward(q, k, v, g, beta, initial_state=initial_state, forward_fn=plain, backward_fn=plain,
                                     finish=finish)


# ---------------------------------------------------------------------------------------
# The Qwen3.5 Gated DeltaNet block (gdn_block family): a step-by-step driver of the
# reference block's pieces, correct with the defaults; each knob is a bug.

def _block_call(x, weights, conv, rec, *, heads_k, heads_v, dim_k, dim_v, eps, reset=False, tiles=False,
                scrub_nan=False, conv_update="right", wide_out_proj=False):
    """One call of ``reference.gated_deltanet_block`` written out, in the input dtype."""
    from reference.gated_deltanet_block import gated_rmsnorm, short_conv

    B, T, _ = x.shape
    width = weights["conv"].shape[1]
    pre = x @ weights["in_proj_qkv"].T
    _, new_conv = short_conv(pre, weights["conv"], conv)
    if conv_update == "unwritten_at_reset" and reset and 0 < T < width - 1:
        # the slots before the first input, zeros after a reset, are assumed zero and never written
        new_conv = torch.cat([unwritten_like(conv[..., :width - 1 - T]), pre.transpose(1, 2)], dim=-1)
    elif conv_update == "kept_when_filled_exactly" and T == width - 1:
        new_conv = conv  # the branches handle T < W - 1 and T > W - 1; T == W - 1 falls through
    if tiles:  # the whole block over tiles of 16 tokens read straight from x's storage
        x = read_in_tiles(x, {1: 16})
        x = torch.where(torch.isnan(x), 0.0, x) if scrub_nan else x
        pre = x @ weights["in_proj_qkv"].T
    Tp = x.shape[1]
    mixed, _ = short_conv(pre, weights["conv"], conv)
    q, k, v = torch.split(mixed, [heads_k * dim_k, heads_k * dim_k, heads_v * dim_v], dim=-1)
    q, k, v = q.reshape(B, Tp, heads_k, dim_k), k.reshape(B, Tp, heads_k, dim_k), v.reshape(B, Tp, heads_v, dim_v)
    z = (x @ weights["in_proj_z"].T).reshape(B, Tp, heads_v, dim_v)
    beta = torch.sigmoid(x @ weights["in_proj_b"].T)
    g = -torch.exp(weights["A_log"]) * torch.nn.functional.softplus(x @ weights["in_proj_a"].T + weights["dt_bias"])
    if tiles:
        valid = (torch.arange(Tp) < T).to(x.dtype)
        o, rec = masked_chunks(q, k, v, g, beta, valid, scale=dim_k ** -0.5, state=rec, l2norm=True)
    else:
        o, rec = _one_sequence(q, k, v, g, beta, scale=dim_k ** -0.5, initial_state=rec, use_qk_l2norm=True)
    o, z = o[:, :T], z[:, :T]
    flat = gated_rmsnorm(o, z, weights["norm"], eps).reshape(B, T, heads_v * dim_v)
    if wide_out_proj:
        y = (flat.double() @ weights["out_proj"].T.double()).to(x.dtype)
    else:
        y = flat @ weights["out_proj"].T
    return y, new_conv, rec


def block_steps(weights, steps, *, heads_k, heads_v, dim_k, dim_v, eps, reset=True, carry_conv=True, **knobs):
    """The block driven step by step in the input dtype (a right adapter with the defaults)."""
    shape = dict(heads_k=heads_k, heads_v=heads_v, dim_k=dim_k, dim_v=dim_v, eps=eps)
    batch, width = steps[0][0].shape[0], weights["conv"].shape[1]
    conv = steps[0][0].new_zeros(batch, weights["conv"].shape[0], width - 1)
    rec = steps[0][0].new_zeros(batch, heads_v, dim_k, dim_v)
    out = []
    for x, pos in steps:
        if pos == 0 and reset:
            conv, rec = torch.zeros_like(conv), torch.zeros_like(rec)
        if not carry_conv:
            conv = torch.zeros_like(conv)
        y, conv, rec = _block_call(x, weights, conv, rec, reset=pos == 0, **shape, **knobs)
        out.append((y, conv, rec))
    return out


def block_reads_past_the_end(weights, steps, **kw):
    """The block over whole tiles of 16 tokens read straight from x's storage, the delta
    rule in chunks with the tail masked by multiplying beta and g by 0."""
    return block_steps(weights, steps, **kw, tiles=True)


def block_reads_past_the_end_nan_scrubbed(weights, steps, **kw):
    """The same tile loads with NaN replaced by 0: a huge tail overflows the chunk's
    Gram matrix (k's norms read off its diagonal) and the masking gives NaN."""
    return block_steps(weights, steps, **kw, tiles=True, scrub_nan=True)


def block_conv_state_unwritten_at_reset(weights, steps, **kw):
    """At a reset call shorter than the conv state (W - 1), the new conv state's slots
    before the first input (zeros after the reset) are assumed zero and left unwritten
    (torch.empty; zeros outside poisoned_allocations)."""
    return block_steps(weights, steps, **kw, conv_update="unwritten_at_reset")


def block_conv_state_kept_when_the_call_fills_it(weights, steps, **kw):
    """A call of exactly W - 1 tokens (as long as the conv state) leaves the conv state
    as it was: the update handles shorter and longer calls only."""
    return block_steps(weights, steps, **kw, conv_update="kept_when_filled_exactly")


BLOCK_CALLS = [0]


def block_output_order_depends_on_the_call_count(weights, steps, **kw):
    """Every other run computes the output projection in float64 and rounds it (an order
    chosen by a call counter): each run is accurate, two identical runs differ in the low bits."""
    BLOCK_CALLS[0] += 1
    return block_steps(weights, steps, **kw, wide_out_proj=BLOCK_CALLS[0] % 2 == 0)


# -------------------------------------------------------- precision (the kernel grade)

def _in_float32(q, k, v, g, beta, *, initial_state, **kw):
    """plain_gated_delta with float32 arithmetic on the inputs as given, results rounded back."""
    out, state = plain_gated_delta(q.float(), k.float(), v.float(), g.float(), beta.float(),
                                   initial_state=initial_state.float(), **kw)
    return out.to(q.dtype), state.to(q.dtype)


def float32_state(q, k, v, g, beta, **kw):
    """Correct and well made: the state and every sum in float32, results rounded to the input dtype."""
    return _in_float32(q, k, v, g, beta, **kw)


def state_accumulated_in_input_dtype(q, k, v, g, beta, **kw):
    """Float32 arithmetic, but the state held in the input dtype: rounded after every
    token's decay and after its update, as a state buffer of that dtype is. As accurate
    as the naive low-precision code, far from a float32 state."""
    return _in_float32(q, k, v, g, beta, state_dtype=q.dtype, state_rounded_after_decay=True, **kw)
