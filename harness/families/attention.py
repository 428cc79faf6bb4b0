"""The attention family: case type, input construction, oracle and checks.

Adapter contract (all tensors on the variant's device, in the case dtype)::

    fn(q, k, v, *, scale, causal, window, alignment, mask, softcap) -> out

    q      [B, Hq, Lq, D]     k [B, Hkv, Lk, D]     v [B, Hkv, Lk, Dv]
    out    [B, Hq, Lq, Dv]
    scale     float, already resolved (1/sqrt(D) unless the case sets one)
    causal    bool; the diagonal is placed by ``alignment``
    alignment "bottom_right" (flash-attention) or "top_left" (torch SDPA is_causal)
    window    None or (left, right), each an int or None (unbounded)
    mask      None, or a tensor broadcastable to [B, Hq, Lq, Lk]: bool (True =
              attend) or additive float (-inf hides a key); here [B, 1, Lq, Lk],
              or [1, 1, Lq, Lk] when the case's mask is shared by the whole batch
    softcap   None or float: scores become softcap * tanh(scores / softcap)

See ``reference.attention`` for the exact semantics, including the GQA head mapping
and the rule that a fully-masked row gives exactly 0.

Checks (README's table): OUT, GRAD, FIN, ZERO, INV, LAYOUT, and the memory checks of
``harness.memory_checks``:

* GUARD:nan / GUARD:huge: q, k, v and an additive mask handed over as contiguous views at
  the head of an allocation whose tail holds NaN / a huge finite value; the output must
  match the oracle. GUARD:grads: the same with NaN tails, leaves and the upstream
  gradient guarded; one record for dq, dk, dv (the first failing, else the closest).
* UNINIT:out / UNINIT:grads: the call and its backward under ``poisoned_allocations``
  (every fresh allocation NaN): the output, fully-masked rows included, and every
  gradient finite and right.
* DET:out / DET:grads: the ordinary call, a second identical call and a call under
  ``filled_allocations(DET_FILL)`` give bitwise the same output and gradients.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field

import torch

from harness.dtypes import DTYPE_TOKENS, TORCH_DTYPES
from harness.families import CheckSpec, Family, forward_then_backward, run_guarded
from harness.faults import AdapterContractError
from harness.gradients import gradients
from harness.memory_checks import bitwise_equal, det_runs, guarded, poisoned_allocations
from harness.tolerance import ERROR, FAIL, LOW_DTYPES, PASS, Comparison, all_finite, compare, exact_zero
from harness.oracle_device import moved
from reference.attention import attention, attention_with_grads
from reference.attention_blocked import blocked_attention, blocked_attention_with_grads, coverage

_ALIGN_TOKENS = {"bottom_right": "br", "top_left": "tl"}
# INV poisons keys that no query may see with large values that stay finite in every
# dtype through q @ k^T; any leak of them moves the output by orders of magnitude.
# Not NaN: the contract lets a kernel multiply a masked value row by an exact 0
# weight, and 0 * NaN is NaN in every dense implementation (SDPA math and flash on
# CPU included). NaN-filled scratch belongs to the KV-cache family's unused slots.
POISON_KEY, POISON_VALUE = 100.0, 1.0e4
GRAD_NAMES = ("dq", "dk", "dv")


@dataclass(frozen=True)
class AttentionCase:
    batch: int
    heads_q: int
    heads_kv: int
    len_q: int
    len_k: int
    head_dim: int
    head_dim_v: int
    dtype: str = "float32"
    causal: bool = False
    alignment: str = "bottom_right"
    window: tuple[int | None, int | None] | None = None
    mask: str = "none"  # "none", "bool" or "additive"
    shared_mask: bool = False  # one [1, 1, Lq, Lk] mask for every batch row (libraries that take only that)
    softcap: float | None = None
    scale: float | None = None
    seed: int = 0

    family = "attention"

    def __post_init__(self):
        problems = []
        if min(self.batch, self.heads_q, self.heads_kv, self.head_dim, self.head_dim_v) < 1:
            problems.append("batch, heads and head dims must be at least 1")
        if min(self.len_q, self.len_k) < 0:  # 0 is a zero-length call: no queries, or no keys (every row empty)
            problems.append("lengths must be at least 0")
        if self.heads_q % self.heads_kv:
            problems.append(f"heads_q={self.heads_q} is not a multiple of heads_kv={self.heads_kv}")
        if self.dtype not in TORCH_DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
        if self.alignment not in _ALIGN_TOKENS:
            problems.append(f"alignment {self.alignment!r} is not one of {', '.join(_ALIGN_TOKENS)}")
        if self.mask not in ("none", "bool", "additive"):
            problems.append(f"mask {self.mask!r} is not one of none, bool, additive")
        if self.shared_mask and self.mask == "none":
            problems.append("shared_mask needs a mask")
        if self.window is not None and (len(self.window) != 2 or any(w is not None and w < 0 for w in self.window)):
            problems.append(f"window {self.window!r} must be (left, right) with each >= 0 or None")
        if problems:
            raise ValueError("invalid attention case: " + "; ".join(problems))

    @property
    def id(self) -> str:
        """Short id that ``case_from_id`` turns back into this exact case."""
        parts = [f"b{self.batch}", f"h{self.heads_q}x{self.heads_kv}", f"q{self.len_q}", f"k{self.len_k}",
                 f"d{self.head_dim}v{self.head_dim_v}", DTYPE_TOKENS[self.dtype], _ALIGN_TOKENS[self.alignment]]
        if self.causal:
            parts.append("causal")
        if self.window is not None:
            parts.append("w" + "_".join("n" if w is None else str(w) for w in self.window))
        if self.mask != "none":
            parts.append("m" + self.mask)
        if self.shared_mask:
            parts.append("shared")
        if self.softcap is not None:
            parts.append(f"cap{self.softcap:g}")
        if self.scale is not None:
            parts.append(f"sc{self.scale:g}")
        parts.append(f"s{self.seed}")
        return "-".join(parts)

    @property
    def resolved_scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim) if self.scale is None else self.scale

    def describe(self) -> str:
        masking = [name for name, on in (("causal", self.causal), (f"window {self.window}", self.window is not None),
                                         (f"{self.mask} mask" + (" shared by the batch" if self.shared_mask else ""), self.mask != "none"), (f"softcap {self.softcap}", self.softcap is not None)) if on]
        return (f"B={self.batch}, Hq={self.heads_q}, Hkv={self.heads_kv}, Lq={self.len_q}, Lk={self.len_k}, "
                f"D={self.head_dim}, Dv={self.head_dim_v}, {self.dtype}, {self.alignment.replace('_', '-')} alignment"
                + (", " + ", ".join(masking) if masking else ", no masking") + f", seed {self.seed}")

    def params(self) -> dict:
        return asdict(self)


def case_from_id(text: str) -> AttentionCase:
    """Parse an id made by ``AttentionCase.id``; a malformed id gets a ValueError naming the token."""
    fields: dict = {"causal": False}
    dtypes = {v: k for k, v in DTYPE_TOKENS.items()}
    aligns = {v: k for k, v in _ALIGN_TOKENS.items()}
    try:
        for token in text.split("-"):
            if token in dtypes:
                fields["dtype"] = dtypes[token]
            elif token in aligns:
                fields["alignment"] = aligns[token]
            elif token == "causal":
                fields["causal"] = True
            elif token == "shared":
                fields["shared_mask"] = True
            elif token.startswith("cap"):
                fields["softcap"] = float(token[3:])
            elif token.startswith("sc"):
                fields["scale"] = float(token[2:])
            elif token.startswith("h"):
                fields["heads_q"], fields["heads_kv"] = (int(x) for x in token[1:].split("x"))
            elif token.startswith("d"):
                fields["head_dim"], fields["head_dim_v"] = (int(x) for x in token[1:].split("v"))
            elif token.startswith("w"):
                fields["window"] = tuple(None if w == "n" else int(w) for w in token[1:].split("_"))
            elif token.startswith("m"):
                fields["mask"] = token[1:]
            elif token[:1] in ("b", "q", "k", "s") and token[1:].isdigit():
                fields[{"b": "batch", "q": "len_q", "k": "len_k", "s": "seed"}[token[0]]] = int(token[1:])
            else:
                raise ValueError(f"unknown token {token!r}")
        return AttentionCase(**fields)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed attention case id {text!r}: {exc}") from None


# ---------------------------------------------------------------------------- inputs

def make_inputs(case: AttentionCase) -> dict[str, torch.Tensor | None]:
    """Float64 tensors from the case's seed, already rounded through the case dtype.

    Rounding first means the oracle sees exactly the values the variant sees, so an
    error is the computation's, not the input conversion's. The draws are float32
    (torch's float64 normal sampler is five times slower, a fifth of the oracle's time
    at CI shapes, and the values are rounded to the case dtype anyway).
    """
    gen = torch.Generator().manual_seed(case.seed)
    dtype = TORCH_DTYPES[case.dtype]
    B, Hq, Hkv, Lq, Lk = case.batch, case.heads_q, case.heads_kv, case.len_q, case.len_k

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype).to(torch.float64)

    inputs = {"q": randn(B, Hq, Lq, case.head_dim), "k": randn(B, Hkv, Lk, case.head_dim),
              "v": randn(B, Hkv, Lk, case.head_dim_v), "dout": randn(B, Hq, Lq, case.head_dim_v), "mask": None}
    if case.mask != "none":
        rows = 1 if case.shared_mask else B
        keep = torch.rand(rows, 1, Lq, Lk, generator=gen) < 0.8
        if Lq > 1:
            keep[0, :, Lq // 2, :] = False  # a fully-masked row
        if Lk > 1:
            keep[:, :, :, Lk // 3] = False  # a key no query may see
        if case.mask == "bool":
            inputs["mask"] = keep
        else:
            bias = randn(rows, 1, Lq, Lk) * 0.5
            inputs["mask"] = bias.masked_fill(~keep, -math.inf)
    return inputs


def _kwargs(case: AttentionCase, mask):
    return dict(scale=case.resolved_scale, causal=case.causal, window=case.window, alignment=case.alignment,
                mask=mask, softcap=case.softcap)


# From this many scores (B * Hq * Lq * Lk: 128 MiB per float64 tensor) the oracle and its
# baselines use the row-blocked twin, which tests/test_blocked_oracles.py holds to the plain one.
BLOCKED_ORACLE_FROM = 2 ** 24
# From this many scores in one call a case has the feature "long" (512 MiB per float32
# score tensor): variants that materialise the scores declare it a limitation.
LONG_SCORES = 2 ** 27


def _attend(case: AttentionCase):
    """``reference.attention``, or its row-blocked twin for a case of BLOCKED_ORACLE_FROM scores or more."""
    scores = case.batch * case.heads_q * case.len_q * case.len_k
    return blocked_attention if scores >= BLOCKED_ORACLE_FROM else attention


def _coverage(case: AttentionCase, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(fully-masked rows, bool [B, Hq, Lq, 1]; keys no query of their kv head's group sees,
    bool [B, Hkv, Lk, 1]), computed a block of rows at a time (no [Lq, Lk] tensor kept)."""
    rows, keys = coverage(case.len_q, case.len_k, causal=case.causal, window=case.window, alignment=case.alignment, mask=mask)
    group = case.heads_q // case.heads_kv
    seen = keys.expand(case.batch, case.heads_q, case.len_k).reshape(case.batch, case.heads_kv, group, case.len_k).any(2)
    return ~rows.expand(case.batch, case.heads_q, case.len_q)[..., None], ~seen[..., None]


