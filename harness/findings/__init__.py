"""Findings: the failures of real libraries, one per distinct bug, each with its
smallest failing case and a standalone script that shows it.

``select`` decides which records are findings (real variants only, never the
harness's mutants; adapter errors apart) and groups them by signature ``(variant,
check:target, kind)``; ``scripts`` renders a finding's repro script from its family's
template and the variant's ``repro`` snippet; ``store`` writes ``findings.json`` and
``findings/<variant>-<check>-<target>.py`` into a run's folder and reads them back.

A finding whose records are all declared ``KnownFailure`` stays a finding, marked
known with the declaration's reason and version range; the report's Findings section
and ``attn-oracle findings RESULTS`` list them all.
"""

from harness.findings.store import INDEX, load, merge_into, write

__all__ = ["INDEX", "load", "merge_into", "write"]
