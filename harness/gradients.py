"""Gradients the way every family needs them."""

from __future__ import annotations

import torch


def gradients(outputs, upstreams, leaves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backpropagate ``upstreams`` through those ``outputs`` that depend on an input and
    return ``{"d<name>": grad}`` for every leaf, on the CPU; a leaf nothing flowed to
    gets zeros (an all-slack or all-padding call has outputs that depend on no input)."""
    pairs = [(o, u) for o, u in zip(outputs, upstreams) if o.requires_grad]
    if pairs:
        torch.autograd.backward([o for o, _ in pairs], [u for _, u in pairs])
    return {f"d{n}": (t.grad if t.grad is not None else torch.zeros_like(t)).cpu() for n, t in leaves.items()}
