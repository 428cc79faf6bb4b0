"""A KV cache in plain torch: ``index_copy_`` into slot order, SDPA over a mask built
from the position each slot holds (-1: never written). Every kind of the family.

A ring attends before it overwrites: a call is written and attended in pieces of at
most ``S - w + 1`` tokens, so that the keys a piece's queries must see are all still
in the ring (``reference.kv_cache``); a ring smaller than its window cannot hold them
and is refused. ``PositionedCache`` is small on purpose: the harness's own tests derive
its broken twins (a window one key too wide, a ring that wraps early, a write one slot off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.registry import Limitation, variant


class PositionedCache:
    """K/V ``[B, S, Hkv, D]`` plus ``positions [S]``, the token position each slot holds."""

    def __init__(self, k_cache, v_cache, kind: str, window: int | None):
        self.k, self.v, self.kind, self.window = k_cache, v_cache, kind, window
        self.positions = torch.full((k_cache.shape[1],), -1, dtype=torch.long, device=k_cache.device)

    def slots(self, start: int, length: int) -> torch.Tensor:
        """Slot of each of the positions ``start .. start + length - 1``."""
        positions = torch.arange(start, start + length, device=self.k.device)
        return positions % self.k.shape[1] if self.kind == "ring" else positions

    def write(self, start: int, k, v) -> None:
        slots = self.slots(start, k.shape[1])
        self.k.index_copy_(1, slots, k)
        self.v.index_copy_(1, slots, v)
        self.remember(start, k.shape[1])

    def remember(self, start: int, length: int) -> None:
        """Record which positions the slots of a write of ``length`` tokens at ``start`` now hold."""
        self.positions.index_copy_(0, self.slots(start, length), torch.arange(start, start + length, device=self.k.device))

    def visible(self, start: int, length: int) -> torch.Tensor:
        """Bool ``[n, S]``: query at position ``start + i`` may read slot s."""
        query = torch.arange(start, start + length, device=self.k.device)[:, None]
        behind = query - self.positions[None, :]  # how far back the slot's token lies
        seen = (self.positions[None, :] >= 0) & (behind >= 0)
        return seen & (behind < self.window) if self.window is not None else seen

    def piece(self, length: int) -> int:
        """The most tokens of a call written before its queries attend: a ring keeps the
        last S positions, and a query needs the w - 1 before its own."""
        if self.kind != "ring":
            return max(length, 1)
        slots = self.k.shape[1]
        if slots < self.window:
            raise ValueError(f"a ring of {slots} slots cannot hold a window of {self.window} keys")
        return slots - self.window + 1

    def attend(self, q, start: int, scale: float):
        mask = self.visible(start, q.shape[1])
        out = F.scaled_dot_product_attention(q.transpose(1, 2), self.k.transpose(1, 2), self.v.transpose(1, 2),
                                             attn_mask=mask, scale=scale, enable_gqa=q.shape[2] != self.k.shape[2])
        return out.transpose(1, 2)


def run_calls(cache: PositionedCache, steps, scale: float):
    """Write, then attend, call after call; return the family's per-call results."""
    results = []
    for q, k, v, start in steps:
        step, outs = cache.piece(q.shape[1]), []
        for a in range(0, q.shape[1], step):
            cache.write(start + a, k[:, a:a + step], v[:, a:a + step])
            outs.append(cache.attend(q[:, a:a + step], start + a, scale))
        out = torch.cat(outs, dim=1) if outs else q.new_zeros(q.shape)  # a call of 0 tokens: [B, 0, H, D]
        results.append((out, cache.k.clone(), cache.v.clone()))
    return results


SMALL_RING = Limitation("a ring smaller than its window cannot hold the keys a query must see: the adapter raises "
                        "ValueError", features={"ring_smaller_than_window"})


@variant("kv_cache", "index_copy_cache", dtypes=("float32", "bfloat16", "float16", "float64"), limitations=[SMALL_RING],
         repro="""
    # index_copy_ into slot p (or p mod S); SDPA over the slots, masked by the position each slot holds;
    # a ring attends before it overwrites: a call goes in pieces of at most S - window + 1 tokens
    positions = torch.full((k_cache.shape[1],), -1, device=k_cache.device)  # the position each slot holds; -1: never written
    piece = k_cache.shape[1] - window + 1 if kind == "ring" else None
    results = []
    for q, k, v, start in steps:
        step, outs = piece or max(q.shape[1], 1), []
        for a in range(0, q.shape[1], step):
            qa, ka, va = q[:, a:a + step], k[:, a:a + step], v[:, a:a + step]
            query = torch.arange(start + a, start + a + qa.shape[1], device=q.device)
            slots = query % k_cache.shape[1] if kind == "ring" else query
            k_cache.index_copy_(1, slots, ka)
            v_cache.index_copy_(1, slots, va)
            positions[slots] = query
            behind = query[:, None] - positions[None, :]  # how far back each slot's token lies
            mask = (positions[None, :] >= 0) & (behind >= 0)
            if window is not None:
                mask &= behind < window
            outs.append(torch.nn.functional.scaled_dot_product_attention(
                qa.transpose(1, 2), k_cache.transpose(1, 2), v_cache.transpose(1, 2), attn_mask=mask, scale=scale,
                enable_gqa=q.shape[2] != k_cache.shape[2]).transpose(1, 2))
        out = torch.cat(outs, dim=1) if outs else q.new_zeros(q.shape)  # a call of 0 tokens: [B, 0, H, D]
        results.append((out, k_cache.clone(), v_cache.clone()))
    """)
def index_copy_cache(steps, k_cache, v_cache, *, kind, window, scale):
    """Plain torch: index_copy_ into slot p (or p mod S), SDPA (math) masked by slot positions."""
    return run_calls(PositionedCache(k_cache, v_cache, kind, window), steps, scale)
