"""The memory helpers behind GUARD, UNINIT and DET do what their checks rely on."""

import math

import torch

from harness.memory_checks import (bitwise_equal, filled_allocations, guard_elements, guard_intact, guard_tail,
                                   guarded, poisoned_allocations)


def test_guarded_view_is_contiguous_at_the_head_of_a_nan_tail():
    x = torch.randn(2, 3, 17, 24)
    view = guarded(x, "nan")
    assert view.is_contiguous() and torch.equal(view, x)
    tail = guard_tail(view)
    assert tail.numel() == guard_elements(tuple(x.shape)) == 128 * 17 * 24  # a tile of 128 along dim 1
    assert bool(tail.isnan().all())
    # one row read past the end of the last row lands in the guard
    past = torch.as_strided(view, (x.numel() + 24,), (1,))[-24:]
    assert bool(past.isnan().all())


def test_huge_fill_is_finite_and_overflows_a_product():
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        tail = guard_tail(guarded(torch.ones(4, 5, dtype=dtype), "huge"))
        assert bool(tail.isfinite().all())
        assert not bool((tail[:1] * tail[:1]).isfinite().all())


def test_guard_intact_sees_a_write_past_the_end():
    view = guarded(torch.zeros(4, 8), "nan")
    assert guard_intact(view, "nan")[0]
    torch.as_strided(view, (33,), (1,))[32] = 0.0  # one element past the end
    ok, detail = guard_intact(view, "nan")
    assert not ok and "1 guard element" in detail


def test_guarded_leaf_carries_the_gradient():
    x = torch.randn(3, 5)
    view = guarded(x, "nan", requires_grad=True)
    (view * 2).sum().backward()
    grad = view._base.grad
    assert torch.equal(grad[:15].view(3, 5), torch.full((3, 5), 2.0)) and bool((grad[15:] == 0).all())


def test_poisoned_allocations_fill_nan_and_restore_the_setting():
    before = torch.are_deterministic_algorithms_enabled()
    with poisoned_allocations():
        assert bool(torch.empty(7).isnan().all())
        assert bool((torch.empty(3, dtype=torch.int32) == torch.iinfo(torch.int32).max).all())
        assert bool(torch.empty_like(torch.ones(2, 2)).isnan().all())
    assert torch.are_deterministic_algorithms_enabled() == before


def test_filled_allocations_reach_python_allocations():
    with filled_allocations(7.0):
        assert bool((torch.empty(5) == 7.0).all()) and bool((torch.ones(3).new_empty(2) == 7.0).all())
        assert bool((torch.empty_like(torch.ones(4)) == 7.0).all())
        assert bool((torch.ones(3) == 1.0).all())  # initialised allocations are left alone


def test_bitwise_equal_is_exact_and_treats_nan_payloads_as_bytes():
    a = torch.tensor([1.0, math.nan, 3.0])
    assert bitwise_equal("DET", "out", {"first": {"out": a}, "again": {"out": a.clone()}}).status == "pass"
    b = a.clone()
    b[2] = torch.nextafter(torch.tensor(3.0), torch.tensor(4.0))
    result = bitwise_equal("DET", "out", {"first": {"out": a}, "again": {"out": b}})
    assert result.status == "fail" and result.worst_index == (2,) and "again" in result.detail
