"""Families: one input/output contract each, with its case type, oracle and checks.

A family module defines a ``FAMILY`` object with:

* ``name`` and ``parameters``: the adapter signature every variant must accept;
* ``case_from_id(text)``: the case a short id stands for;
* ``case_features(case)``: the set of strings limitations match against;
* ``checks_for(case)``: the ``CheckSpec`` list that applies to the case;
* ``oracle(case)``: the float64 truth (and same-dtype baseline), once per case (with
  ``oracle_without_backward``, ``oracle(case, backward=False)`` skips the gradients);
* ``run(case, fn, device, oracle, wanted)``: run the adapter ``fn`` and return one
  ``Comparison`` per wanted ``CheckSpec``, keyed by ``CheckSpec.key``;
* optionally ``case_unavailable(case)``: why the case cannot run here at all ("" if it can).

A family may reuse another family's case type (microsequences uses the documents
cases); the oracle is always computed by the case type's own family.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Callable

# name -> module; imported on first use so that listing families is cheap.
_MODULES = {
    "attention": "harness.families.attention",
    "documents": "harness.families.documents",
    "microsequences": "harness.families.microsequences",
    "gated_delta": "harness.families.gated_delta",
    "gdn_block": "harness.families.gdn_block",
    "kv_cache": "harness.families.kv_cache",
    "cross_cache": "harness.families.cross_cache",
    "programs": "harness.families.programs",
}


@dataclass(frozen=True)
class CheckSpec:
    check: str  # OUT, GRAD, FIN, ZERO, INV, LAYOUT, ...
    target: str  # which tensor or which perturbation
    backward: bool = False  # needs the variant's gradients

    @property
    def key(self) -> str:
        return f"{self.check}:{self.target}"

    @property
    def tags(self) -> frozenset[str]:
        return frozenset({self.check, self.key} | ({"backward"} if self.backward else set()))


def family_names() -> list[str]:
    return list(_MODULES)


def get_family(name: str):
    if name not in _MODULES:
        raise KeyError(f"unknown family {name!r}; known families: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name]).FAMILY


def signature_problem(fn, positional: tuple[str, ...], keywords: tuple[str, ...]) -> str:
    """Empty if ``fn`` can be called as ``fn(*positional, **{k: ... for k in keywords})``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return "its signature cannot be inspected"
    params = sig.parameters
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    missing = [n for n in keywords if n not in params and not has_var_kw]
    try:
        sig.bind(*positional, **{k: None for k in keywords if k in params or has_var_kw})
    except TypeError as exc:
        if not missing:
            return f"cannot be called as fn({', '.join(positional)}, *, {', '.join(keywords)}): {exc}"
    if missing:
        return f"the adapter must accept keyword argument(s) {', '.join(missing)} (contract: fn({', '.join(positional)}, *, {', '.join(keywords)}))"
    return ""


@dataclass(frozen=True)
class Family:
    """A family's contract and its functions; each family module defines ``FAMILY = Family(...)``."""

    name: str
    positional: tuple[str, ...]  # the adapter's positional tensors
    keywords: tuple[str, ...]  # the keyword arguments it must accept
    case_type: type
    contract: str  # the module docstring: shapes and conventions
    case_from_id: Callable
    case_features: Callable
    checks_for: Callable
    oracle: Callable
    run: Callable
    # case -> why no variant can run it here ("" when it can): a case whose module needs a peer's package
    case_unavailable: Callable = lambda case: ""
    # oracle(case, device=...) computes on that device (harness.oracle_device) and returns CPU tensors
    oracle_on_device: bool = False
    # oracle(case, backward=False) computes no gradients, for a variant none of whose wanted
    # checks needs them (forward-only kernels, inference programs): about half the work
    oracle_without_backward: bool = False

    def signature_problem(self, fn) -> str:
        return signature_problem(fn, self.positional, self.keywords)


def run_guarded(results: dict, wanted: list, specs: list, body: Callable) -> None:
    """Call ``body`` with the wanted ones among ``specs``; if the variant raises, each of
    them gets an ``error`` comparison saying what it raised (a result, not a crash), or an
    ``adapter_error`` where the adapter's own code made the mistake (``harness.faults``)."""
    from harness.faults import classified
    from harness.tolerance import Comparison

    here = [s for s in specs if s in wanted]
    if not here:
        return
    try:
        body(here)
    except Exception as exc:
        status, detail = classified(exc)  # the implementation's error, or a mistake in the adapter's code
        for spec in here:
            results.setdefault(spec.key, Comparison(spec.check, spec.target, status, detail=detail))


def forward_then_backward(results: dict, specs: list, judged: Callable, run_backward: Callable) -> None:
    """Judge the forward specs among ``specs``, then run the backward and judge the ones that need
    gradients: a backward that raises leaves the forward results standing (``run_guarded`` keeps
    what is set and gives the rest the error). ``judged(spec, grads)`` returns a comparison."""
    for spec in specs:
        if not spec.backward:
            results[spec.key] = judged(spec, {})
    if any(spec.backward for spec in specs):
        grads = run_backward()
        for spec in specs:
            if spec.backward:
                results[spec.key] = judged(spec, grads)
