"""Document and micro-sequence layouts drawn as inline SVG, for the report's failures.

A layout (``harness.layouts.DocumentLayout``: document lengths, a slack tail, the
micro-sequence cuts) is one row of token cells: a colour per document, grey hatching
for slack, a black bar at each micro-sequence cut, and the micro-sequence under test
(the last one) underlined. Everything written into the SVG is a number or a fixed
string, so nothing needs escaping.
"""

from __future__ import annotations

_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
_MAX_WIDTH = 640  # pixels for the whole row
_HEIGHT = 18


def draw(documents, slack: int = 0, boundaries=()) -> str:
    """The layout as an ``<svg>`` element (empty documents take no cells, as they hold no token)."""
    documents = [int(n) for n in documents]
    slack, cuts = int(slack), sorted(int(b) for b in boundaries)
    total = sum(documents) + slack
    if total <= 0:
        return ""
    cell = max(1.0, min(14.0, _MAX_WIDTH / total))
    width = cell * total
    parts = []
    start = 0
    for index, length in enumerate(documents):
        if length:
            parts.append(f'<rect x="{start * cell:.1f}" y="2" width="{length * cell:.1f}" height="{_HEIGHT}" '
                         f'fill="{_PALETTE[index % len(_PALETTE)]}" stroke="#fff" stroke-width="0.5">'
                         f'<title>document {index}: tokens {start}..{start + length - 1}</title></rect>')
            if length * cell >= 14:
                parts.append(f'<text x="{(start + length / 2) * cell:.1f}" y="{_HEIGHT - 2}" font-size="10" '
                             f'text-anchor="middle" fill="#fff">{index}</text>')
        start += length
    if slack:
        parts.append(f'<rect x="{start * cell:.1f}" y="2" width="{slack * cell:.1f}" height="{_HEIGHT}" '
                     f'fill="url(#slack)"><title>slack: tokens {start}..{total - 1}</title></rect>')
    for cut in cuts:
        parts.append(f'<rect x="{cut * cell - 1:.1f}" y="0" width="2" height="{_HEIGHT + 4}" fill="#000">'
                     f'<title>micro-sequence starts at {cut}</title></rect>')
    last = cuts[-1] if cuts else 0
    parts.append(f'<rect x="{last * cell:.1f}" y="{_HEIGHT + 5}" width="{(total - last) * cell:.1f}" height="3" '
                 f'fill="#c00"><title>the micro-sequence under test: tokens {last}..{total - 1}</title></rect>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="layout" width="{width + 2:.0f}" height="{_HEIGHT + 10}" '
            f'viewBox="-1 0 {width + 2:.1f} {_HEIGHT + 10}" role="img" aria-label="document layout">'
            f'{"".join(parts)}</svg>')


# The page defines the slack hatching once (ids are unique in a page); the layouts refer to it.
SLACK_PATTERN = ('<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
                 '<pattern id="slack" width="4" height="4" patternUnits="userSpaceOnUse"><rect width="4" height="4" '
                 'fill="#ddd"/><path d="M0,4 L4,0" stroke="#999"/></pattern></defs></svg>')


def draw_case(family: str, params: dict) -> str:
    """The drawing of a record's case, or "" when its family has no layout."""
    if family not in ("documents", "microsequences") or "documents" not in params:
        return ""
    return draw(params["documents"], params.get("slack", 0), params.get("boundaries", ()))
