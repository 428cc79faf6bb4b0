"""torch.nn.functional.scaled_dot_product_attention, one variant per backend.

Bottom-right causal alignment, windows and masks reach SDPA as one explicit mask;
``is_causal=True`` is used only where its top-left convention is what the case asks.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness.registry import Limitation, variant
from harness.variants._long import materialises_scores
from harness.variants._masks import combined_mask

NO_SOFTCAP = Limitation("torch SDPA has no logit soft-cap argument", features={"softcap"})


def _sdpa(backend, q, k, v, *, scale, causal, window, alignment, mask, softcap):
    plain_top_left = causal and alignment == "top_left" and window is None and mask is None
    attn_mask = None if plain_top_left else combined_mask(
        q.shape[-2], k.shape[-2], causal=causal, window=window, alignment=alignment, mask=mask, device=q.device, dtype=q.dtype)
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=plain_top_left, scale=scale,
                                              enable_gqa=q.shape[1] != k.shape[1])


@variant("attention", "sdpa_math", dtypes=("float32", "bfloat16", "float16", "float64"),
         limitations=[NO_SOFTCAP, materialises_scores("the math backend")],
         repro="""
             from torch.nn.attention import SDPBackend, sdpa_kernel
             with sdpa_kernel(SDPBackend.MATH):
                 out = torch.nn.functional.scaled_dot_product_attention(
                     q, k, v, attn_mask=attn_mask, is_causal=top_left_only, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
             """)
def sdpa_math(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """torch SDPA, math backend (the composite reference implementation in ATen)."""
    return _sdpa(SDPBackend.MATH, q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)


@variant("attention", "sdpa_flash_cpu", dtypes=("float32", "bfloat16", "float16", "float64"), limitations=[
    NO_SOFTCAP,
    Limitation("the flash backend requires q, k and v to have the same head dim", features={"dk!=dv"}),
], repro="""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=top_left_only, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    """)
def sdpa_flash_cpu(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """torch SDPA, the CPU flash-attention kernel, forced with sdpa_kernel."""
    return _sdpa(SDPBackend.FLASH_ATTENTION, q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)


def _gpu_backend(name: str, backend: SDPBackend, doc: str):
    def fn(q, k, v, *, scale, causal, window, alignment, mask, softcap):
        return _sdpa(backend, q, k, v, scale=scale, causal=causal, window=window, alignment=alignment, mask=mask, softcap=softcap)

    fn.__doc__ = doc
    fn.__name__ = name
    variant("attention", name, device="cuda", dtypes=("float32", "bfloat16", "float16"), limitations=[NO_SOFTCAP],
            repro=f"""
                from torch.nn.attention import SDPBackend, sdpa_kernel
                with sdpa_kernel(SDPBackend.{backend.name}):
                    out = torch.nn.functional.scaled_dot_product_attention(
                        q, k, v, attn_mask=attn_mask, is_causal=top_left_only, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
                """)(fn)


_gpu_backend("sdpa_efficient_cuda", SDPBackend.EFFICIENT_ATTENTION, "torch SDPA, memory-efficient CUDA backend.")
_gpu_backend("sdpa_flash_cuda", SDPBackend.FLASH_ATTENTION, "torch SDPA, CUDA flash-attention backend.")
_gpu_backend("sdpa_cudnn_cuda", SDPBackend.CUDNN_ATTENTION, "torch SDPA, cuDNN backend.")
