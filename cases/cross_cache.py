"""Cross-attention cache cases: decoder call schedules against one encoder output."""

from harness.families.cross_cache import CrossCase

GRID = [
    # token-by-token decoding, the Whisper pattern of seed 004
    CrossCase(2, 4, 16, encoder_len=12, encoder_dim=32, schedule=(1, 1, 1, 1), seed=0),
    CrossCase(1, 2, 8, encoder_len=7, encoder_dim=16, schedule=(1, 1, 1), seed=1),
    # a multi-token first call (prompt), then decode steps
    CrossCase(2, 2, 8, encoder_len=9, encoder_dim=24, schedule=(3, 1, 1), seed=2),
    CrossCase(1, 4, 16, encoder_len=12, encoder_dim=32, schedule=(1, 1, 1), dtype="bfloat16", seed=3),
]
PINNED: list = []
