"""A finding's standalone repro script, rendered from its family's template.

The script imports torch and the library under test only, never attn-oracle. It
rebuilds the smallest failing case's inputs inline, from the case's parameters, with
the same seeded ``torch.Generator`` draws as the family's ``make_inputs`` (so it sees the
values the harness saw), computes a float64 reference written out in the script, hands
the inputs to the library the way the failing check does (plain, guarded by NaN or huge
tails, under NaN-poisoned allocations, strided, repeated), prints the disagreement
(max-abs and relative RMS error against the tolerance rule of the harness, recomputed on
the spot, and the worst index; or the exact requirement broken) and exits 1 when it
shows, 0 when it does not.

The library call is the variant's ``repro`` snippet (``@variant(..., repro=...)``):
the adapter's body with torch and the library only. Its leading ``import``/``from``
lines go to the top of the script; the rest runs inside a function with the family's
contract signature and must assign what the adapter returns:

==============  ======================================================================  ================
family          names the snippet reads                                                  assigns
==============  ======================================================================  ================
attention       q, k, v, scale, causal, window, alignment, mask, softcap; attn_mask and  out
                top_left_only (the masks as SDPA takes them) when it names them
gated_delta     q, k, v, g, beta, scale, initial_state, use_qk_l2norm, cu_seqlens       out, final_state
kv_cache        steps [(q, k, v, start), ...], k_cache, v_cache, kind, window, scale     results
==============  ======================================================================  ================

A template knows the case fields it reads; a case with any other field gets no script
(and says so), so a family that grows a field cannot silently produce a different case.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from typing import Callable

import jinja2



@dataclass(frozen=True)
class Plan:
    """How a script re-creates one check.

    cond:      how the library gets its inputs: "plain", "guard:nan", "guard:huge",
               or a family's own ("strided", "expanded", "poison", "split", ...)
    names:     the tensors compared (keys of ``reference`` and ``run_library``)
    mode:      "tolerance" (the harness's rule, row ``rule``), "finite", "zero" (exactly 0
               where the contract says so), "bitwise" (three runs identical) or a
               family's own ("slots", "alias", "guard_intact")
    grads:     the check needs gradients; ``magnitude``: judge them at the scale of the
               largest gradient; ``poisoned``: run under NaN-filled allocations
    """

    cond: str
    names: tuple[str, ...]
    mode: str = "tolerance"
    rule: str | None = None
    grads: bool = False
    poisoned: bool = False
    magnitude: bool = False


def _memory_plans(outputs: tuple[str, ...], grad_names: tuple[str, ...]) -> dict[str, Plan]:
    """GUARD, UNINIT and DET, as every family with gradients runs them."""
    plans = {"GUARD:nan": Plan("guard:nan", outputs, rule="GUARD"), "GUARD:huge": Plan("guard:huge", outputs, rule="GUARD"),
             "UNINIT:out": Plan("plain", outputs, rule="UNINIT", poisoned=True),
             "DET:out": Plan("plain", outputs, "bitwise")}
    if grad_names:
        plans.update({
            "GUARD:grads": Plan("guard:nan", grad_names, rule="GRAD", grads=True, magnitude=True),
            "UNINIT:grads": Plan("plain", grad_names, rule="GRAD", grads=True, poisoned=True, magnitude=True),
            "DET:grads": Plan("plain", grad_names, "bitwise", grads=True)})
    return plans


def _gradient_plans(grad_names: tuple[str, ...]) -> dict[str, Plan]:
    plans = {f"GRAD:{n}": Plan("plain", (n,), rule="GRAD", grads=True, magnitude=True) for n in grad_names}
    plans["FIN:grads"] = Plan("plain", grad_names, "finite", grads=True)
    return plans


@dataclass(frozen=True)
class FamilyScript:
    """A family's template: the case fields it reads, the checks it re-creates, and the
    template variables it derives from a case's parameters."""

    template: str
    fields: frozenset[str]
    plans: dict[str, Plan]
    grad_names: tuple[str, ...]
    context: Callable[[dict], dict]
    names: Callable[[tuple[str, ...], dict], list[str]] = lambda names, params: list(names)
    assigns: tuple[str, ...] = ("out",)  # what the snippet must assign


def _attention_context(p: dict) -> dict:
    return {"scale": p["scale"] if p.get("scale") is not None else 1.0 / math.sqrt(p["head_dim"]),
            "expand_dim": 1 if p["heads_kv"] > 1 else 0 if p["batch"] > 1 else 2}  # the family's _expand_dim


def _gated_delta_context(p: dict) -> dict:
    return {"scale": p["scale"] if p.get("scale") is not None else 1.0 / math.sqrt(p["dim_k"])}


def _kv_cache_context(p: dict) -> dict:
    return {"scale": p["scale"] if p.get("scale") is not None else p["dim"] ** -0.5}


