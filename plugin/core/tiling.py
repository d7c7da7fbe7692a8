"""Tiles with overlap, smooth blending weights, and a strip accumulator that streams rows out.

Overlapping windows are blended with raised-cosine ramps whose weights of two neighbours sum to
one across the overlap, so tile borders leave no seams. Only one strip of tile height across the
full width is kept in memory: rows are written as soon as no later tile can touch them.
"""
import numpy as np


def tile_starts(size, tile, stride):
    """Window origins along one axis: regular steps, the last one flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return sorted(set(starts))


def ramp(length, overlap):
    """1-d weights: sin^2 ramp over ``overlap`` cells at both ends, 1 inside, never 0."""
    w = np.ones(length, np.float32)
    n = min(overlap, length // 2)
    if n > 0:
        r = np.sin(0.5 * np.pi * (np.arange(n, dtype=np.float32) + 0.5) / n) ** 2
        w[:n] = r
        w[length - n:] = r[::-1]
    return w


def blend_weights(height, width, overlap):
    return np.outer(ramp(height, overlap), ramp(width, overlap))


class StripAccumulator:
    """Weighted sum of class probabilities over a strip of rows spanning the full width."""

    def __init__(self, n_classes, width, strip_height, top=0):
        self.n_classes = n_classes
        self.width = width
        self.top = top  # grid row of the strip's first row
        self.sum = np.zeros((n_classes, strip_height, width), np.float32)
        self.weight = np.zeros((strip_height, width), np.float32)
        self.valid = np.zeros((strip_height, width), bool)

    def add(self, probs, weights, col, row, valid):
        """Add a tile's probabilities [C, h, w] at grid (col, row) with weights [h, w]."""
        h, w = weights.shape
        r = row - self.top
        if r < 0 or r + h > self.weight.shape[0]:
            raise ValueError("tile outside the current strip")
        self.sum[:, r:r + h, col:col + w] += probs * weights
        self.weight[r:r + h, col:col + w] += weights
        self.valid[r:r + h, col:col + w] |= valid

    def flush_until(self, row):
        """Return (first_row, blended probs [C, n, W], valid [n, W]) for rows < ``row`` and
        shift the strip so that it starts at ``row``."""
        n = row - self.top
        if n <= 0 or n > self.weight.shape[0]:
            raise ValueError("rows to flush must lie within the strip")
        probs = self.sum[:, :n] / np.maximum(self.weight[:n], 1e-12)
        valid = self.valid[:n] & (self.weight[:n] > 0)
        first = self.top
        for a in (self.sum, self.weight[None], self.valid[None]):
            a[:, :-n] = a[:, n:].copy()
            a[:, -n:] = 0
        self.top = row
        return first, probs, valid
