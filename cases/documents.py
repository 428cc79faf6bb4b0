"""Documents cases: packed layouts that break varlen kernels.

Each layout is a whole packed sequence (document lengths, slack tail) and the starts
of its micro-sequences; the last micro-sequence is the step under test (so a layout
with boundaries has past K/V, and a boundary inside a document gives it a non-zero
first_document_begin). Document lengths sit at tile edges (15/16/17, 63/64/65,
127/128/129) next to empty and length-1 documents; head dims are not powers of two
(24, 40, 72) and Dk != Dv in one; dtypes rotate with them; heads mix MHA, GQA 2:1 and MQA;
some layouts set a scale other than 1/sqrt(D). The contract packs one sequence (no
batch dim): rows that differ are the documents themselves.
"""

from __future__ import annotations

from harness.families.documents import DocumentsCase

# (documents, slack, micro-sequence starts, scale)
LAYOUTS = [
    ((4, 1, 10), 0, (), 0.3),  # length-1 document in the middle
    ((5, 0, 3, 0, 9), 2, (), None),  # empty documents and a slack tail
    ((3, 6, 1, 10), 3, (2, 5), 0.125),  # seed 002's layout (PINNED) with three micro-sequences and slack
    ((16, 17, 15), 0, (16, 33), None),  # lengths at a tile of 16 +-1, boundaries on document starts
    ((40,), 5, (13, 29), None),  # one long document split three ways
    ((63, 0, 65, 64), 7, (100,), 1.0),  # tile of 64 +-1, an empty document, a cut inside the 65
    ((129, 127), 1, (128,), None),  # tile of 128 +-1, the cut one short of the first end
]
HEADS = [(2, 2, 24, 24), (4, 2, 40, 16), (3, 1, 72, 72)]  # with DTYPES: three kernels' worth of shapes
DTYPES = ("float32", "bfloat16", "float16")

GRID = [
    DocumentsCase(*HEADS[i % len(HEADS)], documents=docs, slack=slack, boundaries=cuts, dtype=DTYPES[i % len(DTYPES)],
                  scale=scale, seed=i)
    for i, (docs, slack, cuts, scale) in enumerate(LAYOUTS)
] + [
    # non-causal documents (the only mode nested-jagged SDPA has on CPU)
    DocumentsCase(2, 2, 24, 24, documents=(4, 1, 0, 17), slack=2, dtype="float32", causal=False, scale=0.3, seed=100),
    DocumentsCase(2, 2, 24, 24, documents=(3, 6, 1, 10), boundaries=(5,), dtype="float32", causal=False, seed=101),
]

PINNED = [
    # Seed 002: documents [4, 1, 10] in the micro-sequence under test, the first one
    # started 2 tokens earlier, after a 3-token document that is now a dropped prefix:
    # sequence_k_past = 5, first_document_begin = 3. cu_seqlens_k must start at 0 and
    # the K/V gradient of the dropped prefix must be exactly 0.
    DocumentsCase(4, 2, 16, 16, documents=(3, 6, 1, 10), boundaries=(5,), dtype="float32", seed=2),
    DocumentsCase(4, 2, 16, 16, documents=(3, 6, 1, 10), boundaries=(5,), dtype="bfloat16", seed=2),
    # A micro-sequence with no document at all, only slack: every row of the step is
    # empty, every K row a dropped prefix; each gradient must be exactly 0.
    DocumentsCase(3, 1, 72, 72, documents=(5, 3), slack=4, boundaries=(8,), dtype="float16", seed=102),
    # Found by a scan of 150 random layouts: eager flex_attention with a document mask is
    # 5.3x the fp32-accumulate error in bfloat16, worse than the naive bfloat16 reference
    # (flex_document_mask's known failure says why).
    DocumentsCase(6, 2, 8, 8, documents=(64, 64, 15), slack=3, boundaries=(23, 86), dtype="bfloat16", scale=0.125,
                  seed=368),
]
