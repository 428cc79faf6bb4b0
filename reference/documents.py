r"""Document (varlen) attention for one micro-sequence, from the equation.

Packed queries of one micro-sequence attend, document by document, to a K/V buffer
that may hold a past::

    k, v rows:  [ dropped prefix | document 0 ... | document 1 | ... | slack ]
                0              fdb
    q rows:                     [ doc 0 (its last qlen_0 tokens) | doc 1 | ... | slack ]

For document i, with ``cu_seqlens_q`` and ``cu_seqlens_k`` canonical (both start at 0;
``cu_seqlens_k`` counts from ``first_document_begin``)::

    Q_i = q[cu_q[i] : cu_q[i+1]]                              [Lq_i, Hq, D]
    K_i = k[fdb + cu_k[i] : fdb + cu_k[i+1]]  (same for V)    [Lk_i, Hkv, D]
    out[cu_q[i] : cu_q[i+1]] = attention(Q_i, K_i, V_i), causal bottom-right aligned
                               (the document's last query sees its last key)

Rows of q past ``cu_q[-1]`` and of k past ``fdb + cu_k[-1]`` are slack; ``k[:fdb]`` is
the dropped prefix. Neither belongs to any document: slack output rows are 0, and
nothing flows back into slack or prefix rows (their gradients are exactly 0).
Grouped-query heads as in ``reference.attention``. Empty documents are allowed.
"""

from __future__ import annotations

import torch

from reference.attention import attention, attention_with_grads


def document_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    first_document_begin: int = 0,
    scale: float | None = None,
    causal: bool = True,
    attend=attention,
) -> torch.Tensor:
    """q ``[Tq, Hq, D]``, k ``[Tk, Hkv, D]``, v ``[Tk, Hkv, Dv]`` -> out ``[Tq, Hq, Dv]``.

    ``attend`` computes each document (``reference.attention``; the blocked twin for long ones)."""
    pieces = []
    cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for i in range(len(cu_q) - 1):
        q_i = q[cu_q[i]:cu_q[i + 1]]
        k_i = k[first_document_begin + cu_k[i]:first_document_begin + cu_k[i + 1]]
        v_i = v[first_document_begin + cu_k[i]:first_document_begin + cu_k[i + 1]]
        # attention() takes [B, H, L, D]: one batch row, heads first.
        out_i, _ = attend(q_i.transpose(0, 1)[None], k_i.transpose(0, 1)[None], v_i.transpose(0, 1)[None],
                          scale=scale, causal=causal, alignment="bottom_right")
        pieces.append(out_i[0].transpose(0, 1))
    slack = q.shape[0] - cu_q[-1]
    pieces.append(q.new_zeros(slack, q.shape[1], v.shape[2]))
    return torch.cat(pieces, dim=0)


def document_attention_with_grads(q, k, v, dout, *, cu_seqlens_q, cu_seqlens_k, first_document_begin=0, scale=None,
                                  causal=True, attend=attention_with_grads) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``document_attention``'s output and the gradients of ``sum(out * dout)``, each
    document through ``attend`` (``reference.attention.attention_with_grads``; the blocked
    twin's for long ones): ``dout`` ``[Tq, Hq, Dv]``;
    ``{"dq": [Tq, Hq, D], "dk": [Tk, Hkv, D], "dv": [Tk, Hkv, Dv]}``, exactly 0 on slack and
    dropped-prefix rows. Documents share no rows, so each gradient row is one document's:
    bitwise what autograd gives (``tests/test_attention_backward.py``)."""
    out = q.new_zeros(*q.shape[:2], v.shape[2])
    grads = {"dq": torch.zeros_like(q), "dk": torch.zeros_like(k), "dv": torch.zeros_like(v)}
    cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for i in range(len(cu_q) - 1):
        rows = slice(cu_q[i], cu_q[i + 1])
        keys = slice(first_document_begin + cu_k[i], first_document_begin + cu_k[i + 1])
        heads_first = [x.transpose(0, 1)[None] for x in (q[rows], k[keys], v[keys], dout[rows])]
        out_i, _, grads_i = attend(*heads_first, scale=scale, causal=causal, alignment="bottom_right")
        out[rows] = out_i[0].transpose(0, 1)
        for name, where in (("dq", rows), ("dk", keys), ("dv", keys)):
            grads[name][where] = grads_i[name][0].transpose(0, 1)
    return out, grads
