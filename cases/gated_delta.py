"""Gated delta rule cases: lengths around chunk sizes, Dk != Dv, gate sweeps, grouped value heads."""

from __future__ import annotations

from harness.families.gated_delta import GatedDeltaCase

# (batch, length, heads_k, heads_v, dim_k, dim_v)
SHAPES = [
    (1, 1, 2, 2, 16, 16),  # decode: one token
    (2, 3, 1, 2, 16, 24),  # Dk != Dv: a transposed state cannot hide
    (2, 37, 2, 4, 16, 24),  # two value heads per key head
    (1, 63, 2, 2, 32, 32),
    (2, 65, 1, 1, 16, 32),  # one past a chunk of 64
    (1, 100, 2, 6, 16, 16),
]

GRID = [
    GatedDeltaCase(*shape, channel_gate=channel, gates=gates, initial_state=h0, split=shape[1] // 3, seed=i)
    for i, (shape, (channel, gates, h0)) in enumerate(
        (shape, mode) for shape in SHAPES
        for mode in ((False, "mild", True), (True, "mild", True), (False, "zero", False), (False, "extreme", True)))
]

PINNED: list[GatedDeltaCase] = [
    # In-kernel L2 normalisation of q and k, grouped heads, split mid-way.
    GatedDeltaCase(2, 37, 2, 4, 16, 24, l2norm=True, split=20, seed=500),
]

PINNED += [
    # Varlen: one packed row, an empty and a length-1 document, padding after the last.
    GatedDeltaCase(1, 20, 1, 2, 16, 24, documents=(7, 0, 1, 9), padding=3, seed=501),
    GatedDeltaCase(1, 70, 2, 2, 16, 16, documents=(33, 37), seed=502),
]

PINNED += [
    # SPLIT in calls of 64 tokens leaving remainders of 1, 6 and 63.
    GatedDeltaCase(1, 65, 2, 4, 16, 24, split=64, seed=510),
    GatedDeltaCase(1, 70, 1, 2, 16, 16, channel_gate=True, split=64, seed=511),
    GatedDeltaCase(1, 127, 2, 2, 16, 32, split=64, seed=512),
    # Two tokens; and constant log gates of -5 and -28 (FIN and accuracy where exp underflows in chunked sums).
    GatedDeltaCase(2, 2, 1, 1, 16, 16, split=1, seed=513),
    GatedDeltaCase(1, 100, 2, 4, 16, 24, gates="minus5", split=33, seed=514),
    GatedDeltaCase(1, 100, 2, 2, 16, 16, gates="minus28", split=33, seed=515),
    GatedDeltaCase(1, 100, 2, 2, 16, 16, channel_gate=True, gates="minus28", split=33, seed=516),
]
