"""Time the oracle against each variant on one case: ``python -m harness.benchmark``.

Defaults to the largest case of the attention catalogue (by B * Hq * Lq * Lk * (D + Dv)).
Prints the median wall time of the float64 oracle (forward and backward, what the
harness computes once per case) and of each available variant (forward, plus backward
where supported), and the ratio oracle / fastest variant. Not a test: timings vary.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    warnings.simplefilter("ignore")
    from cases import catalogue
    from harness.families.attention import TORCH_DTYPES, _kwargs, case_features, case_from_id, make_inputs, oracle
    from harness.registry import variants

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", help="case id (default: the largest catalogue case)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if args.case:
        case = case_from_id(args.case)
    else:
        case = max(catalogue("attention"),
                   key=lambda c: c.batch * c.heads_q * c.len_q * c.len_k * (c.head_dim + c.head_dim_v))
    print(f"case {case.id}: {case.describe()}; torch threads {torch.get_num_threads()}")
    oracle_s = _median_seconds(lambda: oracle(case), args.repeats)
    print(f"{'oracle (float64 fwd+bwd, and the same-dtype baseline)':<56} {oracle_s * 1e3:9.2f} ms")
    inputs = make_inputs(case)
    dtype = TORCH_DTYPES[case.dtype]
    timings = {}
    for v in variants("attention"):
        features = case_features(case)
        if v.unavailable_reason() or v.limitation_for(features, case.dtype):
            continue
        backward = v.limitation_for(features, case.dtype, frozenset({"backward"})) is None

        def once(v=v, backward=backward):
            leaves = [inputs[n].to(dtype).requires_grad_(backward) for n in ("q", "k", "v")]
            mask = inputs["mask"] if inputs["mask"] is None or inputs["mask"].dtype == torch.bool else inputs["mask"].to(dtype)
            out = v.fn(*leaves, **_kwargs(case, mask))
            if backward:
                out.backward(inputs["dout"].to(dtype))

        timings[v.name] = (_median_seconds(once, args.repeats), backward)
        print(f"{v.name + (' (fwd+bwd)' if backward else ' (fwd only)'):<56} {timings[v.name][0] * 1e3:9.2f} ms")
    if timings:
        fastest = min(timings, key=lambda n: timings[n][0])
        print(f"oracle / fastest variant ({fastest}): {oracle_s / timings[fastest][0]:.1f}x")


if __name__ == "__main__":
    main()
