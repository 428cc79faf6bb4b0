"""Findings: which failures are findings, their signatures and smallest cases, and the
standalone repro scripts, run on their own (a subprocess, elsewhere, no attn-oracle
imported) and in-process against what the harness measured."""

import ast
import contextlib
import io
import math
import os
import runpy
import subprocess
import sys
from dataclasses import asdict

import pandas as pd
import pytest
import torch

import mutants_attention
from harness import findings
from harness.families import get_family
from harness.findings import select, store
from harness.records import Record
from harness.registry import KnownFailure, Variant, VariantError, variants
from harness.runner import OracleCache, evaluate

SMALL = "b1-h2x1-q5-k9-d8v8-f32-tl-causal-mbool-s0"
LARGER = "b2-h4x2-q7-k19-d16v16-f32-br-causal-s1"
ORACLES = OracleCache()

USERS_FILE = '''
"""A user's kernels, in a file of their own outside the repository."""
import torch.nn.functional as F

from harness.variants._masks import combined_mask

SDPA = """
out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=top_left_only,
                                                       scale={scale}, enable_gqa=q.shape[1] != k.shape[1])
"""


def _sdpa(q, k, v, scale, causal, window, alignment, mask):
    plain = causal and alignment == "top_left" and window is None and mask is None
    attn_mask = None if plain else combined_mask(q.shape[-2], k.shape[-2], causal=causal, window=window,
                                                 alignment=alignment, mask=mask, device=q.device, dtype=q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=plain, scale=scale,
                                          enable_gqa=q.shape[1] != k.shape[1])


def users_wrong_scale(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """torch SDPA with the scale doubled."""
    return _sdpa(q, k, v, scale * 2, causal, window, alignment, mask)


def users_sdpa(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """torch SDPA, right."""
    return _sdpa(q, k, v, scale, causal, window, alignment, mask)


def users_refuser(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    raise ValueError(f"this adapter takes no {q.shape[1]} heads")


def users_library_error(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    if q.shape[0] > 1:  # runs on some cases, so the errors are not an adapter that cannot call its library at all
        return F.scaled_dot_product_attention(q, k, v, scale=scale, is_causal=causal, enable_gqa=True)
    return F.scaled_dot_product_attention(q, k[..., :-1], v)  # torch refuses: the head dims differ
'''


def _user_variants(tmp_path) -> dict[str, Variant]:
    path = tmp_path / "elsewhere" / "users_kernels.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(USERS_FILE)
    ns = runpy.run_path(str(path))
    snippets = {"users_wrong_scale": ns["SDPA"].format(scale="scale * 2"), "users_sdpa": ns["SDPA"].format(scale="scale")}
    return {name: Variant("attention", name, ns[name], ("float32",), source=str(path), repro=snippets.get(name, ""))
            for name in ("users_wrong_scale", "users_sdpa", "users_refuser", "users_library_error")}


def _records(case_id: str, variant: Variant) -> list[dict]:
    case = get_family(variant.family).case_from_id(case_id)
    return [asdict(r) for r in evaluate(case, variant, ORACLES)]


def _lookup(*chosen: Variant):
    table = {(v.family, v.name): v for v in chosen}
    return lambda family, name: table.get((family, name))


def _run_in_process(text: str, tmp_path, name: str = "script.py") -> tuple[int, str]:
    path = tmp_path / name
    path.write_text(text)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = runpy.run_path(str(path), run_name="not_main")["main"]()
        except Exception as exc:  # run on its own, the script would exit 1 with this traceback
            code = 1
            print(f"raised {type(exc).__name__}: {exc}")
    return code, out.getvalue()


