"""Sentinel-2 DN -> So2Sat network input, and the original pipeline's 100 m patch grid.

Reference implementations (pure numpy) of what the original ``sen2InferenceResNet20.py`` /
``sen2_production_uil.py`` do, for the engine and the tests.  The ONNX graph itself takes the
already-scaled float32 patches: the float16 step is *not* in the graph, it is done here.

float16 step.  The original converts each band to float16, divides by 10000.0 in float16 and
copies the result into float32: ``x = float32(float16(float16(DN) / 10000))``.  float16 has 11
significant bits, so DNs above 2048 are first rounded to even values (above 4096 to multiples of
4...), and the quotient is rounded again (spacing 1.2e-4 between 0.125 and 0.25, 2.4e-4 up to
0.5).  :func:`scale_dn` reproduces it bit for bit for every uint16 DN (computed as
``float16(float32(float16(DN)) * float32(1e-4))``, which the tests show is identical).  DNs
above 65504 overflow float16 to +inf in the original too; treat them as nodata.
"""
import math

import numpy as np

PATCH = 32
HALF = PATCH // 2        # 16: the window is rows y-16 .. y+15 around the anchor pixel
STRIDE = 10              # pixels between patches (100 m at 10 m)
SCALE = np.float32(1e-4)


def scale_dn(dn):
    """float32 network input from Level-1C DNs, with the original's float16 rounding."""
    with np.errstate(over="ignore"):
        h = np.asarray(dn).astype(np.float16).astype(np.float32)
        return (h * SCALE).astype(np.float16).astype(np.float32)


def scale_exact(dn):
    """DN / 10000 in float32 without the float16 rounding (for comparison only)."""
    return (np.asarray(dn, np.float64) / 10000.0).astype(np.float32)


def grid_shape(height, width, stride=STRIDE):
    """(rows, cols) of the 100 m output grid: ceil(size / stride) per axis (the original's
    ``len(np.arange(0, size * 10, 100))``)."""
    return math.ceil(height / stride), math.ceil(width / stride)


def patch_anchor(row, col, stride=STRIDE):
    """Input pixel (y, x) on which the patch of output cell (row, col) is centred: the cell's
    upper-left corner, rounded to pixel indices (the original takes the world coordinate of the
    corner): y = 10 row, x = 10 col.  The patch covers rows y-16 .. y+15, cols x-16 .. x+15."""
    return stride * row, stride * col


def extract_patches(stack, cells=None, stride=STRIDE):
    """Patches (N, bands, 32, 32) as the original cuts them from ``stack`` (bands, H, W): the
    stack is padded by 16 pixels with numpy ``'symmetric'`` mode (edge pixel repeated) and the
    patch of cell (r, c) covers padded rows 10r .. 10r+31, cols 10c .. 10c+31.  ``cells``: an
    iterable of (row, col), default all cells of :func:`grid_shape` in row-major order."""
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"expected (bands, height, width), got {stack.shape}")
    _, h, w = stack.shape
    if cells is None:
        rows, cols = grid_shape(h, w, stride)
        cells = [(r, c) for r in range(rows) for c in range(cols)]
    padded = np.pad(stack, ((0, 0), (HALF, HALF), (HALF, HALF)), mode="symmetric")
    out = []
    for r, c in cells:
        y, x = patch_anchor(r, c, stride)   # anchor in the unpadded image = y + 16 padded
        out.append(padded[:, y:y + PATCH, x:x + PATCH])
    return np.stack(out) if out else np.zeros((0, stack.shape[0], PATCH, PATCH), stack.dtype)
