"""Float64 reference implementations (oracles). Depends on torch alone.

Each function computes in the dtype of its inputs: called on float64 tensors it is
the oracle, called on a lower-precision copy it is the same-dtype baseline that the
tolerance policy compares against (see ``harness.tolerance``).
"""

from reference.attention import attention, attention_with_grads, visibility

__all__ = ["attention", "attention_with_grads", "visibility"]
