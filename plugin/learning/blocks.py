"""Spatial-block hold-out: whole blocks of ground are kept for validation, with a buffer.

Neighbouring cells look alike, so a random split of cells measures memory, not skill. The grid is
cut into square blocks (1 km by default); some blocks are held out and every training cell
within ``buffer_cells`` of a held-out cell is dropped, so no held-out cell lies within the
receptive field of a training cell. Pure numpy.
"""
from dataclasses import dataclass

import numpy as np

from .labels import UNLABELLED


@dataclass
class BlockSplit:
    train: np.ndarray          # [H, W] int16 labels for training (UNLABELLED elsewhere)
    validation: np.ndarray     # [H, W] int16 labels held out
    block_cells: int
    buffer_cells: int
    blocks_total: int          # blocks holding labels
    blocks_validation: int
    buffer_dropped: int        # labelled cells dropped from training by the buffer
    given: bool = False        # held-out ground given as rectangles (not drawn blocks)

    def untrained_classes(self, n_classes):
        """Indices of the classes that have no training cell."""
        counts = np.bincount(self.train[self.train != UNLABELLED].ravel().astype(np.int64),
                             minlength=n_classes)
        return [i for i in range(n_classes) if counts[i] == 0]

    def summary(self):
        return {"held_out": "given rectangles" if self.given else "drawn blocks",
                "block_cells": self.block_cells, "buffer_cells": self.buffer_cells,
                "blocks_with_labels": self.blocks_total,
                "validation_blocks": self.blocks_validation,
                "training_cells": int((self.train != UNLABELLED).sum()),
                "validation_cells": int((self.validation != UNLABELLED).sum()),
                "cells_dropped_by_buffer": self.buffer_dropped}


def split_blocks(labels, block_cells, buffer_cells, share=0.2, seed=0, n_classes=8):
    """Hold out blocks until about ``share`` of the labelled cells are in them.

    Classes are served rarest first: each gets at least one held-out block (the one with most
    of its cells among a seeded shuffle) when it occurs in two blocks or more, so every class
    that can be validated is. The rest is filled in seeded random order.
    """
    if not 0.0 < share < 1.0:
        raise ValueError("The validation share must be between 0 and 1.")
    h, w = labels.shape
    by, bx = -(-h // block_cells), -(-w // block_cells)
    labelled = labels != UNLABELLED
    # per block and class: labelled cells
    counts = np.zeros((by, bx, n_classes), np.int64)
    rows, cols = np.nonzero(labelled)
    np.add.at(counts, (rows // block_cells, cols // block_cells, labels[rows, cols]), 1)
    flat = counts.reshape(-1, n_classes)
    candidates = [int(b) for b in np.nonzero(flat.sum(axis=1))[0]]
    rng = np.random.default_rng(seed)
    order = [candidates[i] for i in rng.permutation(len(candidates))]
    total = flat.sum()
    chosen = []

    def held():
        return flat[chosen].sum() if chosen else 0

    per_class = flat.sum(axis=0)
    for k in np.argsort(per_class):
        if per_class[k] == 0 or (chosen and flat[chosen, k].sum() > 0):
            continue
        holders = [b for b in order if flat[b, k] > 0 and b not in chosen]
        if len(holders) + sum(1 for b in chosen if flat[b, k] > 0) < 2:
            continue  # the only block of this class stays in training
        if held() + flat[holders[0]].sum() > 1.5 * share * total and chosen:
            continue
        chosen.append(max(holders[:5], key=lambda b: flat[b, k]))
    for b in order:
        if held() >= share * total:
            break
        if b not in chosen:
            chosen.append(b)
    held_mask = np.zeros((by, bx), bool)
    for b in chosen:
        held_mask[b // bx, b % bx] = True
    cell_held = np.repeat(np.repeat(held_mask, block_cells, 0), block_cells, 1)[:h, :w]
    return split_held(labels, cell_held, block_cells, buffer_cells, len(candidates),
                      len(chosen))


def split_held(labels, cell_held, block_cells, buffer_cells, blocks_total, blocks_validation,
               given=False):
    """The split for a given held-out area (``cell_held`` [H, W] bool): its labels are held out
    and training cells within ``buffer_cells`` of it are dropped."""
    labelled = labels != UNLABELLED
    validation = np.where(cell_held, labels, UNLABELLED).astype(np.int16)
    near = _dilate(cell_held, buffer_cells)
    train = np.where(near, UNLABELLED, labels).astype(np.int16)
    dropped = int((labelled & near & ~cell_held).sum())
    return BlockSplit(train, validation, block_cells, buffer_cells, blocks_total,
                      blocks_validation, dropped, given)


def held_out_rectangles(split, left, top, cell):
    """The held-out blocks of ``split`` (those holding held-out labels) as ground rectangles
    (xmin, ymin, xmax, ymax) of a grid with upper-left corner (left, top) and square cells."""
    b = split.block_cells
    rows, cols = np.nonzero(split.validation != UNLABELLED)
    h, w = split.validation.shape
    out = []
    for br, bc in sorted(set(zip((rows // b).tolist(), (cols // b).tolist()))):
        r0, c0 = br * b, bc * b
        r1, c1 = min(h, r0 + b), min(w, c0 + b)
        out.append((left + c0 * cell, top - r1 * cell, left + c1 * cell, top - r0 * cell))
    return out


def cells_in_rectangles(rects, left, top, cell, height, width):
    """[H, W] bool: grid cells whose centre lies in any rectangle (grid coordinates)."""
    x = left + (np.arange(width) + 0.5) * cell
    y = top - (np.arange(height) + 0.5) * cell
    mask = np.zeros((height, width), bool)
    for xmin, ymin, xmax, ymax in rects:
        mask |= ((y >= ymin) & (y < ymax))[:, None] & ((x >= xmin) & (x < xmax))[None, :]
    return mask


def _dilate(mask, r):
    """Cells within Chebyshev distance ``r`` of a True cell (a square structuring element,
    separable: a running max along rows, then columns)."""
    if r <= 0:
        return mask.copy()
    out = mask.copy()
    for axis in (0, 1):
        m = out
        c = np.cumsum(np.concatenate([np.zeros_like(m.take([0], axis), dtype=np.int32),
                                      m.astype(np.int32)], axis=axis), axis=axis)
        n = m.shape[axis]
        lo = np.clip(np.arange(n) - r, 0, n)
        hi = np.clip(np.arange(n) + r + 1, 0, n)
        out = (c.take(hi, axis) - c.take(lo, axis)) > 0
    return out
