"""ExecuTorch's Qwen3.5 ``AttentionGatedDeltaNet`` block, loaded with the case's weights.

Conventions converted here: ExecuTorch keeps W (not W-1) inputs of conv history and
only ever reads the last W-1, so the adapter reports ``conv_state[..., 1:]``; the
conv weight is ``[C, 1, W]`` in the module.
"""

from __future__ import annotations

import torch

from harness.native_io import native_stderr_silenced
from harness.registry import Limitation, variant

_PARAMETERS = {"in_proj_qkv": "in_proj_qkv.weight", "in_proj_z": "in_proj_z.weight", "in_proj_b": "in_proj_b.weight",
               "in_proj_a": "in_proj_a.weight", "A_log": "A_log", "dt_bias": "dt_bias", "norm": "norm.weight",
               "out_proj": "out_proj.weight"}


@variant("gdn_block", "executorch_attention_gated_deltanet", dtypes=("float32",),
         requires=("executorch.examples.models.llama.attention", "executorch.extension.llm.custom_ops.custom_ops"),
         limitations=[Limitation("the block's conv width is fixed by ModelArgs; cases use 4", features={"width:2", "width:3"})])
def executorch_attention_gated_deltanet(weights, steps, *, heads_k, heads_v, dim_k, dim_v, eps):
    """executorch.examples.models.llama.attention.AttentionGatedDeltaNet, eager, its C++ gated_delta_rule op inside."""
    from executorch.examples.models.llama.attention import AttentionGatedDeltaNet
    from executorch.examples.models.llama.model_args import ModelArgs

    hidden = weights["out_proj"].shape[0]
    batch = steps[0][0].shape[0]
    args = ModelArgs(dim=hidden, n_heads=1, head_dim=hidden, linear_conv_kernel_dim=weights["conv"].shape[1],
                     linear_key_head_dim=dim_k, linear_value_head_dim=dim_v, linear_num_key_heads=heads_k,
                     linear_num_value_heads=heads_v, norm_eps=eps, max_batch_size=batch)
    block = AttentionGatedDeltaNet(args, 0, None).eval()
    with torch.no_grad():
        params = dict(block.named_parameters())
        for name, path in _PARAMETERS.items():
            params[path].copy_(weights[name])
        params["conv1d.weight"].copy_(weights["conv"][:, None, :])
        results = []
        for x, pos in steps:
            with native_stderr_silenced():
                y, _ = block(x, None, None, input_pos=torch.tensor([pos]))
            results.append((y, block.conv_state[:batch, :, 1:].clone(), block.recurrent_state[:batch].clone()))
    return results
