"""The registry: loading users' variant files, clear errors, limitations as data."""

import textwrap

import pytest

from harness import registry
from harness.families.attention import AttentionCase
from harness.registry import Limitation, Variant, VariantError, load_file, variants
from harness.runner import OracleCache, evaluate

CASE = AttentionCase(1, 2, 2, 4, 6, 8, 8, causal=True, seed=5)
GOOD = """
from harness.registry import variant
from reference import attention

@variant("attention", "{name}", dtypes=("float32",))
def mine(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    '''Calls the reference itself, in the input dtype.'''
    return attention(q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)[0]
"""


@pytest.fixture(autouse=True)
def private_registry(monkeypatch):
    registry.load_builtin()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_LOADED_FILES", {})


def write(tmp_path, text, name="user_variants.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_users_file_registers_its_variant_with_its_source(tmp_path):
    path = write(tmp_path, GOOD.format(name="mine_ok"))
    (added,) = load_file(path)
    assert (added.name, added.family, added.source) == ("mine_ok", "attention", str(path))
    assert added.description == "Calls the reference itself, in the input dtype."
    assert [v.name for v in variants("attention", ["mine_ok"])] == ["mine_ok"]
    assert load_file(path) == [added]  # a second load in the same process is a no-op


@pytest.mark.parametrize("text, expected", [
    ("def broken(:\n", "syntax error at line 1"),
    ("x = 1\nraise RuntimeError('boom')\n", "failed to load at line 2: RuntimeError: boom"),
    ("import not_a_module_anywhere\n", "ModuleNotFoundError"),
    ("x = 1\n", "registered no variant"),
    (GOOD.format(name="x").replace('"attention"', '"attn"'), "unknown family 'attn'; known families: attention"),
    (GOOD.format(name="x").replace(", mask, softcap", ""), "must accept keyword argument(s) mask, softcap"),
    (GOOD.format(name="x").replace('("float32",)', '("float8",)'), "unknown dtype(s) ['float8']"),
    (GOOD.format(name="sdpa_math"), "already has a variant of that name"),
])
def test_a_bad_file_gets_one_clear_error_naming_file_and_problem(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(VariantError) as info:
        load_file(path)
    message = str(info.value)
    assert str(path) in message and expected in message, message
    assert "\n" not in message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(VariantError, match="no such file"):
        load_file(tmp_path / "absent.py")


def test_a_limitation_given_a_bare_string_is_refused():
    with pytest.raises(VariantError, match="collection of strings"):
        Limitation("oops", features="softcap")


def _variant(**kw):
    from reference import attention

    def fn(q, k, v, *, scale, causal, window, alignment, mask, softcap):
        return attention(q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)[0]

    return Variant("attention", "probe", fn, **kw)


def test_a_missing_optional_dependency_is_unsupported_with_the_reason():
    records = evaluate(CASE, _variant(requires=("no_such_kernel_library",)), OracleCache())
    assert records and {r.status for r in records} == {"unsupported"}
    assert "cannot import no_such_kernel_library" in records[0].detail


def test_a_gpu_only_variant_is_unsupported_on_cpu_with_the_reason():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so the device limitation does not apply")
    records = evaluate(CASE, _variant(device="cuda"), OracleCache())
    assert {r.status for r in records} == {"unsupported"} and "needs a CUDA GPU" in records[0].detail


def test_limitations_apply_to_whole_cases_or_to_named_checks_only():
    whole = _variant(limitations=(Limitation("no causal", features={"causal"}),))
    assert {r.status for r in evaluate(CASE, whole, OracleCache())} == {"unsupported"}
    backward = _variant(limitations=(Limitation("no backward", checks={"backward"}),))
    by_check = {(r.check, r.target): r.status for r in evaluate(CASE, backward, OracleCache())}
    assert by_check[("GRAD", "dq")] == by_check[("FIN", "grads")] == "unsupported"
    assert by_check[("OUT", "out")] == by_check[("LAYOUT", "strided")] == "pass"
    other_dtype = _variant(dtypes=("bfloat16",))
    assert "does not take float32" in evaluate(CASE, other_dtype, OracleCache())[0].detail


def test_a_limitation_on_a_combination_applies_only_where_every_feature_is_present():
    both = Limitation("no mask together with is_causal", all_features={"mask:shared", "causal"})
    assert both.applies(frozenset({"mask:shared", "causal", "gqa"}), "float32")
    assert not both.applies(frozenset({"mask:shared"}), "float32")
    assert not both.applies(frozenset({"causal"}), "float32")
    assert both.describe().startswith("cases with causal and mask:shared")
    # with ``features`` too, both conditions must hold: any of these, and all of those
    narrow = Limitation("r", features={"gqa", "decode"}, all_features={"causal", "window"})
    assert narrow.applies(frozenset({"decode", "causal", "window"}), "float32")
    assert not narrow.applies(frozenset({"causal", "window"}), "float32")
    with pytest.raises(VariantError, match="all_features must be a collection"):
        Limitation("r", all_features="causal")


def test_a_known_failure_pinned_to_case_ids_covers_those_cases_only():
    from dataclasses import replace

    from harness.registry import KnownFailure
    from reference import attention

    def off_by_a_sixteenth(q, k, v, *, scale, causal, window, alignment, mask, softcap):
        out, _ = attention(q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)
        return out * (1 + 2 ** -4)

    pinned = KnownFailure("wrong on one drawn case", cases={CASE.id}, checks={"OUT"})
    wrong = Variant("attention", "probe", off_by_a_sixteenth, dtypes=("float32",), known_failures=(pinned,))
    other = replace(CASE, seed=6)
    for case, declared in ((CASE, pinned.reason), (other, "")):
        out = next(r for r in evaluate(case, wrong, OracleCache()) if (r.check, r.target) == ("OUT", "out"))
        assert out.status == "fail" and out.known_failure == declared
    assert not pinned.applies(frozenset(), "float32", frozenset({"OUT"}))  # no case id: not that case
    assert pinned.describe().startswith(f"case {CASE.id}; ")
    with pytest.raises(VariantError, match="cases must be a collection"):
        KnownFailure("r", cases=CASE.id)
