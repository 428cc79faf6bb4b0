"""The documents family: packed (varlen) attention for one micro-sequence.

Adapter contract (tensors on the variant's device, in the case dtype)::

    fn(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
       first_document_begin, scale, causal) -> out

    q    [Tq, Hq, D]    this micro-sequence's query rows
    k, v [Tk, Hkv, D], [Tk, Hkv, Dv]   the layer's K/V buffer so far: past rows, then
                        this micro-sequence's rows (Tk = sequence_k_past + Tq)
    cu_seqlens_q   int32 [N+1], canonical (starts at 0) over q
    cu_seqlens_k   int32 [N+1], canonical over k[first_document_begin:]: document i's
                   keys are k[first_document_begin + cu_k[i] : first_document_begin + cu_k[i+1]]
    first_document_begin  int: K rows before it are a dropped prefix no query sees
    causal         bool: bottom-right aligned inside each document
    out  [Tq, Hq, Dv]; rows past cu_seqlens_q[-1] (slack) are not compared

Gradients of slack rows and of the dropped prefix must be exactly 0. The case
describes the whole packed sequence and its micro-sequence boundaries; the step
under test is the last micro-sequence (``DocumentsCase.step``). SPLIT runs every
micro-sequence through the variant with the K/V buffer growing as a view of one
buffer and compares with one call over the whole sequence. ``scale`` is 1/sqrt(D)
unless the case sets one (id token ``sc0.3``).

Memory checks (``harness.memory_checks``), on the step under test: GUARD:nan /
GUARD:huge (q, k, v handed over as contiguous views at the head of an allocation whose
tail holds NaN / a huge value; the document rows of the output vs the oracle),
GUARD:grads (the NaN-guarded call's dq, dk, dv with a guarded upstream gradient; one
record), UNINIT:out / UNINIT:grads (the call and its backward under
``poisoned_allocations``: document rows of the output and the whole gradients, slack
and dropped-prefix rows included, finite and right), DET:out / DET:grads (the ordinary
call, a repeat and a call under ``filled_allocations``: document rows and gradients
bitwise the same). Slack output rows stay outside every comparison.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch

from harness.dtypes import DTYPE_TOKENS, TORCH_DTYPES
from harness.families import CheckSpec, Family, forward_then_backward, run_guarded
from harness.faults import AdapterContractError
from harness.gradients import gradients
from harness.families.attention import BLOCKED_ORACLE_FROM, GRAD_NAMES, LONG_SCORES, cancelling_allowance, one_of_gradients
from harness.layouts import DocumentLayout, MicroStep
from harness.memory_checks import bitwise_equal, det_runs, guarded, poisoned_allocations
from harness.tolerance import FAIL, LOW_DTYPES, Comparison, all_finite, compare, exact_zero
from harness.oracle_device import moved
from reference.attention import attention, attention_with_grads
from reference.attention_blocked import blocked_attention, blocked_attention_with_grads
from reference.documents import document_attention, document_attention_with_grads

POISON_KEY, POISON_VALUE = 100.0, 1.0e4  # as in the attention family: finite in every dtype


@dataclass(frozen=True)
class DocumentsCase:
    heads_q: int
    heads_kv: int
    head_dim: int
    head_dim_v: int
    documents: tuple[int, ...]
    slack: int = 0
    boundaries: tuple[int, ...] = ()
    dtype: str = "float32"
    causal: bool = True
    scale: float | None = None  # None: 1/sqrt(head_dim)
    seed: int = 0

    family = "documents"

    def __post_init__(self):
        object.__setattr__(self, "documents", tuple(self.documents))
        object.__setattr__(self, "boundaries", tuple(self.boundaries))
        if self.heads_q % self.heads_kv or min(self.heads_q, self.heads_kv, self.head_dim, self.head_dim_v) < 1:
            raise ValueError(f"invalid documents case: heads {self.heads_q}/{self.heads_kv}, dims {self.head_dim}/{self.head_dim_v}")
        if self.dtype not in TORCH_DTYPES:
            raise ValueError(f"invalid documents case: dtype {self.dtype!r}")
        self.layout  # validates the layout

    @property
    def layout(self) -> DocumentLayout:
        return DocumentLayout(self.documents, self.slack, self.boundaries)

    @property
    def step(self) -> MicroStep:
        """The micro-sequence under test: the last one."""
        return self.layout.steps()[-1]

    @property
    def id(self) -> str:
        parts = ["docs" + "_".join(map(str, self.documents))]
        if self.slack:
            parts.append(f"t{self.slack}")
        if self.boundaries:
            parts.append("m" + "_".join(map(str, self.boundaries)))
        parts += [f"h{self.heads_q}x{self.heads_kv}", f"d{self.head_dim}v{self.head_dim_v}", DTYPE_TOKENS[self.dtype]]
        if not self.causal:
            parts.append("full")
        if self.scale is not None:
            parts.append(f"sc{self.scale:g}")
        parts.append(f"s{self.seed}")
        return "-".join(parts)

    @property
    def resolved_scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim) if self.scale is None else self.scale

    def drawing(self) -> str:
        """The layout in one line: a letter per token and document, '.' for slack, '|' between micro-sequences."""
        tokens = [chr(ord("a") + i % 26) * n for i, n in enumerate(self.documents)]
        row = "".join(tokens) + "." * self.slack
        for cut in sorted(self.boundaries, reverse=True):
            row = row[:cut] + "|" + row[cut:]
        return row

    def describe(self) -> str:
        step = self.step
        return (f"layout {self.drawing()}: documents {list(self.documents)}, slack {self.slack}, micro-sequences start at {[0, *self.boundaries]}; "
                f"step under test: queries [{step.start}, {step.end}), past {step.sequence_k_past}, "
                f"first_document_begin {step.first_document_begin}; Hq={self.heads_q}, Hkv={self.heads_kv}, "
                f"D={self.head_dim}, Dv={self.head_dim_v}, {self.dtype}, {'causal' if self.causal else 'non-causal'}"
                + (f", scale {self.scale:g}" if self.scale is not None else "") + f", seed {self.seed}")

    def params(self) -> dict:
        return asdict(self)


def case_from_id(text: str) -> DocumentsCase:
    fields: dict = {}
    dtypes = {v: k for k, v in DTYPE_TOKENS.items()}
    try:
        for token in text.split("-"):
            if token.startswith("docs"):
                fields["documents"] = tuple(int(x) for x in token[4:].split("_") if x != "")
            elif token in dtypes:
                fields["dtype"] = dtypes[token]
            elif token == "full":
                fields["causal"] = False
            elif token.startswith("sc"):
                fields["scale"] = float(token[2:])
            elif token[:1] == "t" and token[1:].isdigit():
                fields["slack"] = int(token[1:])
            elif token[:1] == "m":
                fields["boundaries"] = tuple(int(x) for x in token[1:].split("_"))
            elif token[:1] == "h":
                fields["heads_q"], fields["heads_kv"] = (int(x) for x in token[1:].split("x"))
            elif token[:1] == "d":
                fields["head_dim"], fields["head_dim_v"] = (int(x) for x in token[1:].split("v"))
            elif token[:1] == "s" and token[1:].isdigit():
                fields["seed"] = int(token[1:])
            else:
                raise ValueError(f"unknown token {token!r}")
        return DocumentsCase(**fields)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed documents case id {text!r}: {exc}") from None


@functools.lru_cache(maxsize=4096)
def case_features(case: DocumentsCase) -> frozenset[str]:
    step = case.step
    features = {f"head_dim:{case.head_dim}"}
    for name, on in (("causal", case.causal), ("non_causal", not case.causal), ("gqa", case.heads_q != case.heads_kv),
                     ("dk!=dv", case.head_dim != case.head_dim_v), ("past", step.sequence_k_past > 0),
                     ("dropped_prefix", step.first_document_begin > 0), ("slack", case.slack > 0),
                     ("empty_document", 0 in case.documents), ("micro_sequences", bool(case.boundaries)),
                     ("custom_scale", case.scale is not None), ("no_documents", step.query_slack_begin == 0),
                     ("long", case.heads_q * step.len_q * step.len_k >= LONG_SCORES)):  # the step as one dense call
        if on:
            features.add(name)
    return frozenset(features)


# ---------------------------------------------------------------------------- oracle

def make_inputs(case: DocumentsCase) -> dict[str, torch.Tensor]:
    """Whole-sequence tensors [T, H, D], float64 rounded through the case dtype."""
    gen = torch.Generator().manual_seed(case.seed)
    dtype = TORCH_DTYPES[case.dtype]
    total = case.layout.total

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).to(torch.float64)

    return {"q": randn(total, case.heads_q, case.head_dim), "k": randn(total, case.heads_kv, case.head_dim),
            "v": randn(total, case.heads_kv, case.head_dim_v), "dout": randn(total, case.heads_q, case.head_dim_v)}


def _step_kwargs(case: DocumentsCase, step: MicroStep, device="cpu") -> dict:
    return dict(cu_seqlens_q=step.cu_seqlens_q.to(device), cu_seqlens_k=step.cu_seqlens_k.to(device),
                max_seqlen_q=max(step.doc_query_lengths, default=0), max_seqlen_k=max(step.doc_key_lengths, default=0),
                first_document_begin=step.first_document_begin, scale=case.resolved_scale, causal=case.causal)


def _attend(case: DocumentsCase, step: MicroStep):
    """``reference.attention`` for each document, or its row-blocked twin when the step's largest
    document has BLOCKED_ORACLE_FROM scores (Hq * Lq_i * Lk_i) or more."""
    largest = max((n_q * n_k for n_q, n_k in zip(step.doc_query_lengths, step.doc_key_lengths)), default=0)
    return blocked_attention if case.heads_q * largest >= BLOCKED_ORACLE_FROM else attention


def _reference(case, step, q, k, v, dout, dtype, backward: bool = True):
    """document_attention on one step in ``dtype``: out and grads of q, k, v (None without ``backward``)."""
    given = _step_kwargs(case, step)
    kw = {n: given[n] for n in ("cu_seqlens_q", "cu_seqlens_k", "first_document_begin", "scale", "causal")}
    plain = _attend(case, step) is attention
    if backward:
        return document_attention_with_grads(*(x.to(dtype) for x in (q, k, v, dout)), **kw,
                                             attend=attention_with_grads if plain else blocked_attention_with_grads)
    return document_attention(*(x.to(dtype) for x in (q, k, v)), **kw, attend=_attend(case, step)), None


@dataclass
class DocumentsOracle:
    inputs: dict  # whole sequence, float64
    step_out: torch.Tensor  # [Tq_step, Hq, Dv], float64
    step_grads: dict | None  # dq [Tq_step], dk, dv [T] (None: computed with backward=False)
    step_base_out: torch.Tensor
    step_base_grads: dict
    pack_out: torch.Tensor  # per-document reference.attention, stacked like step_out
    pack_base_out: torch.Tensor
    whole_out: torch.Tensor  # one call over the whole sequence (SPLIT)
    whole_grads: dict
    whole_base_out: torch.Tensor
    whole_base_grads: dict
    # The fp32-accumulate baselines of the step and of PACK (low dtypes only, else None):
    # float32 arithmetic on the rounded inputs, results rounded to the case dtype.
    step_base32_out: torch.Tensor | None = None
    step_base32_grads: dict | None = None
    pack_base32_out: torch.Tensor | None = None
    step_start: int = 0  # the step's first query row of the whole sequence
    scale: float = 1.0  # the case's resolved softmax scale
    dtype: torch.dtype = torch.float32  # the case dtype

    @functools.cached_property
    def grad_magnitude(self) -> float:
        return max([float(g.abs().max()) for g in self.step_grads.values() if g.numel()] + [0.0])

    @functools.cached_property
    def whole_grad_magnitude(self) -> float:
        return max([float(g.abs().max()) for g in self.whole_grads.values() if g.numel()] + [0.0])

    def cancelling(self, name: str, whole: bool = False) -> float:
        """``harness.families.attention.cancelling_allowance`` of gradient ``name`` of the
        step (of the one call over the whole sequence with ``whole``), in float32's terms
        only: the documents family keeps no stored-output difference yet."""
        return self._cancelling[whole].get(name, 0.0)

    @functools.cached_property
    def _cancelling(self) -> dict[bool, dict[str, float]]:
        """dq's and dk's allowances of the step (False) and the whole call (True), computed once per case."""
        x = self.inputs
        return {whole: {n: cancelling_allowance(n, x["q"][start:], x["k"], x["v"], x["dout"][start:], self.scale,
                                                self.dtype) for n in ("dq", "dk")}
                for whole, start in ((False, self.step_start), (True, 0))}


def _per_document(case: DocumentsCase, step: MicroStep, q, k, v, dtype) -> torch.Tensor:
    """Each document alone through reference.attention: the PACK reference."""
    out = torch.zeros(step.len_q, case.heads_q, case.head_dim_v, dtype=dtype, device=q.device)
    for _, rows, keys in step.document_slices():
        if rows.stop > rows.start:
            heads_first = [x.to(dtype).transpose(0, 1)[None] for x in (q[rows], k[keys], v[keys])]
            o, _ = _attend(case, step)(*heads_first, scale=case.resolved_scale, causal=case.causal, alignment="bottom_right")
            out[rows] = o[0].transpose(0, 1)
    return out


def oracle(case: DocumentsCase, device: torch.device | str = "cpu", backward: bool = True) -> DocumentsOracle:
    """The case's truth, computed on ``device`` (``harness.oracle_device``); its tensors on
    the CPU. ``backward=False`` computes no gradients (every ``*grads`` field None)."""
    x = moved(make_inputs(case), device)
    dtype = TORCH_DTYPES[case.dtype]
    step = case.step
    q, dout = x["q"][step.start:], x["dout"][step.start:]
    step_out, step_grads = _reference(case, step, q, x["k"], x["v"], dout, torch.float64, backward)
    step_base, step_base_grads = _reference(case, step, q, x["k"], x["v"], dout, dtype, backward)
    whole = case.layout.step(0, case.layout.total)
    whole_out, whole_grads = _reference(case, whole, x["q"], x["k"], x["v"], x["dout"], torch.float64, backward)
    whole_base, whole_base_grads = _reference(case, whole, x["q"], x["k"], x["v"], x["dout"], dtype, backward)
    base32 = {}
    if dtype in LOW_DTYPES:
        out32, grads32 = _reference(case, step, q, x["k"], x["v"], dout, torch.float32, backward)
        grads32 = None if grads32 is None else {n: g.to(dtype) for n, g in grads32.items()}
        base32 = dict(step_base32_out=out32.to(dtype), step_base32_grads=grads32,
                      pack_base32_out=_per_document(case, step, q, x["k"], x["v"], torch.float32).to(dtype))
    return moved(DocumentsOracle(x, step_out, step_grads, step_base, step_base_grads,
                                 _per_document(case, step, q, x["k"], x["v"], torch.float64),
                                 _per_document(case, step, q, x["k"], x["v"], dtype),
                                 whole_out, whole_grads, whole_base, whole_base_grads, **base32,
                                 step_start=step.start, scale=case.resolved_scale, dtype=dtype), "cpu")


# ---------------------------------------------------------------------------- checks

def checks_for(case: DocumentsCase) -> list[CheckSpec]:
    step = case.step
    specs = [CheckSpec("OUT", "out"), CheckSpec("FIN", "out"), CheckSpec("FIN", "grads", True), CheckSpec("PACK", "documents")]
    specs += [CheckSpec("GRAD", t, True) for t in ("dq", "dk", "dv")]
    if step.first_document_begin > 0:
        specs += [CheckSpec("ZERO", "prefix", True), CheckSpec("INV", "prefix")]
    if step.query_slack_begin < step.len_q or step.key_slack_begin < step.len_k:
        specs += [CheckSpec("ZERO", "slack", True), CheckSpec("INV", "slack")]
    if sum(1 for n in step.doc_query_lengths if n) >= 2:
        specs.append(CheckSpec("INV", "other_document"))
    if len(case.layout.steps()) > 1 and case.causal:  # without causality a split sees fewer keys
        specs += [CheckSpec("SPLIT", t, t != "out") for t in ("out", "dq", "dk", "dv")]
    return specs + MEMORY_SPECS


# Every case: the slack, dropped-prefix and empty-document rows of a case are in the
# gradients UNINIT and DET compare.
MEMORY_SPECS = [CheckSpec("GUARD", "nan"), CheckSpec("GUARD", "huge"), CheckSpec("GUARD", "grads", True),
                CheckSpec("UNINIT", "out"), CheckSpec("UNINIT", "grads", True),
                CheckSpec("DET", "out"), CheckSpec("DET", "grads", True)]


def _document_rows(step: MicroStep) -> slice:
    return slice(0, step.query_slack_begin)


def _worst_document(step: MicroStep, comparison: Comparison) -> Comparison:
    """Name the document and token that carry the worst error (index is [row, head, dim])."""
    if not comparison.worst_index or comparison.status not in (FAIL,):
        return comparison
    row = comparison.worst_index[0]
    doc = step.document_index_q()[row].item() if row < step.len_q else -1
    where = f"worst at step row {row} (document {step.doc_ids[doc]} of the layout, head {comparison.worst_index[1]})" if doc >= 0 else f"worst at row {row}"
    return Comparison(**{**comparison.__dict__, "detail": (comparison.detail + "; " if comparison.detail else "") + where})


def run(case: DocumentsCase, fn, device: str, oracle: DocumentsOracle, wanted: list[CheckSpec]) -> dict[str, Comparison]:
    dtype = TORCH_DTYPES[case.dtype]
    x = oracle.inputs
    step = case.step
    docs = _document_rows(step)
    results: dict[str, Comparison] = {}

    ordinary: dict = {}  # the base run's output and gradients, DET's first run

    def on_device(t, grad=False):
        return t.to(device=device, dtype=dtype, copy=True).requires_grad_(grad)

    def call(the_step, q, k, v):
        out = fn(q, k, v, **_step_kwargs(case, the_step, device))
        if not isinstance(out, torch.Tensor):
            raise AdapterContractError(f"the adapter returned {type(out).__name__}, not a tensor")
        return out

    def forward(need_grad: bool, fill: str | None = None):
        """The step on fresh copies of q, k, v; with ``fill`` each is a guarded view (its
        allocation the autograd leaf)."""
        def hand_over(t):
            t = on_device(t)
            return guarded(t, fill, requires_grad=need_grad) if fill else t.requires_grad_(need_grad)

        given = {"q": hand_over(x["q"][step.start:]), "k": hand_over(x["k"]), "v": hand_over(x["v"])}
        return given, call(step, given["q"], given["k"], given["v"])

    def backward(given, out, fill: str | None = None) -> dict[str, torch.Tensor]:
        dout = on_device(x["dout"][step.start:])
        dout = guarded(dout, fill) if fill else dout
        grads = gradients([out], [dout], {n: t if t._base is None else t._base for n, t in given.items()})
        return {f"d{n}": grads[f"d{n}"].reshape(-1)[:t.numel()].view(t.shape) for n, t in given.items()}

    def fp32acc(tensor, index=()):
        """An fp32-accumulate baseline at ``index``; None in float32 and float64."""
        return None if tensor is None else tensor[index]

    def grad32(name):
        return None if oracle.step_base32_grads is None else oracle.step_base32_grads[name]

    def grad_comparisons(check, grads):
        found = {n: compare(check, "grads", grads[n], oracle.step_grads[n], oracle.step_base_grads[n], dtype,
                            magnitude=oracle.grad_magnitude, policy="GRAD", base32=grad32(n),
                            cancelling=oracle.cancelling(n)) for n in GRAD_NAMES}
        return {**found, "dq": _worst_document(step, found["dq"])}

    def out_comparison(check, target, out):
        return _worst_document(step, compare(check, target, out.detach().cpu()[docs], oracle.step_out[docs],
                                             oracle.step_base_out[docs], dtype,
                                             base32=fp32acc(oracle.step_base32_out, docs)))

    def base_run(specs):
        need_grad = any(s.backward for s in specs)
        given, live = forward(need_grad)
        out = live.detach().cpu()
        ordinary.update(need_grad=False, out=out[docs])

        def run_backward():
            grads = backward(given, live)
            ordinary.update(need_grad=True, **grads)
            return grads

        forward_then_backward(results, specs, lambda spec, grads: judged(spec, out, grads), run_backward)

    def judged(spec, out, grads) -> Comparison:
        if spec.key == "OUT:out":
            r = out_comparison("OUT", "out", out)
        elif spec.key == "PACK:documents":
            r = _worst_document(step, compare("PACK", "documents", out[docs], oracle.pack_out[docs], oracle.pack_base_out[docs], dtype,
                                              base32=fp32acc(oracle.pack_base32_out, docs)))
        elif spec.key == "FIN:out":
            r = all_finite("FIN", "out", {"out (document rows)": out[docs]})
        elif spec.key == "FIN:grads":
            r = all_finite("FIN", "grads", grads)
        elif spec.check == "GRAD":
            r = compare("GRAD", spec.target, grads[spec.target], oracle.step_grads[spec.target],
                        oracle.step_base_grads[spec.target], dtype, magnitude=oracle.grad_magnitude,
                        base32=grad32(spec.target), cancelling=oracle.cancelling(spec.target))
            if spec.target == "dq":
                r = _worst_document(step, r)
        elif spec.key == "ZERO:prefix":
            prefix = torch.arange(step.len_k)[:, None, None] < step.first_document_begin
            r = _zero_both("prefix", grads, prefix)
        else:  # ZERO:slack
            q_slack = torch.arange(step.len_q)[:, None, None] >= step.query_slack_begin
            k_slack = torch.arange(step.len_k)[:, None, None] >= step.key_slack_begin
            r = exact_zero("ZERO", "slack", grads["dq"], q_slack)
            if r.status != FAIL:
                r = _zero_both("slack", grads, k_slack)
        return r

    def guard_run(specs):
        """GUARD:nan with GUARD:grads from the same NaN-guarded call, or GUARD:huge."""
        fill = "huge" if specs[0].target == "huge" else "nan"
        need_grad = any(s.backward for s in specs)
        given, out = forward(need_grad, fill)
        if fill in {s.target for s in specs}:
            results[f"GUARD:{fill}"] = out_comparison("GUARD", fill, out)
        if need_grad:
            results["GUARD:grads"] = one_of_gradients("GUARD", grad_comparisons("GUARD", backward(given, out, fill)))

    def uninit_run(specs):
        need_grad = any(s.backward for s in specs)
        with poisoned_allocations():
            given, out = forward(need_grad)
        if "UNINIT:out" in {s.key for s in specs}:
            results["UNINIT:out"] = out_comparison("UNINIT", "out", out)
        if need_grad:
            with poisoned_allocations():
                grads = backward(given, out)
            results["UNINIT:grads"] = one_of_gradients("UNINIT", grad_comparisons("UNINIT", grads))

    def det_run(specs):
        # The same call as the ordinary run (with or without gradients), twice more.
        need_grad = ordinary.get("need_grad", False) or any(s.backward for s in specs)

        def again(context):
            with context:
                given, out = forward(need_grad)
                grads = backward(given, out) if need_grad else {}
            return {"out": out.detach().cpu()[docs], **grads}

        runs = det_runs(again, ordinary if ordinary and ordinary["need_grad"] == need_grad else None)
        for spec in specs:
            names = ("out",) if spec.target == "out" else GRAD_NAMES
            results[spec.key] = bitwise_equal("DET", spec.target, {k: {n: r[n] for n in names} for k, r in runs.items()})

    def invariance_run(specs):
        for spec in specs:
            q, k, v = on_device(x["q"][step.start:]), on_device(x["k"]), on_device(x["v"])
            keep = docs
            if spec.target == "prefix":
                rows = slice(0, step.first_document_begin)
                k[rows], v[rows] = POISON_KEY, POISON_VALUE
            elif spec.target == "slack":
                q[step.query_slack_begin:] = POISON_VALUE
                k[step.key_slack_begin:], v[step.key_slack_begin:] = POISON_KEY, POISON_VALUE
            else:  # other_document: scramble the first document, compare the later ones it must not reach
                _, rows, keys = next(d for d in step.document_slices() if d[1].stop > d[1].start)
                gen = torch.Generator().manual_seed(case.seed + 1)
                q[rows] = torch.randn(q[rows].shape, generator=gen).to(q) * 3
                k[keys] = torch.randn(k[keys].shape, generator=gen).to(k) * 3
                v[keys] = torch.randn(v[keys].shape, generator=gen).to(v) * 3
                keep = torch.ones(step.len_q, dtype=torch.bool)
                keep[rows] = False
                keep[step.query_slack_begin:] = False
            out = call(step, q, k, v).detach().cpu()
            results[spec.key] = _worst_document(step, compare("INV", spec.target, out[keep], oracle.step_out[keep],
                                                              oracle.step_base_out[keep], dtype,
                                                              base32=fp32acc(oracle.step_base32_out, keep)))

    def split_run(specs):
        layout = case.layout
        whole = layout.step(0, layout.total)
        need_grad = any(s.backward for s in specs)
        q, k, v = on_device(x["q"], need_grad), on_device(x["k"], need_grad), on_device(x["v"], need_grad)
        # Each micro-sequence sees the K/V buffer so far as a view of one buffer,
        # so gradients of every step accumulate into the same rows.
        outs = [call(s, q[s.start:s.end], k[:s.end], v[:s.end]) for s in layout.steps()]
        out = torch.cat(outs, dim=0)
        got = {"out": out.detach().cpu()}
        if need_grad:
            got.update(gradients([out], [on_device(x["dout"])], dict(q=q, k=k, v=v)))
        rows = _document_rows(whole)
        for spec in specs:
            if spec.target == "out":
                r = compare("SPLIT", "out", got["out"][rows], oracle.whole_out[rows], oracle.whole_base_out[rows], dtype)
            else:
                r = compare("SPLIT", spec.target, got[spec.target], oracle.whole_grads[spec.target],
                            oracle.whole_base_grads[spec.target], dtype, magnitude=oracle.whole_grad_magnitude,
                            cancelling=oracle.cancelling(spec.target, whole=True))
            results[spec.key] = r

    def checked(specs, body):
        run_guarded(results, wanted, specs, body)

    checked([s for s in wanted if s.check in ("OUT", "PACK", "FIN", "GRAD", "ZERO")], base_run)
    for spec in wanted:
        if spec.check == "INV":
            checked([spec], invariance_run)
    checked([s for s in wanted if s.check == "SPLIT"], split_run)
    checked([s for s in wanted if s.key in ("GUARD:nan", "GUARD:grads")], guard_run)
    checked([s for s in wanted if s.key == "GUARD:huge"], guard_run)
    checked([s for s in wanted if s.check == "UNINIT"], uninit_run)
    checked([s for s in wanted if s.check == "DET"], det_run)
    return results


def _zero_both(target: str, grads: dict, rows: torch.Tensor) -> Comparison:
    for name in ("dk", "dv"):
        r = exact_zero("ZERO", target, grads[name], rows)
        if r.status == FAIL:
            return Comparison(**{**r.__dict__, "detail": f"{name}: {r.detail}"})
    return r


FAMILY = Family(
    name="documents", positional=("q", "k", "v"),
    keywords=("cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k", "first_document_begin", "scale", "causal"),
    case_type=DocumentsCase, contract=__doc__, case_from_id=case_from_id, case_features=case_features,
    checks_for=checks_for, oracle=oracle, run=run, oracle_on_device=True, oracle_without_backward=True,
)
