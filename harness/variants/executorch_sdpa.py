"""ExecuTorch's C++ CPU attention ops (``pip install 'attn-oracle[executorch]'``).

Both ops take ``[B, L, H, D]`` tensors and a ``start_pos``: query row ``i`` sits at
key position ``start_pos + i``, so ``start_pos = Lk - Lq`` is bottom-right alignment.
"""

from __future__ import annotations

import torch

from harness.faults import LibraryFault
from harness.native_io import NativeLog, native_stderr_captured
from harness.registry import KnownFailure, Limitation, variant

REQUIRES = ("executorch.extension.llm.custom_ops.custom_ops",)  # importing it registers torch.ops.llama
LIMITATIONS = [
    Limitation("the op has no autograd formula", checks={"backward"}),
    Limitation("the op attends to keys [0, start_pos + Lq), so it needs Lq <= Lk", features={"lq>lk"}),
    Limitation("its causal mask is bottom-right aligned only (queries at start_pos + i)", features={"causal:top_left"}),
    Limitation("no sliding window argument", features={"window"}),
    Limitation("no logit soft-cap argument", features={"softcap"}),
    # No keys (Lk = 0) is already Lq > Lk above.
]
# Reproduced with executorch 1.5.1 (q [2, 5, 4, 24], k [2, 9, 2, 24], v [2, 9, 2, 40]): a finding.
# The adapter raises on the check the op logs, or on the tensor it hands back (see _written), so every check
# of such a case is an error with the op's own message, deterministically, not a comparison with garbage.
PER_ROW_MASK = Limitation("attn_mask is one float [Lq, Lk] mask for the whole batch and every head: it cannot take a "
                          "mask that differs per batch row", features={"mask:per_row"})
DV_NOT_DK = KnownFailure(
    "with Dv != Dk the op logs 'Check failed ... Q/K/V should have the same head size' and returns a tensor of Dk's "
    "width that it never wrote, instead of raising (executorch 1.5.1; a finding)",
    features={"dk!=dv"}, versions="executorch<=1.5.1")


# Reproduced with executorch 1.5.1 (q [2, 37, 4, 16], k, v [2, 64, 4, 16], a float [37, 64] attn_mask with a row of
# -inf): findings. custom_sdpa divides by a row sum of 0 where every key of a row is hidden; and with attn_mask and
# is_causal both set it logs "Check failed (!attn_mask.has_value() || !is_causal)" and returns its output tensor
# unwritten instead of raising (as with Dv != Dk: the ATen wrapper drops the kernel's failed check).
MASKED_ROW_NAN = KnownFailure(
    "a query row whose every key attn_mask hides comes out NaN (0 / 0), not 0 as in torch SDPA and flash-attention "
    "(executorch 1.5.1; a finding)", all_features={"mask:shared", "fully_masked_rows"},
    checks={"OUT", "FIN", "LAYOUT", "ZERO", "INV", "GUARD", "UNINIT"},  # not DET: the NaN is the same every call
    versions="executorch<=1.5.1")
MASK_WITH_CAUSAL_UNWRITTEN = KnownFailure(
    "with attn_mask and is_causal both set the op logs 'Check failed (!attn_mask.has_value() || !is_causal)' and "
    "returns an output it never wrote, instead of raising (executorch 1.5.1; a finding)",
    all_features={"mask:shared", "causal"}, versions="executorch<=1.5.1")


def _written(out: torch.Tensor, q: torch.Tensor, v: torch.Tensor, op: str, log: NativeLog) -> torch.Tensor:
    """The op's [B, Lq, Hq, Dv] output; an error where the op's kernel check failed: it
    logs the check and returns a tensor it never wrote instead of raising."""
    if log.failed_checks():
        raise LibraryFault(f"{op} returned an output it never wrote; it logged: " + " | ".join(log.failed_checks()))
    expected = (q.shape[0], q.shape[2], q.shape[1], v.shape[3])
    if tuple(out.shape) != expected:
        raise LibraryFault(f"{op} returned a tensor of shape {tuple(out.shape)} that it never wrote, not {expected} "
                           f"(its kernel check failed; it logged instead of raising)")
    return out


def _blhd(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)


def _float_mask(mask: torch.Tensor | None, hidden_after: int = 0) -> torch.Tensor | None:
    """The op's attn_mask, a float32 [Lq, Lk + hidden_after] additive mask, from the case's
    batch-wide [1, 1, Lq, Lk] one (a bool mask becomes 0 / -inf: the op takes no bool mask);
    ``hidden_after`` columns of -inf for cache slots past the keys."""
    if mask is None:
        return None
    mask = mask[0, 0]
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=torch.float32).masked_fill(~mask, float("-inf"))
    return torch.nn.functional.pad(mask.float(), (0, hidden_after), value=float("-inf"))


