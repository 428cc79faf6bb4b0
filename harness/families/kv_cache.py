"""The KV-cache family: a cache written over a schedule of calls, and the attention it feeds.

Adapter contract (tensors on the variant's device, in the case dtype)::

    fn(steps, k_cache, v_cache, *, kind, window, scale) -> [(out, k_cache, v_cache), ...]

    steps    list of (q [B, n, H, D], k [B, n, Hkv, D], v [B, n, Hkv, D], input_pos):
             the calls in order on one cache; input_pos is the position of the
             call's first token (the sum of the earlier calls' n), one for every
             batch row; a call may have n = 0 tokens
    k_cache, v_cache
             [B, S, Hkv, D]: what the cache holds before the first call (zeros, or a
             sentinel for SLOT and INV); the adapter loads them into its cache,
             converting layout as it needs, and may write into them
    kind     "static", "sliding" or "ring": where a token is stored and what a query
             sees, as ``reference.kv_cache`` defines (slot p, or p mod S)
    window   None for "static"; w for "sliding" and "ring": query i sees keys
             i - w < j <= i, exactly w keys with its own
    scale    the softmax scale: 1 / sqrt(D) unless the case sets one (``sc0.3``)
    returns  after each call: out [B, n, H, D], and copies of the caches
             [B, S, Hkv, D] in slot order

Any schedule is a case (a ring's calls may be longer than its free slots, or than the
ring): the truth is the full recomputation, and what a ring holds after any call is
defined by ``reference.kv_cache``. A design that cannot serve a schedule refuses it with
an error (its limitation says which) or fails. A static or sliding cache of S slots holds
positions below S. Batch rows hold different tokens but share every call's position: the
contract has one ``input_pos`` per call. It cannot express a reset (positions only grow).

Checks: OUT (the first call), SPLIT (every later call: decode steps, extends, past the
window == the full recomputation), STATE (caches after every call), SLOT (a cache
filled with a sentinel changes, exactly, only in the slots each call writes), INV
(sentinel in unwritten slots does not change the outputs), ALIAS (the step inputs are
not mutated), FIN; and the memory conditions of ``harness.memory_checks``:
GUARD:nan / GUARD:huge (every call's q, k, v and the caches handed over as guarded views,
NaN or a huge value just past their ends: outputs and caches of every call still match
the oracle; the caches wherever the variant's STATE is checked), GUARD:buffers (in those runs the caches' guard tails are bitwise unchanged
after every call: nothing is written past a cache's end; checked each time the adapter
takes its next step, and when it returns), UNINIT:out (the schedule run under
``poisoned_allocations``: outputs and caches finite and right, as GUARD compares them), DET:out (the ordinary run,
a second identical one and one under ``filled_allocations(1e4)`` bitwise identical).
Forward only.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch

from harness.dtypes import DTYPE_TOKENS, TORCH_DTYPES
from harness.families import CheckSpec, Family, run_guarded
from harness.families.attention import BLOCKED_ORACLE_FROM
from harness.faults import AdapterContractError
from harness.memory_checks import bitwise_equal, filled_allocations, guard_intact, guarded, poisoned_allocations
from harness.steps import compare_calls, exact_calls, worst
from harness.tolerance import FAIL, LOW_DTYPES, PASS, Comparison, all_finite
from reference.attention import attention
from reference.attention_blocked import blocked_attention
from reference.kv_cache import KINDS, cache_after, call_positions, cached_attention_steps

# Unwritten slots for SLOT and INV: exactly representable in every dtype, and large
# enough that a query attending to one moves its output by orders of magnitude.
SENTINEL_KEY, SENTINEL_VALUE = 64.0, 1024.0
DET_FILL = 1e4  # what DET's third run finds in every fresh allocation


@dataclass(frozen=True)
class KVCase:
    batch: int
    heads: int
    heads_kv: int
    dim: int
    kind: str
    capacity: int
    schedule: tuple[int, ...]  # tokens per call: prefill, then decode steps and extends (0: an empty call)
    window: int | None = None
    dtype: str = "float32"
    seed: int = 0
    scale: float | None = None  # None: 1 / sqrt(dim)

    family = "kv_cache"

    def __post_init__(self):
        object.__setattr__(self, "schedule", tuple(self.schedule))
        problems = []
        if min(self.batch, self.heads, self.heads_kv, self.dim, self.capacity) < 1:
            problems.append("batch, heads, heads_kv, dim and capacity must be at least 1")
        elif self.heads % self.heads_kv:
            problems.append(f"heads={self.heads} is not a multiple of heads_kv={self.heads_kv}")
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        elif (self.kind == "static") != (self.window is None):
            problems.append("a static cache has no window; sliding and ring caches need one")
        if self.window is not None and self.window < 1:
            problems.append(f"window {self.window} must be at least 1")
        if not self.schedule or min(self.schedule) < 0:
            problems.append(f"schedule {self.schedule} needs at least one call, none of fewer than 0 tokens")
        elif self.kind in ("static", "sliding") and sum(self.schedule) > self.capacity:
            problems.append(f"{sum(self.schedule)} tokens do not fit a {self.kind} cache of {self.capacity} slots "
                            f"(slot p holds position p)")
        if self.scale is not None and not math.isfinite(self.scale):
            problems.append(f"scale {self.scale} is not finite")
        if self.dtype not in TORCH_DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
        if problems:
            raise ValueError("invalid kv cache case: " + "; ".join(problems))

    @property
    def length(self) -> int:
        return sum(self.schedule)

    @property
    def resolved_scale(self) -> float:
        return self.dim ** -0.5 if self.scale is None else self.scale

    @property
    def id(self) -> str:
        window = f"-w{self.window}" if self.window is not None else ""
        scale = f"-sc{self.scale:g}" if self.scale is not None else ""
        return (f"kv-{self.kind}-b{self.batch}-h{self.heads}x{self.heads_kv}-d{self.dim}-c{self.capacity}{window}"
                f"-n{'_'.join(map(str, self.schedule))}{scale}-{DTYPE_TOKENS[self.dtype]}-s{self.seed}")

    def describe(self) -> str:
        window = f", window {self.window}" if self.window is not None else ""
        scale = f", scale {self.scale:g}" if self.scale is not None else ""
        calls = ", ".join(f"{n} at {p}" for p, n in call_positions(self.schedule))
        return (f"{self.kind} cache of {self.capacity} slots{window}; B={self.batch}, H={self.heads}, "
                f"Hkv={self.heads_kv}, D={self.dim}{scale}; calls (tokens at position): {calls}; {self.dtype}, "
                f"seed {self.seed}")

    def params(self) -> dict:
        return asdict(self)


def case_from_id(text: str) -> KVCase:
    fields: dict = {}
    dtypes = {v: k for k, v in DTYPE_TOKENS.items()}
    try:
        tokens = text.split("-")
        if tokens[0] != "kv" or len(tokens) < 2:
            raise ValueError("a kv cache case id starts with kv-<kind>")
        fields["kind"] = tokens[1]
        for token in tokens[2:]:
            if token in dtypes:
                fields["dtype"] = dtypes[token]
            elif token[:1] == "h":
                fields["heads"], fields["heads_kv"] = (int(x) for x in token[1:].split("x"))
            elif token[:1] == "n":
                fields["schedule"] = tuple(int(x) for x in token[1:].split("_"))
            elif token.startswith("sc"):
                fields["scale"] = float(token[2:])
            elif token[:1] in ("b", "d", "c", "w", "s") and token[1:].isdigit():
                fields[{"b": "batch", "d": "dim", "c": "capacity", "w": "window", "s": "seed"}[token[0]]] = int(token[1:])
            else:
                raise ValueError(f"unknown token {token!r}")
        return KVCase(**fields)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed kv cache case id {text!r}: {exc}") from None


def ring_call_overwrites_window(capacity: int, window: int, start: int, length: int) -> bool:
    """Whether a ring call of ``length`` tokens at ``start`` overwrites, by its end, the
    oldest key its first query must see (``reference.kv_cache``): a cache that writes the
    whole call before attending cannot serve it."""
    return length > 0 and max(0, start - window + 1) + capacity < start + length


def case_features(case: KVCase) -> frozenset[str]:
    features = {f"kind:{case.kind}", f"head_dim:{case.dim}"}
    calls = call_positions(case.schedule)
    for name, on in (("grouped_heads", case.heads != case.heads_kv),
                     ("extend", any(n > 1 for n in case.schedule[1:])),
                     ("zero_length_call", 0 in case.schedule),
                     ("custom_scale", case.scale is not None),
                     ("batch_rows", case.batch > 1)):
        if on:
            features.add(name)
    if case.kind == "ring":
        for name, on in (("wraps", case.length > case.capacity),
                         ("ring_capacity_not_twice_window", case.capacity != 2 * case.window),
                         ("ring_smaller_than_window", case.capacity < case.window),
                         ("ring_call_longer_than_capacity", max(case.schedule) > case.capacity),
                         ("ring_call_overwrites_window",
                          any(ring_call_overwrites_window(case.capacity, case.window, p, n) for p, n in calls))):
            if on:
                features.add(name)
    return frozenset(features)


def make_inputs(case: KVCase) -> dict[str, torch.Tensor]:
    """The whole sequence: q [B, T, H, D], k and v [B, T, Hkv, D], float64 rounded through the case dtype."""
    gen = torch.Generator().manual_seed(case.seed)
    dtype = TORCH_DTYPES[case.dtype]
    shapes = {"q": (case.batch, case.length, case.heads, case.dim), "k": (case.batch, case.length, case.heads_kv, case.dim),
              "v": (case.batch, case.length, case.heads_kv, case.dim)}
    return {n: torch.randn(*s, generator=gen, dtype=torch.float64).to(dtype).to(torch.float64) for n, s in shapes.items()}


def _cache_shape(case: KVCase) -> tuple[int, ...]:
    return (case.batch, case.capacity, case.heads_kv, case.dim)


def _steps(case, x, dtype):
    # reference.attention's row-blocked twin from BLOCKED_ORACLE_FROM scores (tests/test_blocked_oracles.py)
    scores = case.batch * case.heads * max(case.schedule, default=0) * case.length
    attend = blocked_attention if scores >= BLOCKED_ORACLE_FROM else attention
    return cached_attention_steps(x["q"].to(dtype), x["k"].to(dtype), x["v"].to(dtype), case.schedule, kind=case.kind,
                                  capacity=case.capacity, window=case.window, scale=case.resolved_scale,
                                  initial=torch.zeros(_cache_shape(case), dtype=dtype), attend=attend)


def _sentinel_caches(case, x, dtype) -> dict[str, list]:
    """What SLOT requires, exactly, after each call: the caches of a cache that held the
    sentinel, in the case dtype."""
    expected = {}
    for name, fill in (("k_cache", SENTINEL_KEY), ("v_cache", SENTINEL_VALUE)):
        initial = torch.full(_cache_shape(case), fill, dtype=dtype)
        values = x[name[0]].to(dtype)
        expected[name] = [cache_after(case.kind, case.capacity, values, p + n, initial) for p, n in call_positions(case.schedule)]
    return expected


@dataclass
class KVOracle:
    inputs: dict
    truth: list  # per call (out, k_cache, v_cache), float64
    baseline: list  # the same in the case dtype
    slots: dict  # k_cache / v_cache: per call, the sentinel-filled cache SLOT expects
    # The fp32-accumulate baseline (low dtypes only, else None): per call, as ``truth``,
    # from float32 arithmetic on the rounded inputs, rounded to the case dtype.
    base32: list | None = None

    def fp32acc(self, index: int, calls: slice = slice(None)) -> list | None:
        """Result ``index`` (0 out, 1 k_cache, 2 v_cache) of the fp32-accumulate baseline per call."""
        return None if self.base32 is None else [b[index] for b in self.base32[calls]]


def _fp32_accumulate(case, x, dtype) -> list | None:
    if dtype not in LOW_DTYPES:
        return None
    return [tuple(t.to(dtype) for t in call) for call in _steps(case, x, torch.float32)]


def oracle(case: KVCase) -> KVOracle:
    x = make_inputs(case)
    dtype = TORCH_DTYPES[case.dtype]
    return KVOracle(x, _steps(case, x, torch.float64), _steps(case, x, dtype), _sentinel_caches(case, x, dtype),
                    _fp32_accumulate(case, x, dtype))


def checks_for(case: KVCase) -> list[CheckSpec]:
    specs = [CheckSpec("OUT", "prefill")]
    if len(case.schedule) > 1:
        specs.append(CheckSpec("SPLIT", "steps"))
    return specs + [CheckSpec("STATE", "k_cache"), CheckSpec("STATE", "v_cache"), CheckSpec("SLOT", "k_cache"),
                    CheckSpec("SLOT", "v_cache"), CheckSpec("INV", "unused_slots"), CheckSpec("ALIAS", "inputs"),
                    CheckSpec("FIN", "out"), CheckSpec("GUARD", "nan"), CheckSpec("GUARD", "huge"),
                    CheckSpec("GUARD", "buffers"), CheckSpec("UNINIT", "out"), CheckSpec("DET", "out")]


class _WatchedSteps(list):
    """The steps of a guarded run; each time the adapter takes its next step (the call
    before is done) the caches' guard tails are checked, and once more when it returns."""

    def __init__(self, steps, caches: dict, fill: str):
        super().__init__(steps)
        self.caches, self.fill = caches, fill
        self.written = ""  # where a guard tail was first found written

    def check(self, when: str) -> None:
        for name, cache in self.caches.items():
            intact, detail = guard_intact(cache, self.fill)
            if not intact and not self.written:
                self.written = f"{name} ({self.fill} guard) {when}: {detail}"

    def __iter__(self):
        for call, step in enumerate(super().__iter__()):
            if call:
                self.check(f"after call {call - 1}")
            yield step


