"""Deliberately broken program transformations, each with the check meant to catch it.

Each is an adapter of the programs family built from a correct form with one thing
wrong: the seed-000 re-export without the upper bound, a lowering that narrows or
widens a range, a state that stops updating, a reset that never happens, an
unsliced attention presented as sliced, a sliced one that keeps every slice's scores.
"""

import copy
import itertools

import torch
from torch.export import Dim

from harness.export import Program, program_bounds, reexport_submodule
from reference.modules import QuerySlicedAttention


def _export(module, example_args, dynamic_shapes, **kwargs):
    return torch.export.export(module, example_args, dynamic_shapes=dynamic_shapes, **kwargs)


def reexport_drops_the_upper_bound(module, example_args, *, dynamic_shapes):
    """Seed 000: the attention submodule re-exported with its key length's lower bound only."""
    ep = _export(module, example_args, dynamic_shapes, preserve_module_call_signature=("attend",))
    sub, bounds = reexport_submodule(ep, module, "attend", dynamic_shapes, carry_bounds=False)
    return Program(ep.module(), bounds, sub.graph)


def _respecified(dynamic_shapes, change):
    return tuple(None if s is None else {d: change(dim) for d, dim in s.items()} for s in dynamic_shapes)


def lowering_narrows_the_range(module, example_args, *, dynamic_shapes):
    """Lowered for [min, max - 1]: the program refuses the declared max."""
    narrowed = _respecified(dynamic_shapes, lambda d: Dim(d.__name__, min=d.min, max=d.max - 1))
    ep = _export(module, example_args, narrowed)
    return Program(ep.module(), program_bounds(ep, narrowed), ep.graph)


def lowering_widens_the_range(module, example_args, *, dynamic_shapes):
    """Reports the program's ranges one wider at the top than what was declared and proved."""
    ep = _export(module, example_args, dynamic_shapes)
    bounds = {name: (lo, None if hi is None else hi + 1) for name, (lo, hi) in program_bounds(ep, dynamic_shapes).items()}
    return Program(ep.module(), bounds, ep.graph)


def state_frozen_as_a_constant(module, example_args, *, dynamic_shapes):
    """Every call runs on the state the program was exported with: buffer updates never persist."""
    ep = _export(module, example_args, dynamic_shapes)

    def run(*args):
        return copy.deepcopy(ep).module()(*args)

    return Program(run, program_bounds(ep, dynamic_shapes), ep.graph)


def never_resets_at_position_zero(module, example_args, *, dynamic_shapes):
    """The reset is traced away: the program sees position 0 as any other position."""
    ep = _export(module, example_args, dynamic_shapes)
    program = ep.module()

    def run(x, input_pos):
        return program(x, torch.clamp(input_pos, min=1))

    return Program(run, program_bounds(ep, dynamic_shapes), ep.graph)


def unsliced_presented_as_sliced(module, example_args, *, dynamic_shapes):
    """Exports the attention with one slice of the whole length: right values, O(L^2) memory."""
    whole = copy.deepcopy(module)
    whole.chunk = example_args[0].shape[2]
    ep = _export(whole, example_args, dynamic_shapes)
    return Program(ep.module(), program_bounds(ep, dynamic_shapes), ep.graph)


def eager_unsliced_presented_as_sliced(module, example_args, *, dynamic_shapes):
    """The eager module with one slice of the whole length, measured while it runs."""
    whole = copy.deepcopy(module)
    whole.chunk = example_args[0].shape[2]
    return Program(whole)


class _HoardingSlicedAttention(QuerySlicedAttention):
    """Sliced, but each slice's score block is kept until the end: no tensor is larger
    than one slice's, yet the blocks held together are O(L x L)."""

    def forward(self, q, k, v):
        hoard = [q[:, :, start:start + self.chunk] @ k.transpose(-1, -2) for start in range(0, q.shape[2], self.chunk)]
        out = super().forward(q, k, v)
        return out + 0 * hoard[0].sum()


def sliced_but_keeps_every_slice(module, example_args, *, dynamic_shapes):
    """The eager sliced attention that holds every slice's scores at once (MEM:peak_live only)."""
    return Program(_HoardingSlicedAttention(module.chunk))


# Mutants for the memory checks (UNINIT, DET) on the eager form -------------------------------


def _fresh(shape, like):
    """``torch.empty``: outside ``poisoned_allocations`` the allocator is taken to return zeroed
    pages (``torch.zeros``), so that the old checks miss what is never initialised
    deterministically; under it, the real ``torch.empty``, which it fills with NaN."""
    if torch.utils.deterministic.fill_uninitialized_memory and torch.are_deterministic_algorithms_enabled():
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return torch.zeros(shape, dtype=like.dtype, device=like.device)


def outputs_accumulated_into_unzeroed_buffers(module, example_args, *, dynamic_shapes):
    """The eager module whose outputs are handed back through fresh ``torch.empty`` buffers it
    adds them into (``out += result``) instead of assigning: right while allocations come back
    zeroed, NaN under ``poisoned_allocations`` (UNINIT only)."""

    def run(*args):
        outputs = module(*args)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return tuple(_fresh(o.shape, o).add_(o) for o in outputs)

    return Program(run)


_CALLS = itertools.count()  # how many calls outputs_rescaled_by_a_counter has run, kept between calls


def outputs_rescaled_by_a_counter(module, example_args, *, dynamic_shapes):
    """The eager module whose outputs go through ``(x * m) / m`` with m = 1 or 3 taken in turn from
    a counter kept between calls (a rotating split's rounding): every output within a rounding
    of the right one, but a repeated identical pass is not bitwise the first (DET only)."""

    def run(*args):
        m = (1.0, 3.0)[next(_CALLS) % 2]
        outputs = module(*args)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return tuple(o * m / m for o in outputs)

    return Program(run)
