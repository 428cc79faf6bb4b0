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
    heads_kv = draw(st.integers(1, 3))
    group = draw(st.sampled_from([1, 2, 3, 4]))
    len_q = draw(st.integers(1, max_len))
    len_k = draw(st.integers(1, max_len))
    head_dim = draw(st.sampled_from([16, 8, 64, 100]))
    head_dim_v = draw(st.sampled_from([head_dim, 16, 24]))
    causal = draw(st.booleans())
    window = draw(st.none() | st.tuples(st.none() | st.integers(0, max_len), st.none() | st.integers(0, max_len)))
    return AttentionCase(
        batch=draw(st.integers(1, 2)), heads_q=heads_kv * group, heads_kv=heads_kv, len_q=len_q, len_k=len_k,
        head_dim=head_dim, head_dim_v=head_dim_v, dtype=draw(st.sampled_from(dtypes)), causal=causal,
        alignment=draw(st.sampled_from(["bottom_right", "top_left"])), window=window,
        mask=draw(st.sampled_from(["none", "bool", "additive"])),
        softcap=draw(st.none() | st.sampled_from([2.5, 30.0])), seed=draw(st.integers(0, 2**16)),
    )


CHUNK = 16  # chunk size of chunked kernels; lengths at CHUNK - 1, CHUNK, CHUNK + 1 are drawn on purpose


@st.composite
def document_layouts(draw, max_documents: int = 5, max_micro_sequences: int = 3):
    """(documents, slack, boundaries): empty, length-1, chunk-boundary and long documents;
    micro-sequence cuts anywhere, so past K/V and first_document_begin > 0 both occur."""
    length = st.integers(0, 6) | st.sampled_from([1, 0, CHUNK - 1, CHUNK, CHUNK + 1]) | st.integers(30, 64)
    documents = draw(st.lists(length, min_size=1, max_size=max_documents))
    slack = draw(st.integers(0, 3))
    if sum(documents) + slack == 0:
        documents[-1] = 1
    total = sum(documents) + slack
    cuts = draw(st.lists(st.integers(1, max(total - 1, 1)), max_size=min(max_micro_sequences - 1, total - 1), unique=True))
    return tuple(documents), slack, tuple(sorted(c for c in cuts if 0 < c < total))


@st.composite
def documents_cases(draw, dtypes=("float32", "bfloat16", "float16"), causal=st.just(True)):
    from harness.families.documents import DocumentsCase

    documents, slack, boundaries = draw(document_layouts())
    heads_kv = draw(st.integers(1, 2))
    head_dim = draw(st.sampled_from([16, 8, 32]))
    return DocumentsCase(heads_kv * draw(st.sampled_from([1, 2, 3])), heads_kv, head_dim,
                         draw(st.sampled_from([head_dim, 24])), documents=documents, slack=slack, boundaries=boundaries,
                         dtype=draw(st.sampled_from(dtypes)), causal=draw(causal), seed=draw(st.integers(0, 2**16)))


@st.composite
def gated_delta_cases(draw, dtypes=("float32",), max_length: int = 70):
    """Lengths around chunk sizes, Dk == Dv and Dk != Dv, gate sweeps, grouped value
    heads, zero or random initial state, and varlen rows with padding."""
    from harness.families.gated_delta import GATES, GatedDeltaCase

    heads_k = draw(st.integers(1, 2))
    dim_k = draw(st.sampled_from([8, 16]))
    common = dict(heads_k=heads_k, heads_v=heads_k * draw(st.sampled_from([1, 2, 3])), dim_k=dim_k,
                  dim_v=draw(st.sampled_from([dim_k, 12])), channel_gate=draw(st.booleans()), gates=draw(st.sampled_from(GATES)),
                  initial_state=draw(st.booleans()), l2norm=draw(st.booleans()), dtype=draw(st.sampled_from(dtypes)),
                  seed=draw(st.integers(0, 2**16)))
    if draw(st.booleans()):
        length = draw(st.integers(1, max_length) | st.sampled_from([1, 2, 3, 63, 64, 65]))
        split = draw(st.integers(0, length - 1))
        return GatedDeltaCase(batch=draw(st.integers(1, 2)), length=length, split=split, **common)
    documents = tuple(draw(st.lists(st.integers(0, 20), min_size=1, max_size=4)))
    padding = draw(st.integers(0, 3))
    if sum(documents) + padding == 0:
        documents = documents[:-1] + (1,)
    return GatedDeltaCase(batch=1, length=sum(documents) + padding, documents=documents, padding=padding, **common)


@st.composite
def kv_schedules(draw, kinds=("static", "sliding", "ring"), max_calls: int = 8):
    """(kind, capacity, window, schedule): prefills shorter and longer than the window,
    decode steps and extends, caches filled exactly, rings run well past their capacity."""
    kind = draw(st.sampled_from(kinds))
    window = None if kind == "static" else draw(st.integers(1, 8))
    schedule = draw(st.lists(st.integers(1, 3) | st.sampled_from([1, 1, 6, 9]), min_size=1, max_size=max_calls))
    if kind == "ring":
        capacity = window + max(schedule) - 1 + draw(st.sampled_from([0, 0, 1, window]))
    else:
        capacity = sum(schedule) + draw(st.sampled_from([0, 0, 1, 5]))
    return kind, capacity, window, tuple(schedule)


@st.composite
def kv_cases(draw, dtypes=("float32",), kinds=("static", "sliding", "ring")):
    from harness.families.kv_cache import KVCase

    kind, capacity, window, schedule = draw(kv_schedules(kinds))
    heads_kv = draw(st.integers(1, 2))
    return KVCase(draw(st.integers(1, 2)), heads_kv * draw(st.sampled_from([1, 2])), heads_kv,
                  draw(st.sampled_from([8, 16])), kind, capacity=capacity, window=window, schedule=schedule,
                  dtype=draw(st.sampled_from(dtypes)), seed=draw(st.integers(0, 2**16)))
