"""Cross-attention caches: the seed-004 design (``torch.cond`` over ExecuTorch's
``executorch::alias`` and ``executorch::update_cross_attn_cache``), eager and through
``torch.export``, through Inductor, lowered by ExecuTorch, and a plain Python ``if`` for contrast.

The seed's predicate is "the cache holds a non-zero element", so the module's caches
are zero-initialised buffers. ``update_cross_attn_cache`` declares no mutation (so
``torch.cond`` accepts it) yet writes the cache in place; in eager it returns a *copy*
of the cache, while its Inductor lowering returns the cache itself (seed 004's review
thread). ``tests/test_kv_cache.py`` pins both facts.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.registry import KnownFailure, Limitation, variant

OPS = ("executorch.extension.llm.custom_ops.custom_ops",)
# Reproduced with torch 2.13.0 and executorch 1.5.1 (tests/test_kv_cache.py pins it).
EAGER_ALIAS_REJECTED = KnownFailure(
    "executorch::alias returns its own inputs, which torch's custom-op aliasing check rejects when the op runs "
    "eagerly: the first reuse call raises RuntimeError (the op works only once lowered, e.g. by Inductor)",
    features={"reuse_call"})
# Reproduced with torch 2.13.0 (tests/test_kv_cache.py pins it).
COND_REFUSES_FILL_MODE = Limitation(
    "torch.cond, a higher-order op, refuses DET's filled_allocations dispatch mode: NotImplementedError \"There was no "
    "rule registered for HigherOrderOperator cond and mode _FillAllocations\" (and the failed call leaves torch.cond "
    "untraceable in that process), so DET cannot run", checks={"DET"})
INDUCTOR_UNPOISONED = Limitation(
    "Inductor's kernels allocate with torch._C._dynamo.guards._empty_strided_cpu, which torch's fill_uninitialized_memory "
    "never fills: UNINIT's poisoned allocations cannot reach them", checks={"UNINIT"})
RUNTIME_UNPOISONED = Limitation("ExecuTorch's runtime runs in memory it plans and allocates itself, outside torch: "
                                "UNINIT's poisoned allocations cannot reach it", checks={"UNINIT"})
DECODE_SHAPE = Limitation("exported once with the decode shape (1 query token); a multi-token call needs another "
                          "program with its own buffers", features={"multi_token_call"})


class CondCrossAttention(nn.Module):
    """Seed 004's cross-attention block: q [B, n, H, D] and encoder states [B, S, E] in,
    out [B, n, H, D]; caches [B, H, S, D] as buffers."""

    def __init__(self, weights, batch, encoder_len, heads, head_dim, scale):
        super().__init__()
        width, encoder_dim = weights["wk"].shape
        self.k_proj = nn.Linear(encoder_dim, width, bias=False, dtype=weights["wk"].dtype)
        self.v_proj = nn.Linear(encoder_dim, width, bias=False, dtype=weights["wv"].dtype)
        with torch.no_grad():
            self.k_proj.weight.copy_(weights["wk"])
            self.v_proj.weight.copy_(weights["wv"])
        shape = (batch, heads, encoder_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=weights["wk"].dtype))
        self.register_buffer("v_cache", torch.zeros(shape, dtype=weights["wk"].dtype))
        self.heads, self.head_dim, self.scale = heads, head_dim, scale

    def forward(self, q, encoder_states):
        bsz = encoder_states.shape[0]

        def use_cached_kv(cached_keys, cached_values, key_value_states):
            return torch.ops.executorch.alias(cached_keys, cached_values)

        def recompute_kv(cached_keys, cached_values, key_value_states):
            keys = self.k_proj(key_value_states).view(bsz, -1, self.heads, self.head_dim).transpose(1, 2).contiguous()
            values = self.v_proj(key_value_states).view(bsz, -1, self.heads, self.head_dim).transpose(1, 2).contiguous()
            k = torch.ops.executorch.update_cross_attn_cache(keys, cached_keys)
            v = torch.ops.executorch.update_cross_attn_cache(values, cached_values)
            return k, v

        cache_is_initialized = (self.k_cache != 0).any()
        keys, values = torch.cond(cache_is_initialized, use_cached_kv, recompute_kv,
                                  operands=(self.k_cache, self.v_cache, encoder_states))
        out = nn.functional.scaled_dot_product_attention(q.transpose(1, 2), keys, values, scale=self.scale)
        return out.transpose(1, 2)


def _run(block, steps, call=None):
    """Call ``call`` (the block itself unless given) on each step; snapshot the block's caches."""
    call = block if call is None else call
    results = []
    with torch.no_grad():
        for q, encoder in steps:
            out = call(q, encoder)
            results.append((out, block.k_cache.clone(), block.v_cache.clone()))
    return results


