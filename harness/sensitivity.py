"""How small an error each tolerance grade catches: ``python -m harness.sensitivity``.

For each family and low dtype, a correct variant's result is made wrong on purpose by
a systematic relative error ``eps`` (every element times ``1 + eps``, rounded back to
the dtype) in one target at a time: the output, one gradient (dq, through an autograd
function that scales q's gradient) and, where the family has one, the final state.
Each perturbed run is judged by the family's own check (OUT:out, GRAD:dq, STATE:final)
under both grades, and the table gives the smallest ``eps = 2^-n`` caught on every
case (every larger ``eps`` of the scan caught too). One run gives both verdicts: a
comparison keeps its naive margin beside the kernel one (``harness.tolerance``).

Cases: the cheapest few of each family's catalogue in the low dtype (gated_delta's
catalogue is float32: its cases are recast). Variants: torch SDPA's math kernel
(attention), per-document SDPA (documents) and transformers' recurrent gated delta rule
where installed, else the float32 reference (gated_delta). The default run takes under
three minutes on one core; ``--cases N`` trades time for coverage.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable

import torch

from harness.families import CheckSpec, get_family
from harness.tolerance import KERNEL, PASS, graded

LOW = ("bfloat16", "float16")
EXPONENTS = range(2, 17)  # eps = 2^-2 ... 2^-16
TARGETS = {"output": CheckSpec("OUT", "out"), "gradient": CheckSpec("GRAD", "dq", True),
           "state": CheckSpec("STATE", "final")}


@dataclasses.dataclass(frozen=True)
class Setup:
    """One family's benchmark: its correct variant, its cases and what can be perturbed."""

    family: str
    variant: str
    fn: Callable
    cases: list
    targets: tuple[str, ...]
    registered: object = None  # the registry's Variant, whose limitations choose the cases

    def supports(self, case, target: str) -> bool:
        """No limitation of the variant covers the case or the target's check."""
        if self.registered is None:
            return True
        features = get_family(self.family).case_features(case)
        v = self.registered
        return not (v.limitation_for(features, case.dtype) or v.limitation_for(features, case.dtype, TARGETS[target].tags))


class _ScaledGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``factor`` (rounded to its dtype)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return (grad.float() * ctx.factor).to(grad.dtype), None


def _scaled(x: torch.Tensor, factor: float) -> torch.Tensor:
    return (x.float() * factor).to(x.dtype)


def perturbed(fn: Callable, target: str, eps: float) -> Callable:
    """``fn`` with a relative error ``eps`` in ``target``: ``output`` (the first result),
    ``state`` (the second: gated_delta's final state) or ``gradient`` (the gradient of q)."""
    factor = 1.0 + eps

    def adapter(q, *args, **kwargs):
        if target == "gradient":
            return fn(_ScaledGradient.apply(q, factor), *args, **kwargs)
        result = fn(q, *args, **kwargs)
        if not isinstance(result, tuple):
            return _scaled(result, factor)
        index = 0 if target == "output" else 1
        return tuple(_scaled(r, factor) if i == index else r for i, r in enumerate(result))

    return adapter


def _cheapest(cases: list, dtype: str, count: int, size: Callable) -> list:
    """The ``count`` cases of ``dtype`` with the fewest elements (at least 256 outputs)."""
    chosen = [c for c in cases if c.dtype == dtype and size(c)[1] >= 256]
    return sorted(chosen, key=lambda c: (size(c)[0], c.id))[:count]


# (work, output elements) of a case: the cheapest are chosen, among those with enough outputs.
def _attention_size(c):
    return c.batch * c.heads_q * c.len_q * c.len_k * c.head_dim, c.batch * c.heads_q * c.len_q * c.head_dim_v


def _documents_size(c):
    return c.layout.total ** 2 * c.heads_q * c.head_dim, sum(c.step.doc_query_lengths) * c.heads_q * c.head_dim_v


def _gated_delta_size(c):
    return c.batch * c.length * c.heads_v * c.dim_k * c.dim_v, c.batch * c.length * c.heads_v * c.dim_v


def _float32_gated_delta(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens):
    """The reference recurrence in float32 arithmetic, results rounded to the input dtype."""
    from reference.gated_delta import gated_delta_rule

    out, state = gated_delta_rule(q.float(), k.float(), v.float(), g.float(), beta.float(), scale=scale,
                                  initial_state=initial_state.float(), use_qk_l2norm=use_qk_l2norm, cu_seqlens=cu_seqlens)
    return out.to(q.dtype), state.to(q.dtype)


