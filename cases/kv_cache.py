"""KV-cache cases: step schedules as data (prefill, decode steps, extends), per cache kind."""

from harness.families.kv_cache import KVCase

GRID = [
    # prefill 5, two decode steps, an extend of 3, a decode step; grouped heads
    KVCase(2, 4, 2, 16, "static", capacity=16, schedule=(5, 1, 1, 3, 1), seed=0),
    # the cache filled exactly to capacity by the last extend
    KVCase(1, 2, 2, 8, "static", capacity=16, schedule=(10, 1, 1, 4), seed=1),
    # decode from the very first token
    KVCase(2, 2, 1, 8, "static", capacity=8, schedule=(1, 1, 1, 1), seed=2),
    KVCase(2, 4, 2, 16, "static", capacity=16, schedule=(6, 1, 2, 1), dtype="bfloat16", seed=3),
    # sliding windows smaller and larger than the prefill
    KVCase(2, 4, 2, 16, "sliding", capacity=24, window=4, schedule=(7, 1, 3, 1, 1), seed=4),
    KVCase(1, 2, 1, 8, "sliding", capacity=16, window=12, schedule=(5, 1, 1, 2), seed=5),
    # ring buffers of twice the window (ExecuTorch's RingKVCache) run past twice their capacity
    KVCase(2, 4, 2, 16, "ring", capacity=8, window=4, schedule=(3, 1, 1, 4, 1, 1, 1, 5, 1, 1, 1), seed=6),
    KVCase(1, 2, 1, 8, "ring", capacity=8, window=4, schedule=(5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), seed=7),
    # a tight ring: capacity = window + longest call - 1
    KVCase(2, 2, 2, 8, "ring", capacity=5, window=3, schedule=(2, 1, 1, 3, 1, 1, 3, 1), seed=8),
]
PINNED: list = []
