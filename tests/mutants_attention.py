"""Deliberately broken attention adapters, one bug each, for proving the checks can fail.

All share ``plain_attention`` (correct, in the input dtype) and change one thing.
"""

from __future__ import annotations

import math

import torch


def plain_attention(q, k, v, *, scale, causal, window, alignment, mask, softcap,
                    align=None, scale_factor=1.0, head_map="grouped", hide="masked_fill", empty_rows="zero",
                    accumulate=None):
    """Correct with the defaults; each keyword argument after ``softcap`` is a bug knob."""
    len_q, len_k = q.shape[-2], k.shape[-2]
    group = q.shape[1] // k.shape[1]
    if head_map == "grouped":
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    else:  # "tiled": query head h reads kv head h % Hkv
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    s = (q @ k.transpose(-1, -2)) * scale * scale_factor
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    shift = (len_k - len_q) if (align or alignment) == "bottom_right" else 0
    i = torch.arange(len_q)[:, None] + shift
    j = torch.arange(len_k)[None, :]
    keep = torch.ones(len_q, len_k, dtype=torch.bool)
    left, right = window if window is not None else (None, None)
    if causal:
        keep = keep & (j <= i)
    if left is not None:
        keep = keep & (j >= i - left)
    if right is not None:
        keep = keep & (j <= i + right)
    if mask is not None:
        if mask.dtype == torch.bool:
            keep = keep & mask
        else:
            s = s + mask.masked_fill(~keep, 0.0) if hide != "masked_fill" else s + mask
            keep = keep & ~torch.isneginf(mask)  # a row the additive mask hides entirely is empty too
    if hide == "masked_fill":
        s = s.masked_fill(~keep, -math.inf)
    elif hide == "fill_minus_90":
        s = s.masked_fill(~keep, -90.0)
    elif hide == "bias_minus_30":
        s = s + (~keep) * -30.0
    elif hide == "bias_minus_90":
        s = s + (~keep) * -90.0
    elif hide == "additive_inf":
        s = s + torch.zeros_like(s).masked_fill(~keep, -math.inf)
    empty = ~keep.expand_as(s).any(-1, keepdim=True)
    p = torch.softmax(s.masked_fill(empty, 0.0) if empty_rows == "zero" and hide == "masked_fill" else s, dim=-1)
    if empty_rows == "zero":
        p = torch.where(empty, 0.0, p)
    return p @ v if accumulate is None else _summed_key_by_key(p, v, accumulate)


def _summed_key_by_key(p, v, dtype):
    """P @ V [B, H, Lq, Dv] summed one key at a time into an accumulator of ``dtype``
    (each partial sum rounded to it, as a kernel with a ``dtype`` accumulator does)."""
    acc = p.new_zeros(*p.shape[:-1], v.shape[-1]).to(dtype)
    for j in range(v.shape[-2]):
        acc = (acc.to(p.dtype) + p[..., j, None] * v[..., j, None, :]).to(dtype)
    return acc.to(p.dtype)


def top_left_instead_of_bottom_right(q, k, v, **kw):
    return plain_attention(q, k, v, **kw, align="top_left")


def scale_applied_twice(q, k, v, **kw):
    return plain_attention(q, k, v, **kw, scale_factor=kw["scale"])


def gqa_heads_tiled(q, k, v, **kw):
    return plain_attention(q, k, v, **kw, head_map="tiled")


def nan_on_fully_masked_row(q, k, v, **kw):
    return plain_attention(q, k, v, **kw, empty_rows="softmax")


def masked_keys_leak_through_finite_bias(q, k, v, **kw):
    """Hides keys by adding -30 to their scores: invisible on clean data, not on large keys."""
    return plain_attention(q, k, v, **kw, hide="bias_minus_30")


def masked_scores_filled_with_minus_90(q, k, v, **kw):
    """exp(-90) is a tiny float32 number, not 0: gradients of hidden keys are not exactly 0."""
    return plain_attention(q, k, v, **kw, hide="fill_minus_90")


def masked_scores_biased_by_minus_90(q, k, v, **kw):
    """Like the -90 fill, but as a bias, so the tiny weights also reach dk."""
    return plain_attention(q, k, v, **kw, hide="bias_minus_90")


def nan_gradient_on_fully_masked_row(q, k, v, **kw):
    """Masks with an additive -inf and zeroes empty rows after the softmax: right forward, NaN backward."""
    return plain_attention(q, k, v, **kw, hide="additive_inf")


