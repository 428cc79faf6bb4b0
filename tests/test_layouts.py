"""Layouts: derived forms by hand, and clear errors for malformed ones."""

import pytest

from harness.layouts import DocumentLayout, LayoutError, check_cu_seqlens


def test_seed_002_step_has_canonical_cu_seqlens_and_a_dropped_prefix():
    step = DocumentLayout((3, 6, 1, 10), 2, (5,)).steps()[-1]
    assert (step.start, step.end, step.sequence_k_past, step.first_document_begin) == (5, 22, 5, 3)
    assert step.cu_seqlens_q.tolist() == [0, 4, 5, 15] and step.cu_seqlens_k.tolist() == [0, 6, 7, 17]
    assert step.document_index_q().tolist() == [0] * 4 + [1] + [2] * 10 + [-1, -1]
    assert step.position_index_q().tolist() == [2, 3, 4, 5, 0] + list(range(10)) + [-1, -1]
    mask = step.dense_mask()
    assert mask.shape == (17, 19) and mask[0, :3].all() and not mask[0, 3:].any()  # row 0 = key 2 of document 1
    assert not mask[15:].any()  # slack rows see nothing


def test_empty_documents_and_boundaries_on_document_starts():
    first, second = DocumentLayout((0, 3, 0, 1), 0, (3,)).steps()
    assert first.cu_seqlens_q.tolist() == [0, 0, 3] and first.first_document_begin == 0
    assert second.doc_ids == (2, 3) and second.first_document_begin == 3 and second.cu_seqlens_k.tolist() == [0, 0, 1]


@pytest.mark.parametrize("args, message", [
    (((3, -1),), "document lengths must be >= 0"),
    (((3,), -2), "slack must be >= 0"),
    (((3, 4), 0, (5, 5)), "strictly increasing"),
    (((3, 4), 0, (9,)), "strictly increasing inside (0, 7)"),
    (((0, 0),), "the sequence is empty"),
])
def test_malformed_layouts_get_a_clear_error(args, message):
    with pytest.raises(LayoutError, match="invalid document layout") as info:
        DocumentLayout(*args)
    assert message in str(info.value)


@pytest.mark.parametrize("cu, message", [
    ([3, 5, 9], "must start at 0 (canonical form), got 3"),
    ([0, 5, 4], "not non-decreasing at index 2"),
    ([0, 5, 12], "ends at 12, past the 10 rows"),
    ([], "is empty"),
])
def test_non_canonical_cu_seqlens_are_refused(cu, message):
    with pytest.raises(LayoutError) as info:
        check_cu_seqlens(cu, 10, "cu_seqlens_k")
    assert message in str(info.value) and "cu_seqlens_k" in str(info.value)


def test_from_cu_seqlens_keeps_the_rest_as_slack():
    layout = DocumentLayout.from_cu_seqlens([0, 2, 2, 7], 9)
    assert layout.documents == (2, 0, 5) and layout.slack == 2
