"""What produced a run: versions of torch and of each implementation under test, device."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

DISTRIBUTIONS = ("attn-oracle", "torch", "executorch", "fla-core", "triton", "transformers", "flash-attn", "hypothesis", "numpy", "pandas")


def describe() -> dict[str, str]:
    import torch

    info = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in DISTRIBUTIONS:
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = "not installed"
    info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}), no CUDA"
    info["torch threads"] = str(torch.get_num_threads())
    return info
