"""The Qwen3.5 Gated DeltaNet block family: stateful steps against reference.gated_deltanet_block.

Adapter contract (tensors on the variant's device, in the case dtype)::

    fn(weights, steps, *, heads_k, heads_v, dim_k, dim_v, eps) -> [(y, conv_state, recurrent_state), ...]

    weights  dict: in_proj_qkv [C, D], in_proj_z [HV V, D], in_proj_b, in_proj_a [HV, D],
             conv [C, W] (depthwise), A_log, dt_bias [HV], norm [V], out_proj [D, HV V];
             C = 2 H K + HV V
    steps    list of (x [B, T_i, D], input_pos): calls in order on one block instance;
             input_pos 0 resets both states, any other value continues
    returns  after each step: y [B, T_i, D], conv_state [B, C, W-1] (the last W-1 inputs,
             oldest first), recurrent_state [B, HV, K, V]

A call may be empty (T_i = 0): y [B, 0, D] and the states unchanged (reset to zeros if
input_pos is 0). The block's scale is fixed by the model: 1/sqrt(K) (no scale argument).

Checks: OUT (every step's y), STATE (conv and recurrent state after every step), FIN,
and the memory checks of ``harness.memory_checks`` (forward only: the block's states
are buffers the adapter owns and updates in place, so there is no GUARD:buffers; it is
handed no buffer to write into):

* GUARD:nan / GUARD:huge: every weight and every step's x handed over as a contiguous
  view at the head of an allocation whose tail holds NaN / a huge finite value; every
  y and state must match the oracle (one record: the first failing, else the closest).
* UNINIT:out: the schedule run under ``poisoned_allocations`` (every fresh allocation
  NaN, the block's own buffers included): every y and state finite and right.
* DET:out: the schedule run as usual, again, and under ``filled_allocations(DET_FILL)``
  gives bitwise the same y and states after every call.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch

from harness.dtypes import DTYPE_TOKENS, TORCH_DTYPES
from harness.families import CheckSpec, Family, run_guarded
from harness.faults import AdapterContractError
from harness.memory_checks import bitwise_equal, filled_allocations, guarded, poisoned_allocations
from harness.steps import worst
from harness.tolerance import Comparison, all_finite, compare
from reference.gated_deltanet_block import gated_deltanet_block

WEIGHTS = ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "conv", "A_log", "dt_bias", "norm", "out_proj")
DET_FILL = 1.0e4  # what filled_allocations writes into fresh memory for DET's third call


@dataclass(frozen=True)
class BlockCase:
    batch: int
    hidden: int
    heads_k: int
    heads_v: int
    dim_k: int
    dim_v: int
    schedule: tuple[tuple[int, int], ...]  # (input_pos, length) per call
    width: int = 4
    dtype: str = "float32"
    seed: int = 0

    family = "gdn_block"

    def __post_init__(self):
        object.__setattr__(self, "schedule", tuple(tuple(s) for s in self.schedule))
        problems = []
        if self.heads_v % self.heads_k:
            problems.append(f"heads_v={self.heads_v} is not a multiple of heads_k={self.heads_k}")
        if not self.schedule or any(length < 0 or pos < 0 for pos, length in self.schedule):
            problems.append(f"schedule {self.schedule} needs calls of length >= 0 at positions >= 0")
        elif self.schedule[0][0] != 0:
            problems.append("the first call must start at position 0")
        if self.dtype not in TORCH_DTYPES:
            problems.append(f"dtype {self.dtype!r}")
        if problems:
            raise ValueError("invalid gdn block case: " + "; ".join(problems))

    @property
    def conv_dim(self) -> int:
        return 2 * self.heads_k * self.dim_k + self.heads_v * self.dim_v

    @property
    def id(self) -> str:
        schedule = "_".join(f"{p}+{n}" for p, n in self.schedule)
        return (f"gdn-b{self.batch}-d{self.hidden}-h{self.heads_k}x{self.heads_v}-k{self.dim_k}v{self.dim_v}-w{self.width}"
                f"-at{schedule}-{DTYPE_TOKENS[self.dtype]}-s{self.seed}")

    def describe(self) -> str:
        calls = ", ".join(f"{n} token(s) at {p}{' (reset)' if p == 0 else ''}" for p, n in self.schedule)
        return (f"B={self.batch}, D={self.hidden}, H={self.heads_k}, HV={self.heads_v}, K={self.dim_k}, V={self.dim_v}, "
                f"conv width {self.width}; calls: {calls}; {self.dtype}, seed {self.seed}")

    def params(self) -> dict:
        return asdict(self)


def case_from_id(text: str) -> BlockCase:
    fields: dict = {}
    dtypes = {v: k for k, v in DTYPE_TOKENS.items()}
    try:
        for token in text.split("-")[1:]:
            if token in dtypes:
                fields["dtype"] = dtypes[token]
            elif token.startswith("at"):
                fields["schedule"] = tuple(tuple(int(x) for x in call.split("+")) for call in token[2:].split("_"))
            elif token[:1] == "h":
                fields["heads_k"], fields["heads_v"] = (int(x) for x in token[1:].split("x"))
            elif token[:1] == "k":
                fields["dim_k"], fields["dim_v"] = (int(x) for x in token[1:].split("v"))
            elif token[:1] in ("b", "d", "w", "s") and token[1:].isdigit():
                fields[{"b": "batch", "d": "hidden", "w": "width", "s": "seed"}[token[0]]] = int(token[1:])
            else:
                raise ValueError(f"unknown token {token!r}")
        return BlockCase(**fields)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed gdn block case id {text!r}: {exc}") from None


def case_features(case: BlockCase) -> frozenset[str]:
    features = {f"width:{case.width}"}
    if case.heads_v != case.heads_k:
        features.add("grouped_heads")
    if any(p == 0 for p, _ in case.schedule[1:]):
        features.add("reset")
    if any(n == 0 for _, n in case.schedule):
        features.add("empty_call")
    if any(n >= 64 and p > 0 for p, n in case.schedule):  # a chunk-sized extend on a warm state
        features.add("long_extend")
    return frozenset(features)


def make_inputs(case: BlockCase) -> dict:
    """Weights and per-step inputs, float64 rounded through the case dtype."""
    gen = torch.Generator().manual_seed(case.seed)
    dtype = TORCH_DTYPES[case.dtype]

    def randn(*shape, std=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).to(dtype).to(torch.float64)

    D, C, HV = case.hidden, case.conv_dim, case.heads_v
    weights = {"in_proj_qkv": randn(C, D, std=D ** -0.5), "in_proj_z": randn(HV * case.dim_v, D, std=D ** -0.5),
               "in_proj_b": randn(HV, D, std=D ** -0.5), "in_proj_a": randn(HV, D, std=D ** -0.5),
               "conv": randn(C, case.width, std=0.5), "A_log": randn(HV, std=0.5), "dt_bias": randn(HV, std=0.5),
               "norm": 1.0 + randn(case.dim_v, std=0.1), "out_proj": randn(D, HV * case.dim_v, std=(HV * case.dim_v) ** -0.5)}
    steps = [(randn(case.batch, n, D), pos) for pos, n in case.schedule]
    return {"weights": weights, "steps": steps}


def _shape_kwargs(case):
    return dict(heads_k=case.heads_k, heads_v=case.heads_v, dim_k=case.dim_k, dim_v=case.dim_v, eps=1e-6)


def _reference_steps(case, weights, steps):
    dtype = next(iter(weights.values())).dtype
    conv = torch.zeros(case.batch, case.conv_dim, case.width - 1, dtype=dtype)
    rec = torch.zeros(case.batch, case.heads_v, case.dim_k, case.dim_v, dtype=dtype)
    results = []
    for x, pos in steps:
        if pos == 0:
            conv, rec = torch.zeros_like(conv), torch.zeros_like(rec)
        y, conv, rec = gated_deltanet_block(x, weights, conv, rec, **_shape_kwargs(case))
        results.append((y, conv, rec))
    return results


def _stack(results):
    """Concatenate every step's y along time; stack the states after each step."""
    return {"out": torch.cat([y for y, _, _ in results], dim=1),
            "conv": torch.stack([c for _, c, _ in results]), "recurrent": torch.stack([r for _, _, r in results])}


