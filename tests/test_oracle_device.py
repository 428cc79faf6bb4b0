"""Where the oracle runs (harness/oracle_device.py): the variant's CUDA device when CUDA is
available, else the CPU; results always come back to the CPU. Checked here without a GPU:
the choice with ``torch.cuda.is_available`` patched, the plumbing with a recording family,
and the moves with the ``meta`` device."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import harness.runner as runner
from harness.oracle_device import moved, oracle_device


@pytest.mark.parametrize("cuda, given, expected", [
    (False, "cpu", "cpu"), (False, None, "cpu"), (False, "cuda", "cpu"), (False, "cuda:1", "cpu"),
    (True, "cpu", "cpu"), (True, "cuda", "cuda"), (True, "cuda:1", "cuda:1"), (True, "mps", "cpu"), (True, "meta", "cpu"),
])
def test_the_oracle_runs_on_the_variants_gpu_when_there_is_one_else_on_the_cpu(monkeypatch, cuda, given, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert oracle_device(given) == torch.device(expected)


@dataclass
class _Result:
    out: torch.Tensor
    grads: dict
    pair: tuple
    label: str = "x"


def test_moved_moves_every_tensor_of_nested_results_and_leaves_the_rest():
    result = _Result(torch.ones(2), {"dq": torch.zeros(3), "none": None}, (torch.ones(1), [torch.ones(4)]))
    there = moved(result, "meta")
    assert there.out.device.type == there.grads["dq"].device.type == there.pair[0].device.type == "meta"
    assert there.pair[1][0].device.type == "meta" and there.grads["none"] is None and there.label == "x"
    assert moved(result.out, "cpu") is result.out  # already there: not copied
    assert result.out.device.type == "cpu"  # the original is untouched


def test_the_cache_hands_a_device_aware_family_the_oracles_device_and_others_none(monkeypatch):
    calls = []

    class Fake:
        oracle_without_backward = False

        def __init__(self, aware):
            self.oracle_on_device = aware

        def oracle(self, case, **kwargs):
            calls.append(kwargs)
            return object()

    @dataclass(frozen=True)
    class Case:
        family: str
        id: str = "c"

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runner, "get_family", lambda name: Fake(name == "aware"))
    cache = runner.OracleCache()
    cache.get(Case("aware"), "cuda:0")
    cache.get(Case("aware", "d"), "cpu")
    cache.get(Case("plain"), "cuda:0")
    assert calls == [{"device": torch.device("cuda:0")}, {"device": torch.device("cpu")}, {}]


def test_the_attention_and_documents_oracles_take_a_device_and_return_cpu_tensors():
    from cases import catalogue
    from harness.families import get_family

    for family in ("attention", "documents"):
        fam = get_family(family)
        assert fam.oracle_on_device
        result = fam.oracle(catalogue(family)[0], device=torch.device("cpu"))
        tensors = [t for t in moved(result, "cpu").__dict__.values() if isinstance(t, torch.Tensor)]
        assert tensors and all(t.device.type == "cpu" for t in tensors)


def test_a_forward_only_oracle_is_computed_again_with_gradients_when_a_variant_needs_them():
    from harness.families.attention import case_from_id

    case = case_from_id("b1-h2x1-q5-k9-d8v8-bf16-br-causal-s0")
    cache = runner.OracleCache()
    forward = cache.get(case, backward=False)
    assert forward.grads is forward.base_grads is forward.base32_grads is None
    assert cache.get(case, backward=False) is forward and cache.computed == 1  # still enough for the forward
    full = cache.get(case)  # a variant checked on gradients
    assert cache.computed == 2 and set(full.grads) == set(full.base_grads) == set(full.base32_grads) == {"dq", "dk", "dv"}
    assert cache.get(case, backward=False) is full and cache.computed == 2  # the one with gradients serves both
    for name in ("out", "base_out", "base32_out", "expanded_out", "expanded_base_out"):
        assert torch.equal(getattr(forward, name), getattr(full, name)), name  # the same forward either way


def test_the_documents_oracle_without_backward_has_the_same_forward_and_no_gradients():
    from cases import catalogue
    from harness.families.documents import oracle

    case = catalogue("documents")[0]
    full, forward = oracle(case), oracle(case, backward=False)
    assert forward.step_grads is forward.step_base_grads is forward.whole_grads is forward.whole_base_grads is None
    for name in ("step_out", "step_base_out", "whole_out", "whole_base_out", "pack_out", "pack_base_out"):
        assert torch.equal(getattr(forward, name), getattr(full, name)), name
