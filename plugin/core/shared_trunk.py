"""Patch classifiers that run their convolutional trunk once per tile (card ``patch.shared_trunk``).

A patch classifier gives each output cell the class of the window of pixels around it. Windows
of neighbouring cells overlap (96 px windows every 30 px: each pixel lies in about ten of them),
so running the whole network window by window computes every pixel's features ten times, and
four times more with test-time views. A shared-trunk graph instead takes a whole tile of
windows and two pooling matrices; the trunk runs once over the tile, and each cell's window is
pooled from the shared feature map:

    pooled[c, r, q] = sum_y sum_x pool_rows[r, y] * F[c, y, x] * pool_cols[q, x]

The feature positions a window covers are ``patch_px / stride`` in each direction, starting at
``(stride_px * r) / stride``; where that start falls between two positions the samples are
interpolated linearly (as ROI Align does). For a tile of exactly one window the matrices are
uniform and the result is the network's global average pool: the same graph classifies windows
one by one, exactly as it was validated.

Modes (``inference_mode``):

* ``fast``: the trunk once per tile, one view;
* ``accurate``: the trunk once per tile for each of the card's test-time views (flips and the
  transpose of the whole tile), probabilities averaged;
* ``windows``: every window on its own with all views, as on the scene benchmark (slowest).

Near a window's border the shared features see the real neighbouring pixels instead of the
zero padding the window sees alone, so the modes do not give identical maps; the card reports
each mode's map-level accuracy measured on a georeferenced validation mosaic.
"""
import numpy as np

from .inference_modes import apply_view, check_mode


def pool_matrix(cells, stride_px, trunk_stride, positions, features, origin_px=0):
    """[cells, features] float32: row r averages the ``positions`` feature positions from
    ``(origin_px + stride_px * r) / trunk_stride`` on, interpolated linearly between positions
    (clamped to the last one)."""
    start = (origin_px + stride_px * np.arange(cells, dtype=np.float64)) / trunk_stride
    t = start[:, None] + np.arange(positions)[None, :]              # [cells, positions]
    lo = np.floor(t).astype(np.int64)
    frac = t - lo
    m = np.zeros((cells, features), np.float64)
    rows = np.repeat(np.arange(cells), positions)
    np.add.at(m, (rows, np.minimum(lo, features - 1).ravel()), ((1 - frac) / positions).ravel())
    np.add.at(m, (rows, np.minimum(lo + 1, features - 1).ravel()), (frac / positions).ravel())
    return m.astype(np.float32)


def tile_pixels(cells, stride_px, patch_px, trunk_stride):
    """Pixels a tile of ``cells`` windows needs, rounded up to whole trunk strides."""
    need = (cells - 1) * stride_px + patch_px
    return -(-need // trunk_stride) * trunk_stride


def resolve_mode(patch, requested):
    """(mode, note or None) for a card's patch spec and a requested mode (None: the card's)."""
    check_mode(requested)
    if not patch.trunk_stride:
        note = None
        if requested and requested != "windows":
            note = (f"The model has no shared-trunk graph: '{requested}' is not available, each "
                    "window is classified on its own.")
        return "windows", note
    return requested or patch.default_mode, None


def classify_tile(run, patch, x, n_rows, n_cols, views, on_view=None):
    """Probabilities [C, n_rows, n_cols] for the windows of a tile.

    ``x [B, H, W]``: the tile's pixels, window of cell (r, c) starting at pixel (stride_px * r,
    stride_px * c); at least :func:`tile_pixels` high and wide (the network gets exactly that
    many). ``run(feed) -> [1, C, h, w]``. ``on_view(k, of)`` after each view (cancel checks and
    progress)."""
    s, S, P = patch.stride_px, patch.trunk_stride, patch.patch_px
    positions = P // S
    used_h, used_w = (n_rows - 1) * s + P, (n_cols - 1) * s + P
    th, tw = tile_pixels(n_rows, s, P, S), tile_pixels(n_cols, s, P, S)
    if x.shape[-2] < th or x.shape[-1] < tw:
        raise ValueError(f"tile of {x.shape[-2]} x {x.shape[-1]} px, {th} x {tw} needed")
    x = x[..., :th, :tw]
    total = None
    for k, view in enumerate(views):
        xv = np.ascontiguousarray(apply_view(x, view))[None]
        nr, nc = (n_cols, n_rows) if view == "transpose" else (n_rows, n_cols)
        hv, wv = xv.shape[-2:]
        # a flipped tile's windows start where the unused margin ends
        oy = x.shape[-2] - used_h if view == "flip_y" else 0
        ox = x.shape[-1] - used_w if view == "flip_x" else 0
        feed = {patch.input: xv,
                patch.pool_inputs[0]: pool_matrix(nr, s, S, positions, hv // S, oy),
                patch.pool_inputs[1]: pool_matrix(nc, s, S, positions, wv // S, ox)}
        out = apply_view(run(feed)[0], view)
        total = out if total is None else total + out
        if on_view:
            on_view(k + 1, len(views))
    return total / np.float32(len(views))


def classify_windows(run, patch, windows, views):
    """Probabilities [K, C] for windows [K, B, P, P] classified one by one, averaged over
    ``views`` (one graph call for all views)."""
    positions = patch.patch_px // patch.trunk_stride
    k = windows.shape[0]
    batch = np.concatenate([np.ascontiguousarray(apply_view(windows, v)) for v in views])
    uniform = np.full((1, positions), 1.0 / positions, np.float32)
    out = run({patch.input: batch, patch.pool_inputs[0]: uniform,
               patch.pool_inputs[1]: uniform})
    probs = out.reshape(len(views), k, -1)
    return probs.sum(axis=0) * np.float32(1.0 / len(views))


class WindowGraph:
    """The patch-spec fields :func:`classify_windows` reads, for callers without a card (the
    training pipeline's checks of an exported graph)."""

    def __init__(self, input_name, patch_px, trunk_stride, pool_inputs=("pool_rows", "pool_cols")):
        self.input, self.patch_px, self.trunk_stride = input_name, patch_px, trunk_stride
        self.pool_inputs = tuple(pool_inputs)
