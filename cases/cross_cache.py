"""Cross-attention cache cases: decoder call schedules against one encoder output."""

from harness.families.cross_cache import CrossCase

GRID = [
    # token-by-token decoding, the Whisper pattern of seed 004
    CrossCase(2, 4, 16, encoder_len=12, encoder_dim=32, schedule=(1, 1, 1, 1), seed=0),
    # a multi-token first call (prompt), then decode steps; head dim 24 (not a power of two), a
    # custom scale, an encoder length one past a 16-tile
    CrossCase(1, 2, 24, encoder_len=17, encoder_dim=40, schedule=(2, 1, 1), scale=0.3, seed=1),
]
PINNED: list = []