@functools.lru_cache(maxsize=4096)
def _case_coverage(case: AttentionCase) -> tuple[torch.Tensor, torch.Tensor]:
    """``_coverage`` for the case's own mask; features and check lists ask often."""
    return _coverage(case, make_inputs(case)["mask"])


@functools.lru_cache(maxsize=4096)
def case_features(case: AttentionCase) -> frozenset[str]:
    fully_masked, _ = _case_coverage(case)
    features = {f"alignment:{case.alignment}", f"head_dim:{case.head_dim}"}
    for name, on in (("causal", case.causal), (f"causal:{case.alignment}", case.causal), ("window", case.window is not None),
                     ("window:right", case.window is not None and case.window[1] != 0),  # it looks ahead of the diagonal
                     (f"window:{case.alignment}", case.window is not None), ("mask:bool", case.mask == "bool"),
                     ("mask:additive", case.mask == "additive"), ("mask:shared", case.shared_mask),
                     ("mask:per_row", case.mask != "none" and not case.shared_mask), ("softcap", case.softcap is not None),
                     ("custom_scale", case.scale is not None), ("gqa", case.heads_q != case.heads_kv),
                     ("dk!=dv", case.head_dim != case.head_dim_v), ("lq!=lk", case.len_q != case.len_k),
                     ("lq>lk", case.len_q > case.len_k), ("decode", case.len_q == 1),
                     ("no_queries", case.len_q == 0), ("no_keys", case.len_k == 0),
                     ("fully_masked_rows", bool(fully_masked.any())),
                     ("long", case.batch * case.heads_q * case.len_q * case.len_k >= LONG_SCORES)):
        if on:
            features.add(name)
    return frozenset(features)


