"""Programs: export helpers by hand, BOUNDS / EXPORT / MEM against their mutants, seed 000 reproduced."""

import pytest
import torch
from torch.export import Dim

import mutants_programs as m
from harness.export import largest_intermediate, program_bounds, reexport_submodule
from harness.families import get_family
from harness.families.programs import ProgramCase, case_from_id
from harness.registry import Variant, variants
from harness.runner import OracleCache, evaluate
from harness.tolerance import FAIL, PASS
from reference.modules import ReferenceAttention

ORACLES = OracleCache(capacity=8)
SEED_000 = ProgramCase("seed000_attention", calls=(13, 40, 64), seed=0)
GDN = ProgramCase("gdn_block", calls=(0, 4, 8, 0, 4), seed=0)
SLICED = ProgramCase("sliced_attention", calls=(0, 1, 2), seed=0)


def _records(fn, case):
    variant = Variant("programs", fn.__name__, fn, dtypes=("float32",))
    return {f"{r.check}:{r.target}": r for r in evaluate(case, variant, ORACLES)}


def test_bounds_are_read_back_from_the_range_constraints():
    q, k = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 9, 4)
    keys = Dim("keys", min=5, max=30)
    spec = (None, {2: keys}, {2: keys})
    ep = torch.export.export(ReferenceAttention(), (q, k, k), dynamic_shapes=spec)
    assert program_bounds(ep, spec) == {"keys": (5, 30)}
    static = torch.export.export(ReferenceAttention(), (q, k, k))
    assert program_bounds(static, spec) == {"keys": (9, 9)}  # specialised: the dim is no longer dynamic


def test_largest_intermediate_sees_the_score_matrix():
    q = torch.randn(1, 2, 6, 4)
    ep = torch.export.export(ReferenceAttention(), (q, q, q))
    largest, where = largest_intermediate(ep.graph)
    assert largest == 1 * 2 * 6 * 6, where


def test_seed_000_naive_reexport_loses_the_upper_bound_and_the_carrying_one_keeps_it():
    from harness.families.programs import _calls, _cast, _module

    module = _module(SEED_000, torch.float32)
    args = tuple(_cast(t, torch.float32) for t in _calls(SEED_000)[0]) + tuple(
        s.float() for s in SEED_000.spec.initial_state())
    spec = SEED_000.spec.dynamic_shapes()
    ep = torch.export.export(module, args, dynamic_shapes=spec, preserve_module_call_signature=("attend",))
    _, carried = reexport_submodule(ep, module, "attend", spec, carry_bounds=True)
    _, naive = reexport_submodule(ep, module, "attend", spec, carry_bounds=False)
    assert carried == {"context": (13, 64)}
    assert naive == {"context": (13, None)}  # seed 000: [lower, +inf)


@pytest.mark.parametrize("name", ["export_module", "export_decomposed", "export_saved", "export_reexport_attention"])
def test_torch_program_forms_pass_the_seed_000_case(name):
    (variant,) = variants("programs", [name])
    records = evaluate(SEED_000, variant, ORACLES)
    assert {r.status for r in records} == {PASS}, [(r.check, r.target, r.detail) for r in records]


@pytest.mark.parametrize("mutant, case, catching, passing", [
    (m.reexport_drops_the_upper_bound, SEED_000, ["BOUNDS:context"], ["EXPORT:calls"]),
    (m.lowering_narrows_the_range, SEED_000, ["BOUNDS:context"], []),
    (m.lowering_widens_the_range, SEED_000, ["BOUNDS:context"], ["EXPORT:calls"]),
    (m.state_frozen_as_a_constant, GDN, ["EXPORT:calls"], []),
    (m.never_resets_at_position_zero, GDN, ["EXPORT:calls"], []),
    # Its exported program's peak (303,744 B) fits the analytic one (311,296 B): at L = 2 slices the
    # reference holds about 2.3 score tensors at once, within four blocks of a slice. MEM:peak_live's
    # catch of O(L^2) memory is the eager form's (435,328 B) and sliced_but_keeps_every_slice's.
    (m.unsliced_presented_as_sliced, SLICED, ["MEM:largest_intermediate"], ["EXPORT:calls"]),
    (m.eager_unsliced_presented_as_sliced, SLICED, ["MEM:largest_intermediate", "MEM:peak_live"], ["EXPORT:calls"]),
    (m.sliced_but_keeps_every_slice, SLICED, ["MEM:peak_live"], ["EXPORT:calls", "MEM:largest_intermediate"]),
    (m.outputs_accumulated_into_unzeroed_buffers, GDN, ["UNINIT:out"], ["EXPORT:calls", "DET:out"]),
    (m.outputs_accumulated_into_unzeroed_buffers, SLICED, ["UNINIT:out"],
     ["EXPORT:calls", "DET:out", "MEM:largest_intermediate"]),
    (m.outputs_rescaled_by_a_counter, GDN, ["DET:out"], ["EXPORT:calls", "UNINIT:out"]),
])
def test_program_checks_catch_their_mutants(mutant, case, catching, passing):
    records = _records(mutant, case)
    for key in catching:
        assert records[key].status == FAIL, (key, records[key])
    for key in passing:
        assert records[key].status == PASS, (key, records[key])