def _setup(family: str, name: str, targets: tuple[str, ...], size: Callable, count: int, recast: bool = False) -> Setup | None:
    """The registered variant ``name`` on the cheapest ``count`` cases per dtype that it
    supports for every target; None when it cannot run here."""
    from cases import catalogue
    from harness.registry import variants

    found = [v for v in variants(family) if v.name == name and not v.unavailable_reason()]
    if not found:
        return None
    cases = catalogue(family)
    if recast:  # a float32 catalogue
        cases = [dataclasses.replace(c, dtype=d) for c in cases for d in LOW]
    setup = Setup(family, name, found[0].fn, [], targets, found[0])
    usable = [c for c in cases if all(setup.supports(c, t) for t in targets)]
    return dataclasses.replace(setup, cases=[c for d in LOW for c in _cheapest(usable, d, count, size)])


def setups(count: int, families: tuple[str, ...] = ("attention", "documents", "gated_delta")) -> list[Setup]:
    """The benchmarks of ``families``, ``count`` cases per dtype each."""
    chosen = []
    if "attention" in families:
        chosen.append(_setup("attention", "sdpa_math", ("output", "gradient"), _attention_size, count))
    if "documents" in families:
        chosen.append(_setup("documents", "per_document_sdpa", ("output", "gradient"), _documents_size, count))
    if "gated_delta" in families:
        chosen.append(_gated_delta_setup(count))
    return [s for s in chosen if s is not None]


def _gated_delta_setup(count: int) -> Setup:
    gdn_targets = ("output", "gradient", "state")
    gdn = _setup("gated_delta", "transformers_torch_recurrent", gdn_targets, _gated_delta_size, count, recast=True)
    if gdn is None:  # transformers not installed: the float32 reference stands in
        from cases import catalogue

        cases = [dataclasses.replace(c, dtype=d) for c in catalogue("gated_delta") for d in LOW]
        gdn = Setup("gated_delta", "float32 reference", _float32_gated_delta,
                    [c for d in LOW for c in _cheapest(cases, d, count, _gated_delta_size)], gdn_targets)
    return gdn


def caught(setup: Setup, case, oracle, target: str, eps: float) -> tuple[bool, bool]:
    """(caught under the naive grade, caught under the kernel grade) for one perturbed run."""
    spec = TARGETS[target]
    with graded(KERNEL):
        result = get_family(setup.family).run(case, perturbed(setup.fn, target, eps), "cpu", oracle, [spec])[spec.key]
    if result.status not in (PASS, "fail"):
        raise RuntimeError(f"{setup.family}/{setup.variant} on {case.id}: {result.status} {result.detail}")
    return not (result.naive_margin >= 0), result.status != PASS


def smallest_caught(flags: dict[int, bool]) -> int | None:
    """The largest n such that eps = 2^-m is caught for every m <= n of the scan; None if
    even the largest eps passes."""
    best = None
    for n in sorted(flags):
        if not flags[n]:
            break
        best = n
    return best


def benchmark(count: int = 3, log=sys.stderr) -> list[dict]:
    """One row per (family, dtype, target): the smallest eps each grade catches on every case."""
    rows = []
    for setup in setups(count):
        family = get_family(setup.family)
        for dtype in LOW:
            cases = [c for c in setup.cases if c.dtype == dtype]
            oracles = {c.id: family.oracle(c) for c in cases}
            for target in setup.targets:
                naive = {n: True for n in EXPONENTS}
                kernel = dict(naive)
                for n in EXPONENTS:
                    for case in cases:
                        by_naive, by_kernel = caught(setup, case, oracles[case.id], target, 2.0 ** -n)
                        naive[n] &= by_naive
                        kernel[n] &= by_kernel
                    if not (naive[n] or kernel[n]):
                        break  # smaller errors are caught by neither grade
                rows.append(dict(family=setup.family, variant=setup.variant, dtype=dtype, target=target,
                                 cases=len(cases), naive=smallest_caught(naive), kernel=smallest_caught(kernel)))
                print(f"{setup.family} {dtype} {target}: naive {_eps(rows[-1]['naive'])}, kernel {_eps(rows[-1]['kernel'])}",
                      file=log, flush=True)
    return rows


def _eps(n: int | None) -> str:
    return "not caught at 2^-2" if n is None else f"2^-{n} ({2.0 ** -n:.1e})"


def markdown(rows: list[dict]) -> str:
    """The README's table."""
    lines = ["| family | dtype | perturbed | variant | cases | smallest eps caught, naive | kernel |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['dtype']} | {r['target']} | {r['variant']} | {r['cases']} "
                     f"| {_eps(r['naive'])} | {_eps(r['kernel'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.sensitivity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3, help="cases per family and dtype (default 3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(markdown(benchmark(args.cases)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
