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
ZERO (slack gradients exactly 0), and on the whole sequence: GUARD:nan (q, k, v handed
over as views at the head of NaN-tailed allocations), UNINIT:out (the call under
``poisoned_allocations``), DET:out (the ordinary call, a repeat and a call under
``filled_allocations``: bitwise the same); outputs compared on document rows.
"""

from __future__ import annotations


import torch

from harness.families import CheckSpec, Family, forward_then_backward, run_guarded
from harness.faults import AdapterContractError
from harness.families import documents as docs
from harness.gradients import gradients
from harness.memory_checks import bitwise_equal, det_runs, guarded, poisoned_allocations
from harness.tolerance import Comparison, all_finite, compare, exact_zero


def case_features(case) -> frozenset[str]:
    return docs.case_features(case)


def checks_for(case) -> list[CheckSpec]:
    specs = [CheckSpec("SPLIT", "out"), CheckSpec("FIN", "out"), CheckSpec("FIN", "grads", True)]
    specs += [CheckSpec("SPLIT", t, True) for t in ("dq", "dk", "dv")]
    if case.slack:
        specs.append(CheckSpec("ZERO", "slack", True))
    return specs + [CheckSpec("GUARD", "nan"), CheckSpec("UNINIT", "out"), CheckSpec("DET", "out")]


def run(case, fn, device, oracle, wanted) -> dict[str, Comparison]:
    dtype = docs.TORCH_DTYPES[case.dtype]
    x = oracle.inputs
    whole = case.layout.step(0, case.layout.total)
    rows = slice(0, whole.query_slack_begin)
    results: dict[str, Comparison] = {}
    ordinary: dict = {}  # the whole run's output (document rows), DET's first run

    def call(need_grad=False, fill=None):
        def hand_over(t):
            t = t.to(device=device, dtype=dtype, copy=True)
            return guarded(t, fill) if fill else t.requires_grad_(need_grad)

        q, k, v = (hand_over(x[n]) for n in "qkv")
        out = fn(q, k, v, documents=case.documents, slack=case.slack, boundaries=case.boundaries,
                 scale=case.resolved_scale, causal=case.causal)
        if not isinstance(out, torch.Tensor):
            raise AdapterContractError(f"the adapter returned {type(out).__name__}, not a tensor")
        return dict(q=q, k=k, v=v), out

    def out_comparison(check, target, out):
        return compare(check, target, out.detach().cpu()[rows], oracle.whole_out[rows], oracle.whole_base_out[rows], dtype)

    def whole_run(specs):
        need_grad = any(s.backward for s in specs)
        leaves, live = call(need_grad)
        out = live.detach().cpu()
        ordinary.update(out=out[rows], need_grad=need_grad)
        forward_then_backward(results, specs, lambda spec, grads: judged(spec, out, grads),
                              lambda: gradients([live], [x["dout"].to(device=device, dtype=dtype)], leaves))

    def judged(spec, out, grads) -> Comparison:
        if spec.key == "SPLIT:out":
            return out_comparison("SPLIT", "out", out)
        if spec.check == "SPLIT":
            return compare("SPLIT", spec.target, grads[spec.target], oracle.whole_grads[spec.target],
                           oracle.whole_base_grads[spec.target], dtype, magnitude=oracle.whole_grad_magnitude,
                           cancelling=oracle.cancelling(spec.target, whole=True))
        if spec.key == "FIN:out":
            return all_finite("FIN", "out", {"out (document rows)": out[rows]})
        if spec.key == "FIN:grads":
            return all_finite("FIN", "grads", grads)
        slack = torch.arange(whole.len_q)[:, None, None] >= whole.query_slack_begin  # ZERO:slack
        return next((c for c in (exact_zero("ZERO", "slack", grads[n], slack) for n in ("dq", "dk", "dv"))
                     if c.status != "pass"), exact_zero("ZERO", "slack", grads["dq"], slack))

    def guard_run(specs):
        results["GUARD:nan"] = out_comparison("GUARD", "nan", call(fill="nan")[1])

    def uninit_run(specs):
        with poisoned_allocations():
            out = call()[1]
        results["UNINIT:out"] = out_comparison("UNINIT", "out", out)

    def det_run(specs):
        def again(context):  # the same call as the ordinary run, with or without gradients
            with context:
                return call(ordinary.get("need_grad", False))[1].detach().cpu()[rows]

        first = ordinary.get("out")
        runs = det_runs(again, first)
        results["DET:out"] = bitwise_equal("DET", "out", {k: {"out": o} for k, o in runs.items()})

    def checked(specs, body):
        run_guarded(results, wanted, specs, body)

    checked([s for s in wanted if s.check in ("SPLIT", "FIN", "ZERO")], whole_run)
    checked([s for s in wanted if s.check == "GUARD"], guard_run)
    checked([s for s in wanted if s.check == "UNINIT"], uninit_run)
    checked([s for s in wanted if s.check == "DET"], det_run)
    return results


FAMILY = Family(
    name="microsequences", positional=("q", "k", "v"), keywords=("documents", "slack", "boundaries", "scale", "causal"),
    case_type=docs.DocumentsCase, contract=__doc__, case_from_id=docs.case_from_id, case_features=case_features,
    checks_for=checks_for, oracle=docs.oracle,  # its whole_* fields are this family's truth
    run=run,
)
