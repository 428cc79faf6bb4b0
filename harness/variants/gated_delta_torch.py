"""The chunked (WY-form) gated delta rule as a variant, run in the case dtype."""

from __future__ import annotations

from harness.registry import Limitation, variant
from reference.gated_delta import chunked_gated_delta_rule


@variant("gated_delta", "chunked_twin", dtypes=("float32", "bfloat16", "float16", "float64"), precision="naive", limitations=[
    Limitation("the chunked form takes one gate per head", features={"channel_gate"}),
])
def chunked_twin(q, k, v, g, beta, *, scale, initial_state, use_qk_l2norm, cu_seqlens):
    """reference.gated_delta.chunked_gated_delta_rule (chunks of 64), in the input dtype."""
    return chunked_gated_delta_rule(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                                    use_qk_l2norm=use_qk_l2norm, chunk_size=64, cu_seqlens=cu_seqlens)
