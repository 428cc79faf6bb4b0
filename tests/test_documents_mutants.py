"""Documents and micro-sequences: every check catches its mutant; correct variants pass."""

import pytest

import mutants_documents as m
from harness.families import get_family
from harness.families.documents import DocumentsCase
from harness.registry import Variant, variants
from harness.runner import OracleCache, evaluate
from harness.tolerance import ERROR, FAIL, PASS, UNSUPPORTED

SEED_002 = DocumentsCase(4, 2, 16, 16, documents=(3, 6, 1, 10), boundaries=(5,), seed=2)
SLACK = DocumentsCase(2, 2, 16, 16, documents=(5, 0, 3, 9), slack=3, boundaries=(7,), seed=3)
# a dropped prefix, an empty document, a last document of 17 (one past a tile of 16) that
# ends 3 rows before the end of K, a head dim that is not a power of two, Dk != Dv
TAIL = DocumentsCase(2, 2, 24, 40, documents=(3, 6, 0, 17), slack=3, boundaries=(5,), seed=4)
CASES = (SEED_002, SLACK, TAIL)
# the checks ordinary inputs drive, which the memory-condition mutants must pass
ORDINARY = ["OUT:out", "PACK:documents", "FIN:out", "GRAD:dq", "GRAD:dk", "GRAD:dv", "FIN:grads", "ZERO:prefix",
            "ZERO:slack", "INV:prefix", "INV:slack", "INV:other_document", "SPLIT:out", "SPLIT:dq", "SPLIT:dk", "SPLIT:dv"]
ALL = ("float32", "bfloat16", "float16", "float64")

CAUGHT = [
    (m.non_canonical_cu_seqlens_k, SEED_002, "ZERO:prefix", []),
    (m.non_canonical_cu_seqlens_k, SEED_002, "INV:prefix", []),
    (m.non_canonical_cu_seqlens_k, SEED_002, "OUT:out", []),
    (m.leaks_across_documents, SLACK, "INV:other_document", []),
    (m.leaks_across_documents, SLACK, "PACK:documents", []),
    (m.prefix_gradient_not_zeroed, SEED_002, "ZERO:prefix", ["OUT:out", "GRAD:dq", "INV:prefix"]),
    (m.slack_gradient_garbage, SLACK, "ZERO:slack", ["OUT:out", "GRAD:dk", "INV:slack"]),
    (m.slack_gradient_garbage, SLACK, "GRAD:dq", ["OUT:out"]),
    (m.nan_in_slack_rows, SLACK, "FIN:grads", ["OUT:out", "FIN:out"]),
    (m.forgets_past_kv, SEED_002, "SPLIT:out", []),
    (m.forgets_past_kv, SLACK, "SPLIT:dk", []),
    # memory conditions: each mutant is right on ordinary inputs
    (m.reads_past_the_last_key_tile, TAIL, "GUARD:nan", ORDINARY + ["GUARD:huge", "UNINIT:out", "DET:out"]),
    (m.nan_skipping_max_over_the_key_tile, TAIL, "GUARD:huge", ORDINARY + ["GUARD:nan", "UNINIT:out", "DET:out"]),
    (m.backward_reads_past_the_last_key_tile, TAIL, "GUARD:grads", ORDINARY + ["GUARD:nan", "UNINIT:grads", "DET:grads"]),
    (m.accumulates_into_an_unzeroed_output, TAIL, "UNINIT:out", ORDINARY + ["GUARD:nan", "UNINIT:grads", "DET:out"]),
    (m.slack_and_prefix_gradients_left_unwritten, TAIL, "UNINIT:grads", ORDINARY + ["UNINIT:out", "GUARD:grads", "DET:grads"]),
    (m.split_order_follows_a_call_counter, TAIL, "DET:out", ORDINARY + ["GUARD:nan", "GUARD:huge", "UNINIT:out"]),
    (m.dq_order_follows_a_call_counter, TAIL, "DET:grads", ORDINARY + ["DET:out", "GUARD:grads", "UNINIT:grads"]),
]

ORACLES = OracleCache()


def _records(fn, case, family="documents"):
    return {f"{r.check}:{r.target}": r for r in evaluate(case, Variant(family, fn.__name__, fn, dtypes=ALL), ORACLES)}


@pytest.mark.parametrize("mutant, case, catching, passing", CAUGHT, ids=[f"{c[0].__name__}-{c[2]}" for c in CAUGHT])
def test_check_catches_mutant(mutant, case, catching, passing):
    records = _records(mutant, case)
    assert records[catching].status in (FAIL, ERROR), f"{catching} missed {mutant.__name__}: {records[catching]}"
    for key in passing:
        assert records[key].status == PASS, f"{key} was expected to pass for {mutant.__name__}: {records[key]}"


