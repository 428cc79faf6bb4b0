"""Adapter errors told apart from the implementation's: who raised decides the status."""


import pytest

from harness.families.attention import AttentionCase
from harness.faults import LibraryFault, adapter_frame
from harness.registry import load_file, variants
from harness.runner import OracleCache, evaluate

CASE = AttentionCase(1, 2, 2, 5, 7, 8, 8, seed=3)

LIBRARY = '''
import torch


def kernel(q, k, v, scale):
    """A library's function: refuses odd lengths from its own code."""
    if q.shape[2] % 2:
        raise ValueError(f"kernel: odd query length {q.shape[2]}")
    return torch.softmax(q @ k.transpose(-1, -2) * scale, -1) @ v


class _BrokenBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale):
        return torch.softmax(q @ k.transpose(-1, -2) * scale, -1) @ v

    @staticmethod
    def backward(ctx, dout):
        raise RuntimeError("the library's backward is not implemented for this shape")


def forward_only(q, k, v, scale):
    return _BrokenBackward.apply(q, k, v, scale)
'''

ADAPTERS = '''
import sys
import torch
import torch.nn.functional as F
from harness.faults import LibraryFault
from harness.registry import variant

sys.path.insert(0, {folder!r})
import fault_library


@variant("attention", "wrong_keyword", dtypes=("float32",))
def wrong_keyword(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return F.scaled_dot_product_attention(q, k, v, scal=scale)


@variant("attention", "misspelt_name", dtypes=("float32",))
def misspelt_name(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return F.scaled_dot_product_attention(q, k, vv, scale=scale)


@variant("attention", "shape_mistake", dtypes=("float32",))
def shape_mistake(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    flat = q.reshape(q.shape[0], -1, 3)
    return F.scaled_dot_product_attention(flat, k, v, scale=scale)


@variant("attention", "returns_a_tuple", dtypes=("float32",))
def returns_a_tuple(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return F.scaled_dot_product_attention(q, k, v, scale=scale), None


@variant("attention", "library_refuses", dtypes=("float32",))
def library_refuses(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return fault_library.kernel(q, k, v, scale)


@variant("attention", "adapter_refuses", dtypes=("float32",))
def adapter_refuses(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    raise RuntimeError("this adapter cannot do that")


@variant("attention", "library_fault_reported", dtypes=("float32",))
def library_fault_reported(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    raise LibraryFault("the kernel logged a failed check and returned an output it never wrote")


@variant("attention", "backward_raises", dtypes=("float32",))
def backward_raises(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    return fault_library.forward_only(q, k, v, scale)
'''


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    (folder / "fault_library.py").write_text(LIBRARY)
    (folder / "fault_adapters.py").write_text(ADAPTERS.format(folder=str(folder)))
    names = {v.name for v in load_file(folder / "fault_adapters.py")}
    oracles = OracleCache()
    return {v.name: {(r.check, r.target): r for r in evaluate(CASE, v, oracles)}
            for v in variants("attention") if v.name in names}


@pytest.mark.parametrize("name, line", [
    ("wrong_keyword", "F.scaled_dot_product_attention(q, k, v, scal=scale)"),
    ("misspelt_name", "F.scaled_dot_product_attention(q, k, vv, scale=scale)"),
    ("shape_mistake", "q.reshape(q.shape[0], -1, 3)"),
    ("adapter_refuses", 'raise RuntimeError("this adapter cannot do that")'),
])
def test_a_mistake_in_the_adapters_code_is_an_adapter_error_naming_its_line(records, name, line):
    out = records[name][("OUT", "out")]
    assert out.status == "adapter_error"
    assert "fault_adapters.py:" in out.detail and f"in {name}" in out.detail and line in out.detail
    assert {r.status for r in records[name].values()} == {"adapter_error"}


def test_an_adapter_returning_what_the_contract_does_not_allow_is_an_adapter_error(records):
    out = records["returns_a_tuple"][("OUT", "out")]
    assert out.status == "adapter_error" and "the adapter returned tuple" in out.detail


def test_what_the_library_raises_or_is_reported_to_do_is_an_error_of_the_library(records):
    refused = records["library_refuses"][("OUT", "out")]
    assert refused.status == "error" and refused.detail == "ValueError: kernel: odd query length 5"
    reported = records["library_fault_reported"][("OUT", "out")]
    assert reported.status == "error" and reported.detail.startswith("LibraryFault: the kernel logged")


def test_a_backward_that_raises_leaves_the_forward_checks_judged(records):
    got = records["backward_raises"]
    assert {got[key].status for key in [("OUT", "out"), ("FIN", "out")]} == {"pass"}
    assert {got[key].status for key in [("GRAD", "dq"), ("FIN", "grads")]} == {"error"}
    assert "backward is not implemented" in got[("GRAD", "dq")].detail


def test_the_rule_reads_the_innermost_frame():
    def adapter_code():
        raise KeyError("q")

    try:
        adapter_code()
    except KeyError as exc:
        assert adapter_frame(exc, __file__).name == "adapter_code"
        assert adapter_frame(exc, "/elsewhere/theirs.py") is None  # raised outside the adapter's file
    try:
        raise LibraryFault("reported")
    except LibraryFault as exc:
        assert adapter_frame(exc, __file__) is None


def test_the_end_of_run_lines_name_adapter_errors_and_variants_that_errored_on_every_case():
    import pandas as pd

    from harness.faults import erring_everywhere, summary_lines

    def row(variant, case_id, status, detail="", known=""):
        return dict(variant=variant, case_id=case_id, status=status, detail=detail, known_failure=known)

    frame = pd.DataFrame([row("typo", "c1", "adapter_error", "adapter error at mine.py:3 ..."),
                          row("never_runs", "c1", "error", "RuntimeError: no kernel image"),
                          row("never_runs", "c2", "error", "RuntimeError: no kernel image"),
                          row("never_runs", "c3", "unsupported"),
                          row("refuses_some", "c1", "error", "RuntimeError: odd"), row("refuses_some", "c2", "pass"),
                          row("known_everywhere", "c1", "error", "x", "declared"),
                          row("known_everywhere", "c2", "error", "x", "declared")])
    assert erring_everywhere(frame) == {"never_runs"}
    lines = summary_lines(frame)
    assert lines[0].startswith("adapter error: typo on 1 case(s), not a caught bug: adapter error at mine.py:3")
    assert lines[1].startswith("adapter error? never_runs raised on every case it ran (2 cases)") and len(lines) == 2
