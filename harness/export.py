"""Export helpers: what a program is to the harness, its shape bounds, its largest
intermediate, and seed 000's standalone re-export of a submodule.

A ``Program`` is what a program variant returns: ``run`` calls it (state persists
between calls like the eager module's), ``bounds`` are the declared dynamic dims as
the program records them, ``graph`` is the graph whose node metadata MEM measures.
"""

from __future__ import annotations

import io
import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.export import Dim, ExportedProgram
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

Bounds = dict[str, tuple[int, int | None]]  # Dim name -> (min, max); None: unbounded


class MemoryMeter(TorchDispatchMode):
    """While active, measures what the ops it sees allocate: the largest tensor any op
    produces (elements) and the peak of the bytes held live by storages created while
    it was active (inputs and other storages from outside are not counted). For MEM on
    forms whose ops run through torch's dispatcher: measured, not derived from metadata.

    A storage counts from the first op that returns a tensor on it until the last such
    tensor is freed (a finalizer per tensor; views share their storage's count)."""

    def __init__(self):
        super().__init__()
        self.largest, self.where = 0, ""
        self.peak_bytes, self.peak_where = 0, ""
        self._live: dict[int, list[int]] = {}  # storage address -> [tensors alive, bytes]
        self._bytes = 0

    def _release(self, key: int) -> None:
        entry = self._live[key]
        entry[0] -= 1
        if entry[0] == 0:
            self._bytes -= entry[1]
            del self._live[key]

    def _hold(self, t: torch.Tensor, outside: set[int]) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in self._live:
            if key in outside:
                return  # a view or in-place result on memory from outside the meter
            self._live[key] = [0, storage.nbytes()]
            self._bytes += storage.nbytes()
        self._live[key][0] += 1
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outside = {t.untyped_storage().data_ptr() for t in inputs}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            if t.numel() > self.largest:
                self.largest, self.where = t.numel(), f"{func} {tuple(t.shape)}"
            if not any(t is i for i in inputs):
                self._hold(t, outside)
        if self._bytes > self.peak_bytes:
            self.peak_bytes, self.peak_where = self._bytes, str(func)
        return out


@dataclass
class Program:
    run: Callable[..., tuple]
    bounds: Bounds = field(default_factory=dict)  # empty: the form keeps no shape ranges
    graph: torch.fx.Graph | None = None
    # True when ``run`` executes torch ops through the dispatcher (eager modules, the
    # GraphModules of exported programs), so a MemoryMeter can measure it; False for
    # generated kernels and other runtimes, whose allocations it cannot see.
    observable: bool = True


def declared_dims(dynamic_shapes) -> list[tuple[int, int, Dim]]:
    """(argument index, dim index, Dim) for every declared dynamic dim of a tuple spec."""
    found = []
    for arg, spec in enumerate(dynamic_shapes or ()):
        for dim, d in (spec or {}).items():
            found.append((arg, dim, d))
    return found


def declared_bounds(dynamic_shapes) -> Bounds:
    return {d.__name__: (d.min, d.max) for _, _, d in declared_dims(dynamic_shapes)}


def _range(ep: ExportedProgram, size) -> tuple[int, int | None]:
    if isinstance(size, int):
        return size, size  # the dim was specialised: its dynamism is gone
    ranges = ep.range_constraints.get(size.node.expr)
    if ranges is None:
        return 0, None
    upper = ranges.upper
    return int(ranges.lower), (None if str(upper) in ("oo", "int_oo") or upper.is_finite is False else int(upper))


def _user_inputs(ep: ExportedProgram) -> list[torch.fx.Node]:
    names = ep.graph_signature.user_inputs
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    return [placeholders[name] for name in names]


def program_bounds(ep: ExportedProgram, dynamic_shapes) -> Bounds:
    """Each declared dim's (min, max) as ``ep`` records it in its range constraints."""
    inputs = _user_inputs(ep)
    return {d.__name__: _range(ep, inputs[arg].meta["val"].shape[dim]) for arg, dim, d in declared_dims(dynamic_shapes)}