# ---------------------------------------------------------------------------- oracle

@dataclass
class AttentionOracle:
    inputs: dict  # float64, see make_inputs
    out: torch.Tensor  # [B, Hq, Lq, Dv] float64
    grads: dict | None  # dq, dk, dv in float64 (None: computed with backward=False)
    base_out: torch.Tensor  # the plain reference in the case dtype
    base_grads: dict | None
    fully_masked_rows: torch.Tensor  # bool [B, Hq, Lq, 1]
    unseen_keys: torch.Tensor  # bool [B, Hkv, Lk, 1]: no query of the kv head's group sees the key
    expanded_out: torch.Tensor | None  # on expanded_layout's values (None without keys), float64
    expanded_base_out: torch.Tensor | None  # the same in the case dtype
    # The fp32-accumulate baseline (low dtypes only, else None): float32 arithmetic on
    # the rounded inputs, results rounded to the case dtype (harness.tolerance, grades).
    base32_out: torch.Tensor | None = None
    base32_grads: dict | None = None
    expanded_base32_out: torch.Tensor | None = None
    # [B, Hq, Lq] float64, low dtypes only: sum_d dout * (out32 rounded to the dtype - out32),
    # what a kernel's D = rowsum(dout * out) gains from the output it stored in the dtype
    stored_output_delta: torch.Tensor | None = None
    scale: float = 1.0  # the case's resolved softmax scale
    dtype: torch.dtype = torch.float32  # the case dtype
    _last_out: tuple | None = field(default=None, repr=False, compare=False)  # (out, its allowances)

    @functools.cached_property
    def grad_magnitude(self) -> float:
        """The largest |gradient| of q, k or v."""
        return max([float(g.abs().max()) for g in self.grads.values() if g.numel()] + [0.0])

    def cancellings(self, out: torch.Tensor | None = None) -> dict[str, float]:
        """``cancelling_allowance`` of dq and dk (dv has none) for the backward of the call
        that returned ``out`` (the variant's output, on the CPU in the case dtype).

        A flash-style backward forms D = rowsum(dout * out) from the output it stored, and
        a kernel's output may differ from the fp32-accumulate one by what OUT accepts (the
        CPU flash kernel's forward rounds P for its P @ V). So in a low dtype, where ``out``
        passes OUT, each row's stored-output term is the larger of the model's and ``out``'s
        realised one, sum_d dout * (out - truth). Without ``out``, or with one that fails
        OUT (a failure already, whose gradients get no room from its own error), the model's."""
        if out is None or self.stored_output_delta is None or not out.numel():
            return self._cancelling
        if self._last_out is not None and self._last_out[0] is out:  # dq, dk and dv of one call ask in turn
            return self._last_out[1]
        room = self._cancelling
        if compare("OUT", "out", out, self.out, self.base_out, self.dtype, base32=self.base32_out).status == PASS:
            realised = (self.inputs["dout"] * (out.double() - self.out)).sum(-1)
            room = self._allowances(torch.maximum(realised.abs(), self.stored_output_delta.abs()))
        self._last_out = (out, room)
        return room

    @functools.cached_property
    def _cancelling(self) -> dict[str, float]:
        """The model's allowances, computed once per case for every variant's comparisons."""
        return self._allowances(self.stored_output_delta)

    def _allowances(self, stored_output_delta: torch.Tensor | None) -> dict[str, float]:
        x = self.inputs
        return {n: cancelling_allowance(n, x["q"], x["k"], x["v"], x["dout"], self.scale, self.dtype,
                                        stored_output_delta) for n in ("dq", "dk")}