def test_failures_say_where():
    bounds = _records(m.reexport_drops_the_upper_bound, SEED_000)["BOUNDS:context"]
    assert bounds.detail == "declared [13, 64], program has [13, inf]"
    frozen = _records(m.state_frozen_as_a_constant, GDN)["EXPORT:calls"]
    assert "first diverging call: call 1 (at 4)" in frozen.detail
    reset = _records(m.never_resets_at_position_zero, GDN)["EXPORT:calls"]
    assert "first diverging call: call 3 (at 0)" in reset.detail
    memory = _records(m.unsliced_presented_as_sliced, SLICED)["MEM:largest_intermediate"]
    assert memory.error == 1 * 2 * 128 * 128 and memory.threshold == 1 * 2 * 64 * 128, memory.detail


def test_the_narrowed_lowering_also_refuses_the_declared_max():
    record = _records(m.lowering_narrows_the_range, SEED_000)["EXPORT:calls"]
    assert record.status in (FAIL, "error"), record  # the program cannot run at context 64


def test_every_program_check_is_exercised_here():
    checks = {s.check for case in (SEED_000, GDN, SLICED) for s in get_family("programs").checks_for(case)}
    assert checks == {"EXPORT", "BOUNDS", "MEM", "UNINIT", "DET"}


def test_uninit_compares_the_second_pass_with_the_modules_own_second_pass():
    """The peer's KV cache keeps the slots of the first pass: a second pass from a fresh state
    would differ in the returned caches, the module's own second pass does not."""
    pytest.importorskip("executorch.examples.models.llama.attention")
    case = ProgramCase("executorch_attention_mha", calls=(0, 4, 8, 12, 0), seed=0)
    oracle = ORACLES.get(case)
    assert not torch.equal(oracle.truth[0], oracle.again[0]) and torch.equal(oracle.truth[3], oracle.again[3])  # 3: full
    (variant,) = variants("programs", ["eager_module"])
    records = {f"{r.check}:{r.target}": r for r in evaluate(case, variant, ORACLES)}
    assert records["UNINIT:out"].status == PASS and records["DET:out"].status == PASS, records


def test_case_ids_round_trip_and_bad_cases_are_named():
    for case in (SEED_000, GDN, SLICED):
        assert case_from_id(case.id) == case
    with pytest.raises(ValueError, match="at least three calls"):
        ProgramCase("gdn_block", calls=(0, 4))
    with pytest.raises(ValueError, match="module 'mlp' is not one of"):
        ProgramCase("mlp", calls=(0, 1, 2))


def test_the_eager_module_is_measured_while_it_runs():
    (variant,) = variants("programs", ["eager_module"])
    records = {f"{r.check}:{r.target}": r for r in evaluate(SLICED, variant, ORACLES)}
    memory = records["MEM:largest_intermediate"]
    assert memory.status == PASS and "measured while running" in memory.detail
    assert memory.error == 1 * 2 * 64 * 128, memory.detail  # the score block of the last slice
    peak = records["MEM:peak_live"]
    assert peak.status == PASS and peak.threshold == 4 * (4 * 1 * 2 * 64 * 128 + 2 * 1 * 2 * 128 * 24), peak.detail
    assert 0 < peak.error <= peak.threshold
    assert records["EXPORT:calls"].status == PASS


def test_the_memory_meter_counts_live_storages_and_not_inputs():
    from harness.export import MemoryMeter

    x = torch.zeros(1000)  # from outside: neither it nor its views count
    meter = MemoryMeter()
    with meter:
        view = x[:500]  # a view of outside memory: 0 bytes
        a = torch.ones(100)  # 400 bytes live
        b = torch.ones(200)  # 1200 live
        del a, b  # 0 live
        c = torch.ones(250)  # 1000 live
        c_view = c[:10]  # a view of a live storage: still 1000
        d = torch.ones(100)  # 1400 live: the peak (2600 if frees were not seen)
    assert meter.peak_bytes == 1400, meter.peak_where
    assert meter.largest == 500 and view.numel() == 500 and c_view.numel() == 10 and d.numel() == 100


@pytest.mark.parametrize("module", ["executorch_attention_mha", "executorch_gdn_block"])
def test_the_peers_modules_exported_match_the_reference_they_implement(module):
    pytest.importorskip("executorch.examples.models.llama.attention")
    case = next(c for c in __import__("cases.programs", fromlist=["GRID"]).GRID if c.module == module)
    (variant,) = variants("programs", ["export_module"])
    records = {f"{r.check}:{r.target}": r for r in evaluate(case, variant, ORACLES)}
    assert records["EXPORT:calls"].status == PASS, records["EXPORT:calls"].detail


def test_a_case_whose_module_cannot_be_built_here_is_unsupported_with_the_reason(monkeypatch):
    from harness.families import programs

    spec = programs.PROGRAMS["gdn_block"]
    monkeypatch.setitem(programs.PROGRAMS, "needs_a_missing_package",
                        programs.ProgramSpec("a module from a package that is not installed", build=spec.build,
                                             call_inputs=spec.call_inputs, initial_state=spec.initial_state,
                                             requires=("a_package_that_is_not_installed",)))
    case = ProgramCase("needs_a_missing_package", calls=(0, 4, 8))
    (variant,) = variants("programs", ["export_module"])
    records = evaluate(case, variant, ORACLES)
    assert [r.check for r in records] == ["EXPORT", "UNINIT", "DET"]
    for record in records:
        assert record.status == "unsupported"
        assert "cannot import a_package_that_is_not_installed" in record.detail, record.detail
