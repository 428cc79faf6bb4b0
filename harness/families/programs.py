"""The programs family: reference modules exported, compiled and lowered, held to their
eager float64 selves over several stateful calls, with their shape bounds and memory.

Adapter contract (a *transformation*: it gets the module and returns a program)::

    fn(module, example_args, *, dynamic_shapes) -> harness.export.Program

    module          a fresh ``reference.modules`` module in the case dtype, state at its
                    initial value
    example_args    the first call's arguments
    dynamic_shapes  a torch.export spec (a tuple with one dict {dim: Dim} or None per
                    argument), or None when every shape is static
    returns         Program(run, bounds, graph): ``run(*args)`` calls the program (its
                    state persists between calls, as the module's does); ``bounds`` the
                    declared dims' (min, max) as the program records them; ``graph`` the
                    fx graph it executes, for MEM (None when it has none)

Cases name a module and its calls (see ``PROGRAMS``): seed 000's cached attention layer
(static query of 12, dynamic context in [13, 64]; calls at 13, 40 and 64), the Gated
DeltaNet block (conv and recurrent state buffers; a reset call at position 0), seed
003's query-sliced attention (static length 128, chunk 64), and the peers' modules
(``harness.peer_modules``: ExecuTorch's AttentionMHA and AttentionGatedDeltaNet with the
case's weights), whose truth is the reference module they implement. A case whose module
needs a package that is not installed is unsupported for every variant, with the reason.

Checks: EXPORT (every output of every call, states included, vs the module in float64
eager), BOUNDS (each declared dim's range in the program == the declaration, exact),
MEM:largest_intermediate (the largest tensor of the graph, from its node metadata, or
measured while an eager form runs, <= the module's analytic bound) and MEM:peak_live (the
most bytes the program's ops hold live at once, measured with ``harness.export.MemoryMeter``
while it runs, <= the analytic peak; forms whose allocations torch's dispatcher does not see,
compiled kernels and other runtimes, declare it unsupported); and the memory conditions of
``harness.memory_checks`` on the same program, after the EXPORT pass: UNINIT:out (a second
pass of every call under ``poisoned_allocations``, every output and state finite and equal
to a second pass of the float64 module, whose state continues too) and DET:out (three more
passes, plain, plain and under ``filled_allocations(1e4)``, bitwise identical: each module's
calls leave its state where the pass found it, so passes after the first start alike).
Forms whose allocations those modes cannot reach declare them unsupported (ExecuTorch's
runtime plans its own memory; Inductor's kernels allocate with a helper that is never
poisoned, and torch.compile runs eagerly while a dispatch mode is active). Forward only.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch.export import Dim

from harness.dtypes import DTYPE_TOKENS, TORCH_DTYPES
from harness.export import MemoryMeter, declared_bounds
from harness.families import CheckSpec, Family, run_guarded
from harness.memory_checks import bitwise_equal, filled_allocations, poisoned_allocations
from harness.native_io import native_stderr_silenced
from harness.registry import import_problem
from harness.steps import compare_calls
from harness.tolerance import FAIL, PASS, Comparison
from harness.peer_modules import REQUIRES as _PEER
from reference.modules import BufferedCacheAttention, CachedAttentionLayer, GatedDeltaNetBlock, QuerySlicedAttention


@dataclass(frozen=True)
class ProgramSpec:
    """How to build, call and bound one reference module."""

    describe: str
    build: Callable  # (generator, dtype) -> module
    call_inputs: Callable  # (generator, call parameter) -> the call's fresh inputs, float64
    initial_state: Callable  # () -> the state passed to the first call (float64), () when buffered
    dynamic_shapes: Callable | None = None  # () -> torch.export spec; fresh Dims per call
    reference: Callable | None = None  # (generator, dtype) -> the truth's module, when not ``build``'s (peers)
    requires: tuple[str, ...] = ()  # modules ``build`` imports (a peer's package)
    memory_bound: Callable | None = None  # (args) -> most elements one intermediate may hold
    peak_bound: Callable | None = None  # (args) -> most bytes its ops may hold live at once
    submodule: str | None = None  # what a re-export takes standalone


def _randn(gen, *shape, std=1.0):
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * std


# seed 000: E=32, H=4, Hkv=2, D=8, a static query of 12 tokens, a cache of 64
_E, _H, _HKV, _D, _QUERY, _CAPACITY = 32, 4, 2, 8, 12, 64


def _seed000_weights(gen, dtype):
    weights = {"wq": _randn(gen, _H * _D, _E, std=_E ** -0.5), "wk": _randn(gen, _HKV * _D, _E, std=_E ** -0.5),
               "wv": _randn(gen, _HKV * _D, _E, std=_E ** -0.5), "wo": _randn(gen, _E, _H * _D, std=(_H * _D) ** -0.5)}
    return {n: w.to(dtype) for n, w in weights.items()}


def _seed000_module(gen, dtype):
    return CachedAttentionLayer(_seed000_weights(gen, dtype), _H, _HKV, _D)


def _seed000_spec():
    context = Dim("context", min=_QUERY + 1, max=_CAPACITY)
    return (None, {1: context}, None, None)


# Gated DeltaNet block: B=1, D=16, H=1, HV=2, K=V=8, conv width 4, 4 tokens a call
_GDN = dict(batch=1, hidden=16, heads_k=1, heads_v=2, dim_k=8, dim_v=8, width=4, tokens=4)


def _gdn_weights(gen, dtype):
    g = _GDN
    conv_dim = 2 * g["heads_k"] * g["dim_k"] + g["heads_v"] * g["dim_v"]
    value_width = g["heads_v"] * g["dim_v"]
    d = g["hidden"]
    weights = {"in_proj_qkv": _randn(gen, conv_dim, d, std=d ** -0.5), "in_proj_z": _randn(gen, value_width, d, std=d ** -0.5),
               "in_proj_b": _randn(gen, g["heads_v"], d, std=d ** -0.5), "in_proj_a": _randn(gen, g["heads_v"], d, std=d ** -0.5),
               "conv": _randn(gen, conv_dim, g["width"], std=0.5), "A_log": _randn(gen, g["heads_v"], std=0.5),
               "dt_bias": _randn(gen, g["heads_v"], std=0.5), "norm": 1.0 + _randn(gen, g["dim_v"], std=0.1),
               "out_proj": _randn(gen, d, value_width, std=value_width ** -0.5)}
    return {n: w.to(dtype) for n, w in weights.items()}


def _gdn_shape():
    return tuple(_GDN[k] for k in ("batch", "heads_k", "heads_v", "dim_k", "dim_v"))


def _gdn_module(gen, dtype):
    return GatedDeltaNetBlock(_gdn_weights(gen, dtype), *_gdn_shape())


def _executorch_gdn_module(gen, dtype):
    from harness.peer_modules import ExecuTorchGatedDeltaNet

    return ExecuTorchGatedDeltaNet(_gdn_weights(gen, dtype), *_gdn_shape())


# ExecuTorch's AttentionMHA: the seed-000 weights, a cache of 16 slots, 4 tokens a call
_MHA_CAPACITY, _MHA_TOKENS = 16, 4


def _mha_module(gen, dtype):
    return BufferedCacheAttention(_seed000_weights(gen, dtype), _H, _HKV, _D, _MHA_CAPACITY)


def _executorch_mha_module(gen, dtype):
    from harness.peer_modules import ExecuTorchAttentionMHA

    return ExecuTorchAttentionMHA(_seed000_weights(gen, dtype), _H, _HKV, _D, _MHA_CAPACITY)


# seed 003: B=1, H=2, L=128, D=24 (a head dim that is not a power of two; the other modules keep
# their seeds' dims), causal, queries sliced by 64
_SLICED = dict(batch=1, heads=2, length=128, dim=24, chunk=64)


PROGRAMS: dict[str, ProgramSpec] = {
    "seed000_attention": ProgramSpec(
        "seed 000's attention layer: static query of 12 tokens, dynamic context in [13, 64] (the cache capacity), "
        "K/V caches passed in and returned",
        build=_seed000_module,
        call_inputs=lambda gen, context: (_randn(gen, 1, _QUERY, _E), torch.zeros(1, context, dtype=torch.long)),
        initial_state=lambda: (torch.zeros(1, _HKV, _CAPACITY, _D, dtype=torch.float64),) * 2,
        dynamic_shapes=_seed000_spec, submodule="attend"),
    "gdn_block": ProgramSpec(
        "the Gated DeltaNet block with conv and recurrent state buffers, 4 tokens a call; input_pos 0 resets",
        build=_gdn_module,
        call_inputs=lambda gen, pos: (_randn(gen, _GDN["batch"], _GDN["tokens"], _GDN["hidden"]),
                                      torch.tensor([pos], dtype=torch.long)),
        initial_state=lambda: ()),
    "executorch_attention_mha": ProgramSpec(
        "ExecuTorch's AttentionMHA (KV cache of 16 slots in buffers, dynamic-shape cache updates, its SDPA module; "
        "identity RoPE), 4 tokens a call at input_pos; truth: reference.modules.BufferedCacheAttention",
        build=_executorch_mha_module, reference=_mha_module, requires=_PEER,
        call_inputs=lambda gen, pos: (_randn(gen, 1, _MHA_TOKENS, _E), torch.tensor([pos], dtype=torch.long)),
        initial_state=lambda: ()),
    "executorch_gdn_block": ProgramSpec(
        "ExecuTorch's AttentionGatedDeltaNet (conv and recurrent state in buffers, its C++ gated_delta_rule op), "
        "4 tokens a call; input_pos 0 resets; truth: reference.modules.GatedDeltaNetBlock",
        build=_executorch_gdn_module, reference=_gdn_module, requires=_PEER,
        call_inputs=lambda gen, pos: (_randn(gen, _GDN["batch"], _GDN["tokens"], _GDN["hidden"]),
                                      torch.tensor([pos], dtype=torch.long)),
        initial_state=lambda: ()),
    "sliced_attention": ProgramSpec(
        "seed 003's causal attention at a static length of 128, queries sliced by 64",
        build=lambda gen, dtype: QuerySlicedAttention(_SLICED["chunk"]),
        call_inputs=lambda gen, _: tuple(_randn(gen, _SLICED["batch"], _SLICED["heads"], _SLICED["length"], _SLICED["dim"])
                                         for _ in range(3)),
        initial_state=lambda: (),
        memory_bound=lambda args: max(_score_block(args), max(a.numel() for a in args)),
        peak_bound=lambda args: args[0].element_size() * (4 * _score_block(args) + 2 * args[0].numel())),
}


def _score_block(args) -> int:
    """Elements of one slice's scores: B x H x chunk x L (q, k, v ``[B, H, L, D]``).

    The peak bound allows four such blocks live at once (scores, causal mask, exponentials,
    probabilities) and two outputs' worth (the slices' results and their concatenation):
    still O(chunk x L) per head; an unsliced computation holds O(L x L)."""
    q, k = args[0], args[1]
    return q.shape[0] * q.shape[1] * _SLICED["chunk"] * k.shape[2]



@dataclass(frozen=True)
class ProgramCase:
    module: str
    calls: tuple[int, ...]  # per call: the context length (seed000), input_pos (gdn_block), an index (sliced)
    dtype: str = "float32"
    seed: int = 0

    family = "programs"

    def __post_init__(self):
        object.__setattr__(self, "calls", tuple(self.calls))
        problems = []
        if self.module not in PROGRAMS:
            problems.append(f"module {self.module!r} is not one of {', '.join(PROGRAMS)}")
        if len(self.calls) < 3:
            problems.append("a program is held to its module over at least three calls")
        if self.dtype not in TORCH_DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
        if problems:
            raise ValueError("invalid program case: " + "; ".join(problems))

    @property
    def spec(self) -> ProgramSpec:
        return PROGRAMS[self.module]

    @property
    def id(self) -> str:
        return f"prog-{self.module}-c{'_'.join(map(str, self.calls))}-{DTYPE_TOKENS[self.dtype]}-s{self.seed}"

    def describe(self) -> str:
        return f"{self.spec.describe}; calls at {list(self.calls)}; {self.dtype}, seed {self.seed}"

    def params(self) -> dict:
        return asdict(self)


def case_from_id(text: str) -> ProgramCase:
    dtypes = {v: k for k, v in DTYPE_TOKENS.items()}
    try:
        head, rest = text.split("-", 1) if text.startswith("prog-") else ("", "")
        if head != "prog":
            raise ValueError("a program case id starts with prog-")
        module, calls, dtype, seed = rest.rsplit("-", 3)
        if not calls.startswith("c") or not seed.startswith("s") or dtype not in dtypes:
            raise ValueError("expected prog-<module>-c<calls>-<dtype>-s<seed>")
        return ProgramCase(module, tuple(int(c) for c in calls[1:].split("_")), dtypes[dtype], int(seed[1:]))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed program case id {text!r}: {exc}") from None


def case_features(case: ProgramCase) -> frozenset[str]:
    spec = case.spec
    features = {f"module:{case.module}"}
    if spec.dynamic_shapes:
        features.add("dynamic_shapes")
    if spec.submodule is None:
        features.add("no_submodule")
    return frozenset(features)


def _calls(case: ProgramCase) -> list[tuple]:
    """Every call's fresh inputs, float64 rounded through the case dtype."""
    gen = torch.Generator().manual_seed(case.seed + 1)
    dtype = TORCH_DTYPES[case.dtype]
    return [tuple(_cast(_cast(t, dtype), torch.float64) for t in case.spec.call_inputs(gen, parameter))
            for parameter in case.calls]


