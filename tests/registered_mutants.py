"""The deliberately broken variants of ``tests/mutants_*.py``, registered for ``--variants-from``.

The mutant modules hold plain functions, so that the tests can use them without them
ever entering the registry (the equivalence suite runs every registered variant). This
file registers a selection of them under their own names, for a user's command line
only, e.g. the fuzzing demonstration::

    attn-oracle fuzz --family kv_cache --variants-from tests/registered_mutants.py \\
        --variants window_admits_one_more --minutes 3

No test imports this file.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the mutant modules sit beside this file

import mutants_attention as attention  # noqa: E402
import mutants_documents as documents  # noqa: E402
import mutants_gated_delta as gated_delta  # noqa: E402
import mutants_kv_cache as kv_cache  # noqa: E402

from harness.registry import Variant, register  # noqa: E402

# family -> (dtypes the mutant takes, its module, the mutant names)
MUTANTS = {
    "attention": (("float32", "bfloat16", "float16"), attention,
                  ("top_left_instead_of_bottom_right", "scale_applied_twice", "gqa_heads_tiled",
                   "nan_on_fully_masked_row", "masked_keys_leak_through_finite_bias", "key_detached",
                   "reads_past_the_key_tail", "fully_masked_rows_left_unwritten", "split_order_follows_a_call_counter")),
    "documents": (("float32",), documents, ("non_canonical_cu_seqlens_k", "leaks_across_documents", "forgets_past_kv")),
    "gated_delta": (("float32",), gated_delta,
                    ("decay_after_update", "beta_dropped", "initial_state_ignored", "state_not_reset_between_documents",
                     "chunk_reads_past_the_end")),
    "kv_cache": (("float32",), kv_cache,
                 ("window_admits_one_more", "ring_wraps_early", "writes_one_slot_late", "decode_writes_swapped_rows",
                  "extend_ignores_new_keys", "reads_unwritten_slots", "nan_after_prefill", "evicts_at_the_window_edge",
                  "reads_whole_tiles_past_the_call", "accumulates_into_an_unzeroed_output")),
}

for family, (dtypes, module, names) in MUTANTS.items():
    for name in names:
        fn = getattr(module, name)
        doc = (fn.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        # source is this file, so a reproduce command's --variants-from names a file that registers
        register(Variant(family, name, fn, dtypes, description=f"mutant: {doc}".rstrip(": "), source=__file__))
