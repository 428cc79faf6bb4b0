r"""KV caches over a schedule of calls, and the attention they feed.

A decoder feeds its tokens through a schedule of calls: a prefill of ``n_0`` tokens,
then decode steps (1 token) and extends (several tokens). Call ``s`` covers the
positions ``[p_s, p_s + n_s)`` with ``p_s = n_0 + ... + n_{s-1}``.

The truth for call ``s`` is the full recomputation: attention of its queries over the
keys of *all* tokens ``0 .. p_s + n_s - 1``, whatever the cache kept, with

    static cache:               query i sees key j  iff  j <= i
    sliding window of size w:   query i sees key j  iff  i - w < j <= i

so a query sees exactly ``min(w, i + 1)`` keys, its own included (ExecuTorch's
``RingKVCache`` mask ``0 <= i - j < w``; transformers' ``sliding_window``).

The truth does not depend on what a cache can hold: it exists for every schedule.

Storage: a cache is ``[B, S, Hkv, D]`` (S slots) and the token at position p is
written to

    slot(p) = p          "static" and "sliding" (a cache of S slots holds positions < S)
    slot(p) = p mod S    "ring"

Tokens are written in position order, so in a ring a later token overwrites an
earlier one's slot, also within one call: after an extend longer than the free
slots (or longer than S itself) the ring holds, in each slot s, the latest position
p <= end - 1 with p mod S = s (``cache_after`` writes them one by one). Slots never
written keep whatever the cache held before (zeros, or a sentinel).

A ring that writes a whole call and then attends over its slots has lost a key one
of the call's queries must see when the oldest key its first query sees, position
``max(0, p_s - w + 1)``, was overwritten by the call's end: ``max(0, p_s - w + 1) + S
< p_s + n_s`` (``n_s > S - w + 1`` once the window is full; a first call ``n_s > S``;
any call ending past position S when ``S < w``). Such a cache must attend before it
overwrites (in pieces, or over its old slots and the call's own keys); that is the
implementation's business, the truth above is unchanged.

A cross-attention cache holds K = E Wk^T and V = E Wv^T of the encoder states E of
the *first* call; later calls reuse it unchanged and attend over all of it, no mask.
"""

from __future__ import annotations

import torch

from reference.attention import attention

KINDS = ("static", "sliding", "ring")


def call_positions(schedule: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(p_s, n_s)`` for each call of a schedule of call lengths ``n_s``."""
    starts, position = [], 0
    for length in schedule:
        starts.append((position, length))
        position += length
    return starts


def slot(kind: str, capacity: int, position: int) -> int:
    """The cache slot that the token at ``position`` is written to."""
    return position % capacity if kind == "ring" else position


def cache_after(kind: str, capacity: int, values: torch.Tensor, end: int, initial: torch.Tensor) -> torch.Tensor:
    """Cache contents ``[B, S, Hkv, D]`` once tokens ``0 .. end-1`` (``values[:, p]`` of
    ``[B, T, Hkv, D]``) were written in order into a cache that held ``initial``: a
    ring slot holds the latest position written to it, whatever the calls' lengths."""
    cache = initial.clone()
    for position in range(end):  # in order: a later token overwrites its ring slot
        cache[:, slot(kind, capacity, position)] = values[:, position]
    return cache


def call_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None, scale: float,
                   attend=attention) -> torch.Tensor:
    """The full recomputation for one call: ``q [B, n, H, D]`` holds the call's queries
    (the last n positions), ``k, v [B, p + n, Hkv, D]`` every token so far.
    Returns ``[B, n, H, D]``. ``attend``: ``reference.attention`` (its blocked twin for long calls)."""
    w = None if window is None else (window - 1, 0)  # i - (w - 1) <= j <= i: exactly w keys
    out, _ = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale,
                       causal=True, window=w, alignment="bottom_right")
    return out.transpose(1, 2)


def cached_attention_steps(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, schedule: tuple[int, ...], *,
                           kind: str, capacity: int, window: int | None, scale: float,
                           initial: torch.Tensor, attend=attention) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every call of ``schedule`` over the whole sequence ``q [B, T, H, D]``,
    ``k, v [B, T, Hkv, D]``: per call ``(out [B, n, H, D], k_cache, v_cache)``, the
    caches ``[B, S, Hkv, D]`` after the call, both starting from ``initial``."""
    results = []
    for start, length in call_positions(schedule):
        end = start + length
        out = call_attention(q[:, start:end], k[:, :end], v[:, :end], window, scale, attend)
        results.append((out, cache_after(kind, capacity, k, end, initial), cache_after(kind, capacity, v, end, initial)))
    return results


def cross_attention_steps(weights: dict[str, torch.Tensor], steps: list, *, heads: int, head_dim: int,
                          scale: float) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Calls ``(q [B, n, H, D], encoder_states [B, S, E])`` against a cross-attention
    cache filled from the first call's encoder states (``wk, wv [H D, E]``). Returns per
    call ``(out [B, n, H, D], k_cache [B, H, S, D], v_cache [B, H, S, D])``."""
    encoder = steps[0][1]
    batch, length = encoder.shape[:2]
    k_cache = (encoder @ weights["wk"].T).view(batch, length, heads, head_dim).transpose(1, 2)
    v_cache = (encoder @ weights["wv"].T).view(batch, length, heads, head_dim).transpose(1, 2)
    results = []
    for q, _ in steps:
        out, _ = attention(q.transpose(1, 2), k_cache, v_cache, scale=scale)
        results.append((out.transpose(1, 2), k_cache, v_cache))
    return results
