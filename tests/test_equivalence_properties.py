"""Property-based equivalence: Hypothesis draws attention cases over the grid's space.

The fast CPU variants must pass every drawn case; a mutant must be found failing and
shrunk to a small case, which is what makes a fuzzing failure readable.
"""

import warnings

import pytest
from hypothesis import HealthCheck, find, given, settings

import mutants_attention as m
from harness.registry import Limitation, Variant, variants
from harness.runner import OracleCache, evaluate
from harness.strategies import attention_cases
from harness.tolerance import ERROR, FAIL

ORACLES = OracleCache(capacity=8)
# A shrinking search asks one question of hundreds of cases: the other checks are not run.
ONLY_OUT = Limitation("the shrinking test looks at OUT only", checks={"GRAD", "FIN", "ZERO", "INV", "LAYOUT", "GUARD", "UNINIT", "DET"})


@pytest.mark.parametrize("name", ["sdpa_math", "sdpa_flash_cpu", "sliced_attention"])
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=attention_cases(max_len=48))
def test_fast_cpu_variants_pass_drawn_cases(name, case):
    (variant,) = variants("attention", [name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = [r for r in evaluate(case, variant, ORACLES) if r.status in (FAIL, ERROR)]
    assert not bad, [(r.check, r.target, r.detail, r.reproduce) for r in bad]


def test_a_failure_shrinks_to_a_minimal_case():
    mutant = Variant("attention", "top_left_instead_of_bottom_right", m.top_left_instead_of_bottom_right,
                     dtypes=("float32", "bfloat16", "float16"), limitations=(ONLY_OUT,))

    def out_fails(case):
        return any(r.check == "OUT" and r.status == FAIL for r in evaluate(case, mutant, OracleCache(capacity=1)))

    minimal = find(attention_cases(dtypes=("float32",)), out_fails,
                   settings=settings(database=None, max_examples=500, derandomize=True))
    # The bug needs a causal diagonal that moves with the alignment (Lq != Lk) and
    # nothing else; shrinking strips everything else away.
    assert minimal.causal and minimal.len_q != minimal.len_k
    assert minimal.batch == 1 and minimal.heads_q == minimal.heads_kv == 1
    assert minimal.mask == "none" and minimal.softcap is None
    assert max(minimal.len_q, minimal.len_k) <= 3, minimal
