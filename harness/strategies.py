"""Hypothesis strategies for cases, and the project's Hypothesis profiles.

Strategies draw from small values first, so a failure shrinks toward the smallest
shape and the plainest masking that still fails.

Profiles: ``ci`` extends Hypothesis's own ``ci`` profile (loaded whenever ``CI`` is
set) with a small, derandomised example budget; ``dev`` is the default elsewhere;
``fuzz`` is for long sessions. ``HYPOTHESIS_PROFILE`` picks one explicitly.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from harness.families.attention import AttentionCase


def register_profiles() -> str:
    """Register the profiles and load the one this environment asks for; return its name."""
    settings.register_profile("ci", parent=settings.get_profile("ci"), max_examples=15, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("fuzz", max_examples=100_000, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    name = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    settings.load_profile(name)
    return name


def hypothesis_settings(seed=None, source: str = "given", profile: str | None = None) -> dict:
    """The profile (``profile``, else the one in force) and the seed, and where it came
    from, as the report's header shows them."""
    current = settings.get_profile(profile) if profile else settings()
    name = profile or getattr(settings, "_current_profile", None) or "default"
    if seed is not None:
        drawn = f"{seed} ({source})"
    elif current.derandomize:
        drawn = "derandomized (the same examples on every run)"
    else:
        drawn = "random per test; a failure prints its @reproduce_failure blob"
    return {"profile": f"{name} (max_examples={current.max_examples})", "seed": drawn}


@st.composite
def attention_cases(draw, dtypes=("float32", "bfloat16", "float16"), max_len: int = 80) -> AttentionCase:
    """Lq and Lk drawn independently, anywhere up to ``max_len`` or at a tile edge
    (15/16/17 ... up to ``max_len``); head dims from the sizes models ship (most not
    powers of two), Dv independently; a scale other than 1/sqrt(D); every masking."""
    from harness.edges import CUSTOM_SCALES, HEAD_DIMS, TILE_EDGE_LENGTHS

    heads_kv = draw(st.integers(1, 3))
    group = draw(st.sampled_from([1, 2, 3, 4]))
    length = st.integers(1, max_len) | st.sampled_from([n for n in TILE_EDGE_LENGTHS if n <= max_len] or [max_len])
    len_q, len_k = draw(length), draw(length)
    dims = st.sampled_from([16, 8]) | st.sampled_from(HEAD_DIMS)
    head_dim = draw(dims)
    head_dim_v = draw(st.just(head_dim) | dims)
    causal = draw(st.booleans())
    window = draw(st.none() | st.tuples(st.none() | st.integers(0, max_len), st.none() | st.integers(0, max_len)))
    mask = draw(st.sampled_from(["none", "bool", "additive"]))
    return AttentionCase(
        batch=draw(st.integers(1, 2)), heads_q=heads_kv * group, heads_kv=heads_kv, len_q=len_q, len_k=len_k,
        head_dim=head_dim, head_dim_v=head_dim_v, dtype=draw(st.sampled_from(dtypes)), causal=causal,
        alignment=draw(st.sampled_from(["bottom_right", "top_left"])), window=window,
        mask=mask, shared_mask=mask != "none" and draw(st.booleans()),
        softcap=draw(st.none() | st.sampled_from([2.5, 30.0])), scale=draw(st.none() | st.sampled_from(CUSTOM_SCALES)),
        seed=draw(st.integers(0, 2**16)),
    )


CHUNK = 16  # chunk size of chunked kernels; lengths at CHUNK - 1, CHUNK, CHUNK + 1 are drawn on purpose


@st.composite
def document_layouts(draw, max_documents: int = 5, max_micro_sequences: int = 3, max_total: int = 192):
    """(documents, slack, boundaries): empty, length-1, tile-edge (15/16/17 ... 127/128/129)
    and long documents, as many as fit in ``max_total`` tokens (the first always stays);
    micro-sequence cuts anywhere, so past K/V and first_document_begin > 0 both occur."""
    from harness.edges import TILE_EDGE_LENGTHS

    length = (st.integers(0, 6) | st.sampled_from([1, 0, CHUNK - 1, CHUNK, CHUNK + 1]) | st.integers(30, 64)
              | st.sampled_from(TILE_EDGE_LENGTHS))
    documents = draw(st.lists(length, min_size=1, max_size=max_documents))
    while len(documents) > 1 and sum(documents) > max_total:
        documents.pop()
    slack = draw(st.integers(0, 3))
    if sum(documents) + slack == 0:
        documents[-1] = 1
    total = sum(documents) + slack
    cuts = draw(st.lists(st.integers(1, max(total - 1, 1)), max_size=min(max_micro_sequences - 1, total - 1), unique=True))
    return tuple(documents), slack, tuple(sorted(c for c in cuts if 0 < c < total))


@st.composite
def documents_cases(draw, dtypes=("float32", "bfloat16", "float16"), causal=st.just(True)):
    """A layout from ``document_layouts``, head dims from the sizes models ship (Dv
    independently), a scale other than 1/sqrt(D) now and then."""
    from harness.edges import CUSTOM_SCALES, HEAD_DIMS
    from harness.families.documents import DocumentsCase

    documents, slack, boundaries = draw(document_layouts())
    heads_kv = draw(st.integers(1, 2))
    dims = st.sampled_from([16, 8, 32]) | st.sampled_from(HEAD_DIMS)
    head_dim = draw(dims)
    return DocumentsCase(heads_kv * draw(st.sampled_from([1, 2, 3])), heads_kv, head_dim,
                         draw(st.just(head_dim) | dims), documents=documents, slack=slack, boundaries=boundaries,
                         dtype=draw(st.sampled_from(dtypes)), causal=draw(causal),
                         scale=draw(st.none() | st.sampled_from(CUSTOM_SCALES)), seed=draw(st.integers(0, 2**16)))


