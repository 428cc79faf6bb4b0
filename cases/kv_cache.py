"""KV-cache cases: step schedules as data (prefill, decode steps, extends, empty calls), per cache kind.

Boundaries on purpose: calls whose last token sits at w - 2, w - 1, w and w + 1, a call
ending exactly at the window (input_pos + n == w), calls across 2w and across the ring's
capacity, ring extends of every length up to the ring's size and past it, a decode right
after each extend, call lengths at tile edges (15/16/17, 63/64/65), head dims that are
not powers of two, scales other than 1/sqrt(D). Batch rows hold different tokens; the
contract gives every row the same positions, and cannot express a reset.
"""

from harness.families.kv_cache import KVCase

GRID = [
    # call lengths at the edges of a 16-tile, each extend followed by a decode step, the cache filled
    # exactly (its last tile partial); grouped heads, D = 72, scale 0.3
    KVCase(2, 4, 2, 72, "static", capacity=50, schedule=(15, 1, 16, 1, 17), scale=0.3, seed=1),
    # ... and of a 64-tile, past 128 keys; D = 24 (ExecuTorch's sdpa_with_kv_cache is not bitwise
    # reproducible from 128 keys with D >= 40: a heap-dependent finding that tests/test_kv_cache.py
    # reproduces on its own, kept out of the catalogue so that DET stays deterministic)
    KVCase(1, 2, 2, 24, "static", capacity=200, schedule=(63, 1, 64, 1, 65), seed=2),
    # decode from the very first token, with empty calls (0 tokens) between and at the end
    KVCase(2, 2, 1, 8, "static", capacity=8, schedule=(1, 0, 1, 1, 0, 1, 0), seed=3),
    # sliding w = 6: calls whose last token sits at w - 2, w - 1, w and w + 1, then an extend across
    # 2w; D = 100, scale 0.125, bfloat16
    KVCase(2, 4, 2, 100, "sliding", capacity=24, window=6, schedule=(5, 1, 1, 1, 6, 1), scale=0.125, dtype="bfloat16",
           seed=5),
    # a ring of 2w slots (ExecuTorch's RingKVCache): an extend ending exactly at the window
    # (input_pos + n == w), last tokens at w - 1, w, w + 1, extends across the capacity and across 2S,
    # extends of 2 .. S - w + 1 tokens each followed by a decode step
    KVCase(2, 4, 2, 16, "ring", capacity=8, window=4, schedule=(1, 3, 1, 1, 3, 1, 2, 1, 4, 1, 5, 1), seed=7),
    # ... a prefill of exactly w, then extends longer than S - w + 1 (6, 7 and 8 = S tokens): each
    # overwrites keys its own first queries must see; D = 24
    KVCase(1, 2, 1, 24, "ring", capacity=8, window=4, schedule=(4, 6, 1, 7, 1, 8, 1), seed=8),
    # a tight ring of w + 2 slots, not 2w, with extends longer than the whole ring (7 and 9 tokens
    # into 5 slots: only their last 5 stay); D = 40, scale 1
    KVCase(2, 2, 2, 40, "ring", capacity=5, window=3, schedule=(2, 1, 1, 3, 1, 7, 1, 9, 1), scale=1.0, seed=10),
]
PINNED: list = []
