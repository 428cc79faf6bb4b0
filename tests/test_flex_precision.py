"""The cause stated in flex_attention's and flex_document_mask's precision known failure.

Eager flex_attention (torch 2.13) computes the scores and the softmax in float32, rounds
the normalised probabilities to the input dtype and multiplies them by V in the dtype.
That order, written out here from the reference's own float32 forward, reproduces the
variants' outputs bitwise on both pinned draws, and its error is past the kernel grade
where the same probabilities kept in float32 are not.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from harness.dtypes import TORCH_DTYPES
from harness.registry import variants
from reference.attention import _forward

ATTENTION_DRAW = "b2-h4x2-q37-k15-d16v8-f16-tl-madditive-shared-s151"
DOCUMENTS_DRAW = "docs64_64_15-t3-m23_86-h6x2-d8v8-bf16-sc0.125-s368"


def _normalised_p_rounded(q, k, v, dtype, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(P rounded to ``dtype`` then P @ V in the dtype, P @ V in float32 then rounded), [B, Hq, Lq, Dv]."""
    f = _forward(q.float(), k.float(), v.float(), **kwargs)
    rounded = torch.where(f.row_has_key, f.p.to(dtype) @ f.v.to(dtype), 0.0)
    return rounded, torch.where(f.row_has_key, f.p @ f.v, 0.0).to(dtype)


def _flex(family: str, name: str):
    (variant,) = variants(family, [name])
    if variant.unavailable_reason():
        pytest.skip(variant.unavailable_reason())
    return variant.fn


def test_flex_attention_rounds_the_normalised_probabilities_on_the_pinned_draw():
    from harness.families.attention import _kwargs, case_from_id, make_inputs, oracle

    case = case_from_id(ATTENTION_DRAW)
    x, dtype = make_inputs(case), TORCH_DTYPES[case.dtype]
    mask = x["mask"].to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _flex("attention", "flex_attention")(*(x[n].to(dtype) for n in "qkv"), **_kwargs(case, mask))
    rounded, kept = _normalised_p_rounded(*(x[n].to(dtype) for n in "qkv"), dtype, **_kwargs(case, mask.float()))
    assert torch.equal(got, rounded)
    truth = oracle(case, backward=False)
    error = {n: float((t.double() - truth.out).abs().max()) for n, t in (("rounded", rounded), ("kept", kept))}
    fp32acc = float((truth.base32_out.double() - truth.out).abs().max())
    assert error["rounded"] > 3 * fp32acc and error["kept"] <= fp32acc, (error, fp32acc)


def test_flex_document_mask_rounds_the_normalised_probabilities_on_the_pinned_draw():
    from harness.families.documents import _step_kwargs, case_from_id, make_inputs

    case = case_from_id(DOCUMENTS_DRAW)
    step, x, dtype = case.step, make_inputs(case), TORCH_DTYPES[case.dtype]
    kw = _step_kwargs(case, step)
    q, k, v = x["q"][step.start:].to(dtype), x["k"].to(dtype), x["v"].to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _flex("documents", "flex_document_mask")(q, k, v, **kw)
    for _, rows, keys in step.document_slices():  # each document alone: the same order, document by document
        if rows.stop > rows.start:
            heads_first = [t.transpose(0, 1)[None] for t in (q[rows], k[keys], v[keys])]
            rounded, _ = _normalised_p_rounded(*heads_first, dtype, scale=case.resolved_scale, causal=case.causal,
                                               window=None, alignment="bottom_right", mask=None, softcap=None)
            assert torch.equal(got[rows], rounded[0].transpose(0, 1)), rows


def test_the_findings_script_of_the_pinned_draw_shows_the_error_on_its_own(tmp_path):
    """The repro script written for flex_attention's OUT finding (torch and the library
    only) exits 1 on the pinned draw, and 0 on a draw where the harness passes it."""
    from dataclasses import asdict

    from harness.families.attention import case_from_id
    from harness.findings import store
    from harness.runner import OracleCache, evaluate
    from tests.test_findings import _run_in_process

    (variant,) = variants("attention", ["flex_attention"])
    if variant.unavailable_reason():
        pytest.skip(variant.unavailable_reason())
    for case_id, expected in ((ATTENTION_DRAW, 1), ("b2-h4x2-q37-k15-d16v8-f16-tl-madditive-shared-s152", 0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = next(r for r in evaluate(case_from_id(case_id), variant, OracleCache())
                       if (r.check, r.target) == ("OUT", "out"))
        assert out.status == ("fail" if expected else "pass"), case_id
        text, why = store.script_for(asdict(out), variant)
        assert not why, why
        code, printed = _run_in_process(text, tmp_path, f"{case_id}.py")
        assert code == expected, printed
