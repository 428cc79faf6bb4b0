"""Program forms from torch itself: torch.export (run through ``.module()``, after core
ATen decompositions, after a save/load round trip), seed 000's standalone re-export of
the attention submodule carrying the parent's bounds, and torch.compile (Inductor, CPU).
"""

from __future__ import annotations

import torch

from harness.export import Program, program_bounds, reexport_submodule, saved_and_loaded
from harness.registry import Limitation, variant

NO_SUBMODULE = Limitation("only modules with an attention submodule are re-exported", features={"no_submodule"})


def export(module, example_args, dynamic_shapes, **kwargs):
    return torch.export.export(module, example_args, dynamic_shapes=dynamic_shapes, **kwargs)


def _program(ep, dynamic_shapes) -> Program:
    return Program(ep.module(), program_bounds(ep, dynamic_shapes), ep.graph)


@variant("programs", "export_module", dtypes=("float32",))
def export_module(module, example_args, *, dynamic_shapes):
    """torch.export.export, run with ExportedProgram.module()."""
    return _program(export(module, example_args, dynamic_shapes), dynamic_shapes)


@variant("programs", "export_decomposed", dtypes=("float32",))
def export_decomposed(module, example_args, *, dynamic_shapes):
    """torch.export then run_decompositions() (core ATen), run with .module()."""
    return _program(export(module, example_args, dynamic_shapes).run_decompositions(), dynamic_shapes)


@variant("programs", "export_saved", dtypes=("float32",))
def export_saved(module, example_args, *, dynamic_shapes):
    """torch.export, torch.export.save to bytes and torch.export.load, run with .module()."""
    return _program(saved_and_loaded(export(module, example_args, dynamic_shapes)), dynamic_shapes)


@variant("programs", "export_reexport_attention", dtypes=("float32",), limitations=[NO_SUBMODULE])
def export_reexport_attention(module, example_args, *, dynamic_shapes):
    """Seed 000's externalize step done right: the attention submodule re-exported standalone
    with the parent's symbol ranges; BOUNDS reads the re-export, the parent program runs."""
    ep = export(module, example_args, dynamic_shapes, preserve_module_call_signature=("attend",))
    sub, bounds = reexport_submodule(ep, module, "attend", dynamic_shapes, carry_bounds=True)
    return Program(ep.module(), bounds, sub.graph)


@variant("programs", "eager_module", dtypes=("float32",), limitations=[
    Limitation("an eager module records no shape ranges", checks={"BOUNDS"}),
])
def eager_module(module, example_args, *, dynamic_shapes):
    """The module itself in the case dtype; MEM measures its ops while it runs."""
    return Program(module)


@variant("programs", "compiled_inductor", dtypes=("float32",), limitations=[
    Limitation("torch.compile keeps no exported graph: no recorded ranges, no node metadata", checks={"BOUNDS", "MEM"}),
    Limitation("Inductor's kernels allocate with torch._C._dynamo.guards._empty_strided_cpu, which torch's "
               "fill_uninitialized_memory never fills: UNINIT's poisoned allocations cannot reach them", checks={"UNINIT"}),
    Limitation("while a TorchDispatchMode is active (DET's filled_allocations) dynamo skips the frame and runs the module "
               "eagerly, so DET's third pass would not run the compiled program", checks={"DET"}),
])
def compiled_inductor(module, example_args, *, dynamic_shapes):
    """torch.compile(module, backend="inductor", dynamic=True) on the CPU."""
    compiled = torch.compile(module, backend="inductor", dynamic=dynamic_shapes is not None)

    def run(*args):
        # .item() on a position (ExecuTorch's AttentionMHA) is traced, not a graph break
        with torch._dynamo.config.patch(capture_scalar_outputs=True):
            return compiled(*args)

    return Program(run, observable=False)
