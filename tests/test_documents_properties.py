"""Property-based tests of packed documents and micro-sequences.

Layouts are drawn by Hypothesis (empty and length-1 documents, lengths at chunk
boundaries, micro-sequence cuts inside documents); failures shrink to small layouts.
The seed-002 layout is pinned as an explicit example.
"""

import warnings

import pytest
from hypothesis import HealthCheck, example, find, given, settings

import mutants_documents as m
from harness.families.documents import DocumentsCase
from harness.registry import Limitation, Variant, variants
from harness.runner import OracleCache, evaluate
from harness.strategies import documents_cases
from harness.tolerance import ERROR, FAIL

ORACLES = OracleCache(capacity=8)
SEED_002 = DocumentsCase(4, 2, 16, 16, documents=(3, 6, 1, 10), boundaries=(5,), dtype="float32", seed=2)


@pytest.mark.parametrize("name", ["per_document_sdpa", "sdpa_dense", "backup_explicit_mask"])
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(case=SEED_002)
@given(case=documents_cases())
def test_document_variants_pass_drawn_layouts(name, case):
    (variant,) = variants("documents", [name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = [r for r in evaluate(case, variant, ORACLES) if r.status in (FAIL, ERROR)]
    assert not bad, [(r.check, r.target, r.detail, r.reproduce) for r in bad]


@pytest.mark.parametrize("name", ["shared_kv_buffer", "concatenated_past"])
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(case=SEED_002)
@given(case=documents_cases())
def test_micro_sequence_variants_pass_drawn_layouts(name, case):
    (variant,) = variants("microsequences", [name])
    bad = [r for r in evaluate(case, variant, ORACLES) if r.status in (FAIL, ERROR)]
    assert not bad, [(r.check, r.target, r.detail, r.reproduce) for r in bad]


def test_the_seed_002_bug_shrinks_to_a_minimal_layout():
    mutant = Variant("documents", "non_canonical_cu_seqlens_k", m.non_canonical_cu_seqlens_k, dtypes=("float32",),
                     limitations=(Limitation("the shrinking test looks at ZERO:prefix only",
                                             checks={"OUT", "PACK", "FIN", "GRAD", "INV", "SPLIT", "GUARD", "UNINIT", "DET"}),))

    def prefix_gradient_nonzero(case):
        return any(r.key == "ZERO:prefix" and r.status == FAIL for r in _keyed(evaluate(case, mutant, OracleCache(1))))

    minimal = find(documents_cases(dtypes=("float32",)), prefix_gradient_nonzero,
                   settings=settings(database=None, max_examples=300, derandomize=True))
    # Smallest reproduction: one dropped token, then a micro-sequence inside the next document.
    assert minimal.step.first_document_begin >= 1 and len(minimal.boundaries) == 1
    assert sum(minimal.documents) + minimal.slack <= 4, minimal


def _keyed(records):
    for r in records:
        r.key = f"{r.check}:{r.target}"
    return records
