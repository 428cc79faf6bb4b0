"""Documents cases: packed layouts that break varlen kernels.

Each layout is a whole packed sequence (document lengths, slack tail) and the starts
of its micro-sequences; the last micro-sequence is the step under test (so a layout
with boundaries has past K/V, and a boundary inside a document gives it a non-zero
first_document_begin). Dtypes rotate; heads mix MHA, GQA 2:1 and MQA.
"""

from __future__ import annotations

from harness.families.documents import DocumentsCase

# (documents, slack, micro-sequence starts)
LAYOUTS = [
    ((7,), 0, ()),  # one document, no past
    ((4, 1, 10), 0, ()),  # length-1 document in the middle
    ((5, 0, 3, 0, 9), 2, ()),  # empty documents and a slack tail
    ((3, 6, 1, 10), 0, (5,)),  # seed 002 in small: past K/V, boundary inside document 1
    ((3, 6, 1, 10), 3, (2, 5)),  # the same with three micro-sequences and slack
    ((16, 17, 15), 0, (16, 33)),  # lengths at a chunk boundary +-1, boundaries on document starts
    ((1, 1, 1, 1), 1, (2,)),  # length-1 documents only
    ((40,), 5, (13, 29)),  # one long document split three ways
]
HEADS = [(2, 2, 16, 16), (4, 2, 16, 24), (3, 1, 32, 32)]
DTYPES = ("float32", "bfloat16", "float16")

GRID = [
    DocumentsCase(*HEADS[i % len(HEADS)], documents=docs, slack=slack, boundaries=cuts, dtype=DTYPES[i % len(DTYPES)], seed=i)
    for i, (docs, slack, cuts) in enumerate(LAYOUTS)
] + [
    # non-causal documents (the only mode nested-jagged SDPA has on CPU)
    DocumentsCase(2, 2, 16, 16, documents=(4, 1, 10), slack=2, dtype="float32", causal=False, seed=100),
    DocumentsCase(4, 2, 16, 16, documents=(3, 6, 1, 10), boundaries=(5,), dtype="float32", causal=False, seed=101),
]

PINNED = [
    # Seed 002: documents [4, 1, 10] in the micro-sequence under test, the first one
    # started 2 tokens earlier, after a 3-token document that is now a dropped prefix:
    # sequence_k_past = 5, first_document_begin = 3. cu_seqlens_k must start at 0 and
    # the K/V gradient of the dropped prefix must be exactly 0.
    DocumentsCase(4, 2, 16, 16, documents=(3, 6, 1, 10), boundaries=(5,), dtype="float32", seed=2),
    DocumentsCase(4, 2, 16, 16, documents=(3, 6, 1, 10), boundaries=(5,), dtype="bfloat16", seed=2),
]