def _module(case: ProgramCase, dtype, *, truth: bool = False):
    """The module (``truth``: the reference module that is its truth) with weights rounded
    through the case dtype, held in ``dtype``."""
    build = (case.spec.reference or case.spec.build) if truth else case.spec.build
    return build(torch.Generator().manual_seed(case.seed), TORCH_DTYPES[case.dtype]).to(dtype)


def _cast(t: torch.Tensor, dtype) -> torch.Tensor:
    return t.to(dtype) if t.is_floating_point() else t


def _chain(run, case: ProgramCase, calls: list[tuple], dtype, device="cpu") -> list[torch.Tensor]:
    """Every call in order, carried state fed back; per call its outputs flattened into one vector.
    Native stderr is quieted around each call: ExecuTorch's C++ ops (in its runtime, in
    exported graphs and in its eager modules) log a line per call."""
    state = tuple(_cast(s, dtype).to(device) for s in case.spec.initial_state())
    flat = []
    for inputs in calls:
        args = tuple(_cast(t, dtype).to(device) for t in inputs) + state
        with native_stderr_silenced():
            outputs = run(*args)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        if state:
            state = tuple(outputs[-len(state):])
        flat.append(torch.cat([o.detach().to(dtype).cpu().flatten() for o in outputs]))
    return flat


