"""The Python API: records as a DataFrame, and an assert that says what failed."""

import pytest

import harness
from harness.registry import Limitation, VariantError
from reference import attention

CASES = ["b1-h2x1-q9-k13-d16v16-f32-br-s2", "b1-h2x2-q5-k7-d8v8-f32-br-causal-s3"]


def right(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return attention(q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)[0]


def wrong_scale(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return right(q, k, v, scale=scale * 1.01, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)


def test_a_function_is_checked_and_its_records_come_back_as_a_dataframe():
    frame = harness.check(right, "attention", cases=CASES, checks=["OUT", "GRAD"])
    assert set(frame["check"]) == {"OUT", "GRAD"} and set(frame["case_id"]) == set(CASES)
    assert set(frame["status"]) == {"pass"} and (frame["variant"] == "right").all()
    assert harness.assert_equivalent(right, "attention", cases=CASES, checks=["OUT"]).shape[0] == 2


def test_assert_equivalent_names_what_failed():
    with pytest.raises(AssertionError, match=r"2 of 2 check targets failed \(2 of 2 cases\):\n  OUT:out fail on"):
        harness.assert_equivalent(wrong_scale, "attention", cases=CASES, checks=["OUT"])


def test_a_registered_variant_is_named_and_a_limitation_makes_nothing_to_compare():
    frame = harness.check("sdpa_math", cases=CASES[:1], checks=["OUT"])
    assert list(frame["status"]) == ["pass"]
    with pytest.raises(AssertionError, match="nothing was compared.*no causal here"):
        harness.assert_equivalent(right, "attention", cases=CASES[1:], checks=["OUT"],
                                  limitations=[Limitation("no causal here", features={"causal"})])


def test_bad_calls_are_named():
    with pytest.raises(VariantError, match="a function needs its family"):
        harness.check(right)
    with pytest.raises(VariantError, match="no registered variant 'nope'"):
        harness.check("nope")
    with pytest.raises(VariantError, match="must accept keyword argument"):
        harness.check(lambda q, k, v: q, "attention")
