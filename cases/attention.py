"""Attention cases: a grid that hits what symmetric shapes hide.

Shapes mix GQA ratios (6/2, 8/2, 3/1 with distinct K/V per head), Lq != Lk in both
directions including decode (Lq = 1), lengths that are not multiples of 8 or 64,
head dims 16/64/100 and Dk != Dv. Each shape meets each masking once, and the
dtype rotates through fp32/bf16/fp16 so every shape and masking sees several dtypes.
"""

from __future__ import annotations

from itertools import product

from harness.families.attention import AttentionCase

# (batch, heads_q, heads_kv, len_q, len_k, head_dim, head_dim_v)
SHAPES = [
    (2, 4, 4, 37, 64, 16, 16),
    (1, 6, 2, 1, 77, 64, 64),  # decode, 3 query heads per kv head
    (2, 8, 2, 64, 37, 100, 100),  # Lq > Lk: bottom-right causal leaves rows with no key
    (2, 3, 1, 13, 131, 16, 100),  # MQA, Dk != Dv
    (1, 2, 2, 100, 100, 64, 32),
    (2, 1, 1, 5, 9, 16, 16),
]

MASKINGS = [
    dict(),
    dict(causal=True, alignment="bottom_right"),
    dict(causal=True, alignment="top_left"),
    dict(window=(8, 0), alignment="bottom_right"),
    dict(window=(3, 4), alignment="top_left"),
    dict(mask="bool"),
    dict(mask="additive", causal=True, alignment="bottom_right"),
    dict(softcap=2.5, causal=True, alignment="bottom_right"),
]

DTYPES = ("float32", "bfloat16", "float16")

GRID = [
    AttentionCase(*shape, dtype=DTYPES[i % len(DTYPES)], seed=i, **masking)
    for i, (shape, masking) in enumerate(product(SHAPES, MASKINGS))
]

# Regressions found by fuzzing or reported by users, pinned so they always run.
PINNED: list[AttentionCase] = [
    # A custom scale and a window wider than the keys on a GQA decode step.
    AttentionCase(1, 8, 2, 1, 70, 64, 64, dtype="float32", window=(100, 0), scale=0.3, seed=1000),
    # Three kv heads, four query heads each, with a per-row mask.
    AttentionCase(2, 12, 3, 33, 65, 64, 64, dtype="bfloat16", causal=True, mask="bool", seed=1001),
    # A long decode step over three distinct kv heads.
    AttentionCase(1, 3, 3, 1, 200, 100, 100, dtype="float16", causal=True, seed=1002),
]