@dataclass
class _Run:
    calls: list  # per call (out, k_cache, v_cache) on the CPU in the case dtype
    unchanged: list  # per call: q, k, v came back unchanged
    written: str = ""  # guarded runs: where a cache's guard tail was first written ("" if never)


def _call_runner(case: KVCase, fn, device: str, x: dict):
    """``run_schedule(fill, guard=None, context=None)``: the schedule on a fresh cache
    holding ``fill`` (key, value); with ``guard`` every step input and both caches are
    guarded views; the adapter runs inside ``context`` (a context manager) when given."""
    dtype = TORCH_DTYPES[case.dtype]

    def run_schedule(fill: tuple[float, float], guard: str | None = None, context=None) -> _Run:
        steps = [tuple(x[n][:, p:p + length].to(device=device, dtype=dtype, copy=True).contiguous() for n in "qkv") + (p,)
                 for p, length in call_positions(case.schedule)]
        caches = [torch.full(_cache_shape(case), value, dtype=dtype, device=device) for value in fill]
        if guard:
            # an empty call's q, k, v are handed over as they are: ``guarded`` cannot view 0 elements
            steps = [tuple(guarded(t, guard) if t.numel() else t for t in step[:3]) + step[3:] for step in steps]
            caches = [guarded(c, guard) for c in caches]
        kept = [tuple(t.clone() for t in step[:3]) for step in steps]
        handed = _WatchedSteps(steps, dict(zip(("k_cache", "v_cache"), caches)), guard) if guard else steps
        with context or contextlib.nullcontext():
            got = fn(handed, *caches, kind=case.kind, window=case.window, scale=case.resolved_scale)
        if len(got) != len(steps):
            raise AdapterContractError(f"the adapter returned {len(got)} call results for {len(steps)} calls")
        written = ""
        if guard:
            handed.check("by the end of the schedule")
            written = handed.written
        unchanged = [all(torch.equal(a, b) for a, b in zip(step[:3], before)) for step, before in zip(steps, kept)]
        return _Run([tuple(t.detach().to(dtype).cpu() for t in r) for r in got], unchanged, written)

    return run_schedule