def _module(weights, steps, heads, head_dim, scale):
    batch, encoder_len, _ = steps[0][1].shape
    return CondCrossAttention(weights, batch, encoder_len, heads, head_dim, scale).eval()


@variant("cross_cache", "seed004_cond_eager", dtypes=("float32",), requires=OPS, known_failures=[EAGER_ALIAS_REJECTED],
         limitations=[COND_REFUSES_FILL_MODE])
def seed004_cond_eager(weights, steps, *, heads, head_dim, scale):
    """Seed 004's torch.cond block with executorch::alias / update_cross_attn_cache, eager."""
    return _run(_module(weights, steps, heads, head_dim, scale), steps)


@variant("cross_cache", "seed004_cond_exported", dtypes=("float32",), requires=OPS, known_failures=[EAGER_ALIAS_REJECTED],
         limitations=[DECODE_SHAPE, COND_REFUSES_FILL_MODE])
def seed004_cond_exported(weights, steps, *, heads, head_dim, scale):
    """Seed 004's block through torch.export, run with ExportedProgram.module() (buffers carried)."""
    block = _module(weights, steps, heads, head_dim, scale)
    program = torch.export.export(block, steps[0])
    return _run(program.module(), steps)


class _CachesReturned(nn.Module):
    """The block with its caches as outputs too: a lowered program's buffers are not
    visible from outside, so STATE reads what each call returns."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, q, encoder_states):
        return self.block(q, encoder_states), self.block.k_cache.clone(), self.block.v_cache.clone()


@variant("cross_cache", "seed004_cond_executorch", dtypes=("float32",), requires=OPS + ("executorch.exir",),
         limitations=[DECODE_SHAPE, RUNTIME_UNPOISONED], known_failures=[
             # reproduced with executorch 1.5.1: to_executorch raises
             KnownFailure("ExecuTorch cannot emit the block: to_executorch raises \"Missing out variants: "
                          "{'executorch::alias'}\"; executorch::alias has an Inductor lowering only, no kernel for "
                          "ExecuTorch's own runtime")])
def seed004_cond_executorch(weights, steps, *, heads, head_dim, scale):
    """Seed 004's block exported with the decode shape, lowered with ExecuTorch's portable
    kernels (torch.cond emitted as control flow) and run by its runtime over every call."""
    from harness.export import lower_to_executorch

    block = _CachesReturned(_module(weights, steps, heads, head_dim, scale))
    run, _, _ = lower_to_executorch(torch.export.export(block, steps[0]), [])
    with torch.no_grad():
        return [run(q, encoder) for q, encoder in steps]


@variant("cross_cache", "seed004_cond_compiled", dtypes=("float32",), requires=OPS,
         limitations=[COND_REFUSES_FILL_MODE, INDUCTOR_UNPOISONED])
def seed004_cond_compiled(weights, steps, *, heads, head_dim, scale):
    """Seed 004's block through torch.compile (Inductor, CPU), whose lowerings of the two ops
    alias and write the cache buffers in place."""
    block = _module(weights, steps, heads, head_dim, scale)
    return _run(block, steps, torch.compile(block, backend="inductor", fullgraph=True))


@variant("cross_cache", "python_if_cache", dtypes=("float32", "bfloat16", "float16", "float64"))
def python_if_cache(weights, steps, *, heads, head_dim, scale):
    """Plain torch with a Python flag: project and store on the first call, reuse after."""
    cache = None
    results = []
    for q, encoder in steps:
        if cache is None:
            batch, length, _ = encoder.shape
            cache = tuple((encoder @ weights[w].T).view(batch, length, heads, head_dim).transpose(1, 2).contiguous()
                          for w in ("wk", "wv"))
        out = nn.functional.scaled_dot_product_attention(q.transpose(1, 2), *cache, scale=scale).transpose(1, 2)
        results.append((out, cache[0].clone(), cache[1].clone()))
    return results
