"""Qwen3.5 Gated DeltaNet block cases: prefill, decode steps, a multi-token extend, a reset."""

from harness.families.gdn_block import BlockCase

GRID = [
    # prefill 5, two decode steps, an extend of 3, then a new sequence from position 0
    BlockCase(2, 32, 2, 4, 8, 12, schedule=((0, 5), (5, 1), (6, 1), (7, 3), (0, 4)), seed=0),
    # one key head shared by two value heads, Dk == Dv, a prefill shorter than the conv width
    BlockCase(1, 48, 1, 2, 16, 16, schedule=((0, 2), (2, 1), (3, 7)), seed=1),
    # decode from the very first token
    BlockCase(2, 32, 2, 2, 8, 8, schedule=((0, 1), (1, 1), (2, 1), (0, 1)), seed=2),
]
PINNED: list = []
