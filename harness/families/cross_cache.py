"""The cross-attention cache family (seed 004): K/V of the encoder states computed on
the first call, reused unchanged by every later call.

Adapter contract (tensors on the variant's device, in the case dtype)::

    fn(weights, steps, *, heads, head_dim, scale) -> [(out, k_cache, v_cache), ...]

    weights  dict: wk, wv [H D, E], the key and value projections
    steps    list of (q [B, n, H, D], encoder_states [B, S, E]): the decoder's calls in
             order on one fresh (zero) cache
    returns  after each call: out [B, n, H, D] (attention over the whole cache, no
             mask) and copies of the caches k_cache, v_cache [B, H, S, D]
    scale    the softmax scale: 1 / sqrt(D) unless the case sets one (``sc0.3``)

The first call fills the cache from its encoder states; later calls must neither
recompute nor change it, whatever encoder states they are given.

Checks: OUT (every call), STATE (the caches after every call), REUSE (the caches after
every later call are bitwise those after the first; later calls handed NaN encoder
states still give the oracle's outputs: nothing recomputes from them), ALIAS (no input
is mutated), FIN; GUARD:nan (the weights, every call's q and encoder states handed over
as ``harness.memory_checks.guarded`` views with NaN just past their ends: outputs and
caches of every call still match the oracle), UNINIT:out (the calls run under
``poisoned_allocations``: outputs and caches finite and right), DET:out (the plain run, a
second identical one and one under ``filled_allocations(1e4)`` bitwise identical). The
caches live inside the variant (no buffer is handed over), so there is no GUARD:buffers.
Forward only.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch

from harness.dtypes import DTYPE_TOKENS, TORCH_DTYPES
from harness.families import CheckSpec, Family, run_guarded
from harness.faults import AdapterContractError
from harness.memory_checks import bitwise_equal, filled_allocations, guarded, poisoned_allocations
from harness.steps import compare_calls, exact_calls, worst
from harness.tolerance import Comparison, all_finite
from reference.kv_cache import cross_attention_steps

DET_FILL = 1e4  # what DET's third run finds in every fresh allocation


@dataclass(frozen=True)
class CrossCase:
    batch: int
    heads: int
    head_dim: int
    encoder_len: int
    encoder_dim: int
    schedule: tuple[int, ...]  # decoder tokens per call
    dtype: str = "float32"
    seed: int = 0
    scale: float | None = None  # None: 1 / sqrt(head_dim)

    family = "cross_cache"

    def __post_init__(self):
        object.__setattr__(self, "schedule", tuple(self.schedule))
        problems = []
        if min(self.batch, self.heads, self.head_dim, self.encoder_len, self.encoder_dim) < 1:
            problems.append("every size must be at least 1")
        if not self.schedule or min(self.schedule) < 1:
            problems.append(f"schedule {self.schedule} needs at least one call, each of at least 1 token")
        if self.scale is not None and not math.isfinite(self.scale):
            problems.append(f"scale {self.scale} is not finite")
        if self.dtype not in TORCH_DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
        if problems:
            raise ValueError("invalid cross cache case: " + "; ".join(problems))

    @property
    def resolved_scale(self) -> float:
        return self.head_dim ** -0.5 if self.scale is None else self.scale

    @property
    def id(self) -> str:
        scale = f"-sc{self.scale:g}" if self.scale is not None else ""
        return (f"xc-b{self.batch}-h{self.heads}-d{self.head_dim}-e{self.encoder_len}x{self.encoder_dim}"
                f"-n{'_'.join(map(str, self.schedule))}{scale}-{DTYPE_TOKENS[self.dtype]}-s{self.seed}")

    def describe(self) -> str:
        scale = f", scale {self.scale:g}" if self.scale is not None else ""
        return (f"cross-attention cache: B={self.batch}, H={self.heads}, D={self.head_dim}{scale}, encoder "
                f"{self.encoder_len} states of width {self.encoder_dim}; decoder calls of {list(self.schedule)} "
                f"token(s); {self.dtype}, seed {self.seed}")

    def params(self) -> dict:
        return asdict(self)


def case_from_id(text: str) -> CrossCase:
    fields: dict = {}
    dtypes = {v: k for k, v in DTYPE_TOKENS.items()}
    try:
        tokens = text.split("-")
        if tokens[0] != "xc":
            raise ValueError("a cross cache case id starts with xc-")
        for token in tokens[1:]:
            if token in dtypes:
                fields["dtype"] = dtypes[token]
            elif token[:1] == "e":
                fields["encoder_len"], fields["encoder_dim"] = (int(x) for x in token[1:].split("x"))
            elif token[:1] == "n":
                fields["schedule"] = tuple(int(x) for x in token[1:].split("_"))
            elif token.startswith("sc"):
                fields["scale"] = float(token[2:])
            elif token[:1] in ("b", "h", "d", "s") and token[1:].isdigit():
                fields[{"b": "batch", "h": "heads", "d": "head_dim", "s": "seed"}[token[0]]] = int(token[1:])
            else:
                raise ValueError(f"unknown token {token!r}")
        return CrossCase(**fields)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed cross cache case id {text!r}: {exc}") from None


def case_features(case: CrossCase) -> frozenset[str]:
    features = {f"head_dim:{case.head_dim}"}
    for name, on in (("multi_token_call", max(case.schedule) > 1), ("reuse_call", len(case.schedule) > 1),
                     ("custom_scale", case.scale is not None), ("batch_rows", case.batch > 1)):
        if on:
            features.add(name)
    return frozenset(features)


def make_inputs(case: CrossCase) -> dict:
    """Projections, and per call a query block and the encoder states (the same every call,
    as a real decoder passes them)."""
    gen = torch.Generator().manual_seed(case.seed)
    dtype = TORCH_DTYPES[case.dtype]

    def randn(*shape, std=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).to(dtype).to(torch.float64)

    width = case.heads * case.head_dim
    weights = {"wk": randn(width, case.encoder_dim, std=case.encoder_dim ** -0.5),
               "wv": randn(width, case.encoder_dim, std=case.encoder_dim ** -0.5)}
    encoder = randn(case.batch, case.encoder_len, case.encoder_dim)
    steps = [(randn(case.batch, n, case.heads, case.head_dim), encoder) for n in case.schedule]
    return {"weights": weights, "steps": steps}


def _shape_kwargs(case):
    return dict(heads=case.heads, head_dim=case.head_dim, scale=case.resolved_scale)


@dataclass
class CrossOracle:
    inputs: dict
    truth: list  # per call (out, k_cache, v_cache)
    baseline: list


def oracle(case: CrossCase) -> CrossOracle:
    x = make_inputs(case)
    dtype = TORCH_DTYPES[case.dtype]
    low_weights = {n: w.to(dtype) for n, w in x["weights"].items()}
    low_steps = [(q.to(dtype), e.to(dtype)) for q, e in x["steps"]]
    return CrossOracle(x, cross_attention_steps(x["weights"], x["steps"], **_shape_kwargs(case)),
                       cross_attention_steps(low_weights, low_steps, **_shape_kwargs(case)))


def checks_for(case: CrossCase) -> list[CheckSpec]:
    specs = [CheckSpec("OUT", "steps"), CheckSpec("STATE", "k_cache"), CheckSpec("STATE", "v_cache")]
    if len(case.schedule) > 1:
        specs += [CheckSpec("REUSE", "cache"), CheckSpec("REUSE", "poisoned_encoder")]
    return specs + [CheckSpec("ALIAS", "inputs"), CheckSpec("FIN", "out"), CheckSpec("GUARD", "nan"),
                    CheckSpec("UNINIT", "out"), CheckSpec("DET", "out")]


def run(case: CrossCase, fn, device: str, oracle: CrossOracle, wanted: list[CheckSpec]) -> dict[str, Comparison]:
    dtype = TORCH_DTYPES[case.dtype]
    results: dict[str, Comparison] = {}
    ordinary: list = []  # the plain run's results, reused as DET's first

    def describe(call):
        return f"call {call} ({case.schedule[call]} token(s))"

    def run_calls(nan_later: bool = False, guard: str | None = None, context=None):
        """The calls on fresh copies of the inputs (later encoder states NaN with ``nan_later``,
        every input a guarded view with ``guard``), the adapter inside ``context`` when given."""
        def handed(t):
            return guarded(t, guard) if guard else t

        weights = {n: handed(w.to(device=device, dtype=dtype, copy=True)) for n, w in oracle.inputs["weights"].items()}
        steps = [(handed(q.to(device=device, dtype=dtype, copy=True)),
                  torch.full_like(e, float("nan"), dtype=dtype, device=device) if nan_later and i
                  else handed(e.to(device=device, dtype=dtype, copy=True)))
                 for i, (q, e) in enumerate(oracle.inputs["steps"])]
        kept = [t.clone() for t in weights.values()] + [t.clone() for step in steps for t in step]
        with context or contextlib.nullcontext():
            got = fn(weights, steps, **_shape_kwargs(case))
        if len(got) != len(steps):
            raise AdapterContractError(f"the adapter returned {len(got)} call results for {len(steps)} calls")
        after = list(weights.values()) + [t for step in steps for t in step]
        unchanged = all(torch.equal(a, b) or (a.isnan().all() and b.isnan().all()) for a, b in zip(after, kept))
        return [tuple(t.detach().to(dtype).cpu() for t in r) for r in got], unchanged

    def against_oracle(check, target, got):
        """Outputs and both caches of every call vs the oracle (the worst of them)."""
        return worst({what: compare_calls(check, target, [g[i] for g in got], [t[i] for t in oracle.truth],
                                          [b[i] for b in oracle.baseline], dtype, describe, dim=1 if i == 0 else 0)
                      for i, what in enumerate(("out", "k_cache", "v_cache"))})

    def plain(specs):
        got, unchanged = run_calls()
        ordinary.append(got)
        for spec in specs:
            if spec.check in ("OUT", "STATE"):
                i = {"steps": 0, "k_cache": 1, "v_cache": 2}[spec.target]
                r = compare_calls(spec.check, spec.target, [g[i] for g in got], [t[i] for t in oracle.truth],
                                  [b[i] for b in oracle.baseline], dtype, describe, dim=1 if i == 0 else 0)
            elif spec.key == "REUSE:cache":
                r = exact_calls("REUSE", "cache", [torch.stack(g[1:]) for g in got[1:]],
                                [torch.stack(got[0][1:])] * (len(got) - 1), lambda c: describe(c + 1))
            elif spec.check == "ALIAS":
                r = Comparison("ALIAS", "inputs", "pass" if unchanged else "fail", error=0.0 if unchanged else 1.0,
                               threshold=0.0, detail="weights, queries and encoder states unchanged" if unchanged
                               else "the variant wrote into its inputs (weights, queries or encoder states)")
            else:
                r = all_finite("FIN", "out", {f"out of call {c}": g[0] for c, g in enumerate(got)})
            results[spec.key] = r

    def nan_encoder(specs):
        got, _ = run_calls(nan_later=True)
        results["REUSE:poisoned_encoder"] = compare_calls(
            "REUSE", "poisoned_encoder", [g[0] for g in got[1:]], [t[0] for t in oracle.truth[1:]],
            [b[0] for b in oracle.baseline[1:]], dtype, lambda c: describe(c + 1))

    def guarded_inputs(specs):
        results["GUARD:nan"] = against_oracle("GUARD", "nan", run_calls(guard="nan")[0])

    def poisoned(specs):
        results["UNINIT:out"] = against_oracle("UNINIT", "out", run_calls(context=poisoned_allocations())[0])

    def repeated(specs):
        if not ordinary and "OUT:steps" in results:  # the plain run raised: DET has no first run
            raise RuntimeError(f"the plain run raised ({results['OUT:steps'].detail})")
        runs = {"the plain run": ordinary[0] if ordinary else run_calls()[0], "a second identical run": run_calls()[0],
                f"a run with every fresh allocation filled with {DET_FILL:g}":
                    run_calls(context=filled_allocations(DET_FILL))[0]}
        results["DET:out"] = bitwise_equal("DET", "out", {name: {f"{what} of call {c}": t for c, call in enumerate(got)
                                                                for what, t in zip(("out", "k_cache", "v_cache"), call)}
                                                         for name, got in runs.items()})

    run_guarded(results, wanted, [s for s in wanted if s.check in ("OUT", "STATE", "ALIAS", "FIN")
                                  or s.key == "REUSE:cache"], plain)
    run_guarded(results, wanted, [s for s in wanted if s.key == "REUSE:poisoned_encoder"], nan_encoder)
    run_guarded(results, wanted, [s for s in wanted if s.check == "GUARD"], guarded_inputs)
    run_guarded(results, wanted, [s for s in wanted if s.check == "UNINIT"], poisoned)
    run_guarded(results, wanted, [s for s in wanted if s.check == "DET"], repeated)
    return results


FAMILY = Family(
    name="cross_cache", positional=("weights", "steps"), keywords=("heads", "head_dim", "scale"),
    case_type=CrossCase, contract=__doc__, case_from_id=case_from_id, case_features=case_features,
    checks_for=checks_for, oracle=oracle, run=run,
)