@dataclass
class BlockOracle:
    inputs: dict
    truth: dict
    baseline: dict


def oracle(case: BlockCase) -> BlockOracle:
    x = make_inputs(case)
    dtype = TORCH_DTYPES[case.dtype]
    low = ({n: w.to(dtype) for n, w in x["weights"].items()}, [(s.to(dtype), p) for s, p in x["steps"]])
    return BlockOracle(x, _stack(_reference_steps(case, x["weights"], x["steps"])), _stack(_reference_steps(case, *low)))


def checks_for(case: BlockCase) -> list[CheckSpec]:
    return [CheckSpec("OUT", "steps"), CheckSpec("STATE", "conv"), CheckSpec("STATE", "recurrent"), CheckSpec("FIN", "out"),
            CheckSpec("GUARD", "nan"), CheckSpec("GUARD", "huge"), CheckSpec("UNINIT", "out"), CheckSpec("DET", "out")]


def run(case: BlockCase, fn, device: str, oracle: BlockOracle, wanted: list[CheckSpec]) -> dict[str, Comparison]:
    dtype = TORCH_DTYPES[case.dtype]
    results: dict[str, Comparison] = {}
    ordinary: dict = {}  # the plain run's y and states: DET's first run

    def schedule(fill: str | None = None) -> dict[str, torch.Tensor]:
        """Every step through the adapter on fresh copies (guarded views with ``fill``);
        y of every step along time, the states after each step stacked."""
        def hand_over(t):
            t = t.to(device=device, dtype=dtype, copy=True)
            return guarded(t, fill) if fill and t.numel() else t  # guarded() takes no zero-element tensor

        weights = {n: hand_over(w) for n, w in oracle.inputs["weights"].items()}
        steps = [(hand_over(s), p) for s, p in oracle.inputs["steps"]]
        got = fn(weights, steps, **_shape_kwargs(case))
        if len(got) != len(steps):
            raise AdapterContractError(f"the adapter returned {len(got)} step results for {len(steps)} steps")
        return {n: t.detach().cpu() for n, t in _stack([tuple(t.to(dtype) for t in r) for r in got]).items()}

    def compared(check, target, got, name) -> Comparison:
        r = compare(check, target, got[name], oracle.truth[name], oracle.baseline[name], dtype)
        if r.worst_index:
            r = Comparison(**{**r.__dict__, "detail": (r.detail + "; " if r.detail else "") + _where(case, name, r.worst_index)})
        return r

    def all_compared(check, target, got) -> Comparison:
        return worst({name: compared(check, target, got, name) for name in ("out", "conv", "recurrent")})

    def all_steps(specs):
        got = schedule()
        ordinary.update(got)
        for spec in specs:
            if spec.key == "OUT:steps":
                r = compared("OUT", "steps", got, "out")
            elif spec.check == "STATE":
                r = compared("STATE", spec.target, got, spec.target)
            else:
                r = all_finite("FIN", "out", got)
            results[spec.key] = r

    def guard_run(specs):
        (spec,) = specs
        results[spec.key] = all_compared("GUARD", spec.target, schedule(spec.target))

    def uninit_run(specs):
        with poisoned_allocations():
            got = schedule()
        results["UNINIT:out"] = all_compared("UNINIT", "out", got)

    def det_run(specs):
        def again(context):
            with context:
                return schedule()

        runs = {"the ordinary run": ordinary or again(contextlib.nullcontext()),
                "a second identical run": again(contextlib.nullcontext()),
                f"a run under filled_allocations({DET_FILL:g})": again(filled_allocations(DET_FILL))}
        per_tensor = {}
        for name in ("out", "conv", "recurrent"):
            r = bitwise_equal("DET", "out", {run: {name: got[name].clone(memory_format=torch.contiguous_format)}
                                             for run, got in runs.items()})
            if r.worst_index:
                r = Comparison(**{**r.__dict__, "detail": f"{r.detail}; {_where(case, name, r.worst_index)}"})
            per_tensor[name] = r
        results["DET:out"] = worst(per_tensor)

    def checked(specs, body):
        run_guarded(results, wanted, specs, body)

    checked([s for s in wanted if s.check in ("OUT", "STATE", "FIN")], all_steps)
    for spec in wanted:
        if spec.check == "GUARD":
            checked([spec], guard_run)
    checked([s for s in wanted if s.check == "UNINIT"], uninit_run)
    checked([s for s in wanted if s.check == "DET"], det_run)
    return results


def _where(case: BlockCase, name: str, index) -> str:
    """Where ``index`` of the stacked ``name`` ("out": y along time; a state: after each call) lies in the schedule."""
    if name != "out":
        return f"worst after call {index[0]} (input_pos {case.schedule[index[0]][0]})"
    token, bounds = index[1], 0
    for call, (pos, n) in enumerate(case.schedule):
        if token < bounds + n:
            return f"worst in call {call} (input_pos {pos}), token {token - bounds}"
        bounds += n
    return ""


FAMILY = Family(
    name="gdn_block", positional=("weights", "steps"), keywords=("heads_k", "heads_v", "dim_k", "dim_v", "eps"),
    case_type=BlockCase, contract=__doc__, case_from_id=case_from_id, case_features=case_features,
    checks_for=checks_for, oracle=oracle, run=run,
)
