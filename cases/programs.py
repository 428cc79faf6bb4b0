"""Program cases: reference modules over at least three calls from a fresh state."""

from harness.families.programs import ProgramCase

GRID = [
    # the Gated DeltaNet block: prefill, two continuing calls, a reset at position 0, one more
    ProgramCase("gdn_block", calls=(0, 4, 8, 0, 4), seed=0),
    # the peers' modules: ExecuTorch's AttentionMHA filling its 16-slot cache, then starting
    # over at 0; its AttentionGatedDeltaNet with a reset
    ProgramCase("executorch_attention_mha", calls=(0, 4, 8, 12, 0), seed=0),
    ProgramCase("executorch_gdn_block", calls=(0, 4, 8, 0, 4), seed=0),
]
PINNED = [
    # seed 000: static query 12, context at its min 13, an interior 40 and its max 64 (the
    # cache capacity; torch.export takes it because the layer reads the context with
    # narrow_copy: a view would make export guard on "context != 64")
    ProgramCase("seed000_attention", calls=(13, 40, 64), seed=0),
    # seed 003: static length 128, queries sliced by 64
    ProgramCase("sliced_attention", calls=(0, 1, 2), seed=0),
]
