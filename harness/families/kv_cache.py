"""The KV-cache family: a cache written over a schedule of calls, and the attention it feeds.

Adapter contract (tensors on the variant's device, in the case dtype)::

    fn(steps, k_cache, v_cache, *, kind, window, scale) -> [(out, k_cache, v_cache), ...]

    steps    list of (q [B, n, H, D], k [B, n, Hkv, D], v [B, n, Hkv, D], input_pos):
             the calls in order on one cache; input_pos is the position of the
             call's first token (the sum of the earlier calls' n)
    k_cache, v_cache
             [B, S, Hkv, D]: what the cache holds before the first call (zeros, or a
             sentinel for SLOT and INV); the adapter loads them into its cache,
             converting layout as it needs, and may write into them
    kind     "static", "sliding" or "ring": where a token is stored and what a query
             sees, as ``reference.kv_cache`` defines (slot p, or p mod S)
    window   None for "static"; w for "sliding" and "ring": query i sees keys
             i - w < j <= i, exactly w keys with its own
    scale    1 / sqrt(D)
    returns  after each call: out [B, n, H, D], and copies of the caches
             [B, S, Hkv, D] in slot order

Checks: OUT (the first call), SPLIT (every later call: decode steps, extends, past the
window == the full recomputation), STATE (caches after every call), SLOT (a cache
filled with a sentinel changes, exactly, only in the slots each call writes), INV
(sentinel in unwritten slots does not change the outputs), ALIAS (the step inputs are
not mutated), FIN. Forward only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from harness.dtypes import DTYPE_TOKENS, TORCH_DTYPES
from harness.families import CheckSpec, Family, run_guarded
from harness.steps import compare_calls, exact_calls
from harness.tolerance import Comparison, all_finite
from reference.kv_cache import KINDS, cache_after, call_positions, cached_attention_steps

# Unwritten slots for SLOT and INV: exactly representable in every dtype, and large
# enough that a query attending to one moves its output by orders of magnitude.
SENTINEL_KEY, SENTINEL_VALUE = 64.0, 1024.0


@dataclass(frozen=True)
class KVCase:
    batch: int
    heads: int
    heads_kv: int
    dim: int
    kind: str
    capacity: int
    schedule: tuple[int, ...]  # tokens per call: prefill, then decode steps and extends
    window: int | None = None
    dtype: str = "float32"
    seed: int = 0

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
        if not self.schedule or min(self.schedule) < 1:
            problems.append(f"schedule {self.schedule} needs at least one call, each of at least 1 token")
        elif self.kind in ("static", "sliding") and sum(self.schedule) > self.capacity:
            problems.append(f"{sum(self.schedule)} tokens do not fit a {self.kind} cache of {self.capacity} slots")
        elif self.kind == "ring" and self.window and self.capacity < self.window + max(self.schedule) - 1:
            problems.append(f"a ring of {self.capacity} slots cannot hold a window of {self.window} for a call of "
                            f"{max(self.schedule)} tokens (needs >= window + call length - 1)")
        if self.dtype not in TORCH_DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
        if problems:
            raise ValueError("invalid kv cache case: " + "; ".join(problems))

    @property
    def length(self) -> int:
        return sum(self.schedule)

    @property
    def id(self) -> str:
        window = f"-w{self.window}" if self.window is not None else ""
        return (f"kv-{self.kind}-b{self.batch}-h{self.heads}x{self.heads_kv}-d{self.dim}-c{self.capacity}{window}"
                f"-n{'_'.join(map(str, self.schedule))}-{DTYPE_TOKENS[self.dtype]}-s{self.seed}")

    def describe(self) -> str:
        window = f", window {self.window}" if self.window is not None else ""
        calls = ", ".join(f"{n} at {p}" for p, n in call_positions(self.schedule))
        return (f"{self.kind} cache of {self.capacity} slots{window}; B={self.batch}, H={self.heads}, "
                f"Hkv={self.heads_kv}, D={self.dim}; calls (tokens at position): {calls}; {self.dtype}, seed {self.seed}")

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
            elif token[:1] in ("b", "d", "c", "w", "s") and token[1:].isdigit():
                fields[{"b": "batch", "d": "dim", "c": "capacity", "w": "window", "s": "seed"}[token[0]]] = int(token[1:])
            else:
                raise ValueError(f"unknown token {token!r}")
        return KVCase(**fields)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed kv cache case id {text!r}: {exc}") from None


def case_features(case: KVCase) -> frozenset[str]:
    features = {f"kind:{case.kind}"}
    if case.heads != case.heads_kv:
        features.add("grouped_heads")
    if any(n > 1 for n in case.schedule[1:]):
        features.add("extend")
    if case.kind == "ring" and case.length > case.capacity:
        features.add("wraps")
    if case.kind == "ring" and case.capacity != 2 * case.window:
        features.add("ring_capacity_not_twice_window")
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
    return cached_attention_steps(x["q"].to(dtype), x["k"].to(dtype), x["v"].to(dtype), case.schedule, kind=case.kind,
                                  capacity=case.capacity, window=case.window, scale=case.dim ** -0.5,
                                  initial=torch.zeros(_cache_shape(case), dtype=dtype))


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


def oracle(case: KVCase) -> KVOracle:
    x = make_inputs(case)
    dtype = TORCH_DTYPES[case.dtype]
    return KVOracle(x, _steps(case, x, torch.float64), _steps(case, x, dtype), _sentinel_caches(case, x, dtype))


def checks_for(case: KVCase) -> list[CheckSpec]:
    specs = [CheckSpec("OUT", "prefill")]
    if len(case.schedule) > 1:
        specs.append(CheckSpec("SPLIT", "steps"))
    return specs + [CheckSpec("STATE", "k_cache"), CheckSpec("STATE", "v_cache"), CheckSpec("SLOT", "k_cache"),
                    CheckSpec("SLOT", "v_cache"), CheckSpec("INV", "unused_slots"), CheckSpec("ALIAS", "inputs"),
                    CheckSpec("FIN", "out")]


def _call_runner(case: KVCase, fn, device: str, x: dict):
    """Run the schedule on a fresh cache holding ``fill`` (key, value); returns the
    per-call results on the CPU and whether the step inputs came back unchanged."""
    dtype = TORCH_DTYPES[case.dtype]

    def run_schedule(fill: tuple[float, float]):
        steps = [tuple(x[n][:, p:p + length].to(device=device, dtype=dtype).contiguous() for n in "qkv") + (p,)
                 for p, length in call_positions(case.schedule)]
        kept = [tuple(t.clone() for t in step[:3]) for step in steps]
        caches = [torch.full(_cache_shape(case), value, dtype=dtype, device=device) for value in fill]
        got = fn(steps, *caches, kind=case.kind, window=case.window, scale=case.dim ** -0.5)
        if len(got) != len(steps):
            raise ValueError(f"the adapter returned {len(got)} call results for {len(steps)} calls")
        unchanged = [all(torch.equal(a, b) for a, b in zip(step[:3], before)) for step, before in zip(steps, kept)]
        return [tuple(t.detach().to(dtype).cpu() for t in r) for r in got], unchanged

    return run_schedule


def run(case: KVCase, fn, device: str, oracle: KVOracle, wanted: list[CheckSpec]) -> dict[str, Comparison]:
    dtype = TORCH_DTYPES[case.dtype]
    results: dict[str, Comparison] = {}
    run_schedule = _call_runner(case, fn, device, oracle.inputs)
    calls = call_positions(case.schedule)

    def describe(call):
        p, n = calls[call]
        return f"call {call} ({n} token(s) at position {p})"

    def describe_slot(index):
        b, s = index[0], index[1]
        return f"batch row {b}, slot {s}" + (f", kv head {index[2]}" if len(index) > 2 else "")

    def cache_index(name):
        return 1 if name == "k_cache" else 2

    def zero_filled(specs):
        got, unchanged = run_schedule((0.0, 0.0))
        for spec in specs:
            if spec.key == "OUT:prefill":
                r = compare_calls("OUT", "prefill", [got[0][0]], [oracle.truth[0][0]], [oracle.baseline[0][0]], dtype,
                                  describe)
            elif spec.key == "SPLIT:steps":
                r = compare_calls("SPLIT", "steps", [g[0] for g in got[1:]], [t[0] for t in oracle.truth[1:]],
                                  [b[0] for b in oracle.baseline[1:]], dtype, lambda i: describe(i + 1))
            elif spec.check == "STATE":
                i = cache_index(spec.target)
                r = compare_calls("STATE", spec.target, [g[i] for g in got], [t[i] for t in oracle.truth],
                                  [b[i] for b in oracle.baseline], dtype, describe, dim=0)
            elif spec.check == "ALIAS":
                bad = [describe(c) for c, ok in enumerate(unchanged) if not ok]
                r = Comparison("ALIAS", "inputs", "fail" if bad else "pass", error=float(len(bad)), threshold=0.0,
                               detail=("the variant wrote into its q/k/v inputs in " + ", ".join(bad)) if bad
                               else "q, k, v of every call unchanged")
            else:
                r = all_finite("FIN", "out", {f"out of call {c}": g[0] for c, g in enumerate(got)})
            results[spec.key] = r

    def sentinel_filled(specs):
        got, _ = run_schedule((SENTINEL_KEY, SENTINEL_VALUE))
        for spec in specs:
            if spec.check == "SLOT":
                results[spec.key] = exact_calls("SLOT", spec.target, [g[cache_index(spec.target)] for g in got],
                                                oracle.slots[spec.target], describe, describe_slot)
            else:
                results[spec.key] = compare_calls("INV", "unused_slots", [g[0] for g in got], [t[0] for t in oracle.truth],
                                                  [b[0] for b in oracle.baseline], dtype, describe)

    run_guarded(results, wanted, [s for s in wanted if s.check not in ("SLOT", "INV")], zero_filled)
    run_guarded(results, wanted, [s for s in wanted if s.check in ("SLOT", "INV")], sentinel_filled)
    return results


FAMILY = Family(
    name="kv_cache", positional=("steps", "k_cache", "v_cache"), keywords=("kind", "window", "scale"),
    case_type=KVCase, contract=__doc__, case_from_id=case_from_id, case_features=case_features,
    checks_for=checks_for, oracle=oracle, run=run,
)
