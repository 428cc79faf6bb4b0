"""flash-attn's ``flash_attn_func`` (GPU only; ``pip install flash-attn`` on a CUDA machine)."""

from __future__ import annotations

from harness.registry import Limitation, variant


@variant("attention", "flash_attn", device="cuda", requires=("flash_attn",), dtypes=("bfloat16", "float16"), limitations=[
    Limitation("flash_attn_func takes no attention mask", features={"mask:bool", "mask:additive"}),
    Limitation("flash-attn aligns the causal diagonal bottom-right only", features={"causal:top_left", "alignment:top_left"}),
])
def flash_attn(q, k, v, *, scale, causal, window, alignment, mask, softcap):
    """flash_attn.flash_attn_func, [B, L, H, D] layout, window (-1 = unbounded)."""
    from flash_attn import flash_attn_func

    left, right = window if window is not None else (None, None)
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=causal,
                          window_size=(-1 if left is None else left, -1 if right is None else right),
                          softcap=0.0 if softcap is None else softcap)
    return out.transpose(1, 2)
