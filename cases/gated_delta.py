"""Gated delta rule cases: lengths and cuts at tile edges, head dims that are not powers of
two (K != V), gate sweeps, grouped value heads, custom scales, zero-length calls and
packed rows with empty documents."""

from __future__ import annotations

from harness.families.gated_delta import GatedDeltaCase

# Gate and initial-state modes: (per-channel gate, gates, random initial state).
HEAD_MILD, CHANNEL_MILD, HEAD_ZERO, HEAD_EXTREME = (False, "mild", True), (True, "mild", True), (False, "zero", False), (False, "extreme", True)
ALL_MODES = (HEAD_MILD, CHANNEL_MILD, HEAD_ZERO, HEAD_EXTREME)

# (batch, length, heads_k, heads_v, dim_k, dim_v) and the modes each shape runs: every
# mode on short calls, two each on the longer ones (every mode still meets a tile edge).
SHAPES = [
    ((1, 1, 2, 2, 16, 16), ALL_MODES),  # decode: one token
    ((2, 3, 1, 2, 24, 40), ALL_MODES),  # K != V, neither a power of two: a transposed state or a K-tile overrun cannot hide
    ((1, 15, 1, 3, 40, 24), (HEAD_MILD, HEAD_ZERO)),  # one short of a tile of 16, three value heads per key head, K > V
    ((2, 17, 2, 4, 16, 24), (CHANNEL_MILD, HEAD_EXTREME)),  # one past a tile of 16, two value heads per key head
    ((1, 63, 1, 1, 72, 100), (HEAD_MILD, HEAD_EXTREME)),  # one short of a chunk of 64
    ((2, 65, 1, 1, 16, 32), (CHANNEL_MILD, HEAD_ZERO)),  # one past a chunk of 64
]

GRID = [
    GatedDeltaCase(*shape, channel_gate=channel, gates=gates, initial_state=h0, split=shape[1] // 3, seed=i)
    for i, (shape, (channel, gates, h0)) in enumerate((shape, mode) for shape, modes in SHAPES for mode in modes)
]

PINNED: list[GatedDeltaCase] = [
    # In-kernel L2 normalisation of q and k, grouped heads, split mid-way.
    GatedDeltaCase(2, 37, 2, 4, 16, 24, l2norm=True, split=20, seed=500),
]

PINNED += [
    # Varlen: one packed row, an empty and a length-1 document, padding after the last.
    GatedDeltaCase(1, 20, 1, 2, 16, 24, documents=(7, 0, 1, 9), padding=3, seed=501),
]

PINNED += [
    # SPLIT in calls of 64 tokens leaving remainders of 6 and 63 (and 1: seed 523 below).
    GatedDeltaCase(1, 70, 1, 2, 16, 16, channel_gate=True, split=64, seed=511),
    GatedDeltaCase(1, 127, 2, 2, 16, 32, split=64, seed=512),
    # Two tokens; and constant log gates of -5 and -28 (FIN and accuracy where exp underflows in chunked sums).
    GatedDeltaCase(2, 2, 1, 1, 16, 16, split=1, seed=513),
    GatedDeltaCase(1, 65, 2, 4, 16, 24, gates="minus5", split=33, seed=514),
    GatedDeltaCase(1, 65, 2, 2, 16, 16, gates="minus28", split=33, seed=515),
    GatedDeltaCase(1, 65, 2, 2, 16, 16, channel_gate=True, gates="minus28", split=33, seed=516),
]

PINNED += [
    # Tile edges with head dims that are not powers of two: a whole tile of 16, then
    # cuts of 15 + 1, 63 + 1, 64 + 64, 64 + 64 + 1 and 16 + 1 (the chunk boundaries of
    # chunked kernels), K and V each past, or short of, a power-of-two tile.
    GatedDeltaCase(1, 16, 2, 2, 100, 136, split=15, seed=520),
    GatedDeltaCase(1, 64, 1, 2, 72, 100, split=63, seed=521),
    GatedDeltaCase(1, 128, 1, 2, 24, 40, split=64, seed=522),
    GatedDeltaCase(1, 129, 1, 1, 40, 24, split=64, seed=523),
    GatedDeltaCase(1, 17, 1, 1, 192, 192, split=16, seed=529),
    # Scales other than 1/sqrt(K): q scaled upstream (0.125) and a temperature of 1, with L2 norm.
    GatedDeltaCase(2, 15, 1, 2, 24, 40, scale=0.125, split=8, seed=524),
    GatedDeltaCase(1, 33, 2, 2, 48, 80, l2norm=True, scale=1.0, split=16, seed=525),
    # A zero-length call: out [B, 0, HV, V], the initial state back (UNINIT: written, not left empty).
    GatedDeltaCase(2, 0, 1, 2, 24, 40, seed=526),
    # Packed rows: documents at tile edges, empty ones first, inside and last (PACK:empty_documents,
    # UNINIT on their final states), padding after; a custom scale.
    GatedDeltaCase(1, 55, 1, 2, 24, 40, documents=(16, 0, 17, 15, 0), padding=7, scale=0.3, seed=527),
    GatedDeltaCase(1, 129, 2, 2, 16, 16, documents=(0, 64, 65), seed=528),
    # One token with K = V = 128 (drawn): transformers' chunked backward returns dg with stride 64 on its
    # size-1 dims, which DET must still compare byte for byte.
    GatedDeltaCase(1, 1, 1, 1, 128, 128, gates="extreme", seed=59628),
]