def cancelling_allowance(name: str, q, k, v, dout, scale: float, dtype: torch.dtype,
                         stored_output_delta: torch.Tensor | None = None) -> float:
    """The error a correct flash-style backward may leave in gradient ``name`` (dq, dk; 0
    for any other) where it cancels in exact arithmetic (``harness.tolerance.compare``'s
    ``cancelling``). Any layout whose last dim is the head dim: q, k, v, dout as the
    oracle holds them (float64); ``stored_output_delta`` one value per query row.

    dq_i = scale * sum_j p_ij (dp_ij - D_i) k_j (dk likewise with q), and such a kernel
    forms D_i = rowsum(dout_i * out_i) itself, where the exact difference may be 0 (a
    single key: p = 1, dp = D, dq = dk = 0, which the naive baseline finds exactly).
    Two sources, an absolute error per query row each:

    * the rounding of the dot products dp and D, once each in the accumulation dtype
      (float32; float64 in a float64 call): ``2 eps max_i ||dout_i|| max_j ||v_j||``
      (Cauchy-Schwarz bounds every sum_d |dout_d| |v_d|);
    * in a low dtype, D from the output stored in the dtype: the realised difference
      ``stored_output_delta`` (the fp32-accumulate output rounded to the dtype, against
      itself; computed by the attention family).

    A difference error e_i reaches dq_i as scale * e_i * (p k)_i, at most scale * e_i *
    max|k|: the allowance is scale * max_i e_i * max|k|. It reaches dk_j as scale *
    sum_i p_ij e_i q_i; the allowance takes the same largest row, scale * max_i e_i *
    max|q|, an estimate rather than a bound (which would sum over the rows that see key
    j): where the exact difference cancels, a row's weight is peaked on few keys.
    Measured: no CPU flash kernel GRAD failure on 300 random low-dtype cases (30 records
    failed without it; README). dv = p^T dout has no such cancellation."""
    other = {"dq": k, "dk": q}.get(name)
    if other is None or not other.numel() or not q.numel() or not v.numel():
        return 0.0
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    row = 2 * eps * float(dout.norm(dim=-1).max()) * float(v.norm(dim=-1).max())
    if stored_output_delta is not None and stored_output_delta.numel():
        row += float(stored_output_delta.abs().max())
    return scale * row * float(other.abs().max())


