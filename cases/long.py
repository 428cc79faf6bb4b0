"""Production-length cases: the ``long`` profile, not part of the default suite.

Selected by ``attn-oracle run --profile long`` and by pytest's ``--attn-profile long``.
What only shows at production lengths: split-K and long-row paths, large launch grids,
the causal diagonal and windows far from the first key, chunked prefill and decode over a
long past, documents mixing long and short ones with a cut inside a long one, a KV-cache
ring wrapped 8 and 16 times over a schedule of extends and decode steps. On the CPU
the lengths are ``CPU_LENGTHS`` (the ring: ``KV_LENGTHS``); with a CUDA GPU also ``GPU_LENGTHS`` (the oracle then
runs there in float64, ``harness.oracle_device``). The oracles take their row-blocked
twins at these sizes (``reference.attention_blocked``); variants that materialise
``Lq x Lk`` scores declare the ``long`` feature a limitation.
"""

from __future__ import annotations

import torch

from harness.families.attention import AttentionCase
from harness.families.documents import DocumentsCase
from harness.families.kv_cache import KVCase

CPU_LENGTHS = (8192, 16384, 32768)
GPU_LENGTHS = (65536, 131072)
KV_LENGTHS = (8192, 16384)  # the kv_cache oracle writes its caches token by token, every call


def lengths() -> tuple[int, ...]:
    """The long profile's token counts here: the GPU ones too when CUDA is available."""
    return CPU_LENGTHS + (GPU_LENGTHS if torch.cuda.is_available() else ())


def attention_cases(length: int) -> list[AttentionCase]:
    """Prefill, a window, chunked prefill and decode at ``length`` keys."""
    seed = length  # distinct inputs per length
    return [
        # causal prefill, GQA 2:1, bottom-right (= top-left here)
        AttentionCase(1, 2, 1, length, length, 64, 64, causal=True, seed=seed),
        # a sliding window of 1024 behind each query, GQA 4:2, bfloat16, the diagonal bottom-right
        AttentionCase(1, 4, 2, length, length, 64, 64, dtype="bfloat16", window=(1024, 0), seed=seed + 1),
        # chunked prefill: the last 512 queries over the whole past, GQA 8:2, top-left too (SDPA's is_causal)
        AttentionCase(1, 8, 2, 512, length, 64, 64, causal=True, seed=seed + 2),
        AttentionCase(1, 8, 2, 512, length, 64, 64, causal=True, alignment="top_left", seed=seed + 3),
        # decode: one query over the whole past, GQA 8:1, float16
        AttentionCase(2, 8, 1, 1, length, 128, 128, dtype="float16", causal=True, seed=seed + 4),
    ]


def documents_cases(length: int) -> list[DocumentsCase]:
    """A packed sequence of ``length`` tokens mixing long and short documents (empty and
    length-1 ones included), cut inside the second long one: past K/V and a dropped prefix."""
    long_ones = (length * 7 // 16, length * 5 // 16)
    short = (1, 17, 0, 64, 129)
    rest = length - sum(long_ones) - sum(short) - 7
    documents = (long_ones[0], *short[:3], long_ones[1], *short[3:], rest)
    cut = long_ones[0] + sum(short[:3]) + long_ones[1] // 2
    return [DocumentsCase(2, 1, 64, 64, documents=documents, slack=7, boundaries=(cut,), seed=length)]


def kv_cache_cases(length: int) -> list[KVCase]:
    """A ring of 1024 slots (2 x a window of 512, ExecuTorch's RingKVCache) wrapped
    ``length / 1024`` times: a prefill of 1000, then extends of 500 (the longest that
    overwrite no key a query of theirs sees: S - w + 1 = 513), each followed by a decode
    step, and a last shorter extend. CPU lengths only: the oracle writes its caches token
    by token, for every call."""
    extends, rest = divmod(length - 1000, 501)
    schedule = (1000,) + (500, 1) * extends + ((rest,) if rest else ())
    return [KVCase(1, 4, 2, 64, "ring", capacity=1024, window=512, schedule=schedule, seed=length)]


def catalogue(family: str) -> list:
    """The long cases of ``family`` (none for a family that has no long cases yet)."""
    if family == "kv_cache":
        return [case for length in KV_LENGTHS for case in kv_cache_cases(length)]
    make = {"attention": attention_cases, "documents": documents_cases}.get(family)
    return [case for length in lengths() for case in make(length)] if make else []
