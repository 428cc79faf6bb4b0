"""Memory conditions that ordinary inputs never create: GUARD, UNINIT and DET.

Every input a test builds lives in fresh, well-behaved memory, so a kernel that reads
past the end of an input, leaves part of an output unwritten or reads scratch memory it
never initialised passes by luck. These helpers make those bugs show, deterministically:

* GUARD: ``guarded(x, fill)`` hands ``x`` over as a *contiguous view at the head of a
  larger allocation*; the tail holds NaN (``fill="nan"``) or a huge finite value
  (``fill="huge"``, for kernels whose masking would swallow a NaN: ``fmax``, ``where``
  on a NaN test). The tail is at least ``TILE`` steps past the end along every dim but
  the outermost, so an overrun by one tile along a sequence or a head dim lands in it.
  Being contiguous, the view is passed through as it is by libraries that copy strided
  inputs (which is why this is not LAYOUT). ``guard_intact(view)`` says whether a
  buffer the variant wrote into (a cache, a state) left its tail bitwise unchanged.
* UNINIT: under ``poisoned_allocations()`` every ``torch.empty``-style allocation, also
  inside C++ kernels (ExecuTorch's ops) and the Triton interpreter, is filled with NaN
  (floats) or the largest integer (torch's ``fill_uninitialized_memory`` under
  deterministic algorithms, warn-only so nothing that merely lacks a deterministic
  implementation raises). An output element a variant never wrote is then NaN.
* DET: ``bitwise_equal`` compares repeated calls byte for byte; ``filled_allocations(v)``
  fills every allocation made through torch's dispatcher from Python (adapters, Python
  kernels) with the finite value ``v``, so a result that depends on what uninitialised
  memory held (a NaN-ignoring ``fmax`` over ``torch.empty``) changes with ``v``.
  Allocations inside an opaque C++ op are covered by UNINIT's NaN instead.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness.tolerance import FAIL, PASS, Comparison

TILE = 128  # the largest tile size in common use along a sequence or head dim
GUARD_FILLS = ("nan", "huge")


def fill_value(dtype: torch.dtype, fill: str) -> float | int:
    """The guard value of ``fill`` in ``dtype``: NaN (integers: the largest value) or a
    huge finite value whose products with ordinary data overflow."""
    if not dtype.is_floating_point:
        return torch.iinfo(dtype).max
    if fill == "nan":
        return math.nan
    if fill == "huge":
        return torch.finfo(dtype).max / 16
    raise ValueError(f"unknown guard fill {fill!r}; known: {', '.join(GUARD_FILLS)}")


def guard_elements(shape: tuple[int, ...]) -> int:
    """Tail length: ``TILE`` steps along every dim but the outermost of a contiguous
    tensor of ``shape``, at least ``TILE`` elements."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    strides.reverse()
    return max([TILE, *(TILE * s for s in strides[1:])])


def guarded(x: torch.Tensor, fill: str = "nan", *, requires_grad: bool = False) -> torch.Tensor:
    """The values of ``x`` as a contiguous view at the head of a larger allocation whose
    tail holds ``fill_value(dtype, fill)``. With ``requires_grad`` the allocation is the
    autograd leaf (``view._base``) and the view carries its gradient."""
    n = x.numel()
    storage = torch.full((n + guard_elements(tuple(x.shape)),), fill_value(x.dtype, fill), dtype=x.dtype, device=x.device)
    storage[:n].copy_(x.detach().reshape(-1))
    if requires_grad:
        storage.requires_grad_()
    view = storage[:n].view(x.shape)
    assert view.is_contiguous() and (n == 0 or view.data_ptr() == storage.data_ptr())
    return view


def guard_tail(view: torch.Tensor) -> torch.Tensor:
    """The guard region of a view made by ``guarded``: its allocation past its end."""
    base = view._base if view._base is not None else view
    return base.detach().reshape(-1)[view.numel():]


