"""Training arrays from sample cities, read through the engine's own co-registration.

Every array the network trains on comes out of :class:`plugin.core.feeds.FeedReader` for the
grid :func:`plugin.core.grid.plan_grid` plans: the same reprojection, resampling, scaling,
normalisation and nodata handling the engine applies to a user's rasters. Labels are the sample
city's ground truth warped onto that output grid with mode resampling.

Generated cities and arrays are cached under ``build/`` keyed by a hash of the generator's
source code and of the card's input specification, so stale caches are never reused.
"""
import glob
import hashlib
import json
import os
import shutil

import numpy as np
from osgeo import gdal

from ..core.feeds import FeedReader
from ..core.grid import plan_grid
from ..core.model_card import parse_card

gdal.UseExceptions()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.path.join(REPO_ROOT, "build")
IGNORE = -1  # label index of cells without ground truth


def _hash_files(paths):
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(os.path.relpath(p, REPO_ROOT).encode())
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def generator_fingerprint():
    """sha256 (12 hex digits) of the generator's code: a change invalidates cached cities."""
    src = os.path.join(REPO_ROOT, "plugin", "samplecity")
    return _hash_files(glob.glob(os.path.join(src, "**", "*.py"), recursive=True))


def get_city(seed, size_m, cache_dir=None):
    """(inputs: modality -> path, ground_truth path) of a sample city, generated once."""
    from ..samplecity import generate_sample_city
    cache_dir = cache_dir or os.path.join(BUILD_DIR, "sample_cities")
    folder = os.path.join(cache_dir, f"seed{seed}_{int(round(size_m))}m_{generator_fingerprint()}")
    marker = os.path.join(folder, "training_cache.json")
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            info = json.load(f)
        paths = list(info["inputs"].values()) + [info["ground_truth"]]
        if all(os.path.exists(p) for p in paths):
            return info["inputs"], info["ground_truth"]
    _prune(cache_dir, f"seed{seed}_{int(round(size_m))}m_")
    os.makedirs(folder)
    city = generate_sample_city(folder, seed=seed, size_m=size_m)
    info = {"seed": seed, "size_m": size_m,
            "inputs": {m: os.path.abspath(p) for m, p in city.inputs.items()},
            "ground_truth": os.path.abspath(city.ground_truth)}
    with open(marker, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    return info["inputs"], info["ground_truth"]


def _prune(folder, prefix):
    """Remove cache entries of this seed and size made by other generator versions."""
    for path in glob.glob(os.path.join(glob.escape(folder), prefix + "*")):
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif not path.startswith(os.path.join(folder, prefix + generator_fingerprint())):
            os.remove(path)


def warp_labels(gt_path, grid, card):
    """Ground truth on the output grid (mode), as class indices (card order), IGNORE = none."""
    xmin, ymin, xmax, ymax = grid.bounds
    src = gdal.Open(gt_path)
    nodata = src.GetRasterBand(1).GetNoDataValue()
    ds = gdal.Warp("", src, format="MEM", outputBounds=(xmin, ymin, xmax, ymax),
                   xRes=grid.cell, yRes=grid.cell, dstSRS=grid.crs_wkt, resampleAlg="mode",
                   srcNodata=0 if nodata is None else nodata, dstNodata=0,
                   outputType=gdal.GDT_Int16)
    codes = ds.ReadAsArray().astype(np.int16)
    labels = np.full(codes.shape, IGNORE, np.int16)
    for idx, c in enumerate(card.classes):
        labels[codes == c.code] = idx
    return labels


def read_city(card_dict, inputs, gt_path):
    """Arrays of one city: {input name: [C, h, w] float32, mask: [M, H, W], labels: [H, W]}."""
    card = parse_card(card_dict)
    grid = plan_grid(card, inputs)
    with FeedReader(card, inputs, grid) as reader:
        feed, _ = reader.read(0, 0, grid.width, grid.height)
    arrays = {name: np.ascontiguousarray(a[0]) for name, a in feed.items()}
    arrays["labels"] = warp_labels(gt_path, grid, card)
    arrays["grid"] = np.array(json.dumps({"crs_wkt": grid.crs_wkt, "left": grid.left,
                                          "top": grid.top, "cell": grid.cell,
                                          "width": grid.width, "height": grid.height}))
    return arrays


def inputs_fingerprint(card_dict):
    text = json.dumps([card_dict["inputs"], card_dict["mask_input"], card_dict["output"]["gsd_m"]],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def city_arrays(card_dict, seed, size_m, cache_dir=None, log=print):
    """Cached :func:`read_city` for sample city ``seed``."""
    cache_dir = cache_dir or os.path.join(BUILD_DIR, "training_arrays")
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"seed{seed}_{int(round(size_m))}m_{generator_fingerprint()}_"
                                   f"{inputs_fingerprint(card_dict)}.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    inputs, gt = get_city(seed, size_m)
    _prune(cache_dir, f"seed{seed}_{int(round(size_m))}m_")
    arrays = read_city(card_dict, inputs, gt)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    log(f"  city {seed}: {arrays['labels'].shape[1]} x {arrays['labels'].shape[0]} cells")
    return arrays


def band_statistics(cities, card_dict, mask_name):
    """Per-band mean/std of every input over the cells where that input is valid.

    ``cities`` were read with the stand-in card (mean 0, std 1), so these are statistics of
    ``transform(raw * scale + offset)``; pixels are weighted by their output cell's mask.
    """
    stats = {}
    for k, spec in enumerate(card_dict["inputs"]):
        name = spec["name"]
        s1 = s2 = n = 0.0
        for arr in cities:
            x = arr[name].astype(np.float64)
            m = arr[mask_name][k]
            fy = x.shape[1] / m.shape[0]
            if fy >= 1:  # finer than the output grid: repeat the cell mask
                f = int(round(fy))
                mm = np.repeat(np.repeat(m, f, 0), f, 1)
            else:  # coarser: a pixel counts if its first cell is valid
                f = int(round(1 / fy))
                mm = m[::f, ::f]
            w = mm[None].astype(np.float64)
            s1 = s1 + (x * w).sum(axis=(1, 2))
            s2 = s2 + (x * x * w).sum(axis=(1, 2))
            n += w.sum()
        mean = s1 / max(n, 1.0)
        std = np.sqrt(np.maximum(s2 / max(n, 1.0) - mean ** 2, 0.0))
        std = np.maximum(std, 1e-3)
        stats[name] = ([round(float(v), 6) for v in mean], [round(float(v), 6) for v in std])
    return stats