def test_a_failure_names_the_layout_and_the_worst_document():
    record = _records(m.leaks_across_documents, SLACK)["OUT:out"]
    assert "aaaaacc|cddddddddd..." in record.case and "documents [5, 0, 3, 9]" in record.case
    assert "document " in record.detail and "of the layout" in record.detail


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("name", ["per_document_sdpa", "sdpa_dense", "backup_explicit_mask", "flex_document_mask"])
def test_correct_variants_pass_the_mutant_cases(name, case):
    (variant,) = variants("documents", [name])
    records = evaluate(case, variant, ORACLES)
    assert not [r for r in records if r.status not in (PASS, UNSUPPORTED)]
    assert sum(r.status == PASS for r in records) >= 5


def test_every_check_target_of_the_family_has_a_mutant():
    family = get_family("documents")
    produced = {s.key for case in CASES for s in family.checks_for(case)}
    caught = {c[2] for c in CAUGHT}
    # Every check is covered; GRAD:dk/dv and the SPLIT gradients share their mechanics
    # with the targets listed (and with the attention family's GRAD mutants).
    assert {k.split(":")[0] for k in produced} <= {k.split(":")[0] for k in caught}
    assert {"ZERO:prefix", "ZERO:slack", "INV:prefix", "INV:other_document", "PACK:documents", "SPLIT:out"} <= caught
    memory = {k for k in produced if k.split(":")[0] in ("GUARD", "UNINIT", "DET")}
    assert memory == {"GUARD:nan", "GUARD:huge", "GUARD:grads", "UNINIT:out", "UNINIT:grads", "DET:out", "DET:grads"}
    assert memory <= caught, f"memory checks no mutant exercises: {sorted(memory - caught)}"


def forgets_past(q, k, v, *, documents, slack, boundaries, scale, causal):
    """Micro-sequence driver that gives each micro-sequence only its own K/V."""
    from harness.layouts import DocumentLayout
    from harness.variants.microsequence_buffer import _attend
    import torch

    outs = []
    for step in DocumentLayout(tuple(documents), slack, tuple(boundaries)).steps():
        own = slice(step.start, step.end)
        shifted = step.__class__(0, step.len_q, 0, step.doc_query_lengths, step.doc_query_lengths, step.doc_ids)
        outs.append(_attend(q[own], k[own], v[own], shifted, scale, causal))
    return torch.cat(outs)


def test_microsequence_split_forgetting_the_past_is_caught_and_seed_002_design_passes():
    broken = _records(forgets_past, SEED_002, family="microsequences")
    assert broken["SPLIT:out"].status == FAIL and broken["SPLIT:dk"].status == FAIL
    for name in ("shared_kv_buffer", "concatenated_past"):
        (variant,) = variants("microsequences", [name])
        records = evaluate(SLACK, variant, ORACLES)
        assert {r.status for r in records} == {PASS}, [(r.check, r.target, r.status) for r in records]
        assert {r.check for r in records} == {"SPLIT", "FIN", "ZERO", "GUARD", "UNINIT", "DET"}


def test_microsequence_zero_and_fin_checks_catch_their_mutants():
    import torch

    (correct,) = variants("microsequences", ["shared_kv_buffer"])

    def slack_garbage(q, k, v, **kw):
        slack = slice(sum(kw["documents"]), None)
        return correct.fn(m._GradientGarbage.apply(q, slack), k, v, **kw)

    def nan_output(q, k, v, **kw):
        return correct.fn(q, k, v, **kw) * torch.tensor(float("nan"))

    garbage = _records(slack_garbage, SLACK, family="microsequences")
    assert garbage["ZERO:slack"].status == FAIL and garbage["SPLIT:out"].status == PASS
    assert _records(nan_output, SLACK, family="microsequences")["FIN:out"].status == FAIL


MICRO_ORDINARY = ["SPLIT:out", "SPLIT:dq", "SPLIT:dk", "SPLIT:dv", "FIN:out", "FIN:grads", "ZERO:slack"]


@pytest.mark.parametrize("mutant, catching, passing", [
    (m.micro_sequences_read_past_the_buffer, "GUARD:nan", MICRO_ORDINARY + ["UNINIT:out", "DET:out"]),
    (m.micro_sequences_into_an_unzeroed_output, "UNINIT:out", MICRO_ORDINARY + ["GUARD:nan", "DET:out"]),
    (m.micro_sequence_order_follows_a_call_counter, "DET:out", MICRO_ORDINARY + ["GUARD:nan", "UNINIT:out"]),
], ids=lambda x: getattr(x, "__name__", None) if callable(x) else None)
def test_microsequence_memory_checks_catch_their_mutants(mutant, catching, passing):
    records = _records(mutant, TAIL, family="microsequences")
    assert records[catching].status == FAIL, records[catching]
    for key in passing:
        assert records[key].status == PASS, f"{key} was expected to pass for {mutant.__name__}: {records[key]}"
    produced = {s.key for s in get_family("microsequences").checks_for(TAIL)}
    assert {"GUARD:nan", "UNINIT:out", "DET:out"} <= produced