DET_FILL = 1e4  # what DET's third pass finds in every fresh allocation


@dataclass
class ProgramOracle:
    calls: list  # per call, its inputs (float64, rounded through the case dtype)
    truth: list  # per call, float64
    baseline: list  # per call, case dtype
    again: list  # per call of a second pass of every call, the module's state carried on, float64
    again_baseline: list  # the same in the case dtype


def oracle(case: ProgramCase) -> ProgramOracle:
    dtype = TORCH_DTYPES[case.dtype]
    calls = _calls(case)
    with torch.no_grad():
        exact, low = _module(case, torch.float64, truth=True), _module(case, dtype, truth=True)
        truth, baseline = _chain(exact, case, calls, torch.float64), _chain(low, case, calls, dtype)
        return ProgramOracle(calls, truth, baseline, _chain(exact, case, calls, torch.float64), _chain(low, case, calls, dtype))


def checks_for(case: ProgramCase) -> list[CheckSpec]:
    specs = [CheckSpec("EXPORT", "calls")]
    if case.spec.dynamic_shapes:
        specs += [CheckSpec("BOUNDS", name) for name in declared_bounds(case.spec.dynamic_shapes())]
    if case.spec.memory_bound:
        specs.append(CheckSpec("MEM", "largest_intermediate"))
    if case.spec.peak_bound:
        specs.append(CheckSpec("MEM", "peak_live"))
    return specs + [CheckSpec("UNINIT", "out"), CheckSpec("DET", "out")]


