"""Qwen3.5 Gated DeltaNet block cases: prefill, decode steps, multi-token extends, resets;
calls exactly as long as the conv state (W - 1) and the conv kernel (W), chunk-sized
extends on a warm state, zero-length calls, head dims that are not powers of two."""

from harness.families.gdn_block import BlockCase

GRID = [
    # prefill 5, two decode steps, an extend of 3, then a new sequence from position 0
    BlockCase(2, 32, 2, 4, 8, 12, schedule=((0, 5), (5, 1), (6, 1), (7, 3), (0, 4)), seed=0),
    # one key head shared by two value heads, Dk == Dv, a prefill shorter than the conv width
    BlockCase(1, 48, 1, 2, 16, 16, schedule=((0, 2), (2, 1), (3, 7)), seed=1),
    # decode from the very first token
    BlockCase(2, 32, 2, 2, 8, 8, schedule=((0, 1), (1, 1), (2, 1), (0, 1)), seed=2),
]

PINNED: list = [
    # Conv width 4 (a state of W - 1 = 3 inputs): a prefill of exactly 3, a decode, an extend
    # of 3 and one of exactly W = 4 on a warm state, a decode right after it; then a reset and
    # refill (a new sequence whose prefill fills the conv state exactly) and a short extend.
    # K, V not powers of two.
    BlockCase(2, 32, 1, 2, 24, 40, schedule=((0, 3), (3, 1), (4, 3), (7, 4), (11, 1), (0, 3), (3, 2)), seed=10),
    # Chunk-sized extends on a warm state (16, then 64, each followed by a decode).
    BlockCase(1, 32, 2, 2, 72, 100, schedule=((0, 5), (5, 16), (21, 1), (22, 64), (86, 1)), seed=11),
    # Conv width 2 (a state of one input: every decode lands on the boundary) and width 3
    # (state 2) with extends at tile edges (15, 17).
    BlockCase(2, 32, 1, 2, 16, 24, schedule=((0, 1), (1, 1), (2, 2), (4, 1), (0, 1)), width=2, seed=13),
    BlockCase(1, 32, 1, 2, 24, 40, schedule=((0, 2), (2, 2), (4, 1), (5, 15), (20, 17)), width=3, seed=14),
    # Zero-length calls: one that continues (the states unchanged) and a reset with no tokens.
    BlockCase(1, 32, 1, 2, 16, 24, schedule=((0, 4), (4, 0), (4, 1), (0, 0), (0, 2)), seed=15),
]
