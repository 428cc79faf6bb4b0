"""The dtypes cases may ask for, by name, and how case ids spell them."""

import torch

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
DTYPE_TOKENS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "float64": "f64"}
