"""ExecuTorch's C++ CPU attention ops (``pip install 'attn-oracle[executorch]'``).

Both ops take ``[B, L, H, D]`` tensors and a ``start_pos``: query row ``i`` sits at
key position ``start_pos + i``, so ``start_pos = Lk - Lq`` is bottom-right alignment.
"""

from __future__ import annotations

import torch

from harness.native_io import native_stderr_silenced
from harness.registry import Limitation, variant

REQUIRES = ("executorch.extension.llm.custom_ops.custom_ops",)  # importing it registers torch.ops.llama
LIMITATIONS = [
    Limitation("the op has no autograd formula", checks={"backward"}),
    Limitation("the op attends to keys [0, start_pos + Lq), so it needs Lq <= Lk", features={"lq>lk"}),
    Limitation("its causal mask is bottom-right aligned only (queries at start_pos + i)", features={"causal:top_left"}),
    Limitation("no sliding window argument", features={"window"}),
    Limitation("no logit soft-cap argument", features={"softcap"}),
    # Seen on 1.5.1: with Dv != Dk it logs 'Check failed ... same head size' and returns
    # an unwritten tensor instead of raising, so running it would only test garbage.
    Limitation("q, k and v must share one head size", features={"dk!=dv"}),
]


def _blhd(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)


@variant("attention", "executorch_custom_sdpa", requires=REQUIRES, dtypes=("float32", "bfloat16", "float16"),
         limitations=LIMITATIONS + [
             Limitation("attn_mask is one additive [Lq, Lk] mask for the whole batch; the cases' masks differ per batch row",
                        features={"mask:bool", "mask:additive"}),
         ])
def executorch_custom_sdpa(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """torch.ops.llama.custom_sdpa: ExecuTorch's C++ flash-style SDPA over a K/V prefix."""
    start_pos = k.shape[2] - q.shape[2]
    # The C++ kernels log 'No temp allocator provided' on every call; their results
    # are what the harness judges, so the log lines are dropped.
    with native_stderr_silenced():
        out = torch.ops.llama.custom_sdpa(_blhd(q), _blhd(k), _blhd(v), start_pos, None, 0.0, causal, scale)
    return _blhd(out)


@variant("attention", "executorch_sdpa_with_kv_cache", requires=REQUIRES, dtypes=("float32", "bfloat16", "float16"),
         limitations=LIMITATIONS + [Limitation("no attention mask is passed through the cache op here",
                                               features={"mask:bool", "mask:additive"})])
def executorch_sdpa_with_kv_cache(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """torch.ops.llama.sdpa_with_kv_cache: the first Lk - Lq keys prefilled in a cache, the last Lq written by the op."""
    batch, heads_kv, len_k, _ = k.shape
    len_q = q.shape[2]
    past = len_k - len_q
    capacity = len_k + 3  # unused slots past the end, which the op must not read
    k_cache = k.new_zeros(batch, capacity, heads_kv, k.shape[3])
    v_cache = v.new_zeros(batch, capacity, heads_kv, v.shape[3])
    k_cache[:, :past] = _blhd(k)[:, :past]
    v_cache[:, :past] = _blhd(v)[:, :past]
    with native_stderr_silenced():
        out = torch.ops.llama.sdpa_with_kv_cache(_blhd(q), _blhd(k)[:, past:], _blhd(v)[:, past:], k_cache, v_cache,
                                                 past, len_q, None, 0.0, causal, scale)
    return _blhd(out)