def test_a_wrong_real_variant_gets_a_script_that_shows_the_disagreement_on_its_own(tmp_path):
    users = _user_variants(tmp_path)
    wrong, right = users["users_wrong_scale"], users["users_sdpa"]
    rows = [r for case_id in (LARGER, SMALL) for r in _records(case_id, wrong)] + _records(SMALL, right)
    found = findings.write(tmp_path / "run", pd.DataFrame(rows), _lookup(wrong, right))
    assert found and {f["variant"] for f in found} == {"users_wrong_scale"}  # the right one: no finding
    out = next(f for f in found if (f["check"], f["target"]) == ("OUT", "out"))
    assert (out["case_id"], out["records"], out["cases"], out["kind"]) == (SMALL, 2, 2, "mismatch")  # the smallest case
    assert out["origin"] == f"user file {wrong.source}" and out["script"] == "findings/users_wrong_scale-OUT-out.py"
    measured = next(r for r in rows if (r["variant"], r["case_id"], r["check"]) == ("users_wrong_scale", SMALL, "OUT"))

    script = tmp_path / "run" / out["script"]
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-X", "importtime", str(script)], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert f"DISAGREEMENT: users_wrong_scale fails OUT:out on {SMALL}" in done.stdout
    # the harness's own figures, recomputed by the script: error, tolerance, worst index
    line = next(x for x in done.stdout.splitlines() if x.strip().startswith("out: max-abs error"))
    assert f"max-abs error {measured['error']:.3g} (tolerance {measured['threshold']:.3g})" in line
    assert f"worst at {measured['worst_index']}" in line and "disagrees" in line
    imported = {x.rsplit("|", 1)[-1].strip().split(".")[0] for x in done.stderr.splitlines() if x.startswith("import time:")}
    assert "torch" in imported and not imported & {"harness", "reference", "cases", "attn_oracle"}
    tree = ast.parse(script.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names == {"math", "sys", "torch"}

    # the right variant's script of the same record is a script that finds nothing
    passing = next(r for r in rows if (r["variant"], r["case_id"], r["check"]) == ("users_sdpa", SMALL, "OUT"))
    text, why = store.script_for(passing, right)
    assert why == "" and _run_in_process(text, tmp_path)[0] == 0


def test_mutants_and_adapter_errors_are_not_findings_library_errors_are(tmp_path):
    users = _user_variants(tmp_path)
    mutant = Variant("attention", "scale_applied_twice", mutants_attention.scale_applied_twice, ("float32",),
                     source=mutants_attention.__file__)
    chosen = [mutant, users["users_refuser"], users["users_library_error"]]
    rows = [r for v in chosen for case_id in (SMALL, "b1-h2x1-q9-k13-d16v16-f32-br-s2") for r in _records(case_id, v)]
    rows += _records("b2-h2x1-q9-k13-d16v16-f32-br-s2", users["users_library_error"])
    statuses = {(r["variant"], r["status"]) for r in rows if r["variant"] != "scale_applied_twice"}
    assert statuses == {("users_refuser", "adapter_error"), ("users_library_error", "error"), ("users_library_error", "pass")}
    found = findings.write(tmp_path / "run", pd.DataFrame(rows), _lookup(*chosen))
    left_out = findings.load(tmp_path / "run")["left_out"]
    assert left_out["mutant records"] == sum(1 for r in rows if r["variant"] == "scale_applied_twice" and r["status"] == "fail") > 0
    assert {e["variant"] for e in left_out["adapter errors"]} == {"users_refuser"}  # its own raise, in its file
    # raised inside torch: a finding; one bug whichever check met it, over both cases (numbers stripped)
    (error,) = found
    assert error["variant"] == "users_library_error" and error["kind"].startswith("RuntimeError: ")
    assert (error["check"], error["target"], error["cases"]) == ("OUT", "out", 2) and "GRAD:dq" in error["checks"]
    assert "declares no repro snippet" in error["no_script"]  # no snippet declared: said so


def _record(**fields) -> dict:
    base = dict(case_id="c", family="attention", variant="v", check="OUT", target="out", status="fail", dtype="float32",
                error=1.0, threshold=0.5, margin=-1.0, case_params={"len_q": 4, "len_k": 4, "seed": 0})
    return asdict(Record(**{**base, **fields}))


def test_signatures_smallest_cases_known_marks_and_merging():
    v = Variant("attention", "v", lambda q, k, v, **kw: q, ("float32",), source="/elsewhere/mine.py",
                known_failures=(KnownFailure("confirmed upstream: reads past the end", checks={"GRAD"},
                                             versions="torch>=2.0"),))
    rows = [_record(case_id="big", case_params={"len_q": 64, "len_k": 64, "seed": 3}),
            _record(case_id="small", case_params={"len_q": 2, "len_k": 3, "seed": 9}),
            _record(check="FIN", status="error", detail="RuntimeError: size 17 at 0x7f3a"),
            _record(check="ZERO", status="error", detail="RuntimeError: size 129 at 0x55aa", case_id="d"),
            _record(check="GRAD", target="dq", known_failure="confirmed upstream: reads past the end"),
            _record(check="GRAD", target="dk", known_failure="confirmed upstream: reads past the end"),
            _record(check="GRAD", target="dk", case_id="e"),  # one of its records undeclared: not known
            _record(status="pass", case_id="fine")]
    found, _ = select.collect(pd.DataFrame(rows), _lookup(v))
    by = {(f["check"], f["target"], f["kind"]): f for f in found}
    assert set(by) == {("OUT", "out", "mismatch"), ("FIN", "out", "RuntimeError: size N at N"), ("GRAD", "dq", "mismatch"),
                       ("GRAD", "dk", "mismatch")}
    assert by["OUT", "out", "mismatch"]["case_id"] == "small" and by["OUT", "out", "mismatch"]["records"] == 2
    assert by["FIN", "out", "RuntimeError: size N at N"]["cases"] == 2  # one error, whichever check met it
    assert by["FIN", "out", "RuntimeError: size N at N"]["checks"] == ["FIN:out", "ZERO:out"]
    dq, dk = by["GRAD", "dq", "mismatch"], by["GRAD", "dk", "mismatch"]
    assert (dq["known"], dq["known_versions"]) == ("confirmed upstream: reads past the end", "torch>=2.0")
    assert dk["known"] == "" and dk["known_records"] == 1
    # shards: one finding per signature, the smallest case kept, the counts summed
    other = dict(by["OUT", "out", "mismatch"], case_id="tiny", size=1, records=3, cases=3)
    merged = select.merge(found + [other])
    out = next(f for f in merged if f["check"] == "OUT")
    assert len(merged) == len(found) and (out["case_id"], out["records"], out["cases"]) == ("tiny", 5, 5)


def test_a_known_failure_applies_within_its_library_versions_only():
    assert KnownFailure("x", versions="torch>=2.0").version_applies()
    assert not KnownFailure("x", versions="torch<1.0").version_applies()
    assert not KnownFailure("x", versions="no-such-distribution-here>=1").version_applies()
    assert "torch<1.0" in KnownFailure("x", checks={"OUT"}, versions="torch<1.0").describe()
    with pytest.raises(VariantError, match="not a requirement"):
        KnownFailure("x", versions="torch >>> 2")
    outside = Variant("attention", "v", lambda q, k, v, **kw: q, known_failures=(KnownFailure("x", versions="torch<1.0"),))
    inside = Variant("attention", "v", lambda q, k, v, **kw: q, known_failures=(KnownFailure("x", versions="torch>=2"),))
    tags = frozenset({"OUT", "OUT:out"})
    assert outside.known_failure_for(frozenset(), "float32", tags) is None  # judged as any other check
    assert inside.known_failure_for(frozenset(), "float32", tags) is not None


# A plain-torch gated delta rule (token by token, a state reset per document), for the
# scripts of the gated_delta family; the adapter under it is the harness's chunked twin.
RECURRENT = """
group = v.shape[2] // k.shape[2]
if use_qk_l2norm:
    q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6)
    k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
q, k = q.repeat_interleave(group, 2), k.repeat_interleave(group, 2)
decay = torch.exp(g if g.dim() == 4 else g[..., None].expand(*g.shape, k.shape[-1]))
bounds = cu_seqlens.tolist() if cu_seqlens is not None else [0, q.shape[1]]
out, finals = torch.zeros_like(v), []
for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
    state = initial_state[i:i + 1] if cu_seqlens is not None else initial_state
    for t in range(start, end):
        state = decay[:, t, :, :, None] * state
        delta = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhkv,bhk->bhv", state, k[:, t]))
        state = state + torch.einsum("bhk,bhv->bhkv", k[:, t], delta)
        out[:, t] = torch.einsum("bhkv,bhk->bhv", state, scale * q[:, t])
    finals.append(state)
final_state = torch.cat(finals)
"""


def _torch_variant(family: str) -> Variant:
    if family == "gated_delta":
        from harness.variants.gated_delta_torch import chunked_twin

        return Variant("gated_delta", "users_recurrent", chunked_twin, ("float32",), source="/elsewhere/recurrent.py",
                       limitations=variants("gated_delta", ["chunked_twin"])[0].limitations, repro=RECURRENT)
    return variants(family, [{"attention": "sdpa_math", "kv_cache": "index_copy_cache"}[family]])[0]


@pytest.mark.parametrize("family, case_id", [
    ("attention", SMALL), ("attention", "b2-h2x2-q6-k6-d8v8-f32-br-w2_1-madditive-cap5-s3"),
    ("gated_delta", "b1-t20-h1x2-k16v24-gh-mild-f32-h0-docs7_0_1_9-pad3-s501"),
    ("gated_delta", "b2-t3-h1x2-k16v24-gc-extreme-f32-l2-cut1-s5"),
    ("kv_cache", "kv-ring-b2-h2x2-d8-c5-w3-n2_1_1_3_1_1_3_1-f32-s8"),
])
def test_a_script_rebuilds_the_harness_inputs_and_its_reference_is_the_oracle(family, case_id, tmp_path):
    import importlib

    case = get_family(family).case_from_id(case_id)
    record = _record(family=family, variant="v", case_id=case_id, case_params=case.params(),
                     target={"attention": "out", "gated_delta": "out", "kv_cache": "prefill"}[family])
    text, why = store.script_for(record, _torch_variant(family))
    assert why == ""
    (tmp_path / "script.py").write_text(text)
    ns = runpy.run_path(str(tmp_path / "script.py"), run_name="not_main")
    x, expected = ns["make_inputs"](), importlib.import_module(f"harness.families.{family}").make_inputs(case)
    assert set(x) == set(expected)
    for name, tensor in expected.items():
        assert (x[name] is None and tensor is None) or torch.equal(x[name], tensor), name
    oracle = get_family(family).oracle(case)
    if family == "attention":
        truth = {"out": oracle.out, **oracle.grads}
    elif family == "gated_delta":
        rows = case.length - case.padding
        truth = {**oracle.truth, "out": oracle.truth["out"][:, :rows], "final_state": oracle.truth["state"]}
        del truth["state"]
    else:
        truth = {f"{name} {'of' if name == 'out' else 'after'} call {i}": t
                 for i, call in enumerate(oracle.truth) for name, t in zip(("out", "k_cache", "v_cache"), call)}
    mine = ns["reference"](x, torch.float64, grads=family != "kv_cache")
    assert set(mine) == set(truth)
    for name, tensor in truth.items():
        torch.testing.assert_close(mine[name], tensor, rtol=1e-10, atol=1e-12, msg=name)


SNIPPET_CASES = {  # small ones: every variant with a snippet runs on those it supports
    "attention": [SMALL, "b1-h2x1-q5-k9-d8v8-f32-br-causal-s0",
                  # LAYOUT:expanded along the batch (a per-row mask too) and along kv heads
                  "b2-h2x1-q5-k9-d8v8-f32-br-madditive-s2", "b1-h4x2-q5-k9-d8v8-f32-br-causal-s3"],
    "gated_delta": ["b2-t3-h1x2-k16v24-gh-mild-f32-h0-cut1-s4", "b1-t3-h1x2-k16v24-gc-mild-f32-h0-cut1-s5",
                    "b1-t9-h1x2-k16v24-gh-mild-f32-h0-docs4_0_3-pad2-s501"],
    "kv_cache": ["kv-static-b2-h2x1-d8-c8-n3_1_0_2-f32-s2", "kv-ring-b1-h2x1-d8-c8-w4-n4_6_1_7-f32-s8"],
}
EVERY_CHECK = {"sdpa_math", "index_copy_cache", "users_recurrent"}  # the rest: their first check of each case


@pytest.mark.parametrize("family", list(SNIPPET_CASES))
def test_every_repro_snippet_agrees_with_its_adapter(family, tmp_path):
    """A built-in variant's snippet is its adapter's body: on cases it runs here, the
    script of each record exits 0 where the harness passed it and 1 where it failed."""
    chosen = [v for v in variants(family) if v.repro and not v.unavailable_reason()]
    chosen += [_torch_variant(family)] if family == "gated_delta" else []
    assert chosen
    ran = set()
    for v in chosen:
        for case_id in SNIPPET_CASES[family]:
            records = [r for r in _records(case_id, v) if r["status"] != "unsupported"]
            for record in records if v.name in EVERY_CHECK else records[:1]:
                text, why = store.script_for(record, v)
                if why:
                    assert "no repro script for" in why  # a check this family's template does not cover yet
                    continue
                code, printed = _run_in_process(text, tmp_path, f"{v.name}.py")
                assert code == (0 if record["status"] == "pass" else 1), f"{v.name} {case_id} {record['check']}:" \
                    f"{record['target']} {record['status']}\n{printed}"
                ran.add(v.name)
    assert ran >= {v.name for v in chosen if v.name in EVERY_CHECK}


# Broken snippets for the conditions the memory checks create, each right on ordinary inputs.
READS_PAST_THE_END = """
# a kernel that loads one value row more than there is (a whole tile) and masks its score:
# weight 0, but 0 x NaN is NaN, forward and (through the softmax's centring term) backward
rows = v.shape[2] + 1
room = v.untyped_storage().nbytes() // v.element_size() - v.storage_offset() >= rows * v.shape[3]
v_tile = torch.as_strided(v, (1, 1, rows, v.shape[3]), (0, 0, v.shape[3], 1)) if room else \\
    torch.cat([v, v.new_zeros(1, 1, 1, v.shape[3])], 2)
s = scale * q @ k.transpose(-1, -2)
p = torch.softmax(torch.cat([s, torch.full_like(s[..., :1], -math.inf)], -1), -1)
out = p @ v_tile
"""
LEAVES_MASKED_ROWS_UNWRITTEN = """
# rows with no visible key are left as allocated (zeros outside poisoned allocations, as an allocator may return)
poisoned = torch.utils.deterministic.fill_uninitialized_memory and torch.are_deterministic_algorithms_enabled()
out = (torch.empty if poisoned else torch.zeros)(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
full = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
has_key = attn_mask.expand(out.shape[0], 1, *attn_mask.shape[-2:]).any(-1).expand(out.shape[:-1])
out[has_key] = full[has_key]
"""
DEPENDS_ON_EARLIER_CALLS = """
# a workspace kept between calls: the first call is right, a repeat is not (in the last bits)
library.calls = getattr(library, "calls", 0) + 1
out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
out = out if library.calls == 1 else out * (1 + torch.finfo(out.dtype).eps)
"""


@pytest.mark.parametrize("check, target, case_id, snippet", [
    ("GUARD", "nan", "b1-h1x1-q4-k5-d8v8-f32-br-s0", READS_PAST_THE_END),
    ("GUARD", "grads", "b1-h1x1-q4-k5-d8v8-f32-br-s0", READS_PAST_THE_END),
    ("UNINIT", "out", SMALL, LEAVES_MASKED_ROWS_UNWRITTEN),
    ("DET", "out", SMALL, DEPENDS_ON_EARLIER_CALLS),
])
def test_memory_conditions_show_what_plain_inputs_hide(check, target, case_id, snippet, tmp_path):
    """The scripts of GUARD, UNINIT and DET findings re-create the condition: a snippet that
    is right on plain inputs (its OUT script exits 0) is caught (1); torch SDPA is not."""
    case = get_family("attention").case_from_id(case_id)
    broken = Variant("attention", "broken", mutants_attention.scale_applied_twice, ("float32",), repro=snippet)
    for variant, key, expected in ((broken, ("OUT", "out"), 0), (broken, (check, target), 1),
                                   (variants("attention", ["sdpa_math"])[0], (check, target), 0)):
        record = _record(case_id=case_id, check=key[0], target=key[1], case_params=case.params())
        text, why = store.script_for(record, variant)
        assert why == ""
        code, printed = _run_in_process(text, tmp_path, f"{variant.name}-{key[0]}.py")
        assert code == expected, f"{variant.name} {key}\n{printed}"


def test_a_finding_without_a_template_or_with_a_new_case_field_says_why():
    v = Variant("programs", "p", lambda *a, **k: None, repro="out = 1", source="/elsewhere/p.py")
    row = select.finding_row([dict(_record(family="programs", check="EXPORT"), kind="mismatch")], v)
    assert "no repro script for the programs family yet" in findings.scripts.no_script_reason(row, v)
    attention = variants("attention", ["sdpa_math"])[0]
    params = {**get_family("attention").case_from_id(SMALL).params(), "per_row_lengths": [3, 4]}
    row = select.finding_row([dict(_record(case_params=params), kind="mismatch")], attention)
    assert "does not know the case field(s) per_row_lengths" in findings.scripts.no_script_reason(row, attention)
    silent = Variant("attention", "silent", attention.fn, source="/elsewhere/s.py", repro="import torch\nresult = q")
    row = select.finding_row([dict(_record(case_params=params), kind="mismatch")], silent)
    assert "does not assign out" in findings.scripts.no_script_reason(dict(row, case_params={}), silent)
    assert math.isclose(select.case_size({"batch": 2, "len_q": 3, "window": [1, None], "seed": 7, "causal": True}), 6)


def test_a_write_past_the_end_of_a_cache_is_caught_by_its_guard_buffers_script(tmp_path):
    index_copy = variants("kv_cache", ["index_copy_cache"])[0]
    overrun = Variant("kv_cache", "overrun", index_copy.fn, ("float32",), repro=index_copy.repro + """
# and one element past the cache's end, where the storage has room (a tile's store)
if k_cache.untyped_storage().nbytes() // k_cache.element_size() > k_cache.numel():
    torch.as_strided(k_cache, (k_cache.numel() + 1,), (1,))[-1] = 0.0
""")
    case = get_family("kv_cache").case_from_id("kv-static-b2-h2x1-d8-c8-n3_1_2-f32-s2")
    shown = {}
    for variant, key, expected in ((overrun, ("STATE", "k_cache"), 0), (overrun, ("GUARD", "buffers"), 1),
                                   (index_copy, ("GUARD", "buffers"), 0)):
        record = _record(family="kv_cache", case_id=case.id, check=key[0], target=key[1], case_params=case.params())
        code, printed = _run_in_process(store.script_for(record, variant)[0], tmp_path, f"{variant.name}-{key[0]}.py")
        assert code == expected, f"{variant.name} {key}\n{printed}"
        shown[variant.name, key] = printed
    assert "k_cache: 1 element(s) past its end were written, the first 0 past the end" in shown["overrun", ("GUARD", "buffers")]


@pytest.mark.parametrize("case_id", ["b2-h2x1-q5-k9-d8v8-f32-br-madditive-s2", "b2-h4x2-q5-k9-d8v8-f32-br-mbool-s4",
                                     SMALL])
def test_a_layout_expanded_script_hands_over_the_harness_values(case_id, tmp_path):
    """Along the batch, kv heads and the sequence: the script's expanded values are those
    ``harness.families.attention.expanded_layout`` gives the variant."""
    from harness.families import attention

    case = attention.case_from_id(case_id)
    record = _record(family="attention", variant="v", case_id=case_id, case_params=case.params(), check="LAYOUT",
                     target="expanded")
    text, why = store.script_for(record, _torch_variant("attention"))
    assert why == ""
    (tmp_path / "script.py").write_text(text)
    ns = runpy.run_path(str(tmp_path / "script.py"), run_name="not_main")
    mine = ns["expanded_values"](ns["make_inputs"]())
    given = attention.expanded_layout(case, attention.make_inputs(case))
    for name, tensor in given.items():
        assert (tensor is None and mine[name] is None) or torch.equal(mine[name], tensor), name
