"""Sizes where kernels break, shared by every family's catalogue and strategies.

Tiles of 16, 32, 64 and 128 are the usual block sizes along a sequence or a head dim;
a length one short of, equal to and one past a tile edge lands a tile's tail, a full
tile and a tile of one. Head dims that are not powers of two leave a partial tile
along the feature dim (the sizes models ship: 24 ... 256).
"""

TILES = (16, 32, 64, 128)
TILE_EDGE_LENGTHS = tuple(n for t in TILES for n in (t - 1, t, t + 1))  # 15, 16, 17, ..., 127, 128, 129
POWER_OF_TWO_HEAD_DIMS = (16, 32, 64, 128)
ODD_HEAD_DIMS = (24, 40, 48, 72, 80, 96, 100, 112, 120, 136, 192, 256)  # 256 is a power of two, and a common size
HEAD_DIMS = POWER_OF_TWO_HEAD_DIMS + ODD_HEAD_DIMS
# Scales other than 1/sqrt(D): a scale folded into q upstream, and a temperature above 1.
CUSTOM_SCALES = (0.125, 0.3, 1.0)