def run(case: ProgramCase, fn, device: str, oracle: ProgramOracle, wanted: list[CheckSpec]) -> dict[str, Comparison]:
    dtype = TORCH_DTYPES[case.dtype]
    results: dict[str, Comparison] = {}
    spec = case.spec
    dynamic_shapes = spec.dynamic_shapes() if spec.dynamic_shapes else None
    declared = declared_bounds(dynamic_shapes)
    first = tuple(_cast(t, dtype) for t in oracle.calls[0]) + tuple(_cast(s, dtype) for s in spec.initial_state())

    def describe(call):
        return f"call {call} (at {case.calls[call]})"

    built, passes = [], []  # the program; one entry per pass of every call it has run

    def chain(run, context=None):
        """One pass of every call through the program (its state carried on from the last pass)."""
        passes.append(len(passes))
        with torch.no_grad(), context or contextlib.nullcontext():
            return _chain(run, case, oracle.calls, dtype, device)

    def lower(specs):  # a program that cannot be built errs on every check
        with torch.no_grad():
            program = fn(_module(case, dtype).to(device), tuple(t.to(device) for t in first), dynamic_shapes=dynamic_shapes)
        built.append(program)
        for s in specs:
            if s.check == "BOUNDS":
                results[s.key] = _bounds(s.target, declared[s.target], program.bounds)
            elif s.key == "MEM:largest_intermediate" and program.graph is not None:
                results[s.key] = _memory(program.graph, spec.memory_bound(first))

    def calls(specs):  # one that builds but fails to run errs on EXPORT and the measured MEM only
        program, meter = built[0], MemoryMeter()

        def metered(*args):
            with meter:
                return program.run(*args)

        got = chain(metered if program.observable else program.run)
        for s in specs:
            if s.check == "EXPORT":
                results[s.key] = compare_calls("EXPORT", "calls", got, oracle.truth, oracle.baseline, dtype, describe, dim=0)
            elif not program.observable:
                results[s.key] = Comparison("MEM", s.target, FAIL, detail="the program's allocations cannot be "
                                            "observed (it runs outside torch's dispatcher); declare a limitation")
            elif s.target == "peak_live":
                results[s.key] = _verdict(s.target, meter.peak_bytes, spec.peak_bound(first), "bytes",
                                          f"measured while running, at {meter.peak_where}")
            else:
                results[s.key] = _verdict(s.target, meter.largest, spec.memory_bound(first), "elements",
                                          f"measured while running: {meter.where}")

    def poisoned(specs):  # a pass after the EXPORT pass: its truth is the module's second pass
        truth, baseline = (oracle.again, oracle.again_baseline) if passes else (oracle.truth, oracle.baseline)
        got = chain(built[0].run, poisoned_allocations())
        results["UNINIT:out"] = compare_calls("UNINIT", "out", got, truth, baseline, dtype, describe, dim=0)

    def repeated(specs):  # three more passes, each starting where the one before left the state
        runs = {"a pass": chain(built[0].run), "the next, identical pass": chain(built[0].run),
                f"a pass with every fresh allocation filled with {DET_FILL:g}": chain(built[0].run, filled_allocations(DET_FILL))}
        results["DET:out"] = bitwise_equal("DET", "out", {name: {f"outputs of {describe(c)}": t for c, t in enumerate(got)}
                                                         for name, got in runs.items()})

    run_guarded(results, wanted, wanted, lower)
    if built:
        measured = [s for s in wanted if s.key == "MEM:peak_live" or (s.check == "MEM" and built[0].graph is None)]
        run_guarded(results, wanted, [s for s in wanted if s.check == "EXPORT"] + measured, calls)
        run_guarded(results, wanted, [s for s in wanted if s.check == "UNINIT"], poisoned)
        run_guarded(results, wanted, [s for s in wanted if s.check == "DET"], repeated)
    return results


