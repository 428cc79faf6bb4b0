"""Program forms lowered by ExecuTorch and run by its runtime: portable kernels only,
and with the XNNPACK partitioner.

Lowering takes seconds, so each (module, dynamic-shape spec) is lowered once per case
and every call of the case runs through the one loaded method; mutable buffers (the
Gated DeltaNet block's states) live in the method between calls. BOUNDS reads the range
constraints of the program ExecuTorch finally emits; MEM measures the edge graph before
delegation (what the portable kernels execute; XNNPACK's delegate hides its inside).
"""

from __future__ import annotations

import torch

from harness.export import Program, lower_to_executorch, program_bounds
from harness.registry import KnownFailure, Limitation, variant

REQUIRES = ("executorch.exir", "executorch.runtime")
UNPOISONED = Limitation("ExecuTorch's runtime runs in memory it plans and allocates itself, outside torch: UNINIT's "
                        "poisoned allocations cannot reach it", checks={"UNINIT"})
UNMETERED = Limitation("ExecuTorch's runtime allocates outside torch's dispatcher: its live memory cannot be measured "
                       "here (MEM reads the largest intermediate of the edge graph instead)", checks={"MEM:peak_live"})


def _lower(module, example_args, dynamic_shapes, partitioners) -> Program:
    ep = torch.export.export(module, example_args, dynamic_shapes=dynamic_shapes)
    run, graph, emitted = lower_to_executorch(ep, partitioners)
    return Program(run, program_bounds(emitted, dynamic_shapes), graph, observable=False)


@variant("programs", "executorch_portable", dtypes=("float32",), requires=REQUIRES, limitations=[UNMETERED, UNPOISONED])
def executorch_portable(module, example_args, *, dynamic_shapes):
    """torch.export -> to_edge_transform_and_lower (no partitioner) -> to_executorch -> runtime."""
    return _lower(module, example_args, dynamic_shapes, [])


@variant("programs", "executorch_xnnpack", dtypes=("float32",),
         requires=REQUIRES + ("executorch.backends.xnnpack.partition.xnnpack_partitioner",), limitations=[UNMETERED, UNPOISONED],
         known_failures=[
             # reproduced with executorch 1.5.1: to_edge_transform_and_lower raises
             KnownFailure("XNNPACK lowering of the Gated DeltaNet block raises: a delegate output that is also one of "
                          "its inputs (a pass-through slice_copy) is not supported", features={"module:gdn_block"})])
def executorch_xnnpack(module, example_args, *, dynamic_shapes):
    """As executorch_portable, with XnnpackPartitioner delegating what it supports."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return _lower(module, example_args, dynamic_shapes, [XnnpackPartitioner()])
