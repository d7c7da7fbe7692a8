"""The classic baseline every trained model is compared with: a RandomForest on per-cell values
plus simple texture, what SCP and dzetsaka users would do (scikit-learn).

Features per output cell, from the same engine feeds the network sees: for an input finer than
the cell (VHR) the mean and standard deviation of its pixels in the cell; for an input on the
cell grid (Sentinel-2) the value and the 3 x 3 mean and standard deviation around it; for a
coarser input (night light, temporal signature) the value of the pixel under the cell.
"""
import time

import numpy as np

from .labels import UNLABELLED

MAX_TRAIN_CELLS = 60_000   # per fit: more adds minutes, not accuracy, for 8 classes


def _box(x, r=1):
    """Mean over a (2r+1)^2 window per band, edges replicated. x [C, H, W]."""
    p = np.pad(x, ((0, 0), (r, r), (r, r)), mode="edge").astype(np.float64)
    c = p.cumsum(1).cumsum(2)
    c = np.pad(c, ((0, 0), (1, 0), (1, 0)))
    k = 2 * r + 1
    h, w = x.shape[1:]
    s = c[:, k:k + h, k:k + w] - c[:, :h, k:k + w] - c[:, k:k + h, :w] + c[:, :h, :w]
    return (s / (k * k)).astype(np.float32)


def cell_features(feeds):
    """[H, W, F] float32 features and their names, from a :class:`.grid_feeds.GridFeeds`."""
    h, w = feeds.grid.height, feeds.grid.width
    cols, names = [], []
    for name, arr in feeds.arrays.items():
        r = feeds.ratio(name)
        if r > 1:       # finer than the cell: pixel mean and std within the cell
            f = int(round(r))
            blocks = arr.reshape(arr.shape[0], h, f, w, f)
            cols += [blocks.mean(axis=(2, 4)), blocks.std(axis=(2, 4))]
            names += [f"{name}_b{b}_{s}" for s in ("mean", "std") for b in range(arr.shape[0])]
        elif r == 1:    # on the cell grid: value, 3x3 mean, 3x3 std
            mean = _box(arr)
            std = np.sqrt(np.maximum(_box(arr * arr) - mean * mean, 0.0))
            cols += [arr, mean, std]
            names += [f"{name}_b{b}_{s}" for s in ("value", "mean3", "std3")
                      for b in range(arr.shape[0])]
        else:           # coarser: the pixel under the cell
            f = int(round(1 / r))
            cols.append(np.repeat(np.repeat(arr, f, 1), f, 2)[:, :h, :w])
            names += [f"{name}_b{b}" for b in range(arr.shape[0])]
    cols.append(feeds.mask)   # which inputs have data, as the network sees it
    names += [f"mask_{i}" for i in range(feeds.mask.shape[0])]
    return np.concatenate(cols, axis=0).transpose(1, 2, 0), names


def fit_predict(features, train, targets, seed=0, n_estimators=200, n_jobs=-1):
    """Fit on the ``train`` labels (class indices, UNLABELLED elsewhere), predict the cells of
    ``targets`` (a bool mask). Returns (predicted class indices for those cells, info dict)."""
    from sklearn.ensemble import RandomForestClassifier
    t0 = time.perf_counter()
    rows, cols = np.nonzero(train != UNLABELLED)
    if rows.size > MAX_TRAIN_CELLS:   # a seeded class-stratified subsample
        rng = np.random.default_rng(seed)
        y = train[rows, cols]
        keep = []
        for k in np.unique(y):
            idx = np.nonzero(y == k)[0]
            n = max(1, int(round(MAX_TRAIN_CELLS * idx.size / y.size)))
            keep.append(rng.choice(idx, min(n, idx.size), replace=False))
        keep = np.sort(np.concatenate(keep))
        rows, cols = rows[keep], cols[keep]
    clf = RandomForestClassifier(n_estimators=n_estimators, min_samples_leaf=2,
                                 class_weight="balanced_subsample", random_state=seed,
                                 n_jobs=n_jobs)
    clf.fit(features[rows, cols], train[rows, cols])
    pred = clf.predict(features[targets])
    return pred.astype(np.int16), {"trees": n_estimators, "training_cells": int(rows.size),
                                   "features": int(features.shape[-1]),
                                   "seconds": round(time.perf_counter() - t0, 1)}
