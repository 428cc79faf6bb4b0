"""Adapters for the implementations under test, one small file per source library.

Each module imports torch alone at import time; an optional library is named in
the variant's ``requires`` and imported by the registry before the first call, so a
missing extra shows up as an ``unsupported`` record with the reason, not an ImportError.
Modules whose name starts with ``_`` are helpers, not adapters.
"""