@variant("attention", "executorch_custom_sdpa", requires=REQUIRES, dtypes=("float32", "bfloat16", "float16"),
         limitations=LIMITATIONS + [
             PER_ROW_MASK,
             # Reproduced with executorch 1.5.1 (q [2, 0, 4, 24], k, v [2, 17, 2, 24], start_pos 17): a finding; a
             # process that dies cannot record a failure, so such a case is not run.
             Limitation("custom_sdpa kills the process with SIGFPE (an integer division by zero) on a call of 0 query "
                        "rows instead of returning an empty output or raising (executorch 1.5.1; a finding)",
                        features={"no_queries"}),
         ], known_failures=[DV_NOT_DK, MASK_WITH_CAUSAL_UNWRITTEN, MASKED_ROW_NAN], repro="""
             from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers torch.ops.llama)
             # [B, L, H, D] tensors; query row i sits at key position start_pos + i (bottom-right: Lk - Lq);
             # attn_mask: one float [Lq, Lk] additive mask for the whole batch (-inf hides a key)
             attn_mask = None
             if mask is not None:
                 attn_mask = mask[0, 0].float() if mask.dtype != torch.bool else \
                     torch.zeros(mask.shape[2:]).masked_fill(~mask[0, 0], float("-inf"))
             out = torch.ops.llama.custom_sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               k.shape[2] - q.shape[2], attn_mask, 0.0, causal, scale).transpose(1, 2)
             """)
def executorch_custom_sdpa(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """torch.ops.llama.custom_sdpa: ExecuTorch's C++ flash-style SDPA over a K/V prefix."""
    start_pos = k.shape[2] - q.shape[2]
    # The C++ kernels log 'No temp allocator provided' on every call: the log is kept only
    # for the checks the kernels report failed there.
    with native_stderr_captured() as log:
        out = torch.ops.llama.custom_sdpa(_blhd(q), _blhd(k), _blhd(v), start_pos, _float_mask(mask), 0.0, causal, scale)
    return _blhd(_written(out, q, v, "custom_sdpa", log))


@variant("attention", "executorch_sdpa_with_kv_cache", requires=REQUIRES, dtypes=("float32", "bfloat16", "float16"),
         limitations=LIMITATIONS + [PER_ROW_MASK,
                                    Limitation("sdpa_with_kv_cache aborts the process on a call of 0 query rows (ET_CHECK "
                                               "\"projected_value data is null\", op_sdpa.cpp:311 in update_cache; "
                                               "executorch 1.5.1)", features={"no_queries"})],
         known_failures=[DV_NOT_DK, MASK_WITH_CAUSAL_UNWRITTEN, MASKED_ROW_NAN], repro="""
             from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers torch.ops.llama)
             # the first Lk - Lq keys prefilled in [B, S, H, D] caches with 3 unused slots past the end
             batch, heads_kv, len_k, _ = k.shape
             len_q = q.shape[2]
             past = len_k - len_q
             k_cache = k.new_zeros(batch, len_k + 3, heads_kv, k.shape[3])
             v_cache = v.new_zeros(batch, len_k + 3, heads_kv, v.shape[3])
             k_cache[:, :past] = k.transpose(1, 2)[:, :past]
             v_cache[:, :past] = v.transpose(1, 2)[:, :past]
             attn_mask = None  # one float additive mask over every cache slot [Lq, S], for the whole batch
             if mask is not None:
                 attn_mask = mask[0, 0].float() if mask.dtype != torch.bool else \
                     torch.zeros(mask.shape[2:]).masked_fill(~mask[0, 0], float("-inf"))
                 attn_mask = torch.nn.functional.pad(attn_mask, (0, 3), value=float("-inf"))
             out = torch.ops.llama.sdpa_with_kv_cache(q.transpose(1, 2), k.transpose(1, 2)[:, past:],
                                                      v.transpose(1, 2)[:, past:], k_cache, v_cache, past, len_q,
                                                      attn_mask, 0.0, causal, scale).transpose(1, 2)
             """)
def executorch_sdpa_with_kv_cache(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """torch.ops.llama.sdpa_with_kv_cache: the first Lk - Lq keys prefilled in a cache, the last Lq written by the op."""
    batch, heads_kv, len_k, _ = k.shape
    len_q = q.shape[2]
    past = len_k - len_q
    # Unused slots past the end, which the op must not read; a mask covers every slot (the op's rule).
    capacity = len_k + 3
    k_cache = k.new_zeros(batch, capacity, heads_kv, k.shape[3])
    v_cache = v.new_zeros(batch, capacity, heads_kv, v.shape[3])
    k_cache[:, :past] = _blhd(k)[:, :past]
    v_cache[:, :past] = _blhd(v)[:, :past]
    with native_stderr_captured() as log:
        out = torch.ops.llama.sdpa_with_kv_cache(_blhd(q), _blhd(k)[:, past:], _blhd(v)[:, past:], k_cache, v_cache,
                                                 past, len_q, _float_mask(mask, capacity - len_k), 0.0, causal, scale)
    return _blhd(_written(out, q, v, "sdpa_with_kv_cache", log))
