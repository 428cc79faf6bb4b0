"""Deliberately broken attention adapters, one bug each, for proving the checks can fail.

All share ``plain_attention`` (correct, in the input dtype) and change one thing.
"""

from __future__ import annotations

import math

import torch


def plain_attention(q, k, v, *, scale, causal, window, alignment, mask, softcap,
                    align=None, scale_factor=1.0, head_map="grouped", hide="masked_fill", empty_rows="zero"):
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
    return p @ v


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
