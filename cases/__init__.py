"""Case catalogues: per family, the grid CI runs, pinned regressions, strategy choices."""

from __future__ import annotations

import importlib

_CATALOGUES = {"attention": "cases.attention", "documents": "cases.documents",
               "microsequences": "cases.microsequences", "gated_delta": "cases.gated_delta",
               "gdn_block": "cases.gdn_block", "kv_cache": "cases.kv_cache",
               "cross_cache": "cases.cross_cache", "programs": "cases.programs"}


def catalogue(family: str) -> list:
    """The default cases of ``family`` (grid then pinned regressions)."""
    if family not in _CATALOGUES:
        raise KeyError(f"unknown family {family!r}; known families: {', '.join(_CATALOGUES)}")
    module = importlib.import_module(_CATALOGUES[family])
    return list(module.GRID) + list(module.PINNED)
