"""attn-oracle: float64 oracles and a numerical-equivalence harness.

The Python API (``harness.api``), imported on first use so that ``import harness``
(the pytest plugin's parent) stays light::

    import harness
    frame = harness.check(my_attention, "attention")
    harness.assert_equivalent(my_attention, "attention")
"""

__all__ = ["check", "assert_equivalent"]


def __getattr__(name):
    if name in __all__:
        from harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
