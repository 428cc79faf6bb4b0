"""ExecuTorch's Qwen3.5 ``AttentionGatedDeltaNet`` block, loaded with the case's weights.

Conventions converted (see ``harness.peer_modules``): ExecuTorch keeps W (not W-1)
inputs of conv history and only ever reads the last W-1, so the adapter reports
``conv_state[..., 1:]``.
"""

from __future__ import annotations

import torch

from harness.native_io import native_stderr_silenced
from harness.peer_modules import REQUIRES, gated_deltanet_block
from harness.registry import Limitation, variant


@variant("gdn_block", "executorch_attention_gated_deltanet", dtypes=("float32",),
         requires=REQUIRES,
         limitations=[Limitation("the block's conv width is fixed by ModelArgs; cases use 4", features={"width:2", "width:3"})])
def executorch_attention_gated_deltanet(weights, steps, *, heads_k, heads_v, dim_k, dim_v, eps):
    """executorch.examples.models.llama.attention.AttentionGatedDeltaNet, eager, its C++ gated_delta_rule op inside."""
    batch = steps[0][0].shape[0]
    block = gated_deltanet_block(weights, batch, heads_k, heads_v, dim_k, dim_v, eps)
    with torch.no_grad():
        results = []
        for x, pos in steps:
            with native_stderr_silenced():
                y, _ = block(x, None, None, input_pos=torch.tensor([pos]))
            results.append((y, block.conv_state[:batch, :, 1:].clone(), block.recurrent_state[:batch].clone()))
    return results