def _kv_cache_names(names: tuple[str, ...], p: dict) -> list[str]:
    """prefill: the first call's output; steps: every later call's; a cache: after every call."""
    calls = range(len(p["schedule"]))
    expanded = {"prefill": ["out of call 0"], "steps": [f"out of call {i}" for i in calls if i],
                "k_cache": [f"k_cache after call {i}" for i in calls], "v_cache": [f"v_cache after call {i}" for i in calls]}
    return [n for name in names for n in expanded[name]]


_ATTENTION_GRADS = ("dq", "dk", "dv")
_GATED_DELTA_GRADS = ("dq", "dk", "dv", "dg", "dbeta", "dinitial_state")

FAMILIES: dict[str, FamilyScript] = {
    "attention": FamilyScript(
        "findings_attention.py.j2",
        frozenset({"batch", "heads_q", "heads_kv", "len_q", "len_k", "head_dim", "head_dim_v", "dtype", "causal",
                   "alignment", "window", "mask", "shared_mask", "softcap", "scale", "seed"}),
        {"OUT:out": Plan("plain", ("out",), rule="OUT"), "FIN:out": Plan("plain", ("out",), "finite"),
         "ZERO:out": Plan("plain", ("out",), "zero"),
         **{f"ZERO:{n}": Plan("plain", (n,), "zero", grads=True) for n in _ATTENTION_GRADS},
         "INV:poison": Plan("poison", ("out",), rule="INV"),
         "LAYOUT:strided": Plan("strided", ("out",), rule="LAYOUT"),
         "LAYOUT:expanded": Plan("expanded", ("out",), rule="LAYOUT"),
         **_gradient_plans(_ATTENTION_GRADS), **_memory_plans(("out",), _ATTENTION_GRADS)},
        _ATTENTION_GRADS, _attention_context),
    "gated_delta": FamilyScript(
        "findings_gated_delta.py.j2",
        frozenset({"batch", "length", "heads_k", "heads_v", "dim_k", "dim_v", "channel_gate", "gates", "initial_state",
                   "l2norm", "split", "documents", "padding", "dtype", "scale", "seed"}),
        {"OUT:out": Plan("plain", ("out",), rule="OUT"), "STATE:final": Plan("plain", ("final_state",), rule="STATE"),
         "FIN:out": Plan("plain", ("out", "final_state"), "finite"),
         "SPLIT:out": Plan("split", ("out",), rule="SPLIT"), "SPLIT:state": Plan("split", ("final_state",), rule="SPLIT"),
         "SPLIT:tokens_out": Plan("tokens", ("out",), rule="SPLIT"),
         "SPLIT:tokens_state": Plan("tokens", ("final_state",), rule="SPLIT"),
         "PACK:documents": Plan("documents", ("out", "final_state"), rule="PACK"),
         **_gradient_plans(_GATED_DELTA_GRADS), **_memory_plans(("out", "final_state"), _GATED_DELTA_GRADS)},
        _GATED_DELTA_GRADS, _gated_delta_context, assigns=("out", "final_state")),
    "kv_cache": FamilyScript(
        "findings_kv_cache.py.j2",
        frozenset({"batch", "heads", "heads_kv", "dim", "kind", "capacity", "schedule", "window", "dtype", "scale", "seed"}),
        {"OUT:prefill": Plan("plain", ("prefill",), rule="OUT"), "SPLIT:steps": Plan("plain", ("steps",), rule="SPLIT"),
         "STATE:k_cache": Plan("plain", ("k_cache",), rule="STATE"),
         "STATE:v_cache": Plan("plain", ("v_cache",), rule="STATE"),
         "SLOT:k_cache": Plan("sentinel", ("k_cache",), "slots"), "SLOT:v_cache": Plan("sentinel", ("v_cache",), "slots"),
         "INV:unused_slots": Plan("sentinel", ("prefill", "steps"), rule="INV"),
         "ALIAS:inputs": Plan("plain", (), "alias"), "FIN:out": Plan("plain", ("prefill", "steps"), "finite"),
         "GUARD:nan": Plan("guard:nan", ("prefill", "steps", "k_cache", "v_cache"), rule="GUARD"),
         "GUARD:huge": Plan("guard:huge", ("prefill", "steps", "k_cache", "v_cache"), rule="GUARD"),
         "GUARD:buffers": Plan("guard_buffers", (), "guard_intact"),
         "UNINIT:out": Plan("plain", ("prefill", "steps", "k_cache", "v_cache"), rule="UNINIT", poisoned=True),
         "DET:out": Plan("plain", ("prefill", "steps", "k_cache", "v_cache"), "bitwise")},
        (), _kv_cache_context, _kv_cache_names, assigns=("results",)),
}

_IMPORT = re.compile(r"^(import|from)\s+\S")


