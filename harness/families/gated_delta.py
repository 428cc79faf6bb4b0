"""The gated delta rule family (Gated DeltaNet's recurrence), held against reference.gated_delta.

Adapter contract (tensors on the variant's device, in the case dtype)::

    fn(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens) -> (out, final_state)

    q, k [B, T, H, K]    v [B, T, HV, V] (HV a multiple of H; value head h reads key head h // (HV // H))
    g    [B, T, HV] (one log-decay per head) or [B, T, HV, K] (per key channel), g <= 0
    beta [B, T, HV]      initial_state [B, HV, K, V] (key channels x value channels)
    out  [B, T, HV, V]   final_state [B, HV, K, V]
    cu_seqlens  None, or int32 [N+1] canonical: B = 1 packed row of N documents, the
                state reset at each boundary, initial/final state [N, HV, K, V]; tokens
                past cu_seqlens[-1] are padding that must not update any state

Decay is applied before the update; see the oracle's docstring for the equation.
``scale`` is the case's (1/sqrt(K) unless it sets one, id token ``sc0.3``). T = 0 (a
zero-length call) is a valid call: out [B, 0, HV, V] and the initial state returned.

Checks: OUT, STATE (final state: every batch row, or every document of a packed row,
empty ones included), FIN, GRAD (q, k, v, g, beta, initial_state, through a loss on
both outputs), SPLIT (the first tokens, then the rest from the carried state == one
call; token-by-token calls), PACK (each document alone, without cu_seqlens, == the
packed truth: ``documents`` for the non-empty ones, ``empty_documents`` a zero-length
call for each empty one, so a library that cannot take T = 0 keeps its other PACK
result), and the memory checks of ``harness.memory_checks``:

* GUARD:nan / GUARD:huge: q, k, v, g, beta and the initial state handed over as
  contiguous views at the head of an allocation whose tail holds NaN / a huge finite
  value; out (padding rows aside) and the final state must match the oracle.
  GUARD:grads: the NaN-guarded call differentiated, the leaves and both upstream
  gradients guarded; one record for the six gradients (the first failing, else the closest).
* UNINIT:out / UNINIT:grads: the call and its backward under ``poisoned_allocations``
  (every fresh allocation NaN): out, every final state (empty documents' and
  zero-length calls' included) and every gradient (padding tokens': exactly the 0 the
  contract defines) finite and right.
* DET:out / DET:grads: the ordinary call, a second identical call and a call under
  ``filled_allocations(DET_FILL)`` give bitwise the same out, final state and gradients.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from harness.dtypes import DTYPE_TOKENS, TORCH_DTYPES
from harness.families import CheckSpec, Family, forward_then_backward, run_guarded
from harness.faults import AdapterContractError
from harness.gradients import gradients
from harness.memory_checks import bitwise_equal, det_runs, guarded, poisoned_allocations
from harness.steps import worst
from harness.tolerance import FAIL, LOW_DTYPES, Comparison, all_finite, compare
from reference.gated_delta import chunked_gated_delta_rule, gated_delta_rule

# g = 0; logsigmoid(N(2, 1)); -(20 + 30 exp(N(0, 1))); the constants -5 and -28
GATES = ("zero", "mild", "extreme", "minus5", "minus28")
INPUTS = ("q", "k", "v", "g", "beta", "initial_state")
GRADS = tuple(f"d{n}" for n in INPUTS)
# Above this length the oracle uses the chunked twin (per-head gates only), which
# tests/test_gated_delta.py holds to the per-token recurrence; below it, the recurrence.
CHUNKED_ORACLE_FROM = 256


@dataclass(frozen=True)
class GatedDeltaCase:
    batch: int
    length: int
    heads_k: int
    heads_v: int
    dim_k: int
    dim_v: int
    channel_gate: bool = False
    gates: str = "mild"
    initial_state: bool = True
    l2norm: bool = False
    split: int = 0  # SPLIT: calls of this many tokens with the state carried (0: no SPLIT check)
    documents: tuple[int, ...] = ()  # varlen: document lengths of one packed row (batch 1)
    padding: int = 0  # tokens after the last document
    dtype: str = "float32"
    seed: int = 0
    scale: float | None = None  # None: 1/sqrt(dim_k)

    family = "gated_delta"

    def __post_init__(self):
        problems = []
        if min(self.batch, self.heads_k, self.heads_v, self.dim_k, self.dim_v) < 1 or self.length < 0:
            problems.append("sizes must be positive")
        if self.heads_v % self.heads_k:
            problems.append(f"heads_v={self.heads_v} is not a multiple of heads_k={self.heads_k}")
        if self.gates not in GATES:
            problems.append(f"gates {self.gates!r} is not one of {', '.join(GATES)}")
        if self.dtype not in TORCH_DTYPES:
            problems.append(f"dtype {self.dtype!r}")
        if not 0 <= self.split < max(self.length, 1):
            problems.append(f"split {self.split} must be in [0, {self.length}): a chunk length shorter than the sequence")
        object.__setattr__(self, "documents", tuple(self.documents))
        if self.padding and not self.documents:
            problems.append("padding needs documents (cu_seqlens)")
        if self.documents:
            if self.batch != 1 or self.split or sum(self.documents) + self.padding != self.length or min(self.documents, default=0) < 0:
                problems.append("varlen cases need batch 1, no split, and length = sum(documents) + padding")
        if problems:
            raise ValueError("invalid gated delta case: " + "; ".join(problems))

    @property
    def id(self) -> str:
        parts = [f"b{self.batch}", f"t{self.length}", f"h{self.heads_k}x{self.heads_v}", f"k{self.dim_k}v{self.dim_v}",
                 ("gc-" if self.channel_gate else "gh-") + self.gates, DTYPE_TOKENS[self.dtype]]
        parts += [name for name, on in (("h0", self.initial_state), ("l2", self.l2norm)) if on]
        if self.split:
            parts.append(f"cut{self.split}")
        if self.documents:
            parts.append("docs" + "_".join(map(str, self.documents)))
        if self.padding:
            parts.append(f"pad{self.padding}")
        if self.scale is not None:
            parts.append(f"sc{self.scale:g}")
        return "-".join(parts + [f"s{self.seed}"])

    @property
    def resolved_scale(self) -> float:
        return 1.0 / math.sqrt(self.dim_k) if self.scale is None else self.scale

    def describe(self) -> str:
        return (f"B={self.batch}, T={self.length}, H={self.heads_k}, HV={self.heads_v}, K={self.dim_k}, V={self.dim_v}, "
                f"{'per-channel' if self.channel_gate else 'per-head'} {self.gates} gates, "
                f"{'random' if self.initial_state else 'zero'} initial state{', in-kernel L2 norm' if self.l2norm else ''}"
                f"{f', split into calls of {self.split}' if self.split else ''}"
                f"{f', documents {list(self.documents)} + {self.padding} padding' if self.documents else ''}"
                f"{f', scale {self.scale:g}' if self.scale is not None else ''}, {self.dtype}, seed {self.seed}")

    def params(self) -> dict:
        return asdict(self)


def case_from_id(text: str) -> GatedDeltaCase:
    fields: dict = {"initial_state": False}
    dtypes = {v: k for k, v in DTYPE_TOKENS.items()}
    tokens = text.split("-")
    try:
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token in ("gc", "gh"):
                fields["channel_gate"], fields["gates"] = token == "gc", tokens[i + 1]
                i += 1
            elif token in dtypes:
                fields["dtype"] = dtypes[token]
            elif token == "h0":
                fields["initial_state"] = True
            elif token == "l2":
                fields["l2norm"] = True
            elif token.startswith("cut"):
                fields["split"] = int(token[3:])
            elif token.startswith("docs"):
                fields["documents"] = tuple(int(n) for n in token[4:].split("_"))
            elif token.startswith("pad"):
                fields["padding"] = int(token[3:])
            elif token.startswith("sc"):
                fields["scale"] = float(token[2:])
            elif token[:1] == "h":
                fields["heads_k"], fields["heads_v"] = (int(x) for x in token[1:].split("x"))
            elif token[:1] == "k" and "v" in token:
                fields["dim_k"], fields["dim_v"] = (int(x) for x in token[1:].split("v"))
            elif token[:1] in ("b", "t", "s") and token[1:].isdigit():
                fields[{"b": "batch", "t": "length", "s": "seed"}[token[0]]] = int(token[1:])
            else:
                raise ValueError(f"unknown token {token!r}")
            i += 1
        return GatedDeltaCase(**fields)
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"malformed gated delta case id {text!r}: {exc}") from None


def case_features(case: GatedDeltaCase) -> frozenset[str]:
    features = {f"gates:{case.gates}", "channel_gate" if case.channel_gate else "head_gate"}
    for name, on in (("grouped_heads", case.heads_v != case.heads_k), ("dk!=dv", case.dim_k != case.dim_v),
                     ("initial_state", case.initial_state), ("l2norm", case.l2norm), ("split", bool(case.split)),
                     ("varlen", bool(case.documents)), ("padding", bool(case.padding)),
                     ("custom_scale", case.scale is not None), ("empty_call", case.length == 0 and not case.documents),
                     ("empty_document", 0 in case.documents)):
        if on:
            features.add(name)
    return frozenset(features)


def make_inputs(case: GatedDeltaCase) -> dict[str, torch.Tensor]:
    """Float64, rounded through the case dtype. Without in-kernel L2 norm, k comes
    already normalised (as models feed it): the rule is only stable for |k| <= 1."""
    gen = torch.Generator().manual_seed(case.seed)
    dtype = TORCH_DTYPES[case.dtype]
    B, T, H, HV, K, V = case.batch, case.length, case.heads_k, case.heads_v, case.dim_k, case.dim_v
    N = len(case.documents) or B  # initial and final states: one per document, else one per batch row

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def rounded(x):
        return x.to(dtype).to(torch.float64)

    gate_shape = (B, T, HV, K) if case.channel_gate else (B, T, HV)
    if case.gates == "zero":
        g = torch.zeros(gate_shape, dtype=torch.float64)
    elif case.gates == "mild":
        g = torch.nn.functional.logsigmoid(randn(*gate_shape) + 2.0)
    elif case.gates in ("minus5", "minus28"):
        g = torch.full(gate_shape, -float(case.gates[5:]), dtype=torch.float64)
    else:
        g = -(20.0 + 30.0 * torch.exp(randn(*gate_shape)))
    k = randn(B, T, H, K)
    if not case.l2norm:
        k = k / k.norm(dim=-1, keepdim=True)
    return {"q": rounded(randn(B, T, H, K)), "k": rounded(k), "v": rounded(randn(B, T, HV, V)), "g": rounded(g),
            "beta": rounded(torch.sigmoid(randn(B, T, HV))),
            "initial_state": rounded(randn(N, HV, K, V) * 0.5 if case.initial_state else torch.zeros(N, HV, K, V, dtype=torch.float64)),
            "dout": rounded(randn(B, T, HV, V)), "dstate": rounded(randn(N, HV, K, V))}


def _cu_seqlens(case, device="cpu"):
    if not case.documents:
        return None
    return torch.tensor([0, *torch.tensor(case.documents).cumsum(0).tolist()], dtype=torch.int32, device=device)


def _kwargs(case, device="cpu"):
    return dict(scale=case.resolved_scale, use_qk_l2norm=case.l2norm, cu_seqlens=_cu_seqlens(case, device))


def _reference(case, x, dtype, grads=True):
    leaves = {n: x[n].to(dtype, copy=True).requires_grad_(grads) for n in INPUTS}
    rule = chunked_gated_delta_rule if case.length >= CHUNKED_ORACLE_FROM and not case.channel_gate else gated_delta_rule
    out, state = rule(leaves["q"], leaves["k"], leaves["v"], leaves["g"], leaves["beta"],
                                  initial_state=leaves["initial_state"], **_kwargs(case))
    result = {"out": out.detach(), "state": state.detach()}
    if grads:
        result.update(gradients([out, state], [x["dout"].to(dtype), x["dstate"].to(dtype)], leaves))
    return result


@dataclass
class GatedDeltaOracle:
    inputs: dict
    truth: dict  # out, state, d<input> in float64
    baseline: dict  # the same from the reference run in the case dtype
    # The fp32-accumulate baseline (low dtypes only, else None): the reference run in
    # float32 on the rounded inputs, every result rounded to the case dtype.
    base32: dict | None = None

    @property
    def grad_magnitude(self) -> float:
        return max((float(self.truth[n].abs().max()) for n in GRADS if self.truth[n].numel()), default=0.0)


def _fp32_accumulate(case, x, dtype) -> dict | None:
    """out, state and gradients of the float32 reference, rounded to ``dtype``; None
    unless ``dtype`` is a low dtype."""
    if dtype not in LOW_DTYPES:
        return None
    return {n: t.to(dtype) for n, t in _reference(case, x, torch.float32).items()}


def oracle(case: GatedDeltaCase) -> GatedDeltaOracle:
    x = make_inputs(case)
    dtype = TORCH_DTYPES[case.dtype]
    return GatedDeltaOracle(x, _reference(case, x, torch.float64), _reference(case, x, dtype), _fp32_accumulate(case, x, dtype))


def checks_for(case: GatedDeltaCase) -> list[CheckSpec]:
    specs = [CheckSpec("OUT", "out"), CheckSpec("STATE", "final"), CheckSpec("FIN", "out"), CheckSpec("FIN", "grads", True)]
    specs += [CheckSpec("GRAD", n, True) for n in GRADS]
    if case.split:
        specs += [CheckSpec("SPLIT", "out"), CheckSpec("SPLIT", "state")]
    if not case.documents and 1 < case.length <= 128:  # token-by-token prefill (seed 001's sequential fallback)
        specs += [CheckSpec("SPLIT", "tokens_out"), CheckSpec("SPLIT", "tokens_state")]
    if any(case.documents):
        specs.append(CheckSpec("PACK", "documents"))
    if 0 in case.documents:
        specs.append(CheckSpec("PACK", "empty_documents"))
    return specs + MEMORY_SPECS


# GUARD, UNINIT and DET apply to every case; UNINIT reaches empty documents, padding
# gradients and zero-length calls in the cases that have them.
MEMORY_SPECS = [CheckSpec("GUARD", "nan"), CheckSpec("GUARD", "huge"), CheckSpec("GUARD", "grads", True),
                CheckSpec("UNINIT", "out"), CheckSpec("UNINIT", "grads", True),
                CheckSpec("DET", "out"), CheckSpec("DET", "grads", True)]


def _bounds(case) -> list[int]:
    return [0, *torch.tensor(case.documents, dtype=torch.long).cumsum(0).tolist()]


def _dense(t: torch.Tensor) -> torch.Tensor:
    """A copy with the default strides: a size-1 dim may carry any stride (transformers'
    chunked backward leaves dg of a one-token call with stride 64), which bitwise_equal's
    byte view refuses."""
    return t.clone(memory_format=torch.contiguous_format)


def _where_state(case, r: Comparison) -> Comparison:
    """Name the document (varlen) or batch row where a final state is worst."""
    if not r.worst_index:
        return r
    where = f"worst in {'document' if case.documents else 'batch row'} {r.worst_index[0]}"
    return Comparison(**{**r.__dict__, "detail": "; ".join(t for t in (r.detail, where) if t)})


def run(case, fn, device, oracle: GatedDeltaOracle, wanted) -> dict[str, Comparison]:
    dtype = TORCH_DTYPES[case.dtype]
    x, truth, base = oracle.inputs, oracle.truth, oracle.baseline
    b32 = oracle.base32 or {}
    results: dict[str, Comparison] = {}
    ordinary: dict = {}  # the base run's out, state and gradients: DET's first run
    rows = slice(0, case.length - case.padding)  # padding outputs are not compared

    def on_device(t):
        return t.to(device=device, dtype=dtype, copy=True)

    def fp32acc(name, index=()):
        """The fp32-accumulate baseline of ``name`` (indexed by ``index``); None in float32/64."""
        return b32[name][index] if name in b32 else None

    def call(inputs, **overrides):
        result = fn(inputs["q"], inputs["k"], inputs["v"], inputs["g"], inputs["beta"],
                    initial_state=inputs["initial_state"], **{**_kwargs(case, device), **overrides})
        if not (isinstance(result, tuple) and len(result) == 2):
            raise AdapterContractError("the adapter must return (out, final_state)")
        return result

    def forward(need_grad: bool, fill: str | None = None):
        """One call on fresh copies of the inputs; with ``fill`` every input is a guarded
        view (with gradients, its allocation is the autograd leaf)."""
        def hand_over(t):
            if fill and t.numel():  # guarded() takes no zero-element tensor (its view has no data pointer)
                return guarded(t, fill, requires_grad=need_grad)
            return t.requires_grad_(need_grad)

        given = {n: hand_over(on_device(x[n])) for n in INPUTS}
        out, state = call(given)
        return given, out, state

    def backward(given, out, state, fill: str | None = None) -> dict[str, torch.Tensor]:
        """The six gradients for the case's upstream gradients (guarded too with ``fill``)."""
        upstreams = [on_device(x["dout"]), on_device(x["dstate"])]
        upstreams = [guarded(u, fill) if fill and u.numel() else u for u in upstreams]
        leaves = {n: t if t._base is None else t._base for n, t in given.items()}
        grads = gradients([out, state], upstreams, leaves)
        return {f"d{n}": grads[f"d{n}"].reshape(-1)[:t.numel()].view(t.shape) for n, t in given.items()}

    def results_of(out, state) -> dict[str, torch.Tensor]:
        return {"out": out.detach().cpu()[:, rows], "final_state": state.detach().cpu()}

    def outputs_compared(check, target, got) -> Comparison:
        """One record for out and the final state: the first failing, else the closer to its limit."""
        state = compare(check, target, got["final_state"], truth["state"], base["state"], dtype, base32=fp32acc("state"))
        return worst({"out": compare(check, target, got["out"], truth["out"][:, rows], base["out"][:, rows], dtype,
                                     base32=fp32acc("out", (slice(None), rows))),
                      "final_state": _where_state(case, state)})

    def grads_compared(check, grads) -> Comparison:
        return worst({n: compare(check, "grads", grads[n], truth[n], base[n], dtype, magnitude=oracle.grad_magnitude,
                                 policy="GRAD", base32=fp32acc(n)) for n in GRADS})

    def base_run(specs):
        need_grad = any(s.backward for s in specs)
        given, out, state = forward(need_grad)
        got = results_of(out, state)
        ordinary.update(need_grad=False, **got)

        def run_backward():
            grads = backward(given, out, state)
            ordinary.update(need_grad=True, **grads)
            return grads

        forward_then_backward(results, specs, lambda s, grads: judged(s, got, grads), run_backward)

    def judged(s, got, grads) -> Comparison:
        if s.key == "OUT:out":
            return compare("OUT", "out", got["out"], truth["out"][:, rows], base["out"][:, rows], dtype,
                           base32=fp32acc("out", (slice(None), rows)))
        if s.key == "STATE:final":
            return _where_state(case, compare("STATE", "final", got["final_state"], truth["state"], base["state"], dtype,
                                              base32=fp32acc("state")))
        if s.key == "FIN:out":
            return all_finite("FIN", "out", got)
        if s.key == "FIN:grads":
            return all_finite("FIN", "grads", grads)
        return compare("GRAD", s.target, grads[s.target], truth[s.target], base[s.target], dtype, magnitude=oracle.grad_magnitude,
                       base32=fp32acc(s.target))

    def guard_run(specs):
        """GUARD:nan with GUARD:grads from the same NaN-guarded call, or GUARD:huge."""
        fill = "huge" if specs[0].target == "huge" else "nan"
        need_grad = any(s.backward for s in specs)
        given, out, state = forward(need_grad, fill)
        if fill in {s.target for s in specs}:
            results[f"GUARD:{fill}"] = outputs_compared("GUARD", fill, results_of(out, state))
        if need_grad:
            results["GUARD:grads"] = grads_compared("GUARD", backward(given, out, state, fill))

    def uninit_run(specs):
        need_grad = any(s.backward for s in specs)
        with poisoned_allocations():
            given, out, state = forward(need_grad)
        if "UNINIT:out" in {s.key for s in specs}:
            results["UNINIT:out"] = outputs_compared("UNINIT", "out", results_of(out, state))
        if need_grad:
            with poisoned_allocations():
                grads = backward(given, out, state)
            results["UNINIT:grads"] = grads_compared("UNINIT", grads)

    def det_run(specs):
        # The same call as the ordinary run (with or without gradients), twice more.
        need_grad = ordinary.get("need_grad", False) or any(s.backward for s in specs)

        def again(context):
            with context:
                given, out, state = forward(need_grad)
                grads = backward(given, out, state) if need_grad else {}
            return {**results_of(out, state), **grads}

        runs = det_runs(again, ordinary if ordinary and ordinary["need_grad"] == need_grad else None)
        for s in specs:
            names = ("out", "final_state") if s.target == "out" else GRADS
            results[s.key] = bitwise_equal("DET", s.target, {k: {n: _dense(r[n]) for n in names} for k, r in runs.items()})

    def chained(inputs, cuts):
        """Calls over [cuts[i], cuts[i+1]) with the state carried; returns out and the last state."""
        outs, state = [], inputs["initial_state"]
        for start, end in zip(cuts, cuts[1:]):
            part = {n: (t[:, start:end] if n != "initial_state" else state) for n, t in inputs.items()}
            out, state = call(part)
            outs.append(out)
        return torch.cat(outs, dim=1).detach().cpu(), state.detach().cpu()

    def split_run(specs):
        inputs = {n: on_device(x[n]) for n in INPUTS}
        runs = {}
        if any(s.target in ("out", "state") for s in specs):
            runs[""] = chained(inputs, [*range(0, case.length, case.split), case.length])
        if any(s.target.startswith("tokens") for s in specs):
            runs["tokens_"] = chained(inputs, list(range(case.length + 1)))
        for s in specs:
            prefix = "tokens_" if s.target.startswith("tokens") else ""
            out, state = runs[prefix]
            if s.target.endswith("out"):
                results[s.key] = compare("SPLIT", s.target, out, truth["out"], base["out"], dtype, base32=fp32acc("out"))
            else:
                results[s.key] = compare("SPLIT", s.target, state, truth["state"], base["state"], dtype, base32=fp32acc("state"))

    def pack_run(specs):
        """Each document alone (no cu_seqlens, batch 1, its own initial state) == the packed
        truth: ``documents`` the non-empty ones, ``empty_documents`` a zero-length call each."""
        (spec,) = specs
        inputs = {n: on_device(x[n]) for n in INPUTS}
        bounds = _bounds(case)
        chosen = [i for i, n in enumerate(case.documents) if (n == 0) == (spec.target == "empty_documents")]
        outs, states = [], []
        for i in chosen:
            part = {n: (t[:, bounds[i]:bounds[i + 1]] if n != "initial_state" else t[i:i + 1]) for n, t in inputs.items()}
            out, state = call(part, cu_seqlens=None)
            outs.append(out.detach().cpu())
            states.append(state.detach().cpu())
        expected = [(truth["out"][:, bounds[i]:bounds[i + 1]], base["out"][:, bounds[i]:bounds[i + 1]]) for i in chosen]
        for i, out, (e, _) in zip(chosen, outs, expected):
            if out.shape != e.shape:
                results[spec.key] = Comparison("PACK", spec.target, FAIL,
                                               detail=f"document {i}: out shape {tuple(out.shape)} != expected {tuple(e.shape)}")
                return
        index = torch.tensor(chosen, dtype=torch.long)
        state = compare("PACK", spec.target, torch.cat(states), truth["state"][index], base["state"][index], dtype,
                        base32=fp32acc("state", index))
        if state.worst_index:
            state = Comparison(**{**state.__dict__, "detail": "; ".join(
                t for t in (state.detail, f"worst in document {chosen[state.worst_index[0]]}") if t)})
        out = compare("PACK", spec.target, torch.cat(outs, dim=1), torch.cat([e for e, _ in expected], dim=1),
                      torch.cat([b for _, b in expected], dim=1), dtype,
                      base32=torch.cat([b32["out"][:, bounds[i]:bounds[i + 1]] for i in chosen], dim=1) if b32 else None)
        results[spec.key] = worst({"out": out, "final_state": state})

    def checked(specs, body):
        run_guarded(results, wanted, specs, body)

    checked([s for s in wanted if s.check in ("OUT", "STATE", "FIN", "GRAD")], base_run)
    checked([s for s in wanted if s.check == "SPLIT"], split_run)
    for spec in wanted:
        if spec.check == "PACK":
            checked([spec], pack_run)
    checked([s for s in wanted if s.key in ("GUARD:nan", "GUARD:grads")], guard_run)
    checked([s for s in wanted if s.key == "GUARD:huge"], guard_run)
    checked([s for s in wanted if s.check == "UNINIT"], uninit_run)
    checked([s for s in wanted if s.check == "DET"], det_run)
    return results


FAMILY = Family(
    name="gated_delta", positional=("q", "k", "v", "g", "beta"), keywords=("scale", "initial_state", "use_qk_l2norm", "cu_seqlens"),
    case_type=GatedDeltaCase, contract=__doc__, case_from_id=case_from_id, case_features=case_features,
    checks_for=checks_for, oracle=oracle, run=run,
)
