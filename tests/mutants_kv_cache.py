"""Deliberately broken KV caches and cross-attention caches, each with the check meant to catch it.

KV caches are ``PositionedCache`` (the plain index_copy_ variant) with one method
broken; cross-attention caches are small drivers with one knob turned.
"""

import itertools
import math

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


# Mutants for the boundary cases and the memory checks (GUARD, UNINIT, DET) ---------------

TILE = 16  # the tile size the kernels below load and store in


class EvictsAtTheWindowEdge(PositionedCache):
    """Off-by-one eviction: a multi-token call that ends exactly at the window (input_pos + n
    == w) evicts the oldest key of the window, position 0, one call early (`>=` where `>`
    belongs). Decode steps take another path and are right, so only a prefill or extend
    ending at w shows it."""

    def visible(self, start, length):
        seen = super().visible(start, length)
        if self.window is not None and length > 1 and start + length == self.window:
            seen = seen & (self.positions[None, :] != 0)
        return seen


def _fresh(*shape, like):
    """``torch.empty``: outside ``poisoned_allocations`` the allocator is taken to return
    zeroed pages (``torch.zeros``), so that the old checks miss what was never written
    deterministically; under it (deterministic algorithms and fill_uninitialized_memory
    on) the real ``torch.empty``, which it fills with NaN."""
    if torch.utils.deterministic.fill_uninitialized_memory and torch.are_deterministic_algorithms_enabled():
        return torch.empty(*shape, dtype=like.dtype, device=like.device)
    return torch.zeros(*shape, dtype=like.dtype, device=like.device)


def _tile_rows(x, rows):
    """``x [B, n, ...]`` read as ``rows >= n`` rows along dim 1, the way a kernel loads whole
    tiles straight from memory: the rows past the end come from the storage when it holds them
    (a guarded view's tail, or the next batch row), else they are zeros (benign memory past the end)."""
    shape = (x.shape[0], rows, *x.shape[2:])
    last = x.storage_offset() + sum((size - 1) * stride for size, stride in zip(shape, x.stride()))
    if last < x.untyped_storage().nbytes() // x.element_size():
        return torch.as_strided(x, shape, x.stride(), x.storage_offset())
    return torch.cat([x, x.new_zeros(x.shape[0], rows - x.shape[1], *x.shape[2:])], dim=1)


def _attention(q, keys, values, visible, scale, bias_for_hidden=None):
    """Softmax attention written out: q [B, n, H, D], keys/values [B, K, Hkv, D], visible
    [n, K]; hidden keys get -inf, or the finite ``bias_for_hidden``. Returns [B, n, H, D]."""
    group = q.shape[2] // keys.shape[2]
    keys, values = keys.repeat_interleave(group, dim=2), values.repeat_interleave(group, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, keys) * scale
    hidden = -math.inf if bias_for_hidden is None else bias_for_hidden
    scores = scores + torch.where(visible, 0.0, hidden).to(scores.dtype)
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), values)