def _text(bounds) -> str:
    lower, upper = bounds
    return f"[{lower}, {'inf' if upper is None else upper}]"


def _bounds(name: str, declared: tuple, recorded: dict) -> Comparison:
    if name not in recorded:
        return Comparison("BOUNDS", name, FAIL, detail=f"the program records no range for {name}; declared {_text(declared)}")
    got = recorded[name]
    same = tuple(got) == tuple(declared)
    return Comparison("BOUNDS", name, PASS if same else FAIL, error=0.0 if same else 1.0, threshold=0.0,
                      detail=f"declared {_text(declared)}, program has {_text(got)}")


def _memory(graph, bound: int) -> Comparison:
    from harness.export import largest_intermediate

    largest, where = largest_intermediate(graph)
    return _verdict("largest_intermediate", largest, bound, "elements", f"from the graph's node metadata: {where}")


def _verdict(target: str, measured: int, bound: int, unit: str, where: str) -> Comparison:
    what = "largest intermediate" if target == "largest_intermediate" else "peak live"
    return Comparison("MEM", target, PASS if measured <= bound else FAIL, error=float(measured),
                      threshold=float(bound), margin=1.0 - measured / bound,
                      detail=f"{what} {measured} {unit} ({where}); analytic bound {bound}")


def case_unavailable(case: ProgramCase) -> str:
    problem = import_problem(case.spec.requires)
    return f"the case's module needs a peer's package: {problem}" if problem else ""


FAMILY = Family(
    name="programs", positional=("module", "example_args"), keywords=("dynamic_shapes",),
    case_type=ProgramCase, contract=__doc__, case_from_id=case_from_id, case_features=case_features,
    checks_for=checks_for, oracle=oracle, run=run, case_unavailable=case_unavailable,
)