def run(case: KVCase, fn, device: str, oracle: KVOracle, wanted: list[CheckSpec]) -> dict[str, Comparison]:
    dtype = TORCH_DTYPES[case.dtype]
    results: dict[str, Comparison] = {}
    run_schedule = _call_runner(case, fn, device, oracle.inputs)
    calls = call_positions(case.schedule)
    ordinary: list[_Run] = []  # the zero-filled run, reused as DET's first

    def describe(call):
        p, n = calls[call]
        return f"call {call} ({n} token(s) at position {p})"

    def describe_slot(index):
        b, s = index[0], index[1]
        return f"batch row {b}, slot {s}" + (f", kv head {index[2]}" if len(index) > 2 else "")

    def cache_index(name):
        return 1 if name == "k_cache" else 2

    # the caches a variant returns in the family's slot order: those whose STATE it does not declare unsupported
    state = [name for name in ("k_cache", "v_cache") if any(s.key == f"STATE:{name}" for s in wanted)]

    def against_oracle(check, target, got: list):
        """Outputs and caches of every call vs the oracle (the worst of them)."""
        return worst({what: compare_calls(check, target, [g[i] for g in got], [t[i] for t in oracle.truth],
                                          [b[i] for b in oracle.baseline], dtype, describe, dim=1 if i == 0 else 0,
                                          base32=oracle.fp32acc(i))
                      for i, what in enumerate(("out", "k_cache", "v_cache")) if i == 0 or what in state})

    def zero_filled(specs):
        got = run_schedule((0.0, 0.0))
        ordinary.append(got)
        for spec in specs:
            if spec.key == "OUT:prefill":
                r = compare_calls("OUT", "prefill", [got.calls[0][0]], [oracle.truth[0][0]], [oracle.baseline[0][0]],
                                  dtype, describe, base32=oracle.fp32acc(0, slice(0, 1)))
            elif spec.key == "SPLIT:steps":
                r = compare_calls("SPLIT", "steps", [g[0] for g in got.calls[1:]], [t[0] for t in oracle.truth[1:]],
                                  [b[0] for b in oracle.baseline[1:]], dtype, lambda i: describe(i + 1))
            elif spec.check == "STATE":
                i = cache_index(spec.target)
                r = compare_calls("STATE", spec.target, [g[i] for g in got.calls], [t[i] for t in oracle.truth],
                                  [b[i] for b in oracle.baseline], dtype, describe, dim=0, base32=oracle.fp32acc(i))
            elif spec.check == "ALIAS":
                bad = [describe(c) for c, ok in enumerate(got.unchanged) if not ok]
                r = Comparison("ALIAS", "inputs", FAIL if bad else PASS, error=float(len(bad)), threshold=0.0,
                               detail=("the variant wrote into its q/k/v inputs in " + ", ".join(bad)) if bad
                               else "q, k, v of every call unchanged")
            else:
                r = all_finite("FIN", "out", {f"out of call {c}": g[0] for c, g in enumerate(got.calls)})
            results[spec.key] = r

    def sentinel_filled(specs):
        got = run_schedule((SENTINEL_KEY, SENTINEL_VALUE)).calls
        for spec in specs:
            if spec.check == "SLOT":
                results[spec.key] = exact_calls("SLOT", spec.target, [g[cache_index(spec.target)] for g in got],
                                                oracle.slots[spec.target], describe, describe_slot)
            else:
                results[spec.key] = compare_calls("INV", "unused_slots", [g[0] for g in got], [t[0] for t in oracle.truth],
                                                  [b[0] for b in oracle.baseline], dtype, describe, base32=oracle.fp32acc(0))

    def guarded_inputs(specs):
        keys = {s.key for s in specs}
        fills = [f for f in ("nan", "huge") if f"GUARD:{f}" in keys] or ["nan"]  # GUARD:buffers alone: the NaN run
        written = []
        for fill in fills:
            got = run_schedule((0.0, 0.0), guard=fill)
            if got.written:
                written.append(got.written)
            if f"GUARD:{fill}" in keys:
                results[f"GUARD:{fill}"] = against_oracle("GUARD", fill, got.calls)
        if "GUARD:buffers" in keys:
            results["GUARD:buffers"] = Comparison(
                "GUARD", "buffers", FAIL if written else PASS, error=float(len(written)), threshold=0.0,
                detail=("written past the end of " + written[0]) if written
                else f"the guard tails of k_cache and v_cache unchanged after every call ({', '.join(fills)} runs)")

    def poisoned(specs):
        results["UNINIT:out"] = against_oracle("UNINIT", "out", run_schedule((0.0, 0.0), context=poisoned_allocations()).calls)

    def repeated(specs):
        if not ordinary and "OUT:prefill" in results:  # the ordinary run raised: DET has no first run
            raise RuntimeError(f"the ordinary run raised ({results['OUT:prefill'].detail})")
        first = ordinary[0] if ordinary else run_schedule((0.0, 0.0))
        runs = {"the ordinary run": first, "a second identical run": run_schedule((0.0, 0.0)),
                f"a run with every fresh allocation filled with {DET_FILL:g}":
                    run_schedule((0.0, 0.0), context=filled_allocations(DET_FILL))}
        results["DET:out"] = bitwise_equal("DET", "out", {name: _named(r.calls) for name, r in runs.items()})

    run_guarded(results, wanted, [s for s in wanted if s.check in ("OUT", "SPLIT", "STATE", "ALIAS", "FIN")], zero_filled)
    run_guarded(results, wanted, [s for s in wanted if s.check in ("SLOT", "INV")], sentinel_filled)
    run_guarded(results, wanted, [s for s in wanted if s.check == "GUARD"], guarded_inputs)
    run_guarded(results, wanted, [s for s in wanted if s.check == "UNINIT"], poisoned)
    run_guarded(results, wanted, [s for s in wanted if s.check == "DET"], repeated)
    return results


def _named(calls: list) -> dict[str, torch.Tensor]:
    """A run's tensors by name, for DET."""
    return {f"{what} of call {c}": t for c, call in enumerate(calls) for what, t in zip(("out", "k_cache", "v_cache"), call)}


FAMILY = Family(
    name="kv_cache", positional=("steps", "k_cache", "v_cache"), keywords=("kind", "window", "scale"),
    case_type=KVCase, contract=__doc__, case_from_id=case_from_id, case_features=case_features,
    checks_for=checks_for, oracle=oracle, run=run,
)