def guard_intact(view: torch.Tensor, fill: str) -> tuple[bool, str]:
    """Whether the guard region of ``view`` still holds exactly its fill; else where it
    was first written (elements past the end)."""
    tail = guard_tail(view)
    expected = torch.full_like(tail, fill_value(tail.dtype, fill))
    differ = _bytes(tail).view(-1, tail.element_size()).ne(_bytes(expected).view(-1, tail.element_size())).any(-1)
    if not bool(differ.any()):
        return True, f"{tail.numel()} guard element(s) unchanged"
    first = int(differ.nonzero()[0])
    return False, f"{int(differ.sum())} guard element(s) past the end were written, the first {first} element(s) past the end"


def _bytes(x: torch.Tensor) -> torch.Tensor:
    return x.detach().contiguous().reshape(-1).view(torch.uint8)


@contextlib.contextmanager
def poisoned_allocations():
    """Fill every uninitialised allocation with NaN (floats) or the largest integer, for
    the duration; torch's deterministic-algorithms setting is restored afterwards."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.utils.deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = before[2]


_EMPTY_OPS = {torch.ops.aten.empty, torch.ops.aten.empty_like, torch.ops.aten.empty_strided,
              torch.ops.aten.new_empty, torch.ops.aten.new_empty_strided, torch.ops.aten.empty_permuted}


class _FillAllocations(TorchDispatchMode):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in _EMPTY_OPS and isinstance(out, torch.Tensor):
            if out.dtype.is_floating_point:
                out.fill_(self.value)
            elif out.dtype != torch.bool:
                out.fill_(min(int(self.value), torch.iinfo(out.dtype).max))
        return out


@contextlib.contextmanager
def filled_allocations(value: float):
    """Fill every ``empty``-style allocation made through the dispatcher with ``value``."""
    with _FillAllocations(value):
        yield


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bytes(a), _bytes(b))


def bitwise_equal(check: str, target: str, runs: dict[str, dict[str, torch.Tensor]]) -> Comparison:
    """Exact: every run's tensors are byte for byte those of the first run (NaN payloads
    included). ``runs`` maps a run's description to its named tensors."""
    (first_name, first), *others = runs.items()
    for name, tensors in others:
        for key, reference in first.items():
            got = tensors[key]
            if same_bytes(got, reference):
                continue
            if got.shape != reference.shape or got.dtype != reference.dtype:
                return Comparison(check, target, FAIL, detail=f"{key}: {name} gave {tuple(got.shape)} {got.dtype}, "
                                                              f"{first_name} gave {tuple(reference.shape)} {reference.dtype}")
            differ = _bytes(got).view(*got.shape, got.element_size()).ne(
                _bytes(reference).view(*got.shape, got.element_size())).any(-1)
            index = tuple(int(i) for i in differ.nonzero()[0])
            error = float((got.double() - reference.double()).abs().nan_to_num(math.inf).max())
            return Comparison(check, target, FAIL, error=error, threshold=0.0, worst_index=index,
                              detail=f"{key}: {name} differs from {first_name} in {int(differ.sum())} element(s), first at {index}")
    return Comparison(check, target, PASS, error=0.0, threshold=0.0, detail=f"{len(runs)} runs bitwise identical")


DET_FILL = 1.0e4  # what ``filled_allocations`` writes into every fresh allocation for DET's third call


def det_runs(again, first=None, fill: float = DET_FILL) -> dict:
    """DET's three runs of one call, by description: the ordinary call (``first``, when the
    ordinary run already made it the same way; else a new one), a second identical call, and
    one under ``filled_allocations(fill)``. ``again(context)`` makes the call inside
    ``context`` and returns its results; compare them with ``bitwise_equal``."""
    return {"the ordinary call": first if first is not None else again(contextlib.nullcontext()),
            "a second identical call": again(contextlib.nullcontext()),
            f"a call under filled_allocations({fill:g})": again(filled_allocations(fill))}
