"""A KV cache in plain torch: ``index_copy_`` into slot order, SDPA over a mask built
from the position each slot holds (-1: never written). Every kind of the family.

``PositionedCache`` is small on purpose: the harness's own tests derive its broken
twins (a window one key too wide, a ring that wraps early, a write one slot off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.registry import variant


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

    def attend(self, q, start: int, scale: float):
        mask = self.visible(start, q.shape[1])
        out = F.scaled_dot_product_attention(q.transpose(1, 2), self.k.transpose(1, 2), self.v.transpose(1, 2),
                                             attn_mask=mask, scale=scale, enable_gqa=q.shape[2] != self.k.shape[2])
        return out.transpose(1, 2)


def run_calls(cache: PositionedCache, steps, scale: float):
    """Write, then attend, call after call; return the family's per-call results."""
    results = []
    for q, k, v, start in steps:
        cache.write(start, k, v)
        results.append((cache.attend(q, start, scale), cache.k.clone(), cache.v.clone()))
    return results


@variant("kv_cache", "index_copy_cache", dtypes=("float32", "bfloat16", "float16", "float64"))
def index_copy_cache(steps, k_cache, v_cache, *, kind, window, scale):
    """Plain torch: index_copy_ into slot p (or p mod S), SDPA (math) masked by slot positions."""
    return run_calls(PositionedCache(k_cache, v_cache, kind, window), steps, scale)
