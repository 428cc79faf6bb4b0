"""Document and micro-sequence layouts, and the forms kernels want derived from them.

A ``DocumentLayout`` is a packed sequence: document lengths (empty and length-1
documents allowed), a slack tail after the last document, and the boundaries at
which the sequence is cut into micro-sequences. Micro-sequence ``m`` holds the
query tokens ``[b_m, b_{m+1})`` and sees the K/V buffer ``[0, b_{m+1})``; its
``MicroStep`` gives everything a varlen kernel is called with: canonical
``cu_seqlens_q`` / ``cu_seqlens_k`` (both start at 0), ``first_document_begin`` (the
K row where its first document starts; K rows before it are the dropped prefix),
``sequence_k_past`` (= b_m), per-token document and position indices, and the dense
block-diagonal mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


class LayoutError(ValueError):
    """A layout that cannot describe a packed sequence; the message says why."""


def check_cu_seqlens(cu_seqlens, total: int, name: str = "cu_seqlens") -> list[int]:
    """Validate a canonical prefix sum over ``total`` rows; return it as a list."""
    values = [int(x) for x in (cu_seqlens.tolist() if isinstance(cu_seqlens, torch.Tensor) else cu_seqlens)]
    if not values:
        raise LayoutError(f"{name} is empty; it needs at least [0]")
    if values[0] != 0:
        raise LayoutError(f"{name} must start at 0 (canonical form), got {values[0]}: {values}")
    for i, (a, b) in enumerate(zip(values, values[1:])):
        if b < a:
            raise LayoutError(f"{name} is not non-decreasing at index {i + 1} ({a} -> {b}): {values}")
    if values[-1] > total:
        raise LayoutError(f"{name} ends at {values[-1]}, past the {total} rows it indexes: {values}")
    return values


@dataclass(frozen=True)
class MicroStep:
    """One micro-sequence: query rows [start, end) of the sequence, K/V rows [0, end)."""

    start: int
    end: int
    first_document_begin: int
    doc_query_lengths: tuple[int, ...]
    doc_key_lengths: tuple[int, ...]
    doc_ids: tuple[int, ...]  # index of each of the step's documents in the whole layout

    @property
    def sequence_k_past(self) -> int:
        return self.start

    @property
    def len_q(self) -> int:
        return self.end - self.start

    @property
    def len_k(self) -> int:
        return self.end

    @cached_property
    def cu_seqlens_q(self) -> torch.Tensor:
        return torch.tensor([0, *_cumsum(self.doc_query_lengths)], dtype=torch.int32)

    @cached_property
    def cu_seqlens_k(self) -> torch.Tensor:
        """Canonical: counts from ``first_document_begin``, not from K row 0."""
        return torch.tensor([0, *_cumsum(self.doc_key_lengths)], dtype=torch.int32)

    @property
    def query_slack_begin(self) -> int:
        return sum(self.doc_query_lengths)

    @property
    def key_slack_begin(self) -> int:
        return self.first_document_begin + sum(self.doc_key_lengths)

    def document_slices(self) -> list[tuple[int, slice, slice]]:
        """(document id, query rows, key rows) for each document of the step."""
        out, q0, k0 = [], 0, self.first_document_begin
        for doc, lq, lk in zip(self.doc_ids, self.doc_query_lengths, self.doc_key_lengths):
            out.append((doc, slice(q0, q0 + lq), slice(k0, k0 + lk)))
            q0, k0 = q0 + lq, k0 + lk
        return out

    def document_index_q(self) -> torch.Tensor:
        """[len_q] long: the step-local document index of each query row, -1 on slack."""
        index = torch.full((self.len_q,), -1, dtype=torch.long)
        for i, (_, rows, _) in enumerate(self.document_slices()):
            index[rows] = i
        return index

    def position_index_q(self) -> torch.Tensor:
        """[len_q] long: each query's key position inside its document (-1 on slack)."""
        position = torch.full((self.len_q,), -1, dtype=torch.long)
        for _, rows, keys in self.document_slices():
            lq, lk = rows.stop - rows.start, keys.stop - keys.start
            position[rows] = torch.arange(lk - lq, lk)
        return position

    def dense_mask(self, causal: bool = True) -> torch.Tensor:
        """Bool [len_q, len_k - first_document_begin]: block-diagonal (causal) over the narrowed K."""
        mask = torch.zeros(self.len_q, self.len_k - self.first_document_begin, dtype=torch.bool)
        fdb = self.first_document_begin
        for _, rows, keys in self.document_slices():
            lq, lk = rows.stop - rows.start, keys.stop - keys.start
            block = torch.ones(lq, lk, dtype=torch.bool)
            mask[rows, keys.start - fdb:keys.stop - fdb] = block.tril(lk - lq) if causal else block
        return mask


def _cumsum(lengths):
    total, out = 0, []
    for n in lengths:
        total += n
        out.append(total)
    return out


@dataclass(frozen=True)
class DocumentLayout:
    documents: tuple[int, ...]
    slack: int = 0
    boundaries: tuple[int, ...] = ()  # micro-sequence starts after 0, strictly increasing

    def __post_init__(self):
        problems = []
        if any(n < 0 for n in self.documents):
            problems.append(f"document lengths must be >= 0, got {list(self.documents)}")
        if self.slack < 0:
            problems.append(f"slack must be >= 0, got {self.slack}")
        total = sum(n for n in self.documents if n > 0) + max(self.slack, 0)
        cuts = [0, *self.boundaries, total]
        if any(b <= a for a, b in zip(cuts, cuts[1:])):
            problems.append(f"micro-sequence boundaries must be strictly increasing inside (0, {total}), got {list(self.boundaries)}")
        if total == 0:
            problems.append("the sequence is empty")
        if problems:
            raise LayoutError("invalid document layout: " + "; ".join(problems))

    @property
    def total(self) -> int:
        return sum(self.documents) + self.slack

    @property
    def document_starts(self) -> list[int]:
        return [0, *_cumsum(self.documents)][:-1]

    def step(self, start: int, end: int) -> MicroStep:
        """The micro-sequence of query rows [start, end)."""
        q_lengths, k_lengths, ids, fdb = [], [], [], None
        for doc, (begin, length) in enumerate(zip(self.document_starts, self.documents)):
            stop = begin + length
            overlaps = begin < end and stop > start if length else start <= begin < end
            if not overlaps:
                continue
            if fdb is None:
                fdb = begin
            q_lengths.append(min(stop, end) - max(begin, start))
            k_lengths.append(min(stop, end) - begin)
            ids.append(doc)
        return MicroStep(start, end, start if fdb is None else fdb, tuple(q_lengths), tuple(k_lengths), tuple(ids))

    def steps(self) -> list[MicroStep]:
        cuts = [0, *self.boundaries, self.total]
        return [self.step(a, b) for a, b in zip(cuts, cuts[1:])]

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens, total: int) -> "DocumentLayout":
        """A one-step layout from a canonical ``cu_seqlens`` over ``total`` rows (the rest is slack)."""
        values = check_cu_seqlens(cu_seqlens, total)
        return cls(tuple(b - a for a, b in zip(values, values[1:])), total - values[-1])
