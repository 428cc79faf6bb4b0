"""Which implementation actually ran: adapters say it while they run, records keep it.

A library may route one call to different code (transformers' hub dispatcher sends its
gated delta functions to fla's Triton kernels when fla is importable; an op may fall
back to a reference path). An adapter calls ``note("fla.ops.gated_delta_rule.chunk")``
for what it observed running; ``evaluate`` collects the notes of one variant on one
case into every record's ``provenance``, and the report shows them. A variant that
notes nothing is described by its registration (``Variant.description``).
"""

from __future__ import annotations

import contextlib

_ACTIVE: list[list[str]] = []


def note(text: str) -> None:
    """Record that ``text`` (an implementation, as a dotted name or a short phrase) ran."""
    if _ACTIVE and text not in _ACTIVE[-1]:
        _ACTIVE[-1].append(text)


@contextlib.contextmanager
def collected():
    """Collect the notes made while the block runs, in order, each once."""
    notes: list[str] = []
    _ACTIVE.append(notes)
    try:
        yield notes
    finally:
        _ACTIVE.pop()