def largest_intermediate(graph: torch.fx.Graph) -> tuple[int, str]:
    """The most elements any computed node holds, and that node, from ``meta["val"]``
    (symbolic sizes at their hint)."""
    best, where = 0, ""
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        values = node.meta.get("val")
        for value in values if isinstance(values, (tuple, list)) else (values,):
            if isinstance(value, torch.Tensor):
                numel = 1
                for size in value.shape:
                    numel *= int(size.node.hint) if isinstance(size, torch.SymInt) else int(size)
                if numel > best:
                    best, where = numel, f"{node.name} {tuple(value.shape)}"
    return best, where


def saved_and_loaded(ep: ExportedProgram) -> ExportedProgram:
    buffer = io.BytesIO()
    torch.export.save(ep, buffer)
    buffer.seek(0)
    return torch.export.load(buffer)


def reexport_submodule(ep: ExportedProgram, parent: torch.nn.Module, fqn: str, dynamic_shapes, *,
                       carry_bounds: bool = True) -> tuple[ExportedProgram, Bounds]:
    """Export ``parent.<fqn>`` standalone, as seed 000's externalize pass does, with inputs
    shaped like the ones it receives in ``ep`` (exported with
    ``preserve_module_call_signature=(fqn,)``). A symbolic input dim becomes a ``Dim``
    with the parent's range (``carry_bounds``) or with its lower bound only (what the
    seed's pass did). Returns the new program and, for each of the parent's declared
    dims, the range its symbol got in the new program."""
    entry = next((e for e in ep.module_call_graph if e.fqn == fqn), None)
    if entry is None or entry.signature is None:
        raise ValueError(f"the program keeps no call signature for {fqn!r}: export with preserve_module_call_signature")
    nodes = {n.name: n for n in ep.graph.nodes}
    values = [nodes[arg.name].meta["val"] for arg in entry.signature.inputs]
    parent_symbol = {d.__name__: _user_inputs(ep)[arg].meta["val"].shape[dim].node.expr
                     for arg, dim, d in declared_dims(dynamic_shapes)}
    dims: dict = {}  # one Dim per parent symbol, shared by every input dim that carries it
    first_seen: dict = {}  # symbol -> (input, dim) where it first appears
    example, spec = [], []
    for i, value in enumerate(values):
        shape, per_dim = [], {}
        for d, size in enumerate(value.shape):
            if isinstance(size, torch.SymInt):
                expr = size.node.expr
                lower, upper = _range(ep, size)
                if expr not in dims:
                    first_seen[expr] = (i, d)
                    name = f"{fqn.replace('.', '_')}_s{len(dims)}"
                    dims[expr] = Dim(name, min=lower, max=upper) if carry_bounds and upper is not None else Dim(name, min=lower)
                per_dim[d] = dims[expr]
                shape.append(int(size.node.hint))
            else:
                shape.append(int(size))
        example.append(torch.randn(shape, dtype=value.dtype))
        spec.append(per_dim or None)
    sub = parent.get_submodule(fqn)
    program = torch.export.export(sub, tuple(example), dynamic_shapes=tuple(spec))
    inputs = _user_inputs(program)
    bounds = {name: _range(program, inputs[i].meta["val"].shape[d])
              for name, expr in parent_symbol.items() if expr in first_seen for i, d in [first_seen[expr]]}
    return program, bounds


def lower_to_executorch(ep: ExportedProgram, partitioners: list) -> tuple[Callable, torch.fx.Graph, ExportedProgram]:
    """``ep`` lowered (``to_edge_transform_and_lower`` with ``partitioners``, then
    ``to_executorch``) and loaded by ExecuTorch's runtime. Returns ``run(*tensors) -> tuple``
    (mutable buffers live in the loaded method between calls), the edge graph before
    emission, and the emitted program. Needs the ``executorch`` extra."""
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    from harness.native_io import native_stderr_silenced

    with native_stderr_silenced():
        edge = to_edge_transform_and_lower(ep, partitioner=partitioners)
        graph = edge.exported_program().graph
        emitted = edge.to_executorch()
        program = Runtime.get().load_program(emitted.buffer)
        method = program.load_method("forward")

    def run(*args):
        with native_stderr_silenced():
            return tuple(method.execute([a.contiguous() for a in args]))

    run.keep_alive = program  # the method needs its program alive
    return run, graph, emitted.exported_program()
