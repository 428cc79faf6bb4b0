"""The microsequences family: a whole packed sequence computed micro-sequence by micro-sequence.

Adapter contract (tensors on the variant's device, in the case dtype)::

    fn(q, k, v, *, documents, slack, boundaries, scale, causal) -> out

    q, k, v   [T, Hq, D], [T, Hkv, D], [T, Hkv, Dv]: every micro-sequence's rows, concatenated
    documents tuple of document lengths; slack: rows after the last document
    boundaries micro-sequence starts after 0; micro-sequence m holds query rows
              [b_m, b_{m+1}) and may see K/V rows [0, b_{m+1}) only
    out       [T, Hq, Dv]; slack rows are not compared

The truth is one documents-oracle call over the whole sequence (causal documents,
bottom-right). Cases are the documents catalogue's causal cases with more than one
micro-sequence. Checks: SPLIT (output and gradients of q, k, v == one shot), FIN,
ZERO (slack gradients exactly 0).
"""

from __future__ import annotations

import math

import torch

from harness.families import CheckSpec, Family, run_guarded
from harness.gradients import gradients
from harness.families import documents as docs
from harness.tolerance import Comparison, all_finite, compare, exact_zero


def case_features(case) -> frozenset[str]:
    return docs.case_features(case)


def checks_for(case) -> list[CheckSpec]:
    specs = [CheckSpec("SPLIT", "out"), CheckSpec("FIN", "out"), CheckSpec("FIN", "grads", True)]
    specs += [CheckSpec("SPLIT", t, True) for t in ("dq", "dk", "dv")]
    if case.slack:
        specs.append(CheckSpec("ZERO", "slack", True))
    return specs


def run(case, fn, device, oracle, wanted) -> dict[str, Comparison]:
    dtype = docs.TORCH_DTYPES[case.dtype]
    x = oracle.inputs
    whole = case.layout.step(0, case.layout.total)
    rows = slice(0, whole.query_slack_begin)
    results: dict[str, Comparison] = {}

    def whole_run(specs):
        need_grad = any(s.backward for s in specs)
        q, k, v = (x[n].to(device=device, dtype=dtype, copy=True).requires_grad_(need_grad) for n in "qkv")
        out = fn(q, k, v, documents=case.documents, slack=case.slack, boundaries=case.boundaries,
                 scale=1.0 / math.sqrt(case.head_dim), causal=case.causal)
        grads = gradients([out], [x["dout"].to(device=device, dtype=dtype)], dict(q=q, k=k, v=v)) if need_grad else {}
        out = out.detach().cpu()
        for spec in specs:
            if spec.key == "SPLIT:out":
                r = compare("SPLIT", "out", out[rows], oracle.whole_out[rows], oracle.whole_base_out[rows], dtype)
            elif spec.check == "SPLIT":
                r = compare("SPLIT", spec.target, grads[spec.target], oracle.whole_grads[spec.target],
                            oracle.whole_base_grads[spec.target], dtype, magnitude=oracle.whole_grad_magnitude)
            elif spec.key == "FIN:out":
                r = all_finite("FIN", "out", {"out (document rows)": out[rows]})
            elif spec.key == "FIN:grads":
                r = all_finite("FIN", "grads", grads)
            else:  # ZERO:slack
                slack = torch.arange(whole.len_q)[:, None, None] >= whole.query_slack_begin
                r = next((c for c in (exact_zero("ZERO", "slack", grads[n], slack) for n in ("dq", "dk", "dv"))
                          if c.status != "pass"), exact_zero("ZERO", "slack", grads["dq"], slack))
            results[spec.key] = r

    run_guarded(results, wanted, wanted, whole_run)
    return results

FAMILY = Family(
    name="microsequences", positional=("q", "k", "v"), keywords=("documents", "slack", "boundaries", "scale", "causal"),
    case_type=docs.DocumentsCase, contract=__doc__, case_from_id=docs.case_from_id, case_features=case_features,
    checks_for=checks_for, oracle=docs.oracle,  # its whole_* fields are this family's truth
    run=run,
)