class ReadsWholeTilesPastTheCall(PositionedCache):
    """A fused extend kernel: attends over the cached keys and the call's own keys, which it
    loads in whole tiles of 16 tokens straight from the step inputs' memory, hiding the rows
    past the call with a finite bias (-1e4) instead of -inf. Memory past the end that holds
    zeros (or finite data) gets weight exactly 0; NaN or huge values past the end do not."""

    def write(self, start, k, v):
        self.pending = (k, v)  # the call's keys as handed, before they go into the cache
        super().write(start, k, v)

    def attend(self, q, start, scale):
        k, v = self.pending
        n = q.shape[1]
        rows = -(-n // TILE) * TILE
        query = torch.arange(start, start + n)[:, None]
        old = super().visible(start, n) & (self.positions[None, :] < start)  # slots of earlier calls
        own = torch.arange(start, start + rows)[None, :]
        new = (own < start + n) & (own <= query)
        if self.window is not None:
            new = new & (query - own < self.window)
        keys = torch.cat([self.k, _tile_rows(k, rows)], dim=1)
        values = torch.cat([self.v, _tile_rows(v, rows)], dim=1)
        return _attention(q, keys, values, torch.cat([old, new], dim=1), scale, bias_for_hidden=-1e4)


class WritesWholeTilesPastTheCache(PositionedCache):
    """Stores in whole tiles of 16 slots and assumes the cache is allocated to a whole number
    of tiles: after each write it zeroes the padding slots from S to the end of the tile
    holding the last slot written, in the memory just past the cache (when the allocation
    has any: a cache allocated to its exact size is left alone, as if the allocator's slack
    had taken the write). Every slot inside the cache is right."""

    def write(self, start, k, v):
        super().write(start, k, v)
        if not k.shape[1]:
            return
        slots = self.k.shape[1]
        tile_end = (int(self.slots(start, k.shape[1]).max()) // TILE + 1) * TILE
        for cache in (self.k, self.v):
            batch, _, heads, dim = cache.shape
            past = cache.storage_offset() + (batch - 1) * cache.stride(0) + slots * cache.stride(1)
            if tile_end > slots and past + (tile_end - slots) * cache.stride(1) <= cache.untyped_storage().nbytes() // cache.element_size():
                torch.as_strided(cache, (tile_end - slots, heads, dim), cache.stride()[1:], past).zero_()


class AccumulatesIntoAnUnzeroedOutput(PositionedCache):
    """Accumulates each call's output key block by key block (16 keys at a time) into a
    fresh ``torch.empty`` it never clears (see ``_fresh``): right while allocations come
    back zeroed, NaN under ``poisoned_allocations``."""

    def attend(self, q, start, scale):
        visible = self.visible(start, q.shape[1])
        group = q.shape[2] // self.k.shape[2]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, self.k.repeat_interleave(group, dim=2)) * scale
        probabilities = scores.masked_fill(~visible, -math.inf).softmax(-1)
        values = self.v.repeat_interleave(group, dim=2)
        out = _fresh(*q.shape, like=q)  # [B, n, H, D]
        for first in range(0, values.shape[1], TILE):
            block = slice(first, first + TILE)
            out += torch.einsum("bhqk,bkhd->bqhd", probabilities[..., block], values[:, block])
        return out


class SplitsKeysByACounter(PositionedCache):
    """A split-K softmax: the visible keys are cut into ``splits`` chunks whose partial
    results are merged (max, rescaled sums); ``split_keys_by_a_counter`` takes the number of
    chunks from a counter it keeps between runs, as a scheduler rotating its splits would.
    Every result is within tolerance, but the rounding follows the split, so a repeated
    identical run is not bitwise the first."""

    splits = 1

    def attend(self, q, start, scale):
        visible = self.visible(start, q.shape[1])
        group = q.shape[2] // self.k.shape[2]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, self.k.repeat_interleave(group, dim=2)) * scale
        scores = scores.masked_fill(~visible, -math.inf)
        values = self.v.repeat_interleave(group, dim=2)
        top = scores.amax(-1, keepdim=True)  # [B, H, n, 1]
        total = torch.zeros_like(top)
        out = torch.zeros(q.shape[0], q.shape[2], q.shape[1], q.shape[3], dtype=q.dtype)  # [B, H, n, D]
        for chunk in torch.arange(scores.shape[-1]).tensor_split(self.splits):
            weights = (scores[..., chunk] - top).exp()
            total = total + weights.sum(-1, keepdim=True)
            out = out + weights @ values[:, chunk].transpose(1, 2)
        return (out / total).transpose(1, 2)


_RUNS = itertools.count()  # how many schedules split_keys_by_a_counter has run, kept between runs


def split_keys_by_a_counter(steps, k_cache, v_cache, *, kind, window, scale):
    cache = SplitsKeysByACounter(k_cache, v_cache, kind, window)
    cache.splits = 1 + next(_RUNS) % 3  # 1, 2, 3 chunks in turn
    return run_calls(cache, steps, scale)


evicts_at_the_window_edge = _adapter(EvictsAtTheWindowEdge)
reads_whole_tiles_past_the_call = _adapter(ReadsWholeTilesPastTheCall)
writes_whole_tiles_past_the_cache = _adapter(WritesWholeTilesPastTheCache)
accumulates_into_an_unzeroed_output = _adapter(AccumulatesIntoAnUnzeroedOutput)


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


# Cross-attention caches for the memory checks (GUARD:nan, UNINIT:out, DET:out) ----------------


def _cross_cached(weights, steps, heads, head_dim, attend, tile_rows=None):
    """Fill the cache from the first call's encoder states (``tile_rows``: projected from that
    many rows loaded straight from memory), reuse it after; ``attend(q, k, v, length)`` with
    k, v ``[B, rows, H, D]`` gives each call's output."""
    batch, length, _ = steps[0][1].shape
    cache, results = None, []
    for q, encoder in steps:
        if cache is None:
            rows = tile_rows or length
            states = _tile_rows(encoder, rows) if tile_rows else encoder
            cache = tuple((states @ weights[w].T).view(batch, rows, heads, head_dim) for w in ("wk", "wv"))
        out = attend(q, cache[0], cache[1], length)
        results.append((out, *(c[:, :length].transpose(1, 2).clone() for c in cache)))
    return results


def cross_reads_whole_tiles_past_the_encoder(weights, steps, *, heads, head_dim, scale):
    """Projects the encoder states in whole tiles of 16 positions loaded straight from memory and
    keeps the padded keys, hiding the padding with a finite bias (-1e4): zeros past the end get
    weight exactly 0, NaN past the end does not."""
    length = steps[0][1].shape[1]
    rows = -(-length // TILE) * TILE

    def attend(q, k, v, length):
        visible = (torch.arange(k.shape[1]) < length)[None, :].expand(q.shape[1], -1)
        return _attention(q, k, v, visible, scale, bias_for_hidden=-1e4)

    return _cross_cached(weights, steps, heads, head_dim, attend, tile_rows=rows)


def cross_accumulates_into_an_unzeroed_output(weights, steps, *, heads, head_dim, scale):
    """Accumulates each call's output 16 encoder positions at a time into a fresh ``torch.empty``
    it never clears (see ``_fresh``): right while allocations come back zeroed."""

    def attend(q, k, v, length):
        probabilities = (torch.einsum("bqhd,bkhd->bhqk", q, k) * scale).softmax(-1)
        out = _fresh(*q.shape, like=q)
        for first in range(0, length, TILE):
            block = slice(first, first + TILE)
            out += torch.einsum("bhqk,bkhd->bqhd", probabilities[..., block], v[:, block])
        return out

    return _cross_cached(weights, steps, heads, head_dim, attend)


def cross_splits_keys_by_a_counter(weights, steps, *, heads, head_dim, scale):
    """A split-K softmax over the encoder positions whose number of chunks comes from a counter
    kept between runs (``_RUNS``): within tolerance, not bitwise repeatable."""
    splits = 1 + next(_RUNS) % 3

    def attend(q, k, v, length):
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
        top = scores.amax(-1, keepdim=True)
        total, out = torch.zeros_like(top), torch.zeros(q.shape[0], q.shape[2], q.shape[1], q.shape[3], dtype=q.dtype)
        for chunk in torch.arange(length).tensor_split(splits):
            w = (scores[..., chunk] - top).exp()
            total, out = total + w.sum(-1, keepdim=True), out + w @ v[:, chunk].transpose(1, 2)
        return (out / total).transpose(1, 2)

    return _cross_cached(weights, steps, heads, head_dim, attend)
