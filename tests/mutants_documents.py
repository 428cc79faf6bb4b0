"""Deliberately broken packed-document adapters, one bug each (seed 002's failure modes)."""

from __future__ import annotations

import math

import torch

from harness.variants._documents import document_ids, document_mask
from harness.variants.documents_torch import backup_explicit_mask


def _attend(q, k, v, allowed, scale):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    scores = scores.masked_fill(~allowed, -math.inf)
    empty = ~allowed.any(-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return torch.einsum("hqk,khd->qhd", probs, v)


def non_canonical_cu_seqlens_k(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """Seed 002's bug: cu_seqlens_k shifted to start at first_document_begin and K left
    un-narrowed; the mask builder then counts the dropped prefix into document 0."""
    cu_k = cu_seqlens_k + first_document_begin
    dq, dk = document_ids(cu_seqlens_q, q.shape[0]), document_ids(cu_k, k.shape[0])
    dk = torch.where(torch.arange(k.shape[0]) < cu_k[-1], dk, -1)
    allowed = (dq[:, None] == dk[None, :]) & (dq[:, None] >= 0)
    return _attend(q, k, v, allowed, scale)


def leaks_across_documents(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """A causal mask over the packed rows with no document boundaries."""
    k, v = k[first_document_begin:], v[first_document_begin:]
    lq, lk = q.shape[0], k.shape[0]
    allowed = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
    allowed[int(cu_seqlens_q[-1]):] = False
    return _attend(q, k, v, allowed, scale)


class _GradientGarbage(torch.autograd.Function):
    """Identity forward; backward writes a constant into the gradient rows it is given."""

    @staticmethod
    def forward(ctx, x, rows):
        ctx.rows = rows
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        grad[ctx.rows] = 1e-3
        return grad, None


def prefix_gradient_not_zeroed(q, k, v, **kw):
    """Right output; the K/V gradient of the dropped prefix is left as garbage."""
    prefix = slice(0, kw["first_document_begin"])
    return backup_explicit_mask(q, _GradientGarbage.apply(k, prefix), _GradientGarbage.apply(v, prefix), **kw)


def slack_gradient_garbage(q, k, v, **kw):
    """Right output; the query gradient of the slack tail is left as garbage."""
    return backup_explicit_mask(_GradientGarbage.apply(q, slice(int(kw["cu_seqlens_q"][-1]), None)), k, v, **kw)


def forgets_past_kv(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """Treats every micro-sequence as the start of the sequence: K/V = its own rows only."""
    k, v = k[-q.shape[0]:], v[-q.shape[0]:]
    return _attend(q, k, v, document_mask(cu_seqlens_q, cu_seqlens_q, q.shape[0], q.shape[0], causal), scale)


def nan_in_slack_rows(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal):
    """Softmax over the slack rows' all -inf scores gives NaN there; the rows are not
    compared, but P^T dO spreads the NaN into every key's dV."""
    k, v = k[first_document_begin:], v[first_document_begin:]
    allowed = document_mask(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], causal)
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = (torch.einsum("qhd,khd->hqk", q, k) * scale).masked_fill(~allowed, -math.inf)
    return torch.einsum("hqk,khd->qhd", torch.softmax(scores, dim=-1), v)


# ---------------------------------------------------------------------------- memory conditions
# Right on ordinary inputs (OUT, GRAD, PACK, ZERO, INV, SPLIT pass); only the condition
# the named check creates shows the bug. Each works on the canonical layout: K/V narrowed
# by first_document_begin through cu_seqlens_k.

TILE = 16  # the kernels below load each document's keys in tiles of 16 rows


def row_tile(x: torch.Tensor, start: int, length: int, tile: int = TILE) -> torch.Tensor:
    """Rows [start, start + length) of x [T, H, D] rounded up to whole tiles, as a kernel
    loads them: the rows past come straight from x's storage where it has them (later
    documents, slack, or whatever lies past the end of the allocation), else zeros."""
    x = x if x.is_contiguous() else x.contiguous()
    padded = -(-length // tile) * tile
    row = x.shape[1] * x.shape[2]
    room = x.untyped_storage().nbytes() // x.element_size() - x.storage_offset()
    if room >= (start + padded) * row:
        return torch.as_strided(x, (padded, *x.shape[1:]), x.stride(), x.storage_offset() + start * row)
    part = x[start:start + length]
    return torch.cat([part, part.new_zeros(padded - length, *x.shape[1:])])


def _documents(cu_seqlens_q, cu_seqlens_k, first_document_begin):
    """(query rows, first key row, key count) of each document with queries."""
    cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    return [(slice(cu_q[i], cu_q[i + 1]), first_document_begin + cu_k[i], cu_k[i + 1] - cu_k[i])
            for i in range(len(cu_q) - 1) if cu_q[i + 1] > cu_q[i]]


def _tile_keep(len_q, len_k, padded, causal):
    """Bool [Lq, padded]: inside the document and, causal, bottom-right visible."""
    j = torch.arange(padded)[None, :]
    keep = j < len_k
    return keep & (j <= torch.arange(len_q)[:, None] + len_k - len_q) if causal else keep.expand(len_q, padded)


def tiled_documents(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, first_document_begin, scale, causal,
                    fault="v_tail"):
    """Each document's K/V loaded in whole tiles of 16 rows from k's and v's storage
    (``row_tile``), the padded keys masked. ``fault`` as ``mutants_attention.tiled_attention``:
    "v_tail" weighs the padded value rows by exact 0s; "nan_skipping_max" takes the row max
    over the raw padded tile with a NaN-ignoring max."""
    group = q.shape[1] // k.shape[1]
    pieces, end = [], 0
    for rows, start, len_k in _documents(cu_seqlens_q, cu_seqlens_k, first_document_begin):
        k_t = row_tile(k, start, len_k).repeat_interleave(group, 1)
        v_t = row_tile(v, start, len_k).repeat_interleave(group, 1)
        s = torch.einsum("qhd,khd->hqk", q[rows], k_t) * scale
        keep = _tile_keep(rows.stop - rows.start, len_k, k_t.shape[0], causal)
        if fault == "v_tail":
            p = torch.softmax(s.masked_fill(~keep, -math.inf), dim=-1)
            pieces.append(torch.einsum("hqk,khd->qhd", p, v_t))
        else:
            inside = torch.arange(k_t.shape[0]) < len_k
            raw = torch.where(keep | ~inside, s, -math.inf)
            m = torch.where(raw.isnan(), -math.inf, raw).amax(-1, keepdim=True).detach()
            e = torch.exp(s.masked_fill(~keep, -math.inf) - m)
            o = torch.einsum("hqk,khd->qhd", e, torch.where(inside[:, None, None], v_t, 0.0))
            pieces.append(o / e.sum(-1).transpose(0, 1)[..., None])
        end = rows.stop
    pieces.append(q.new_zeros(q.shape[0] - end, q.shape[1], v.shape[2]))
    return torch.cat(pieces)


def reads_past_the_last_key_tile(q, k, v, **kw):
    """Loads each document's K/V in tiles of 16 rows and weighs the rows past the
    document by 0: NaN once the memory past the end of v holds NaN."""
    return tiled_documents(q, k, v, **kw, fault="v_tail")


def nan_skipping_max_over_the_key_tile(q, k, v, **kw):
    """The row max over each document's padded key tile with a NaN-ignoring max: a NaN
    past the end is skipped, a huge finite value wins and every weight underflows."""
    return tiled_documents(q, k, v, **kw, fault="nan_skipping_max")


class _TiledDocumentScores(torch.autograd.Function):
    """s = q_i @ k_i^T of one document (forward exact); backward's dq reads the document's
    keys in whole tiles past its end (the padded columns of dS are exact 0s)."""

    @staticmethod
    def forward(ctx, q, k):
        ctx.save_for_backward(q, k)
        return torch.einsum("qhd,khd->hqk", q, k)

    @staticmethod
    def backward(ctx, ds):
        q, k = ctx.saved_tensors
        k_t = row_tile(k, 0, k.shape[0])
        ds_t = torch.cat([ds, ds.new_zeros(*ds.shape[:-1], k_t.shape[0] - k.shape[0])], -1)
        return torch.einsum("hqk,khd->qhd", ds_t, k_t), torch.einsum("hqk,qhd->khd", ds, q)


def backward_reads_past_the_last_key_tile(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                          first_document_begin, scale, causal):
    """Forward exact per document; the backward's dq reads whole key tiles past the end of k."""
    group = q.shape[1] // k.shape[1]
    pieces, end = [], 0
    for rows, start, len_k in _documents(cu_seqlens_q, cu_seqlens_k, first_document_begin):
        k_i = k[start:start + len_k]  # a view: its tile reads on into k's storage (with GQA, a copy's)
        k_i = k_i.repeat_interleave(group, 1) if group > 1 else k_i
        s = _TiledDocumentScores.apply(q[rows], k_i) * scale
        keep = _tile_keep(rows.stop - rows.start, len_k, len_k, causal)
        p = torch.softmax(s.masked_fill(~keep, -math.inf), dim=-1)
        pieces.append(torch.einsum("hqk,khd->qhd", p, v[start:start + len_k].repeat_interleave(group, 1)))
        end = rows.stop
    pieces.append(q.new_zeros(q.shape[0] - end, q.shape[1], v.shape[2]))
    return torch.cat(pieces)


def accumulates_into_an_unzeroed_output(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                        first_document_begin, scale, causal):
    """Adds each document's result into an output it never cleared (right when the
    allocator hands back zeros, NaN under poisoned allocations)."""
    from mutants_attention import _allocated

    out = _allocated(q.shape[0], q.shape[1], v.shape[2], like=q)
    kw = dict(max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, first_document_begin=first_document_begin,
              scale=scale, causal=causal)
    return out + backup_explicit_mask(q, k, v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, **kw)


def slack_and_prefix_gradients_left_unwritten(q, k, v, **kw):
    """Right output; the backward writes dq, dk, dv only for document rows: the slack's
    and the dropped prefix's rows (exactly 0 by the contract) keep what was allocated."""
    from mutants_attention import _RowsOfGradWritten

    q_rows = (torch.arange(q.shape[0]) < int(kw["cu_seqlens_q"][-1]))[:, None, None]
    fdb = kw["first_document_begin"]
    k_index = torch.arange(k.shape[0])
    k_rows = ((k_index >= fdb) & (k_index < fdb + int(kw["cu_seqlens_k"][-1])))[:, None, None]
    return backup_explicit_mask(_RowsOfGradWritten.apply(q, q_rows), _RowsOfGradWritten.apply(k, k_rows),
                                _RowsOfGradWritten.apply(v, k_rows), **kw)


def _probabilities(q, k, cu_seqlens_q, cu_seqlens_k, causal, scale, scores=None):
    group = q.shape[1] // k.shape[1]
    allowed = document_mask(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], causal)
    s = torch.einsum("qhd,khd->hqk", q, k.repeat_interleave(group, 1)) if scores is None else scores
    s = (s * scale).masked_fill(~allowed, -math.inf)
    empty = ~allowed.any(-1, keepdim=True)
    return torch.softmax(s.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)


def split_order_follows_a_call_counter(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                       first_document_begin, scale, causal):
    """P @ V in one product on odd calls, in two halves of the keys on even ones: right
    to the last bits, not bitwise the same from one call to the next."""
    from mutants_attention import _next_call

    k, v = k[first_document_begin:], v[first_document_begin:]
    p = _probabilities(q, k, cu_seqlens_q, cu_seqlens_k, causal, scale)
    v = v.repeat_interleave(q.shape[1] // k.shape[1], 1)
    if _next_call("forward") % 2:
        return torch.einsum("hqk,khd->qhd", p, v)
    half = k.shape[0] // 2
    return torch.einsum("hqk,khd->qhd", p[..., :half], v[:half]) + torch.einsum("hqk,khd->qhd", p[..., half:], v[half:])


def dq_order_follows_a_call_counter(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                    first_document_begin, scale, causal):
    """Forward the same on every call; the backward sums dq over the keys in one product
    or in two halves, alternating from call to call."""
    from mutants_attention import _CounterOrderedScores

    k, v = k[first_document_begin:], v[first_document_begin:]
    group = q.shape[1] // k.shape[1]
    scores = _CounterOrderedScores.apply(q.transpose(0, 1)[None], k.repeat_interleave(group, 1).transpose(0, 1)[None])[0]
    p = _probabilities(q, k, cu_seqlens_q, cu_seqlens_k, causal, scale, scores=scores)
    return torch.einsum("hqk,khd->qhd", p, v.repeat_interleave(group, 1))


# ---------------------------------------------------------------------------- micro-sequence drivers
# The microsequences contract: the whole sequence in, the driver runs each micro-sequence.

def _micro_steps(documents, slack, boundaries):
    from harness.layouts import DocumentLayout

    return DocumentLayout(tuple(documents), slack, tuple(boundaries)).steps()


def _step_kwargs(step, scale, causal):
    return dict(cu_seqlens_q=step.cu_seqlens_q, cu_seqlens_k=step.cu_seqlens_k, max_seqlen_q=max(step.doc_query_lengths, default=0),
                max_seqlen_k=max(step.doc_key_lengths, default=0), first_document_begin=step.first_document_begin,
                scale=scale, causal=causal)


def micro_sequences_read_past_the_buffer(q, k, v, *, documents, slack, boundaries, scale, causal):
    """Each micro-sequence attends to the K/V buffer so far as a view of k and v, its
    documents' keys loaded in whole tiles (``reads_past_the_last_key_tile``): the last
    micro-sequence's tiles run past the end of the buffer."""
    return torch.cat([reads_past_the_last_key_tile(q[s.start:s.end], k[:s.end], v[:s.end], **_step_kwargs(s, scale, causal))
                      for s in _micro_steps(documents, slack, boundaries)])


def micro_sequences_into_an_unzeroed_output(q, k, v, *, documents, slack, boundaries, scale, causal):
    """Adds each micro-sequence's rows into one output buffer it never cleared."""
    from mutants_attention import _allocated

    out = _allocated(q.shape[0], q.shape[1], v.shape[2], like=q)
    rows = [backup_explicit_mask(q[s.start:s.end], k[:s.end], v[:s.end], **_step_kwargs(s, scale, causal))
            for s in _micro_steps(documents, slack, boundaries)]
    return out + torch.cat(rows)


def micro_sequence_order_follows_a_call_counter(q, k, v, *, documents, slack, boundaries, scale, causal):
    """Every other call adds each micro-sequence's P @ V in two halves of its keys (a split
    chosen by a counter kept between calls): right to the last bits, not bitwise repeatable."""
    from mutants_attention import _next_call

    split = _next_call("micro") % 2 == 0
    outs = []
    for s in _micro_steps(documents, slack, boundaries):
        kw = _step_kwargs(s, scale, causal)
        ks, vs = k[kw["first_document_begin"]:s.end], v[kw["first_document_begin"]:s.end]
        p = _probabilities(q[s.start:s.end], ks, kw["cu_seqlens_q"], kw["cu_seqlens_k"], causal, scale)
        vs = vs.repeat_interleave(q.shape[1] // k.shape[1], 1)
        half = ks.shape[0] // 2 if split else ks.shape[0]
        out = torch.einsum("hqk,khd->qhd", p[..., :half], vs[:half])
        outs.append(out + torch.einsum("hqk,khd->qhd", p[..., half:], vs[half:]) if split else out)
    return torch.cat(outs)