def split_snippet(snippet: str) -> tuple[list[str], str]:
    """(its leading top-level import lines, the rest): the imports go to the script's top."""
    lines = snippet.strip("\n").splitlines()
    imports = []
    while lines and (_IMPORT.match(lines[0]) or not lines[0].strip()):
        line = lines.pop(0)
        if line.strip():
            imports.append(line.rstrip())
    return imports, "\n".join(lines)


def no_script_reason(finding: dict, variant) -> str:
    """Why the finding gets no script ("" when it gets one)."""
    family, key = finding["family"], f"{finding['check']}:{finding['target']}"
    spec = FAMILIES.get(family)
    if spec is None:
        return f"no repro script for the {family} family yet (templates exist for {', '.join(FAMILIES)})"
    if variant is None:
        return f"the variant {finding['variant']} is not registered in the process that wrote the findings"
    if not variant.repro:
        return (f"{variant.name} declares no repro snippet (@variant(..., repro=...): the adapter's body with torch and "
                f"the library only), so there is no library call to write into a script")
    if key not in spec.plans:
        return f"no repro script for {key} in the {family} family yet"
    extra = sorted(set(finding["case_params"]) - spec.fields)
    if extra:
        return f"the {family} template does not know the case field(s) {', '.join(extra)}, so it cannot rebuild the case"
    imports, body = split_snippet(variant.repro)
    try:
        tree = ast.parse("\n".join(imports) + "\ndef _(q):\n" + _indent(body or "pass"), f"repro of {variant.name}")
    except SyntaxError as exc:
        return f"the repro snippet of {variant.name} does not compile: {exc.msg} (line {exc.lineno})"
    assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    missing = [name for name in spec.assigns if name not in assigned]
    if missing:
        return (f"the repro snippet of {variant.name} does not assign {', '.join(missing)} (a {family} snippet assigns "
                f"what the adapter returns: {', '.join(spec.assigns)})")
    return ""


def render(finding: dict, variant, header: str) -> str:
    """The script of ``finding`` (see ``no_script_reason`` first); ``header`` is its comment block."""
    spec = FAMILIES[finding["family"]]
    plan = spec.plans[f"{finding['check']}:{finding['target']}"]
    imports, body = split_snippet(variant.repro)
    params = finding["case_params"]
    rule = _rule(plan, variant, params["dtype"])
    return _environment().get_template(spec.template).render(
        header=header, snippet_imports=imports, snippet=_indent(body), variant=variant.name,
        description=(variant.description or variant.name).replace('"""', "'''").replace("\\", "/"),
        case_id=finding["case_id"], check=f"{finding['check']}:{finding['target']}", dtype=params["dtype"],
        device=variant.device, p=params, plan=_plan_view(plan, spec, params), needs=_needs(plan),
        rule=rule,
        uses_sdpa_mask=bool(re.search(r"\b(attn_mask|top_left_only)\b", body)), **spec.context(params))


def _rule(plan: Plan, variant, dtype: str) -> dict | None:
    """The tolerance row the harness judged the check by: the kernel grade's (against the
    fp32-accumulate baseline) for a kernel-grade variant in a low dtype where the row has
    one, else the naive one (against the same computation in the dtype)."""
    from harness.tolerance import KERNEL_POLICY, LOW_DTYPES, POLICY

    if not plan.rule:
        return None
    kernel = (variant.precision == "kernel" and plan.rule in KERNEL_POLICY
              and dtype in {str(d).removeprefix("torch.") for d in LOW_DTYPES})
    rule = (KERNEL_POLICY if kernel else POLICY)[plan.rule]
    return {"name": plan.rule, "grade": "kernel" if kernel else "naive", "k": rule.k,
            "k_rms": rule.k if rule.k_rms is None else rule.k_rms, "floor_ulps": rule.floor_ulps}


def _plan_view(plan: Plan, spec: FamilyScript, params: dict) -> dict:
    return dict(cond=plan.cond, names=spec.names(plan.names, params), mode=plan.mode, grads=plan.grads,
                poisoned=plan.poisoned, magnitude=plan.magnitude, grad_names=list(spec.grad_names))


def _needs(plan: Plan) -> dict:
    """Which helpers the script carries."""
    return {"guard": plan.cond.startswith("guard"), "guard_intact": plan.mode == "guard_intact",
            "poisoned": plan.poisoned, "filled": plan.mode == "bitwise", "bitwise": plan.mode == "bitwise",
            "judge": plan.mode == "tolerance", "finite": plan.mode == "finite", "exact": plan.mode in ("zero", "slots")}


def _indent(text: str) -> str:
    return "\n".join(("    " + line) if line.strip() else "" for line in text.splitlines())


def py_literal(value) -> str:
    """A Python literal for a case parameter (lists become tuples; inf and nan spelled out)."""
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple):
        inner = ", ".join(py_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    return repr(value)


_ENV: jinja2.Environment | None = None


def _environment() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"), undefined=jinja2.StrictUndefined,
                                  trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
        _ENV.filters["py"] = py_literal
    return _ENV