def _reference_with_grads(case, inputs, dtype):
    mask = inputs["mask"] if inputs["mask"] is None or inputs["mask"].dtype == torch.bool else inputs["mask"].to(dtype)
    with_grads = attention_with_grads if _attend(case) is attention else blocked_attention_with_grads
    out, _, grads = with_grads(*(inputs[n].to(dtype) for n in ("q", "k", "v", "dout")), **_kwargs(case, mask))
    return out, grads


def _forward(case, inputs, dtype) -> torch.Tensor:
    """The reference output [B, Hq, Lq, Dv] computed in ``dtype`` (no gradients)."""
    mask = inputs["mask"] if inputs["mask"] is None or inputs["mask"].dtype == torch.bool else inputs["mask"].to(dtype)
    out, _ = _attend(case)(*(inputs[n].to(dtype) for n in ("q", "k", "v")), **_kwargs(case, mask))
    return out


def _reference_pass(case, inputs, dtype, backward: bool):
    """(out, grads) of the reference in ``dtype``; grads None without ``backward``."""
    return _reference_with_grads(case, inputs, dtype) if backward else (_forward(case, inputs, dtype), None)


def _fp32_accumulate(case, inputs, dtype, backward: bool = True):
    """(out, grads, stored_output_delta) of the reference in float32, out and grads rounded
    to ``dtype`` (``AttentionOracle`` says what the delta is); (None, None, None) unless
    ``dtype`` is a low dtype (in float32 the naive baseline already is this one)."""
    if dtype not in LOW_DTYPES:
        return None, None, None
    out, grads = _reference_pass(case, inputs, torch.float32, backward)
    delta = (inputs["dout"] * (out.to(dtype).double() - out.double())).sum(-1)
    return out.to(dtype), None if grads is None else {n: g.to(dtype) for n, g in grads.items()}, delta


# ---------------------------------------------------------------------------- LAYOUT:expanded
# K and V are handed over as stride-0 views of their first slice along one dim. The values
# are chosen so that the truth follows from the case's own oracle by a symmetry of the
# equation, with no further reference call, wherever there is a dim to expand but the
# sequence:
#   kv heads (Hkv > 1): every kv head holds kv head 0, and query head h holds the values of
#     query head h % G (G = Hq / Hkv), so out[:, h] = out_case[:, h % G];
#   batch (Hkv = 1, B > 1): q, k, v and a per-row mask all hold batch row 0 (all stride 0),
#     so out[b] = out_case[0];
#   sequence (B = Hkv = 1): every key is key 0; the reference computes this truth.

def _expand_dim(case: AttentionCase) -> int:
    """The dim along which LAYOUT:expanded gives k and v stride 0: kv heads, else batch, else sequence."""
    return 1 if case.heads_kv > 1 else 0 if case.batch > 1 else 2


