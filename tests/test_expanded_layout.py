"""LAYOUT:expanded's truth comes from the case's own oracle by a symmetry of the equation
(``harness.families.attention``: kv heads or batch rows that repeat the first); held here
to the reference run directly on the expanded values, bitwise, on every catalogue case
and on cases that expand along each dim (each head's and batch row's scores are computed
alone, so the symmetry holds in every dtype's rounding too).
"""

import pytest
import torch

import harness.families.attention as family
from cases import catalogue
from harness.dtypes import TORCH_DTYPES

ALONG_EACH_DIM = [
    "b1-h6x2-q9-k33-d16v24-bf16-br-causal-madditive-s3",  # kv heads
    "b3-h2x1-q9-k33-d16v16-f16-tl-mbool-s4",  # batch, a per-row mask
    "b3-h4x1-q9-k33-d16v16-f32-br-causal-madditive-shared-cap2.5-s5",  # batch, a shared mask
    "b1-h3x1-q9-k33-d16v16-bf16-br-w4_0-madditive-s6",  # sequence
]
CASES = [c.id for c in catalogue("attention") if c.len_k] + ALONG_EACH_DIM


@pytest.mark.parametrize("case_id", CASES)
def test_the_expanded_truth_is_the_reference_on_the_expanded_values(case_id):
    case = family.case_from_id(case_id)
    oracle = family.oracle(case)
    dtype = TORCH_DTYPES[case.dtype]
    values = {n: t if t is None else t.contiguous() for n, t in family.expanded_layout(case, oracle.inputs).items()}
    direct = {"expanded_out": family._forward(case, values, torch.float64),
              "expanded_base_out": family._forward(case, values, dtype)}
    if oracle.expanded_base32_out is not None:
        direct["expanded_base32_out"] = family._forward(case, values, torch.float32).to(dtype)
    for name, want in direct.items():
        got = getattr(oracle, name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert torch.equal(got, want), f"{name}: max difference {float((got.double() - want.double()).abs().max()):.3g}"


def test_the_expanded_layout_has_stride_0_where_it_says():
    for case_id, stride_0 in zip(ALONG_EACH_DIM, (["k", "v"], ["q", "k", "v", "mask"], ["q", "k", "v"], ["k", "v"])):
        case = family.case_from_id(case_id)
        given = family.expanded_layout(case, family.make_inputs(case))
        dim = family._expand_dim(case)
        assert [n for n, t in given.items() if t is not None and t.stride(dim) == 0] == stride_0, case_id