@st.composite
def gated_delta_cases(draw, dtypes=("float32",), max_length: int = 70, budget: int = 2 ** 20):
    """Lengths and SPLIT cuts at tile edges (15/16/17 ... 127/128/129) and zero-length
    calls, K and V drawn independently from the head dims models ship (most are not
    powers of two), gate sweeps, grouped value heads, zero or random initial state, a
    scale other than 1/sqrt(K), and varlen rows with empty and tile-edge documents and
    padding. Lengths are kept to ``length * HV * K * V <= budget`` (the float64 oracle
    keeps every step's state for its backward)."""
    from harness.edges import CUSTOM_SCALES, HEAD_DIMS, TILE_EDGE_LENGTHS
    from harness.families.gated_delta import GATES, GatedDeltaCase

    heads_k = draw(st.integers(1, 2))
    heads_v = heads_k * draw(st.sampled_from([1, 2, 3]))
    dims = st.sampled_from([8, 16]) | st.sampled_from(HEAD_DIMS)
    dim_k, dim_v = draw(dims), draw(dims)
    longest = max(1, budget // (heads_v * dim_k * dim_v))
    edges = [n for n in TILE_EDGE_LENGTHS if n <= longest]
    common = dict(heads_k=heads_k, heads_v=heads_v, dim_k=dim_k, dim_v=dim_v, channel_gate=draw(st.booleans()),
                  gates=draw(st.sampled_from(GATES)), initial_state=draw(st.booleans()), l2norm=draw(st.booleans()),
                  scale=draw(st.none() | st.sampled_from(CUSTOM_SCALES)), dtype=draw(st.sampled_from(dtypes)),
                  seed=draw(st.integers(0, 2**16)))
    if draw(st.booleans()):
        length = draw(st.integers(0, min(max_length, longest)) | st.sampled_from([0, 1, 2, 3] + edges))
        split = draw(st.integers(0, max(length - 1, 0)) | st.sampled_from([0] + [n for n in edges if n < length]))
        return GatedDeltaCase(batch=draw(st.integers(1, 2)), length=length, split=split, **common)
    document = st.integers(0, min(20, longest)) | st.sampled_from([0] + [n for n in edges if n <= 65])
    documents = tuple(draw(st.lists(document, min_size=1, max_size=4)))
    padding = draw(st.integers(0, 3))
    if sum(documents) + padding == 0:
        documents = documents[:-1] + (1,)
    return GatedDeltaCase(batch=1, length=sum(documents) + padding, documents=documents, padding=padding, **common)


def _ends_a_call_at(schedule: list[int], position: int) -> list[int]:
    """``schedule`` with the call that runs across ``position`` split there, so that one
    call ends exactly at ``position`` (the schedule unchanged when one already does or none
    runs across it)."""
    cut, end = [], 0
    for length in schedule:
        cut += [position - end, end + length - position] if end < position < end + length else [length]
        end += length
    return cut


@st.composite
def kv_schedules(draw, kinds=("static", "sliding", "ring"), max_calls: int = 8):
    """(kind, capacity, window, schedule): prefills shorter and longer than the window,
    decode steps, extends (tile-edge lengths 15/16/17 among them) and empty calls; one call
    made to end exactly at w - 1, w, w + 1, w + 2, 2w or the ring's capacity (its last token
    at w - 2 ... 2w - 1); caches filled exactly; rings of 2w slots, tight ones, ones that
    calls outgrow (longer than S - w + 1, or than S) and ones smaller than the window, run
    well past their capacity."""
    from harness.edges import TILE_EDGE_LENGTHS

    kind = draw(st.sampled_from(kinds))
    window = None if kind == "static" else draw(st.integers(1, 8) | st.sampled_from([4, 16]))
    lengths = st.integers(0, 3) | st.sampled_from([1, 1, 6, 9]) | st.sampled_from(TILE_EDGE_LENGTHS[:3])
    schedule = draw(st.lists(lengths, min_size=1, max_size=max_calls))
    capacity = None
    if kind == "ring":
        capacity = max(1, draw(st.sampled_from([2 * window, window + max(schedule) - 1, window + 1, window])
                               | st.integers(1, 2 * window + 2)))
    if window is not None:
        edges = [window - 1, window, window + 1, window + 2, 2 * window] + ([capacity] if capacity else [])
        edge = draw(st.none() | st.sampled_from(edges))
        if edge:
            schedule = _ends_a_call_at(schedule, edge)
    if kind != "ring":
        capacity = sum(schedule) + draw(st.sampled_from([0, 0, 1, 5]))
    return kind, max(capacity, 1), window, tuple(schedule)


@st.composite
def kv_cases(draw, dtypes=("float32",), kinds=("static", "sliding", "ring")):
    """A schedule of ``kv_schedules``, head dims from ``harness.edges.HEAD_DIMS`` (8 first,
    so failures shrink small), a scale other than 1/sqrt(D) sometimes, grouped heads, one or
    two batch rows (rows hold different tokens; the contract gives them the same positions)."""
    from harness.edges import CUSTOM_SCALES, HEAD_DIMS
    from harness.families.kv_cache import KVCase

    kind, capacity, window, schedule = draw(kv_schedules(kinds))
    heads_kv = draw(st.integers(1, 2))
    return KVCase(draw(st.integers(1, 2)), heads_kv * draw(st.sampled_from([1, 2])), heads_kv,
                  draw(st.sampled_from((8,) + HEAD_DIMS)), kind, capacity=capacity, window=window, schedule=schedule,
                  dtype=draw(st.sampled_from(dtypes)), seed=draw(st.integers(0, 2**16)),
                  scale=draw(st.none() | st.sampled_from(CUSTOM_SCALES)))