def _expanded(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Same shape as x, every slice along ``dim`` equal to the first, with stride 0 there."""
    return x.narrow(dim, 0, 1).expand(x.shape)


def expanded_layout(case: AttentionCase, inputs: dict) -> dict:
    """q, k, v and mask as LAYOUT:expanded hands them over (see above): k and v, and along
    the batch also q and a per-row mask, are stride-0 views; with kv heads q is a copy
    whose query heads repeat the first group's."""
    dim = _expand_dim(case)
    x = {n: inputs[n] for n in ("q", "k", "v", "mask")}
    stride_0 = ["k", "v"]
    if dim == 1:
        x["q"] = x["q"][:, :case.heads_q // case.heads_kv].repeat(1, case.heads_kv, 1, 1)
    elif dim == 0:
        stride_0 += ["q"] + (["mask"] if x["mask"] is not None and x["mask"].shape[0] > 1 else [])
    return dict(x, **{n: _expanded(x[n], dim) for n in stride_0})


def _expanded_truths(case: AttentionCase, inputs: dict, outs: tuple, dtypes: tuple) -> list:
    """The outputs [B, Hq, Lq, Dv] on the expanded values, one per computed output in
    ``outs`` (None stays None), ``outs[i]`` having been computed in ``dtypes[i]``."""
    dim = _expand_dim(case)
    if dim == 1:
        group = case.heads_q // case.heads_kv
        return [None if x is None else x[:, :group].repeat(1, case.heads_kv, 1, 1) for x in outs]
    if dim == 0:
        return [None if x is None else x[:1].repeat(case.batch, 1, 1, 1) for x in outs]
    values = {n: t if t is None else t.contiguous() for n, t in expanded_layout(case, inputs).items()}
    return [None if x is None else _forward(case, values, d).to(x.dtype) for x, d in zip(outs, dtypes)]


def oracle(case: AttentionCase, device: torch.device | str = "cpu", backward: bool = True) -> AttentionOracle:
    """The case's truth, computed on ``device`` (``harness.oracle_device``); its tensors on
    the CPU. ``backward=False`` computes no gradients (every ``*grads`` field None): the
    oracle of a variant checked on its forward only."""
    inputs = moved(make_inputs(case), device)
    dtype = TORCH_DTYPES[case.dtype]
    out, grads = _reference_pass(case, inputs, torch.float64, backward)
    base_out, base_grads = _reference_pass(case, inputs, dtype, backward)
    fully_masked, unseen = _coverage(case, inputs["mask"])
    base32_out, base32_grads, stored_delta = _fp32_accumulate(case, inputs, dtype, backward)
    expanded_out, expanded_base, expanded_base32 = _expanded_truths(
        case, inputs, (out, base_out, base32_out), (torch.float64, dtype, torch.float32)) if case.len_k else (None,) * 3
    return moved(AttentionOracle(inputs, out, grads, base_out, base_grads, fully_masked, unseen, expanded_out,
                                 expanded_base, base32_out, base32_grads, expanded_base32, stored_delta,
                                 case.resolved_scale, dtype), "cpu")


# ---------------------------------------------------------------------------- checks

def checks_for(case: AttentionCase) -> list[CheckSpec]:
    specs = [CheckSpec("OUT", "out"), CheckSpec("FIN", "out"), CheckSpec("FIN", "grads", True)]
    specs += [CheckSpec("GRAD", t, True) for t in ("dq", "dk", "dv")]
    specs.append(CheckSpec("LAYOUT", "strided"))
    if case.len_k:  # k and v along a stride-0 dim need one slice to repeat
        specs.append(CheckSpec("LAYOUT", "expanded"))
    features = case_features(case)
    if "fully_masked_rows" in features:
        specs += [CheckSpec("ZERO", "out"), CheckSpec("ZERO", "dq", True)]
    if _has_unseen_keys(case):
        specs += [CheckSpec("ZERO", "dk", True), CheckSpec("ZERO", "dv", True), CheckSpec("INV", "poison")]
    return specs + MEMORY_SPECS


# GUARD, UNINIT and DET apply to every case (fully-masked rows, where a case has them,
# are part of the output UNINIT compares).
MEMORY_SPECS = [CheckSpec("GUARD", "nan"), CheckSpec("GUARD", "huge"), CheckSpec("GUARD", "grads", True),
                CheckSpec("UNINIT", "out"), CheckSpec("UNINIT", "grads", True),
                CheckSpec("DET", "out"), CheckSpec("DET", "grads", True)]


def one_of_gradients(check: str, comparisons: dict[str, Comparison]) -> Comparison:
    """One record for several gradients: the first that fails, else the one with the
    smallest margin; its name leads the detail."""
    name, chosen = next(((n, c) for n, c in comparisons.items() if c.status in (FAIL, ERROR)), (None, None))
    if chosen is None:
        name, chosen = min(comparisons.items(), key=lambda item: item[1].margin)
        text = f"{name} has the smallest margin of {', '.join(comparisons)}"
    else:
        text = f"{name}: {chosen.detail}" if chosen.detail else f"{name} fails"
    return Comparison(**{**chosen.__dict__, "check": check, "target": "grads", "detail": text})


def _has_unseen_keys(case: AttentionCase) -> bool:
    return bool(_case_coverage(case)[1].any())


def _strided(x: torch.Tensor) -> torch.Tensor:
    """Same values as x [B, H, L, D], stored as [B, L, H, D + 3] and viewed back: no unit strides but the last."""
    B, H, L, D = x.shape
    buffer = torch.zeros(B, L, H, D + 3, dtype=x.dtype, device=x.device)
    view = buffer.transpose(1, 2)[..., :D]
    view.copy_(x)
    return view


def _poisoned(x: torch.Tensor, unseen: torch.Tensor, value: float) -> torch.Tensor:
    return x.masked_fill(unseen, value)


def run(case: AttentionCase, fn, device: str, oracle: AttentionOracle, wanted: list[CheckSpec]) -> dict[str, Comparison]:
    """Run ``fn`` as the wanted checks need and compare each result with the oracle."""
    dtype = TORCH_DTYPES[case.dtype]
    inputs = oracle.inputs
    results: dict[str, Comparison] = {}
    ordinary: dict = {}  # the base run's output and gradients, DET's first run

    def on_device(x):
        if x is None:
            return None
        return x.to(device=device, dtype=dtype if x.dtype.is_floating_point else x.dtype, copy=True)

    def call(q, k, v, mask):
        out = fn(q, k, v, **_kwargs(case, mask))
        if not isinstance(out, torch.Tensor):
            raise AdapterContractError(f"the adapter returned {type(out).__name__}, not a tensor")
        return out

    def forward(need_grad: bool, fill: str | None = None):
        """One call on fresh copies of the inputs; with ``fill`` every floating input is a
        guarded view (a leaf's allocation is the autograd leaf)."""
        def hand_over(x, leaf=False):
            x = on_device(x)
            if x is None:
                return None
            if fill and x.dtype.is_floating_point and x.numel():  # guarded() refuses an empty view
                return guarded(x, fill, requires_grad=leaf)
            return x.requires_grad_(leaf)

        given = {n: hand_over(inputs[n], need_grad) for n in ("q", "k", "v")}
        return given, call(given["q"], given["k"], given["v"], hand_over(inputs["mask"]))

    def backward(given, out, fill: str | None = None) -> dict[str, torch.Tensor]:
        """dq, dk, dv for the case's upstream gradient (guarded too with ``fill``)."""
        dout = on_device(inputs["dout"])
        dout = guarded(dout, fill) if fill and dout.numel() else dout
        leaves = {n: t if t._base is None else t._base for n, t in given.items()}
        grads = gradients([out], [dout], leaves)
        return {f"d{n}": grads[f"d{n}"].reshape(-1)[:t.numel()].view(t.shape) for n, t in given.items()}

    def _grad32(name):
        return None if oracle.base32_grads is None else oracle.base32_grads[name]

    def grad_comparisons(check, grads, out):
        room = oracle.cancellings(out)
        return {n: compare(check, "grads", grads[n], oracle.grads[n], oracle.base_grads[n], dtype,
                           magnitude=oracle.grad_magnitude, policy="GRAD", base32=_grad32(n),
                           cancelling=room.get(n, 0.0)) for n in GRAD_NAMES}

    def judged(spec, out, grads) -> Comparison:
        if spec.key == "OUT:out":
            return compare("OUT", "out", out, oracle.out, oracle.base_out, dtype, base32=oracle.base32_out)
        if spec.key == "FIN:out":
            return all_finite("FIN", "out", {"out": out})
        if spec.key == "FIN:grads":
            return all_finite("FIN", "grads", grads)
        if spec.check == "GRAD":
            return compare("GRAD", spec.target, grads[spec.target], oracle.grads[spec.target],
                           oracle.base_grads[spec.target], dtype, magnitude=oracle.grad_magnitude,
                           base32=_grad32(spec.target), cancelling=oracle.cancellings(out).get(spec.target, 0.0))
        if spec.key == "ZERO:out":
            return exact_zero("ZERO", "out", out, oracle.fully_masked_rows)
        if spec.key == "ZERO:dq":
            return exact_zero("ZERO", "dq", grads["dq"], oracle.fully_masked_rows)
        return exact_zero("ZERO", spec.target, grads[spec.target], oracle.unseen_keys)  # ZERO:dk, ZERO:dv

    def base_run(specs):
        need_grad = any(s.backward for s in specs)
        given, out = forward(need_grad)
        ordinary.update(need_grad=False, out=out.detach().cpu())

        def run_backward():
            grads = backward(given, out)
            ordinary.update(need_grad=True, **grads)
            return grads

        forward_then_backward(results, specs, lambda spec, grads: judged(spec, ordinary["out"], grads), run_backward)

    def guard_run(specs):
        """GUARD:nan with GUARD:grads from the same NaN-guarded call, or GUARD:huge."""
        fill = "huge" if specs[0].target == "huge" else "nan"
        need_grad = any(s.backward for s in specs)
        given, out = forward(need_grad, fill)
        if fill in {s.target for s in specs}:
            results[f"GUARD:{fill}"] = compare("GUARD", fill, out.detach().cpu(), oracle.out, oracle.base_out, dtype,
                                               base32=oracle.base32_out)
        if need_grad:
            results["GUARD:grads"] = one_of_gradients("GUARD", grad_comparisons("GUARD", backward(given, out, fill),
                                                                                out.detach().cpu()))

    def uninit_run(specs):
        need_grad = any(s.backward for s in specs)
        with poisoned_allocations():
            given, out = forward(need_grad)
        if "UNINIT:out" in {s.key for s in specs}:
            results["UNINIT:out"] = compare("UNINIT", "out", out.detach().cpu(), oracle.out, oracle.base_out, dtype,
                                           base32=oracle.base32_out)
        if need_grad:
            with poisoned_allocations():
                grads = backward(given, out)
            results["UNINIT:grads"] = one_of_gradients("UNINIT", grad_comparisons("UNINIT", grads, out.detach().cpu()))

    def det_run(specs):
        # The same call as the ordinary run (with or without gradients), twice more.
        need_grad = ordinary.get("need_grad", False) or any(s.backward for s in specs)

        def again(context):
            with context:
                given, out = forward(need_grad)
                grads = backward(given, out) if need_grad else {}
            return {"out": out.detach().cpu(), **grads}

        runs = det_runs(again, ordinary if ordinary and ordinary["need_grad"] == need_grad else None)
        for spec in specs:
            names = ("out",) if spec.target == "out" else GRAD_NAMES
            results[spec.key] = bitwise_equal("DET", spec.target, {k: {n: r[n] for n in names} for k, r in runs.items()})

    def invariance_run(specs):
        for spec in specs:
            k = _poisoned(on_device(inputs["k"]), oracle.unseen_keys.to(device), POISON_KEY)
            v = _poisoned(on_device(inputs["v"]), oracle.unseen_keys.to(device), POISON_VALUE)
            out = call(on_device(inputs["q"]), k, v, on_device(inputs["mask"])).detach().cpu()
            results[spec.key] = compare("INV", spec.target, out, oracle.out, oracle.base_out, dtype, base32=oracle.base32_out)

    def layout_run(specs):
        for spec in specs:
            if spec.target == "strided":
                q, k, v = (_strided(on_device(inputs[n])) for n in ("q", "k", "v"))
                mask = on_device(inputs["mask"])
                expected, baseline, base32 = oracle.out, oracle.base_out, oracle.base32_out
            else:
                given = expanded_layout(case, {n: on_device(inputs[n]) for n in ("q", "k", "v", "mask")})
                q, k, v, mask = (given[n] for n in ("q", "k", "v", "mask"))
                expected, baseline, base32 = oracle.expanded_out, oracle.expanded_base_out, oracle.expanded_base32_out
            out = call(q, k, v, mask).detach().cpu()
            results[spec.key] = compare("LAYOUT", spec.target, out, expected, baseline, dtype, base32=base32)

    def checked(specs, body):
        run_guarded(results, wanted, specs, body)

    checked([s for s in wanted if s.check in ("OUT", "FIN", "GRAD", "ZERO")], base_run)
    for spec in wanted:
        if spec.check == "INV":
            checked([spec], invariance_run)
        elif spec.check == "LAYOUT":
            checked([spec], layout_run)
    checked([s for s in wanted if s.key in ("GUARD:nan", "GUARD:grads")], guard_run)
    checked([s for s in wanted if s.key == "GUARD:huge"], guard_run)
    checked([s for s in wanted if s.check == "UNINIT"], uninit_run)
    checked([s for s in wanted if s.check == "DET"], det_run)
    return results


FAMILY = Family(
    name="attention", positional=("q", "k", "v"),
    keywords=("scale", "causal", "window", "alignment", "mask", "softcap"),
    case_type=AttentionCase, contract=__doc__, case_from_id=case_from_id, case_features=case_features,
    checks_for=checks_for, oracle=oracle, run=run, oracle_on_device=True, oracle_without_backward=True,
)
