"""Where an oracle runs: on the variant's GPU when it runs on one, else on the CPU.

Inputs are made on the CPU (seeded CPU generators, the same values everywhere), moved
to the oracle's device for the float64 computation, and the oracle's results come
back to the CPU, where the checks compare them with the variant's. Float64 on a CUDA
device is exact IEEE arithmetic as on the CPU; other accelerators (MPS has no float64)
leave the oracle on the CPU.
"""

from __future__ import annotations

import dataclasses

import torch


def oracle_device(variant_device: str | torch.device | None) -> torch.device:
    """The device the oracle of a variant on ``variant_device`` runs on: that device when
    it is a CUDA device and CUDA is available here, else the CPU."""
    device = torch.device(variant_device or "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return device
    return torch.device("cpu")


def moved(value, device: torch.device | str):
    """``value`` with every tensor in it (dicts, lists, tuples and dataclasses, nested) on
    ``device``; anything else as it is. A tensor already there is not copied."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: moved(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(moved(item, device) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: moved(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value) if f.init})
    return value
