"""Checks of the float64 attention oracle (reference/attention.py) by independent means.

The oracle is compared with a naive per-element pure-Python implementation written
here straight from the module docstring's equation, with hand-computed examples,
with torch SDPA's math backend, and with gradcheck. Fully-masked rows and the
argument errors are checked explicitly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reference.attention import attention, visibility

TOL = 1e-12


# --------------------------------------------------------------------------------------
# A naive implementation, one score at a time, from the docstring's equation.
# --------------------------------------------------------------------------------------

def naive_attention(q, k, v, *, scale=None, causal=False, window=None, alignment="bottom_right",
                    mask=None, softcap=None):
    """Per-element loops over b, h, i, j with math.exp / math.tanh; returns (out, lse)."""
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    group = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    offset = Lk - Lq if alignment == "bottom_right" else 0
    left, right = window if window is not None else (None, None)
    qs, ks, vs = q.tolist(), k.tolist(), v.tolist()
    ms = mask.expand(B, Hq, Lq, Lk).tolist() if mask is not None else None
    is_bool = mask is not None and mask.dtype == torch.bool

    out = [[[[0.0] * Dv for _ in range(Lq)] for _ in range(Hq)] for _ in range(B)]
    lse = [[[-math.inf] * Lq for _ in range(Hq)] for _ in range(B)]
    for b in range(B):
        for h in range(Hq):
            g = h // group
            for i in range(Lq):
                d = i + offset
                scores = {}  # j -> score, visible keys only
                for j in range(Lk):
                    if causal and j > d:
                        continue
                    if left is not None and j < d - left:
                        continue
                    if right is not None and j > d + right:
                        continue
                    if is_bool and not ms[b][h][i][j]:
                        continue
                    if ms is not None and not is_bool and ms[b][h][i][j] == -math.inf:
                        continue
                    s = scale * sum(qs[b][h][i][t] * ks[b][g][j][t] for t in range(D))
                    if softcap is not None:
                        s = softcap * math.tanh(s / softcap)
                    if ms is not None and not is_bool:
                        s += ms[b][h][i][j]
                    scores[j] = s
                if not scores:
                    continue  # fully masked: out 0, lse -inf
                m = max(scores.values())
                row_lse = m + math.log(sum(math.exp(s - m) for s in scores.values()))
                lse[b][h][i] = row_lse
                for e in range(Dv):
                    out[b][h][i][e] = sum(math.exp(s - row_lse) * vs[b][g][j][e] for j, s in scores.items())
    return torch.tensor(out, dtype=torch.float64), torch.tensor(lse, dtype=torch.float64)


def randn(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def make_mask(kind, B, Hq, Lq, Lk, seed):
    """A mask of the given kind, in a broadcasting shape where that is natural."""
    g = torch.Generator().manual_seed(seed + 1000)
    if kind is None:
        return None
    if kind == "bool":
        return torch.rand(B, 1, Lq, Lk, generator=g) > 0.3
    if kind == "bool2d":
        return torch.rand(Lq, Lk, generator=g) > 0.3
    if kind == "additive":  # finite bias with some -inf entries
        bias = torch.randn(1, Hq, Lq, Lk, generator=g, dtype=torch.float64)
        return bias.masked_fill(torch.rand(1, Hq, Lq, Lk, generator=g) < 0.25, -math.inf)
    raise AssertionError(kind)


# (B, Hq, Hkv, Lq, Lk, D, Dv), keyword arguments, mask kind
CONFIGS = [
    pytest.param((1, 1, 1, 3, 3, 4, 4), {}, None, id="plain"),
    pytest.param((2, 2, 2, 4, 5, 3, 3), {"scale": 0.7}, None, id="custom-scale"),
    pytest.param((1, 2, 1, 3, 5, 4, 2), {}, None, id="dk-ne-dv-mqa"),
    pytest.param((2, 4, 2, 4, 4, 3, 5), {}, None, id="gqa"),
    pytest.param((1, 6, 2, 3, 4, 2, 3), {"causal": True}, None, id="gqa-causal-br"),
    pytest.param((1, 2, 1, 3, 6, 3, 3), {"causal": True, "alignment": "bottom_right"}, None, id="causal-br-lq<lk"),
    pytest.param((1, 2, 1, 3, 6, 3, 3), {"causal": True, "alignment": "top_left"}, None, id="causal-tl-lq<lk"),
    pytest.param((1, 1, 1, 6, 3, 3, 2), {"causal": True, "alignment": "bottom_right"}, None, id="causal-br-lq>lk"),
    pytest.param((1, 1, 1, 6, 3, 3, 2), {"causal": True, "alignment": "top_left"}, None, id="causal-tl-lq>lk"),
    pytest.param((1, 2, 2, 5, 7, 3, 3), {"window": (2, 1)}, None, id="window-2-1"),
    pytest.param((1, 2, 2, 5, 7, 3, 3), {"window": (None, 0)}, None, id="window-none-0"),
    pytest.param((1, 2, 2, 5, 7, 3, 3), {"window": (1, None), "alignment": "top_left"}, None, id="window-1-none-tl"),
    pytest.param((1, 2, 1, 5, 7, 3, 3), {"window": (2, 2), "causal": True}, None, id="window-causal"),
    pytest.param((2, 2, 1, 4, 5, 3, 3), {}, "bool", id="bool-mask"),
    pytest.param((1, 2, 2, 4, 5, 3, 3), {"causal": True}, "bool2d", id="bool2d-mask-causal"),
    pytest.param((2, 2, 1, 4, 6, 3, 4), {}, "additive", id="additive-mask"),
    pytest.param((1, 2, 2, 4, 4, 5, 3), {"softcap": 1.5, "scale": 2.0}, None, id="softcap"),
    pytest.param((2, 4, 2, 5, 7, 3, 2), {"causal": True, "window": (3, None), "softcap": 2.0, "scale": 0.9},
                 "additive", id="everything"),
    pytest.param((1, 4, 1, 7, 4, 2, 5), {"causal": True, "alignment": "top_left", "window": (1, 1)},
                 "bool", id="everything-tl"),
]


@pytest.mark.parametrize("shape, kwargs, mask_kind", CONFIGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_loops(shape, kwargs, mask_kind, seed):
    B, Hq, Hkv, Lq, Lk, D, Dv = shape
    q, k, v = randn(B, Hq, Lq, D, seed=seed), randn(B, Hkv, Lk, D, seed=seed + 10), randn(B, Hkv, Lk, Dv, seed=seed + 20)
    mask = make_mask(mask_kind, B, Hq, Lq, Lk, seed)
    out, lse = attention(q, k, v, mask=mask, **kwargs)
    ref_out, ref_lse = naive_attention(q, k, v, mask=mask, **kwargs)
    assert out.shape == (B, Hq, Lq, Dv) and lse.shape == (B, Hq, Lq)
    assert out.dtype == torch.float64 and lse.dtype == torch.float64
    torch.testing.assert_close(out, ref_out, atol=TOL, rtol=0)
    # -inf (fully-masked rows) must match exactly; the finite entries to TOL.
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    torch.testing.assert_close(lse, ref_lse, atol=TOL, rtol=0)


def test_naive_configs_exercise_fully_masked_rows():
    """Guard on the table above: some configurations do hit rows with no visible key."""
    q, k, v = randn(1, 1, 6, 3, seed=0), randn(1, 1, 3, 3, seed=1), randn(1, 1, 3, 2, seed=2)
    _, lse = naive_attention(q, k, v, causal=True, alignment="bottom_right")
    assert torch.isinf(lse).sum() == 3  # rows 0..2 sit before key 0


# --------------------------------------------------------------------------------------
# Hand-computed examples.
# --------------------------------------------------------------------------------------

def test_hand_computed_two_keys():
    # scale 1, q = 1, keys 0 and ln 3: scores (0, ln 3), p = (1/4, 3/4), lse = ln 4.
    q = torch.tensor([[[[1.0]]]], dtype=torch.float64)
    k = torch.tensor([[[[0.0], [math.log(3.0)]]]], dtype=torch.float64)
    v = torch.tensor([[[[4.0, -8.0], [8.0, 4.0]]]], dtype=torch.float64)
    out, lse = attention(q, k, v, scale=1.0)
    torch.testing.assert_close(out, torch.tensor([[[[7.0, 1.0]]]], dtype=torch.float64), atol=TOL, rtol=0)
    torch.testing.assert_close(lse, torch.tensor([[[math.log(4.0)]]], dtype=torch.float64), atol=TOL, rtol=0)


def test_hand_computed_default_scale_and_softcap():
    # D = 4: default scale 1/2. q.k = 4 for key 1, 0 for key 0 -> score 2; softcap 1 -> tanh(2).
    q = torch.ones(1, 1, 1, 4, dtype=torch.float64)
    k = torch.tensor([[[[0.0] * 4, [1.0] * 4]]], dtype=torch.float64)
    v = torch.tensor([[[[0.0], [1.0]]]], dtype=torch.float64)
    out, lse = attention(q, k, v)
    torch.testing.assert_close(out.flatten(), torch.tensor([math.exp(2) / (1 + math.exp(2))], dtype=torch.float64))
    torch.testing.assert_close(lse.flatten(), torch.tensor([math.log(1 + math.exp(2))], dtype=torch.float64))
    t = math.tanh(2.0)
    out, lse = attention(q, k, v, softcap=1.0)
    torch.testing.assert_close(out.flatten(), torch.tensor([math.exp(t) / (1 + math.exp(t))], dtype=torch.float64))
    torch.testing.assert_close(lse.flatten(), torch.tensor([math.log(1 + math.exp(t))], dtype=torch.float64))


def test_hand_computed_additive_mask():
    # Scores all 0 (q = 0); bias (0, ln 2, -inf): p = (1/3, 2/3, 0), lse = ln 3.
    q = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    k = randn(1, 1, 3, 2, seed=5)
    v = torch.tensor([[[[3.0], [6.0], [1000.0]]]], dtype=torch.float64)
    mask = torch.tensor([[0.0, math.log(2.0), -math.inf]], dtype=torch.float64)
    out, lse = attention(q, k, v, mask=mask)
    torch.testing.assert_close(out.flatten(), torch.tensor([5.0], dtype=torch.float64), atol=TOL, rtol=0)
    torch.testing.assert_close(lse.flatten(), torch.tensor([math.log(3.0)], dtype=torch.float64), atol=TOL, rtol=0)


CAUSAL_2x4 = {
    # bottom-right: row i sits at key i + 2.  top-left: row i sits at key i.
    "bottom_right": [[1, 1, 1, 0], [1, 1, 1, 1]],
    "top_left": [[1, 0, 0, 0], [1, 1, 0, 0]],
}


@pytest.mark.parametrize("alignment", ["bottom_right", "top_left"])
def test_causal_alignment_lq2_lk4(alignment):
    expected = torch.tensor(CAUSAL_2x4[alignment], dtype=torch.bool)
    assert torch.equal(visibility(2, 4, causal=True, alignment=alignment), expected)
    # Equal scores (q = 0) and one-hot values: out row i is the uniform distribution
    # over the keys row i sees.
    q, k = torch.zeros(1, 1, 2, 3, dtype=torch.float64), randn(1, 1, 4, 3, seed=3)
    v = torch.eye(4, dtype=torch.float64)[None, None]
    out, lse = attention(q, k, v, causal=True, alignment=alignment)
    counts = expected.sum(-1, keepdim=True).to(torch.float64)
    torch.testing.assert_close(out[0, 0], expected.to(torch.float64) / counts, atol=TOL, rtol=0)
    torch.testing.assert_close(lse[0, 0], counts.squeeze(-1).log(), atol=TOL, rtol=0)


def test_bottom_right_is_default_alignment():
    assert torch.equal(visibility(2, 4, causal=True), torch.tensor(CAUSAL_2x4["bottom_right"], dtype=torch.bool))


@pytest.mark.parametrize("window, alignment, expected", [
    # Lq = 2, Lk = 4; bottom-right: d = (2, 3); top-left: d = (0, 1).
    ((1, 1), "bottom_right", [[0, 1, 1, 1], [0, 0, 1, 1]]),
    ((0, 0), "bottom_right", [[0, 0, 1, 0], [0, 0, 0, 1]]),
    ((None, 0), "top_left", [[1, 0, 0, 0], [1, 1, 0, 0]]),
    ((0, None), "top_left", [[1, 1, 1, 1], [0, 1, 1, 1]]),
    ((1, None), "bottom_right", [[0, 1, 1, 1], [0, 0, 1, 1]]),
    ((None, None), "bottom_right", [[1, 1, 1, 1], [1, 1, 1, 1]]),
])
def test_window_visibility_by_hand(window, alignment, expected):
    assert torch.equal(visibility(2, 4, window=window, alignment=alignment),
                       torch.tensor(expected, dtype=torch.bool))


def test_visibility_combines_all_conditions():
    mask = torch.tensor([[True, False, True, True], [True, True, True, False]])
    got = visibility(2, 4, causal=True, window=(1, None), alignment="bottom_right", mask=mask)
    # causal-br: [[1,1,1,0],[1,1,1,1]]; window left 1: [[0,1,1,1],[0,0,1,1]]; and the mask.
    assert torch.equal(got, torch.tensor([[False, False, True, False], [False, False, True, False]]))
    additive = torch.where(mask, 0.5, -math.inf).to(torch.float64)
    assert torch.equal(visibility(2, 4, causal=True, window=(1, None), mask=additive), got)


def test_gqa_mapping():
    B, Hq, Hkv, Lq, Lk, D = 2, 4, 2, 3, 5, 4
    q = randn(B, Hq, Lq, D, seed=7)
    k = randn(B, Hkv, Lk, D, seed=8)
    # Values constant per kv head (10 and 20): any convex combination returns that constant,
    # so out tells which kv head each query head read.
    v = torch.stack([torch.full((B, Lk, 3), 10.0), torch.full((B, Lk, 3), 20.0)], dim=1).to(torch.float64)
    out, _ = attention(q, k, v)
    for h, value in enumerate([10.0, 10.0, 20.0, 20.0]):
        torch.testing.assert_close(out[:, h], torch.full_like(out[:, h], value), atol=TOL, rtol=0)
    # Keys too: query head h equals single-head attention against kv head h // 2, and
    # the interleaved mapping h % 2 would differ for heads 1 and 2.
    v = randn(B, Hkv, Lk, 3, seed=9)
    out, lse = attention(q, k, v, causal=True)
    for h in range(Hq):
        g = h // 2
        o, l = attention(q[:, h:h + 1], k[:, g:g + 1], v[:, g:g + 1], causal=True)
        torch.testing.assert_close(out[:, h:h + 1], o, atol=TOL, rtol=0)
        torch.testing.assert_close(lse[:, h:h + 1], l, atol=TOL, rtol=0)
    wrong, _ = attention(q[:, 1:2], k[:, 1:2], v[:, 1:2], causal=True)
    assert (out[:, 1:2] - wrong).abs().max() > 1e-3


# --------------------------------------------------------------------------------------
# Fully-masked rows: forward exactly 0 / -inf; gradients finite and exactly 0.
# --------------------------------------------------------------------------------------

def _fully_masked_cases():
    B, Hq, Hkv, Lq, Lk = 1, 2, 1, 4, 5
    bool_mask = torch.ones(B, Hq, Lq, Lk, dtype=torch.bool)
    bool_mask[0, 1, 2, :] = False  # query head 1, row 2 sees nothing
    bool_mask[..., 3] = False  # key 3 is seen by nobody
    additive = randn(B, Hq, Lq, Lk, seed=11).masked_fill(~bool_mask, -math.inf)
    return {
        # rows 0, 1 sit before key 0 (bottom-right, Lq > Lk)
        "causal-br": (dict(causal=True), (1, 2, 1, 6, 4), lambda rows: rows[..., :2].fill_(True), None),
        "bool": (dict(mask=bool_mask), (B, Hq, Hkv, Lq, Lk),
                 lambda rows: rows[0, 1, 2].fill_(True), 3),
        "additive-softcap": (dict(mask=additive, softcap=1.0), (B, Hq, Hkv, Lq, Lk),
                             lambda rows: rows[0, 1, 2].fill_(True), 3),
        "window": (dict(window=(0, 0), alignment="top_left"), (1, 2, 2, 5, 3),
                   lambda rows: rows[..., 3:].fill_(True), None),
    }


@pytest.mark.parametrize("name", list(_fully_masked_cases()))
def test_fully_masked_rows(name):
    kwargs, (B, Hq, Hkv, Lq, Lk), mark_rows, unseen_key = _fully_masked_cases()[name]
    expected_rows = torch.zeros(B, Hq, Lq, dtype=torch.bool)
    mark_rows(expected_rows)
    q = randn(B, Hq, Lq, 3, seed=1).requires_grad_()
    k = randn(B, Hkv, Lk, 3, seed=2).requires_grad_()
    v = randn(B, Hkv, Lk, 2, seed=3).requires_grad_()
    out, lse = attention(q, k, v, **kwargs)

    assert torch.equal(torch.isneginf(lse), expected_rows)
    assert bool((out[expected_rows] == 0).all())
    assert bool(torch.isfinite(out).all())
    assert bool((out[~expected_rows].abs().sum(-1) > 0).all())  # the other rows are not zeroed

    gout = randn(*out.shape, seed=4)
    glse = randn(*lse.shape, seed=5)
    loss = (out * gout).sum() + torch.where(torch.isfinite(lse), lse, 0.0).mul(glse).sum()
    dq, dk, dv = torch.autograd.grad(loss, (q, k, v))
    for g in (dq, dk, dv):
        assert bool(torch.isfinite(g).all())
    assert bool((dq[expected_rows] == 0).all())
    assert bool((dq[~expected_rows].abs().sum(-1) > 0).all())
    if unseen_key is not None:
        assert bool((dk[..., unseen_key, :] == 0).all())
        assert bool((dv[..., unseen_key, :] == 0).all())
        assert bool((dk[..., unseen_key - 1, :] != 0).any())


# --------------------------------------------------------------------------------------
# Torch SDPA's math backend as a further cross-check.
# --------------------------------------------------------------------------------------

def sdpa_math(q, k, v, **kwargs):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


@pytest.mark.parametrize("shape, scale", [
    ((2, 2, 2, 4, 6, 3, 3), None),
    ((1, 4, 2, 5, 5, 4, 2), 0.3),
    ((2, 6, 3, 3, 7, 2, 5), 1.7),
])
@pytest.mark.parametrize("masking", ["none", "causal-tl", "causal-br", "bool", "additive", "window-causal"])
def test_matches_torch_sdpa(shape, scale, masking):
    B, Hq, Hkv, Lq, Lk, D, Dv = shape
    q, k, v = randn(B, Hq, Lq, D, seed=30), randn(B, Hkv, Lk, D, seed=31), randn(B, Hkv, Lk, Dv, seed=32)
    ours_kw, sdpa_kw = {}, {}
    if masking == "causal-tl":
        ours_kw, sdpa_kw = dict(causal=True, alignment="top_left"), dict(is_causal=True)
    elif masking == "causal-br":
        ours_kw = dict(causal=True, alignment="bottom_right")
        sdpa_kw = dict(attn_mask=visibility(Lq, Lk, causal=True, alignment="bottom_right"))
    elif masking == "bool":
        mask = torch.rand(B, 1, Lq, Lk, generator=torch.Generator().manual_seed(33)) > 0.3
        mask[..., 0] = True  # no fully-masked row: SDPA's convention for those differs
        ours_kw, sdpa_kw = dict(mask=mask), dict(attn_mask=mask)
    elif masking == "additive":
        mask = randn(1, Hq, Lq, Lk, seed=34)
        mask[..., 1::3] = -math.inf
        ours_kw, sdpa_kw = dict(mask=mask), dict(attn_mask=mask)
    elif masking == "window-causal":
        ours_kw = dict(causal=True, window=(2, None))
        sdpa_kw = dict(attn_mask=visibility(Lq, Lk, causal=True, window=(2, None)))
    out, _ = attention(q, k, v, scale=scale, **ours_kw)
    ref = sdpa_math(q, k, v, scale=scale, enable_gqa=Hq != Hkv, **sdpa_kw)
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)


def test_sdpa_gradients_agree():
    q = randn(1, 4, 4, 3, seed=40).requires_grad_()
    k = randn(1, 2, 6, 3, seed=41).requires_grad_()
    v = randn(1, 2, 6, 2, seed=42).requires_grad_()
    gout = randn(1, 4, 4, 2, seed=43)
    out, _ = attention(q, k, v, causal=True)
    ours = torch.autograd.grad((out * gout).sum(), (q, k, v))
    ref = sdpa_math(q, k, v, attn_mask=visibility(4, 6, causal=True), enable_gqa=True)
    theirs = torch.autograd.grad((ref * gout).sum(), (q, k, v))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


# --------------------------------------------------------------------------------------
# gradcheck
# --------------------------------------------------------------------------------------

def test_gradcheck_causal_window_additive_softcap():
    B, Hq, Hkv, Lq, Lk, D, Dv = 1, 2, 1, 3, 5, 3, 2
    q = randn(B, Hq, Lq, D, seed=50).requires_grad_()
    k = randn(B, Hkv, Lk, D, seed=51).requires_grad_()
    v = randn(B, Hkv, Lk, Dv, seed=52).requires_grad_()
    mask = randn(1, Hq, Lq, Lk, seed=53)
    mask[0, 0, 2, 3] = -math.inf
    mask[0, 1, 1, 2] = -math.inf
    kwargs = dict(causal=True, window=(2, None), mask=mask, softcap=1.3, scale=0.8)
    _, lse = attention(q, k, v, **kwargs)
    assert bool(torch.isfinite(lse).all())  # no fully-masked row: lse is differentiable everywhere
    assert torch.autograd.gradcheck(lambda q, k, v: attention(q, k, v, **kwargs), (q, k, v))
    assert torch.autograd.gradgradcheck(lambda q, k, v: attention(q, k, v, **kwargs)[0], (q, k, v))


def test_gradcheck_out_with_fully_masked_row():
    q = randn(1, 1, 4, 2, seed=60).requires_grad_()
    k = randn(1, 1, 2, 2, seed=61).requires_grad_()
    v = randn(1, 1, 2, 3, seed=62).requires_grad_()
    # bottom-right, Lq = 4 > Lk = 2: rows 0 and 1 see nothing
    assert torch.autograd.gradcheck(lambda q, k, v: attention(q, k, v, causal=True)[0], (q, k, v))


@pytest.mark.parametrize("len_q, len_k", [(0, 5), (3, 0), (0, 0)])
def test_zero_length_calls(len_q, len_k):
    """No queries: an empty output; no keys: every row is empty, output and gradients exactly 0."""
    q = randn(2, 4, len_q, 6, seed=70).requires_grad_()
    k, v = randn(2, 2, len_k, 6, seed=71).requires_grad_(), randn(2, 2, len_k, 3, seed=72).requires_grad_()
    out, lse = attention(q, k, v, causal=True, scale=0.3)
    assert out.shape == (2, 4, len_q, 3) and lse.shape == (2, 4, len_q)
    assert bool((out == 0).all()) and bool(torch.isneginf(lse).all())
    out.sum().backward()
    assert all(bool((t.grad == 0).all()) and t.grad.shape == t.shape for t in (q, k, v))
    if len_q:  # the naive loops build their output from rows
        naive, _ = naive_attention(q.detach(), k.detach(), v.detach(), causal=True, scale=0.3)
        assert torch.equal(naive, out.detach())


@pytest.mark.parametrize("head_dim, head_dim_v", [(24, 40), (100, 48), (136, 136)])
def test_head_dims_that_are_not_powers_of_two(head_dim, head_dim_v):
    q, k, v = randn(1, 2, 17, head_dim, seed=73), randn(1, 1, 33, head_dim, seed=74), randn(1, 1, 33, head_dim_v, seed=75)
    got, _ = attention(q, k, v, causal=True, scale=0.125)
    mask = torch.ones(17, 33, dtype=torch.bool).tril(33 - 17)
    want = F.scaled_dot_product_attention(q, k.expand(1, 2, 33, head_dim), v.expand(1, 2, 33, head_dim_v), attn_mask=mask,
                                          scale=0.125)
    assert torch.allclose(got, want, atol=TOL, rtol=0)


# --------------------------------------------------------------------------------------
# Argument errors
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("hq, hkv", [(3, 2), (4, 3), (1, 2)])
def test_heads_not_multiple_raises(hq, hkv):
    q, k, v = randn(1, hq, 2, 3, seed=0), randn(1, hkv, 2, 3, seed=1), randn(1, hkv, 2, 3, seed=2)
    with pytest.raises(ValueError, match="multiple"):
        attention(q, k, v)


@pytest.mark.parametrize("alignment", ["center", "bottom-right", "", "TOP_LEFT"])
def test_bad_alignment_raises(alignment):
    q, k, v = randn(1, 1, 2, 3, seed=0), randn(1, 1, 2, 3, seed=1), randn(1, 1, 2, 3, seed=2)
    with pytest.raises(ValueError, match="alignment"):
        attention(q, k, v, causal=True, alignment=alignment)
    with pytest.raises(ValueError, match="alignment"):
        visibility(2, 2, alignment=alignment)
