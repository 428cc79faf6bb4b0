"""Micro-sequence cases: the documents catalogue's causal layouts cut into micro-sequences."""

from cases.documents import GRID as _DOCUMENT_GRID
from cases.documents import PINNED as _DOCUMENT_PINNED

GRID = [c for c in _DOCUMENT_GRID if c.causal and c.boundaries]
PINNED = [c for c in _DOCUMENT_PINNED if c.causal and c.boundaries]
