"""What the attention oracle costs: ``python -m harness.benchmark [lengths|ratio|case]``.

* ``lengths``: time and peak memory of the float64 oracle (forward and backward, one
  head, D = 64, causal) against L, for the plain oracle (``reference.attention``) and its
  row-blocked twin (``reference.attention_blocked``). The plain one is skipped where its
  score tensors alone would pass ``--plain-limit-gib``.
* ``ratio``: on every attention catalogue case (CI shapes), the whole family oracle
  (``harness.families.attention.oracle``, what the harness computes once per case) against
  the fastest variant available here doing the same work: the oracle with gradients
  against the fastest forward and backward, the oracle without them (what a run computes
  when no chosen variant is checked on gradients) against the fastest forward; and
  where the oracle's time goes: input generation, the float64 truth, the same-dtype and
  fp32-accumulate baselines, head repetition (``repeat_interleave`` of K and V, part of
  each reference call), coverage (fully-masked rows, unseen keys), LAYOUT:expanded's
  truths (by symmetry from the case's outputs, or reference forwards where k and v repeat
  one key), the rest, and the fixed cost of one oracle call (a 1-token case).
* ``case``: the same two comparisons on one case (``--case ID``, default the largest
  catalogue case).

Peak memory is the growth of the process's peak resident set (``/proc/self/status``
VmHWM after resetting it through ``/proc/self/clear_refs``): Linux only. Not a test:
timings vary with the machine's load; each figure is the shortest of ``--repeats`` runs
(after a warm-up), with ``--threads`` intra-op threads (the CLI's workers and pytest-xdist's
use one each).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch


def _best_seconds(fn, repeats: int, warm_up: bool = True) -> float:
    """The shortest of ``repeats`` timed calls: what the call costs, the least disturbed by
    other processes sharing the cores."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _status_kib(field: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def peak_growth_bytes(fn) -> int | None:
    """How far ``fn()`` raises the process's peak resident set above what it holds now
    (None where Linux's clear_refs / VmHWM are not available)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    return None if before is None or peak is None else (peak - before) * 1024


# ---------------------------------------------------------------------------- lengths

def _oracle_call(blocked: bool, length: int, heads: int, dim: int):
    """A closure running the float64 oracle forward and backward at ``length`` tokens, causal,
    as the family oracle does: with the written-out backward, the whole call or a block of
    query rows at a time."""
    from reference.attention import attention_with_grads
    from reference.attention_blocked import blocked_attention_with_grads

    gen = torch.Generator().manual_seed(length)
    q, k, v, dout = (torch.randn(1, heads, length, dim, generator=gen, dtype=torch.float64) for _ in range(4))
    fn = blocked_attention_with_grads if blocked else attention_with_grads

    def once():
        fn(q, k, v, dout, causal=True)

    return once


def measure(blocked: bool, length: int, heads: int, dim: int, repeats: int) -> dict:
    """Peak memory growth of the first call (also the warm-up), then the shortest time of ``repeats`` more."""
    once = _oracle_call(blocked, length, heads, dim)
    peak = peak_growth_bytes(once)
    return dict(seconds=_best_seconds(once, repeats, warm_up=False), peak=peak)


def _measured_apart(blocked: bool, length: int, heads: int, dim: int, repeats: int) -> dict:
    """``measure`` in a fresh process, so that memory freed by an earlier measurement and
    kept by the allocator does not hide this one's peak."""
    code = (f"import json, torch, harness.benchmark as b; torch.set_num_threads({torch.get_num_threads()}); "
            f"print(json.dumps(b.measure({blocked}, {length}, {heads}, {dim}, {repeats})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def lengths_table(lengths: list[int], heads: int, dim: int, repeats: int, plain_limit_gib: float) -> list[dict]:
    rows = []
    for length in lengths:
        for name, blocked in (("plain", False), ("blocked", True)):
            scores_gib = heads * length * length * 8 / 2 ** 30
            if not blocked and scores_gib > plain_limit_gib:
                rows.append(dict(oracle=name, L=length, seconds=None, peak=None,
                                 note=f"skipped: one score tensor is {scores_gib:.1f} GiB"))
                continue
            rows.append(dict(oracle=name, L=length, **_measured_apart(blocked, length, heads, dim, repeats), note=""))
            print(_length_row(rows[-1]), flush=True)
    return rows


def _length_row(row: dict) -> str:
    seconds = "-" if row["seconds"] is None else f"{row['seconds']:.2f}"
    peak = "-" if row["peak"] is None else f"{row['peak'] / 2 ** 20:.0f}"
    return f"| {row['oracle']} | {row['L']} | {seconds} | {peak} | {row['note']} |"


# ---------------------------------------------------------------------------- ratio

def _fastest_variants(case, inputs, repeats: int = 3) -> dict[str, tuple[str, float]]:
    """The fastest variants available here on ``case``: {"backward": (name, seconds of one
    forward and backward), "forward": (name, seconds of one forward)}, the shortest of
    ``repeats`` calls each. Every variant runs forward; those that take gradients on the
    case run forward and backward too ("backward" is missing when none does)."""
    from harness.dtypes import TORCH_DTYPES
    from harness.families.attention import _kwargs, case_features
    from harness.registry import variants

    dtype = TORCH_DTYPES[case.dtype]
    features = case_features(case)
    timings: dict[str, dict[str, float]] = {"forward": {}, "backward": {}}
    for v in variants("attention"):
        if v.unavailable_reason() or v.limitation_for(features, case.dtype):
            continue

        def once(v=v, backward=False):
            leaves = [inputs[n].to(dtype).requires_grad_(backward) for n in ("q", "k", "v")]
            mask = inputs["mask"] if inputs["mask"] is None or inputs["mask"].dtype == torch.bool else inputs["mask"].to(dtype)
            out = v.fn(*leaves, **_kwargs(case, mask))
            if backward and out.requires_grad:
                out.backward(inputs["dout"].to(dtype))

        kinds = ["forward"] + (["backward"] if v.limitation_for(features, case.dtype, frozenset({"backward"})) is None else [])
        for kind in kinds:
            try:
                timings[kind][v.name] = _best_seconds(lambda: once(backward=kind == "backward"), repeats)
            except Exception:  # a variant failing a case is the suite's business, not the benchmark's
                continue
    return {kind: min(found.items(), key=lambda item: item[1]) for kind, found in timings.items() if found}


def _oracle_parts(case, repeats: int) -> dict[str, float]:
    """Median seconds of the pieces of ``harness.families.attention.oracle(case)``."""
    import harness.families.attention as family
    from harness.dtypes import TORCH_DTYPES

    dtype = TORCH_DTYPES[case.dtype]
    inputs = family.make_inputs(case)
    group = case.heads_q // case.heads_kv
    parts = {
        "oracle": _best_seconds(lambda: family.oracle(case), repeats),
        "inputs": _best_seconds(lambda: family.make_inputs(case), repeats),
        "truth float64": _best_seconds(lambda: family._reference_with_grads(case, inputs, torch.float64), repeats),
        "baseline same dtype": _best_seconds(lambda: family._reference_with_grads(case, inputs, dtype), repeats),
        "coverage": _best_seconds(lambda: family._coverage(case, inputs["mask"]), repeats),
        # every reference call repeats K and V (float64 truth, baselines, LAYOUT forwards: about 5 calls)
        "head repetition (one call)": _best_seconds(
            lambda: (inputs["k"].repeat_interleave(group, 1), inputs["v"].repeat_interleave(group, 1)), repeats),
    }
    parts["baseline fp32-accumulate"] = _best_seconds(lambda: family._fp32_accumulate(case, inputs, dtype), repeats)
    outs = (family._forward(case, inputs, torch.float64), family._forward(case, inputs, dtype),
            family._fp32_accumulate(case, inputs, dtype)[0])
    parts["LAYOUT:expanded truths"] = _best_seconds(
        lambda: family._expanded_truths(case, inputs, outs, (torch.float64, dtype, torch.float32)), repeats) \
        if case.len_k else 0.0
    counted = ("inputs", "truth float64", "baseline same dtype", "baseline fp32-accumulate", "coverage",
               "LAYOUT:expanded truths")
    parts["rest (bookkeeping)"] = max(0.0, parts["oracle"] - sum(parts[n] for n in counted))
    return parts


def ratio_table(repeats: int) -> list[dict]:
    """One row per attention catalogue case: the oracle with gradients against the fastest
    variant's forward and backward, and the oracle without them (what a run of forward-only
    variants computes) against the fastest forward."""
    from cases import catalogue
    from harness.families.attention import AttentionCase, make_inputs, oracle

    tiny = AttentionCase(1, 1, 1, 1, 1, 8, 8)
    fixed = _best_seconds(lambda: oracle(tiny), repeats)
    rows = []
    for case in catalogue("attention"):
        parts = _oracle_parts(case, repeats)
        forward_s = _best_seconds(lambda: oracle(case, backward=False), repeats)
        fastest = _fastest_variants(case, make_inputs(case))
        (name, seconds), (fwd_name, fwd_s) = fastest.get("backward", ("-", math.nan)), fastest["forward"]
        rows.append(dict(case=case.id, dtype=case.dtype, variant=name, variant_s=seconds, forward_oracle=forward_s,
                         forward_variant=fwd_name, forward_variant_s=fwd_s, fixed=fixed, **parts))
        print(f"| {case.id} | {parts['oracle'] * 1e3:.1f} | {name} | {seconds * 1e3:.2f} | "
              f"{parts['oracle'] / seconds:.1f}x | {forward_s * 1e3:.1f} | {fwd_name} | {fwd_s * 1e3:.2f} | "
              f"{forward_s / fwd_s:.1f}x |", flush=True)
    return rows


RATIO_HEADER = ("| case | oracle ms | fastest forward + backward | ms | ratio | oracle without gradients ms "
                "| fastest forward | ms | ratio |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def _ratios(rows: list[dict], oracle_key: str, variant_key: str) -> str:
    rows = [r for r in rows if not math.isnan(r[variant_key])]
    oracle_s, variant_s = sum(r[oracle_key] for r in rows), sum(r[variant_key] for r in rows)
    ratios = sorted(r[oracle_key] / r[variant_key] for r in rows)
    return (f"{len(rows)} cases: oracle {oracle_s * 1e3:.0f} ms, fastest variants {variant_s * 1e3:.0f} ms, "
            f"ratio of the sums {oracle_s / variant_s:.1f}x, per case median {statistics.median(ratios):.1f}x "
            f"(min {ratios[0]:.1f}x, max {ratios[-1]:.1f}x)")


def _ratio_summary(rows: list[dict]) -> list[str]:
    oracle_s = sum(r["oracle"] for r in rows)
    float32 = [r for r in rows if r["dtype"] == "float32"]
    low = [r for r in rows if r["dtype"] in ("bfloat16", "float16")]
    lines = ["forward and backward, " + _ratios(rows, "oracle", "variant_s"),
             # three reference passes in a low dtype (the truth, the naive and the fp32-accumulate
             # baselines), two in float32, against one call of the fastest variant
             *(f"  of which {label}, " + _ratios(part, "oracle", "variant_s")
               for label, part in (("float32", float32), ("bfloat16 / float16", low)) if part),
             "forward only, " + _ratios(rows, "forward_oracle", "forward_variant_s"),
             f"fixed cost of one oracle call (a 1-token case): {rows[0]['fixed'] * 1e3:.2f} ms", "",
             "| where the oracle's time goes (sum over the cases) | ms | share |", "| --- | --- | --- |"]
    for part in ("inputs", "truth float64", "baseline same dtype", "baseline fp32-accumulate", "coverage",
                 "LAYOUT:expanded truths", "rest (bookkeeping)", "head repetition (one call)"):
        total = sum(r[part] for r in rows)
        lines.append(f"| {part} | {total * 1e3:.1f} | {total / oracle_s:.0%} |")
    return lines


# ---------------------------------------------------------------------------- one case

def case_table(case_id: str | None, repeats: int) -> None:
    from cases import catalogue
    from harness.families.attention import case_from_id, make_inputs, oracle

    case = case_from_id(case_id) if case_id else max(
        catalogue("attention"), key=lambda c: c.batch * c.heads_q * c.len_q * c.len_k * (c.head_dim + c.head_dim_v))
    print(f"case {case.id}: {case.describe()}; torch threads {torch.get_num_threads()}")
    fastest = _fastest_variants(case, make_inputs(case), repeats)
    for kind, backward in (("backward", True), ("forward", False)):
        if kind in fastest:
            oracle_s = _best_seconds(lambda: oracle(case, backward=backward), repeats)
            name, seconds = fastest[kind]
            print(f"{'forward and backward' if backward else 'forward only'}: oracle (float64 truth and the "
                  f"baselines) {oracle_s * 1e3:.2f} ms; fastest variant {name} {seconds * 1e3:.2f} ms; "
                  f"ratio {oracle_s / seconds:.1f}x")


def main(argv=None) -> None:
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", nargs="?", choices=("lengths", "ratio", "case"), default="ratio")
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768", help="for lengths: token counts")
    parser.add_argument("--heads", type=int, default=1, help="for lengths: heads (default 1)")
    parser.add_argument("--dim", type=int, default=64, help="for lengths: head dim (default 64)")
    parser.add_argument("--plain-limit-gib", type=float, default=1.0,
                        help="for lengths: skip the plain oracle where one float64 score tensor passes this (default 1)")
    parser.add_argument("--case", help="for case: a case id (default the largest catalogue case)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.table == "lengths":
        print(f"float64 oracle, forward + backward, causal, B=1, H={args.heads}, D={args.dim}")
        print("| oracle | L | seconds | peak MiB | |\n| --- | --- | --- | --- | --- |")
        rows = lengths_table([int(x) for x in args.lengths.split(",")], args.heads, args.dim, args.repeats,
                             args.plain_limit_gib)
        for row in rows:
            if row["seconds"] is None:
                print(_length_row(row))
    elif args.table == "ratio":
        print(RATIO_HEADER)
        print("\n".join(_ratio_summary(ratio_table(args.repeats))))
    else:
        case_table(args.case, args.repeats)


if __name__ == "__main__":
    main()
