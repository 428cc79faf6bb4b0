"""Deliberately broken KV caches and cross-attention caches, each with the check meant to catch it.

KV caches are ``PositionedCache`` (the plain index_copy_ variant) with one method
broken; cross-attention caches are small drivers with one knob turned.
"""

import torch
from torch import nn

from harness.variants.kv_cache_torch import PositionedCache, run_calls


def _adapter(cache_class):
    def fn(steps, k_cache, v_cache, *, kind, window, scale):
        return run_calls(cache_class(k_cache, v_cache, kind, window), steps, scale)

    fn.__name__ = cache_class.__name__
    return fn


class WindowAdmitsOneMore(PositionedCache):
    """A sliding window that lets a query see w + 1 keys (`<=` where `<` belongs)."""

    def visible(self, start, length):
        query = torch.arange(start, start + length)[:, None]
        behind = query - self.positions[None, :]
        return (self.positions[None, :] >= 0) & (behind >= 0) & (behind <= self.window)


class RingWrapsEarly(PositionedCache):
    """A ring buffer that wraps one slot early (p mod (S - 1)): the last slot is never used."""

    def slots(self, start, length):
        positions = torch.arange(start, start + length)
        return positions % (self.k.shape[1] - 1) if self.kind == "ring" else positions


class WritesOneSlotLate(PositionedCache):
    """Writes the token of position p into slot p + 1 (and remembers it there): attention
    stays right, only the cache contents say so."""

    def slots(self, start, length):
        return super().slots(start + 1, length)


class DecodeWritesSwappedRows(PositionedCache):
    """Decode steps write batch row b's K/V into row b + 1 (mod B); prefill is right."""

    def write(self, start, k, v):
        if k.shape[1] == 1 and start > 0:
            k, v = k.roll(1, dims=0), v.roll(1, dims=0)
        super().write(start, k, v)


class ExtendIgnoresNewKeys(PositionedCache):
    """A multi-token call after the first attends to the old cache and its own key only,
    not to the earlier keys of the same call."""

    def visible(self, start, length):
        seen = super().visible(start, length)
        if start == 0:
            return seen
        query = torch.arange(start, start + length)[:, None]
        return seen & ((self.positions[None, :] < start) | (self.positions[None, :] == query))


class ReadsUnwrittenSlots(PositionedCache):
    """Treats never-written slots as visible keys (a mask built from the capacity, not
    from what was written)."""

    def visible(self, start, length):
        return super().visible(start, length) | (self.positions[None, :] < 0)


window_admits_one_more = _adapter(WindowAdmitsOneMore)
ring_wraps_early = _adapter(RingWrapsEarly)
writes_one_slot_late = _adapter(WritesOneSlotLate)
decode_writes_swapped_rows = _adapter(DecodeWritesSwappedRows)
extend_ignores_new_keys = _adapter(ExtendIgnoresNewKeys)
reads_unwritten_slots = _adapter(ReadsUnwrittenSlots)


def scales_its_query_in_place(steps, k_cache, v_cache, *, kind, window, scale):
    """Pre-scales q in place to save a multiply: right outputs, mutated inputs."""
    for q, *_ in steps:
        q.mul_(scale)
    return run_calls(PositionedCache(k_cache, v_cache, kind, window), steps, 1.0)


def nan_after_prefill(steps, k_cache, v_cache, *, kind, window, scale):
    results = run_calls(PositionedCache(k_cache, v_cache, kind, window), steps, scale)
    return [results[0]] + [(out * float("nan"), k, v) for out, k, v in results[1:]]


# Cross-attention caches --------------------------------------------------------------


def cross_driver(weights, steps, *, heads, head_dim, scale, store=True, reuse=True, clobber_encoder=False,
                 causal=False):
    """A cross-attention cache driven call by call; the knobs are bugs."""
    batch, length, _ = steps[0][1].shape
    cache = torch.zeros(2, batch, heads, length, head_dim, dtype=steps[0][0].dtype)
    filled = False
    results = []
    for q, encoder in steps:
        if filled and reuse:
            k, v = cache[0], cache[1]
        else:
            k, v = ((encoder @ weights[w].T).view(batch, length, heads, head_dim).transpose(1, 2) for w in ("wk", "wv"))
            if store:
                cache[0].copy_(k)
                cache[1].copy_(v)
                filled = True
        if clobber_encoder:
            encoder.zero_()
        out = nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k, v, scale=scale, is_causal=causal)
        results.append((out.transpose(1, 2), cache[0].clone(), cache[1].clone()))
    return results


def causal_cross_attention(weights, steps, **kw):
    """Masks the encoder states causally, as if they were the decoder's own past: a right
    cache, wrong outputs."""
    return cross_driver(weights, steps, **kw, causal=True)


def recomputed_every_call(weights, steps, **kw):
    return cross_driver(weights, steps, **kw, reuse=False)


def never_filled(weights, steps, **kw):
    return cross_driver(weights, steps, **kw, store=False)


def zeroes_the_encoder_states(weights, steps, **kw):
    return cross_driver(weights, steps, **kw, clobber_encoder=True)


def appends_decoder_keys(weights, steps, **kw):
    """Treats the cross cache like a self-attention cache: each later call writes its
    query into the next slot."""
    results = cross_driver(weights, steps, **kw)
    out = []
    for i, (o, k, v) in enumerate(results):
        k = k.clone()
        if i:
            k[:, :, i, :] = steps[i][0][:, 0]
        out.append((o, k, v))
    return out
