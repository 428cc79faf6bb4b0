"""Attention cases: a grid that hits what symmetric shapes hide.

Shapes mix GQA ratios (6/2, 8/2, 3/1 with distinct K/V per head), Lq != Lk in both
directions including decode (Lq = 1), lengths at tile edges (15/16/17, 63/64/65,
127/128/129, Lq and Lk independently), head dims that are not powers of two
(24, 40, 72, 100, 136, 192) and Dk != Dv. Each masking meets two or three of the seven shapes
(shape s gets maskings s, s+2 and s+5, cyclically: both Lq > Lk shapes meet bottom-right
causal), the dtype rotates through
fp32/bf16/fp16, and every third case sets a scale other than 1/sqrt(D).
"""

from __future__ import annotations

from harness.edges import CUSTOM_SCALES
from harness.families.attention import AttentionCase

# (batch, heads_q, heads_kv, len_q, len_k, head_dim, head_dim_v)
SHAPES = [
    (2, 4, 4, 37, 64, 16, 16),  # a whole tile of 64 keys
    (1, 6, 2, 1, 129, 72, 72),  # decode over one key past 128, 3 query heads per kv head
    (2, 8, 2, 65, 63, 40, 40),  # Lq > Lk: bottom-right causal leaves rows with no key
    (2, 3, 1, 15, 128, 16, 100),  # MQA, Dk != Dv
    (1, 2, 2, 127, 129, 136, 136),  # both one off 128
    (2, 1, 1, 17, 15, 24, 24),  # one query past a tile of 16 over one key short of it
    (1, 4, 2, 16, 17, 192, 64),  # Dk != Dv, one key past a tile of 16
]

MASKINGS = [
    dict(),
    dict(causal=True, alignment="bottom_right"),
    dict(causal=True, alignment="top_left"),
    dict(window=(8, 0), alignment="bottom_right"),
    dict(window=(3, 4), alignment="top_left"),
    dict(mask="bool", shared_mask=True),  # one mask for the whole batch (all some libraries take)
    dict(mask="additive", causal=True, alignment="bottom_right"),
    dict(softcap=2.5, causal=True, alignment="bottom_right"),
]
MASKING_OFFSETS = (0, 2, 5)

DTYPES = ("float32", "bfloat16", "float16")

# A shape's cases come in two dtypes (a kernel compiled per shape and dtype, as
# flex_attention is, compiles twice per shape, not three times); the dtypes rotate over
# the shapes.
_TRIPLES = [(shape, MASKINGS[(s + offset) % len(MASKINGS)], DTYPES[(s + n // 2) % len(DTYPES)])
            for s, shape in enumerate(SHAPES) for n, offset in enumerate(MASKING_OFFSETS)]
GRID = [
    AttentionCase(*shape, dtype=dtype, scale=CUSTOM_SCALES[(i // 3) % len(CUSTOM_SCALES)] if i % 3 == 1 else None,
                  seed=i, **masking)
    for i, (shape, masking, dtype) in enumerate(_TRIPLES)
]

# Regressions found by fuzzing or reported by users, pinned so they always run.
PINNED: list[AttentionCase] = [
    # A custom scale and a window wider than the keys on a GQA decode step.
    AttentionCase(1, 8, 2, 1, 70, 64, 64, dtype="float32", window=(100, 0), scale=0.3, seed=1000),
    # Three kv heads, four query heads each, with a per-row mask.
    AttentionCase(2, 12, 3, 33, 65, 64, 64, dtype="bfloat16", causal=True, mask="bool", seed=1001),
    # A long decode step over three distinct kv heads.
    AttentionCase(1, 3, 3, 1, 200, 100, 100, dtype="float16", causal=True, seed=1002),
    # Zero-length calls: no queries; no keys at all (every row empty: output exactly 0).
    AttentionCase(2, 4, 2, 0, 17, 24, 24, dtype="float32", causal=True, seed=1003),
    AttentionCase(2, 4, 2, 5, 0, 24, 24, dtype="float32", seed=1004),
    # An additive mask shared by the batch, with bottom-right causal on top, GQA, one key past a tile of 64.
    AttentionCase(2, 4, 2, 9, 65, 40, 40, dtype="float32", causal=True, mask="additive", shared_mask=True, seed=1005),
    # Found by a scan of 300 Hypothesis draws: eager flex_attention's output is 3.3x the
    # fp32-accumulate error in float16 (it rounds the normalised probabilities to the dtype
    # before P @ V; flex_attention's known failure says more).
    AttentionCase(2, 4, 2, 37, 15, 16, 8, dtype="float16", alignment="top_left", mask="additive", shared_mask=True,
                  seed=151),
]