def key_detached(q, k, v, **kw):
    """Forward right, dk silently 0."""
    return plain_attention(q, k.detach(), v, **kw)


class _NoCentering(torch.autograd.Function):
    """Right forward; backward forgets the softmax Jacobian's centring term (dS = P * dP)."""

    @staticmethod
    def forward(ctx, q, k, v, scale):
        p = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)
        ctx.save_for_backward(q, k, v, p)
        ctx.scale = scale
        return p @ v

    @staticmethod
    def backward(ctx, dout):
        q, k, v, p = ctx.saved_tensors
        dv = p.transpose(-1, -2) @ dout
        ds = p * (dout @ v.transpose(-1, -2)) * ctx.scale  # missing "- rowsum(P * dP)"
        return ds @ k, ds.transpose(-1, -2) @ q, dv, None


def softmax_backward_without_centering(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return _NoCentering.apply(q, k, v, scale)


class _FirstHeadOfGroupGrad(torch.autograd.Function):
    """Repeats kv heads for GQA; backward keeps only the first query head's gradient
    instead of summing the group (a classic GQA backward bug)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.repeat_interleave(group, dim=1)

    @staticmethod
    def backward(ctx, grad):
        b, h, length, d = grad.shape
        return grad.reshape(b, h // ctx.group, ctx.group, length, d)[:, :, 0], None


def gqa_gradient_not_summed(q, k, v, **kw):
    group = q.shape[1] // k.shape[1]
    return plain_attention(q, _FirstHeadOfGroupGrad.apply(k, group), _FirstHeadOfGroupGrad.apply(v, group), **kw)


def _reads_storage_as_contiguous(x):
    strides = torch.empty(x.shape).stride()
    return x.as_strided(x.shape, strides, x.storage_offset())


def assumes_contiguous_inputs(q, k, v, **kw):
    """Reads each tensor's storage as if it were contiguous (ignores strides)."""
    return plain_attention(_reads_storage_as_contiguous(q), _reads_storage_as_contiguous(k),
                           _reads_storage_as_contiguous(v), **kw)


# ---------------------------------------------------------------------------- memory conditions
# Each of these is right on ordinary inputs, so OUT, GRAD, FIN, ZERO, INV and LAYOUT pass;
# only the condition its check creates shows the bug.

TILE = 16  # the kernels below load keys in tiles of 16 rows


def _poisoned_allocations_on() -> bool:
    """Whether fresh memory is NaN now (inside ``poisoned_allocations``)."""
    return torch.utils.deterministic.fill_uninitialized_memory and torch.are_deterministic_algorithms_enabled()


def _allocated(*shape, like):
    """What a kernel's ``torch.empty`` returns: NaN under poisoned allocations; elsewhere
    zeros, as a fresh page from the allocator often is (so the ordinary checks miss it)."""
    return (torch.empty if _poisoned_allocations_on() else torch.zeros)(*shape, dtype=like.dtype, device=like.device)


def key_tile(x: torch.Tensor, tile: int = TILE) -> torch.Tensor:
    """x [B, H, L, D] with L rounded up to a whole tile, as a kernel loads it: the rows past L
    come straight from x's storage where it has them (the next head's rows, or whatever lies
    past the end of the allocation), else zeros (an allocation that ends with x)."""
    if not x.is_contiguous():
        x = x.contiguous()
    B, H, L, D = x.shape
    padded = -(-L // tile) * tile
    room = x.untyped_storage().nbytes() // x.element_size() - x.storage_offset()
    if room >= x.numel() + (padded - L) * D:
        return torch.as_strided(x, (B, H, padded, D), (H * L * D, L * D, D, 1), x.storage_offset())
    return torch.cat([x, x.new_zeros(B, H, padded - L, D)], dim=2)


def _visible(len_q, len_k, *, causal, window, alignment, mask):
    """Bool [B or 1, 1, Lq, Lk] (the bool part of the masking); an additive mask is returned apart."""
    from harness.variants._masks import rows_visible

    keep = rows_visible(torch.arange(len_q), len_q, len_k, causal=causal, window=window, alignment=alignment)[None, None]
    bias = None
    if mask is not None and mask.dtype == torch.bool:
        keep = keep & mask
    elif mask is not None:
        keep, bias = keep & ~torch.isneginf(mask), mask.masked_fill(torch.isneginf(mask), 0.0)
    return keep, bias


def tiled_attention(q, k, v, *, scale, causal, window, alignment, mask, softcap, fault="v_tail"):
    """Keys and values loaded in whole tiles of 16 rows (``key_tile``); scores of the rows
    past Lk masked. ``fault``: "v_tail" multiplies the padded value rows by their exact-0
    weights (0 x NaN is NaN); "nan_skipping_max" loads values masked but takes the row max
    over the raw padded tile with a NaN-ignoring max, so a NaN tail is skipped and a huge
    one is not."""
    len_q, len_k = q.shape[-2], k.shape[-2]
    group = q.shape[1] // k.shape[1]
    k_tile, v_tile = key_tile(k).repeat_interleave(group, 1), key_tile(v).repeat_interleave(group, 1)
    padded = k_tile.shape[-2]
    s = (q @ k_tile.transpose(-1, -2)) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    keep, bias = _visible(len_q, len_k, causal=causal, window=window, alignment=alignment, mask=mask)
    inside = torch.arange(padded) < len_k
    keep = torch.cat([keep.expand(*keep.shape[:-1], len_k), keep.new_zeros(*keep.shape[:-1], padded - len_k)], -1)
    if bias is not None:
        s = s + torch.cat([bias, bias.new_zeros(*bias.shape[:-1], padded - len_k)], -1)
    if fault == "v_tail":
        masked = s.masked_fill(~keep, -math.inf)
        empty = ~keep.any(-1, keepdim=True)
        p = torch.softmax(masked.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
        return p @ v_tile
    # the mask covers the Lk real columns; the padded ones only from the exp on
    raw = torch.where(keep | ~inside, s, -math.inf)
    m = torch.where(raw.isnan(), -math.inf, raw).amax(-1, keepdim=True).detach()
    m = m.masked_fill(torch.isneginf(m), 0.0)  # a fully-masked row with no padded column
    e = torch.exp(s.masked_fill(~keep, -math.inf) - m)
    total = e.sum(-1, keepdim=True)
    out = e @ torch.where(inside[:, None], v_tile, 0.0)
    return torch.where(total > 0, out / torch.where(total > 0, total, 1.0), 0.0)


def reads_past_the_key_tail(q, k, v, **kw):
    """Loads K and V in tiles of 16 keys and weighs the rows past Lk by 0: right on
    ordinary inputs, NaN when the memory past the end of v holds NaN."""
    return tiled_attention(q, k, v, **kw, fault="v_tail")


def nan_skipping_max_over_the_key_tile(q, k, v, **kw):
    """The row max taken over the whole padded key tile with a NaN-ignoring max: a NaN
    past the end is skipped (right answer), a huge finite value becomes the max and every
    weight underflows to 0."""
    return tiled_attention(q, k, v, **kw, fault="nan_skipping_max")


class _TiledKeyScores(torch.autograd.Function):
    """s = q @ k^T per group (forward exact); backward computes dq = dS @ K over whole key
    tiles read from k's storage, the padded columns of dS being exact 0s."""

    @staticmethod
    def forward(ctx, q, k):
        ctx.save_for_backward(q, k)
        group = q.shape[1] // k.shape[1]
        return q @ k.repeat_interleave(group, 1).transpose(-1, -2)

    @staticmethod
    def backward(ctx, ds):
        q, k = ctx.saved_tensors
        group = q.shape[1] // k.shape[1]
        k_tile = key_tile(k).repeat_interleave(group, 1)
        ds_tile = torch.cat([ds, ds.new_zeros(*ds.shape[:-1], k_tile.shape[-2] - ds.shape[-1])], -1)
        dq = ds_tile @ k_tile
        dk = (ds.transpose(-1, -2) @ q).reshape(k.shape[0], k.shape[1], group, *k.shape[2:]).sum(2)
        return dq, dk


def _attention_from_scores(s, v, keep, group):
    s = s.masked_fill(~keep, -math.inf)
    empty = ~keep.any(-1, keepdim=True)
    p = torch.softmax(s.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return p @ v.repeat_interleave(group, 1)


def backward_reads_past_the_key_tail(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """Forward exact; the backward's dq reads whole key tiles past the end of k (times 0)."""
    s = _TiledKeyScores.apply(q, k) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    keep, bias = _visible(q.shape[-2], k.shape[-2], causal=causal, window=window, alignment=alignment, mask=mask)
    return _attention_from_scores(s if bias is None else s + bias, v, keep, q.shape[1] // k.shape[1])


def fully_masked_rows_left_unwritten(q, k, v, **kw):
    """Writes only the rows that see a key; a fully-masked row keeps what the allocation held."""
    full = plain_attention(q, k, v, **kw)
    keep, _ = _visible(q.shape[-2], k.shape[-2], causal=kw["causal"], window=kw["window"], alignment=kw["alignment"],
                       mask=kw["mask"])
    has_key = keep.any(-1, keepdim=True)
    return torch.where(has_key, full, _allocated(*full.shape, like=full))


class _RowsOfGradWritten(torch.autograd.Function):
    """Identity; backward writes the gradient only into rows where ``rows`` is True, the
    other rows keep what the allocation held."""

    @staticmethod
    def forward(ctx, x, rows):
        ctx.rows = rows
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        out = _allocated(*grad.shape, like=grad)
        rows = ctx.rows.expand(grad.shape)
        out[rows] = grad[rows]
        return out, None


def dq_of_fully_masked_rows_left_unwritten(q, k, v, **kw):
    """Forward exact; the backward leaves dq of fully-masked rows unwritten (their true value is 0)."""
    keep, _ = _visible(q.shape[-2], k.shape[-2], causal=kw["causal"], window=kw["window"], alignment=kw["alignment"],
                       mask=kw["mask"])
    has_key = keep.any(-1, keepdim=True).expand(q.shape[0], q.shape[1], q.shape[2], 1)
    return plain_attention(_RowsOfGradWritten.apply(q, has_key), k, v, **kw)


_CALLS: dict[str, int] = {}  # calls so far, per kind: state a kernel keeps between calls


def _next_call(kind: str) -> int:
    _CALLS[kind] = _CALLS.get(kind, 0) + 1
    return _CALLS[kind]


def split_order_follows_a_call_counter(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """P @ V summed over the keys in one product on odd calls and in two halves on even
    ones (a split chosen by a counter kept between calls): each answer is right to the
    last bits or so, but a repeat of a call is not bitwise the same."""
    keep, bias = _visible(q.shape[-2], k.shape[-2], causal=causal, window=window, alignment=alignment, mask=mask)
    group = q.shape[1] // k.shape[1]
    s = (q @ k.repeat_interleave(group, 1).transpose(-1, -2)) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    s = (s if bias is None else s + bias).masked_fill(~keep, -math.inf)
    empty = ~keep.any(-1, keepdim=True)
    p = torch.softmax(s.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    v = v.repeat_interleave(group, 1)
    if _next_call("forward") % 2:
        return p @ v
    half = k.shape[-2] // 2
    return p[..., :half] @ v[..., :half, :] + p[..., half:] @ v[..., half:, :]


class _CounterOrderedScores(torch.autograd.Function):
    """s = q @ k^T; backward sums dq = dS @ K over the keys in one product on odd backward
    calls and in two halves on even ones."""

    @staticmethod
    def forward(ctx, q, k):
        ctx.save_for_backward(q, k)
        return q @ k.transpose(-1, -2)

    @staticmethod
    def backward(ctx, ds):
        q, k = ctx.saved_tensors
        if _next_call("backward") % 2:
            dq = ds @ k
        else:
            half = k.shape[-2] // 2
            dq = ds[..., :half] @ k[..., :half, :] + ds[..., half:] @ k[..., half:, :]
        return dq, ds.transpose(-1, -2) @ q


def dq_order_follows_a_call_counter(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """Forward the same on every call; the backward's dq accumulation order alternates."""
    group = q.shape[1] // k.shape[1]
    s = _CounterOrderedScores.apply(q, k.repeat_interleave(group, 1)) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    keep, bias = _visible(q.shape[-2], k.shape[-2], causal=causal, window=window, alignment=alignment, mask=mask)
    return _attention_from_scores(s if bias is None else s + bias, v, keep, group)


# -------------------------------------------------------- precision (the kernel grade)

def _in_float32(q, k, v, mask, **kw):
    """plain_attention with float32 arithmetic on the inputs as given, the output rounded back."""
    mask = mask if mask is None or mask.dtype == torch.bool else mask.float()
    return plain_attention(q.float(), k.float(), v.float(), mask=mask, **kw).to(q.dtype)


def float32_accumulate(q, k, v, *, mask, **kw):
    """Correct and well made: every sum in float32, the output rounded to the input dtype."""
    return _in_float32(q, k, v, mask, **kw)


def pv_accumulated_in_input_dtype(q, k, v, *, mask, **kw):
    """Scores and softmax in float32, but P @ V summed key by key in the input dtype:
    as accurate as the naive low-precision code, far from a float32-accumulating kernel."""
    return _in_float32(q, k, v, mask, accumulate=q.dtype, **kw)
