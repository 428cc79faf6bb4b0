"""Case catalogues: per family, the grid CI runs, pinned regressions, strategy choices."""

from __future__ import annotations

import importlib

_CATALOGUES = {"attention": "cases.attention", "documents": "cases.documents",
               "microsequences": "cases.microsequences", "gated_delta": "cases.gated_delta",
               "gdn_block": "cases.gdn_block", "kv_cache": "cases.kv_cache",
               "cross_cache": "cases.cross_cache", "programs": "cases.programs"}


def catalogue(family: str, regressions=None) -> list:
    """The default cases of ``family``: grid, pinned regressions, then the cases that
    ``attn-oracle fuzz`` pinned in the regressions folder (``regressions``, default
    ``harness.regressions.folder()``) not already among them."""
    if family not in _CATALOGUES:
        raise KeyError(f"unknown family {family!r}; known families: {', '.join(_CATALOGUES)}")
    from harness.regressions import cases as found_cases

    module = importlib.import_module(_CATALOGUES[family])
    listed = list(module.GRID) + list(module.PINNED)
    ids = {case.id for case in listed}
    return listed + [case for case in found_cases(family, regressions) if case.id not in ids]


def long_catalogue(family: str) -> list:
    """The ``long`` profile's cases of ``family`` (``cases/long.py``): production lengths,
    not part of the default suite; none for a family without long cases."""
    if family not in _CATALOGUES:
        raise KeyError(f"unknown family {family!r}; known families: {', '.join(_CATALOGUES)}")
    from cases import long

    return long.catalogue(family)
