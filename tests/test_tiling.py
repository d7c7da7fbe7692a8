"""Blending weights and the strip accumulator (pure numpy)."""
import numpy as np

from plugin.core.tiling import StripAccumulator, blend_weights, ramp, tile_starts


def test_tile_starts_cover_the_axis_and_end_flush():
    assert tile_starts(100, 32, 24) == [0, 24, 48, 68]
    assert tile_starts(32, 32, 24) == [0]
    assert tile_starts(20, 32, 24) == [0]
    for size in (33, 64, 65, 200):
        s = tile_starts(size, 32, 24)
        assert s[0] == 0 and s[-1] + 32 == size
        assert all(b - a <= 24 for a, b in zip(s, s[1:]))


def test_neighbouring_ramps_sum_to_one_over_the_overlap():
    overlap, tile = 8, 32
    w = ramp(tile, overlap)
    assert w.min() > 0 and w.max() == 1
    stride = tile - overlap
    total = np.zeros(stride + tile)
    total[:tile] += w
    total[stride:] += w
    assert np.allclose(total[stride:tile], 1.0), "overlap weights of two tiles sum to one"


def test_accumulator_blends_and_streams_rows():
    C, W, T, O = 3, 50, 16, 4
    acc = StripAccumulator(C, W, T)
    rows = tile_starts(40, T, T - O)
    cols = tile_starts(W, T, T - O)
    weights = blend_weights(T, T, O)
    out = np.zeros((C, 40, W), np.float32)
    for i, r in enumerate(rows):
        for c in cols:
            # every tile predicts the same smooth field: blending must reproduce it exactly
            yy, xx = np.mgrid[r:r + T, c:c + T]
            probs = np.stack([np.sin(yy / 7.0), np.cos(xx / 5.0), yy * 0 + 0.5]).astype(np.float32)
            acc.add(probs, weights, c, r, np.ones((T, T), bool))
        nxt = rows[i + 1] if i + 1 < len(rows) else 40
        first, p, valid = acc.flush_until(nxt)
        assert valid.all()
        out[:, first:nxt] = p
    yy, xx = np.mgrid[0:40, 0:W]
    assert np.allclose(out[0], np.sin(yy / 7.0), atol=1e-5)
    assert np.allclose(out[1], np.cos(xx / 5.0), atol=1e-5)
