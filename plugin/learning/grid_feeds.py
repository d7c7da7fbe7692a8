"""The engine's feeds for a whole training grid, read once: the one data path of training.

Training windows are cut from arrays that :class:`plugin.core.feeds.FeedReader` builds for the
same grid the engine plans, so a network trains on exactly what classify feeds it (same
co-registration, resampling, scaling, normalisation and nodata handling). Only the inputs the
user gave are kept; the engine feeds absent ones as zeros with mask 0, and so does training.
"""
from dataclasses import dataclass, field, replace

import numpy as np

from ..core.errors import Cancelled
from ..core.feeds import FeedReader


@dataclass
class GridFeeds:
    grid: object
    card: object
    arrays: dict          # ONNX input name -> [C, h, w] float32, present inputs only
    mask: np.ndarray      # [M, H, W] float32, the card's mask input (all card inputs)
    present: tuple        # the card input names the user gave, in card order
    dropped: frozenset = field(default_factory=frozenset)  # input names fed as absent

    def without(self, names):
        """The same feeds with inputs ``names`` fed as absent (zeros, mask 0), as the engine
        feeds an input the user did not give; the arrays are shared, not copied."""
        return replace(self, dropped=frozenset(names))

    def ratio(self, name):
        """Input pixels per output cell for input ``name``."""
        spec = next(s for s in self.card.inputs if s.name == name)
        return self.card.cells_per_input(spec)

    def window(self, col, row, ncols, nrows):
        """{input name: [C, h, w]} and the mask [M, nrows, ncols] of an output window."""
        out = {}
        for name, arr in self.arrays.items():
            r = self.ratio(name)
            out[name] = arr[:, int(round(row * r)):int(round((row + nrows) * r)),
                            int(round(col * r)):int(round((col + ncols) * r))]
        mask = self.mask[:, row:row + nrows, col:col + ncols]
        if self.dropped:
            mask = mask.copy()
            for k, spec in enumerate(self.card.inputs):
                if spec.name in self.dropped:
                    out[spec.name] = np.zeros_like(out[spec.name])
                    mask[k] = 0
        return out, mask


def read_grid_feeds(card, inputs, grid, aoi=None, tile=256, progress=None, is_cancelled=None):
    """Read every present input over ``grid`` through the engine's FeedReader, tile by tile."""
    multiple = card.tile_multiple()
    tile = max(multiple, tile // multiple * multiple)
    present = tuple(s.name for s in card.inputs if s.modality in inputs)
    arrays = {}
    for spec in card.inputs:
        if spec.name in present:
            r = card.cells_per_input(spec)
            arrays[spec.name] = np.zeros((spec.band_count, int(round(grid.height * r)),
                                          int(round(grid.width * r))), np.float32)
    mask = np.zeros((len(card.inputs), grid.height, grid.width), np.float32)
    rows = range(0, grid.height, tile)
    cols = range(0, grid.width, tile)
    total, done = len(rows) * len(cols), 0
    with FeedReader(card, inputs, grid, aoi) as reader:
        for row in rows:
            for col in cols:
                if is_cancelled and is_cancelled():
                    raise Cancelled("Cancelled by the user; nothing was written.")
                nr, nc = min(tile, grid.height - row), min(tile, grid.width - col)
                feed, _ = reader.read(col, row, nc, nr)
                for name in present:
                    r = card.cells_per_input(next(s for s in card.inputs if s.name == name))
                    y0, x0 = int(round(row * r)), int(round(col * r))
                    a = feed[name][0]
                    arrays[name][:, y0:y0 + a.shape[1], x0:x0 + a.shape[2]] = a
                if card.mask_input:
                    mask[:, row:row + nr, col:col + nc] = feed[card.mask_input][0]
                done += 1
                if progress:
                    progress(done / total)
    return GridFeeds(grid, card, arrays, mask, present)
