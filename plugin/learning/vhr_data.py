"""Real VHR scene images for the functional-zone model: manifest, split and decoded cache.

The images live outside the repository (``../shared/data/vhr_scenes``, see its README.md) and are
never committed, nor is anything cut from them. What the repository keeps is the split:
``plugin/learning/vhr_split.csv`` (``path,split``; paths relative to the data folder only).

The split is stratified by dataset and original class (hence by function class and dataset),
seeded, and keeps pixel-identical images (same JPEG bytes) in the same split.

Decoding happens once: every image is converted to RGB and reduced with PIL's box filter (the
area average that the engine's ``average`` resampling applies to a user's raster) to the sizes
training needs, cached as ``uint8`` ``.npy`` arrays ``[N, S, S, 3]`` under ``build/vhr_scenes/``,
keyed by a hash of the manifest, the split and the size.
"""
import csv
import hashlib
import json
import os
import time
from collections import defaultdict

import numpy as np

from .data import BUILD_DIR, REPO_ROOT

DEFAULT_DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "vhr_scenes"))
DATA_DIR_ENV = "URBAN_FUNCTIONS_VHR_SCENES"
SPLIT_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vhr_split.csv")
CACHE_DIR = os.path.join(BUILD_DIR, "vhr_scenes")
DATASETS = ("AID", "UCM", "RSSCN7")


def data_dir(path=None):
    return os.path.abspath(path or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def read_manifest(root):
    """Rows of ``manifest.csv`` (dicts; ``function_code`` as int), in file order."""
    path = os.path.join(root, "manifest.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: the VHR scene images are not available here "
                                f"(set {DATA_DIR_ENV} or pass --data).")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["function_code"] = int(r["function_code"])
    return rows


def _file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def make_split(rows, root, val_fraction=0.2, seed=0):
    """{path: 'train' | 'val'}: per (dataset, original class) a seeded share ``val_fraction`` of
    the images goes to validation; identical files are kept together."""
    groups = defaultdict(list)  # identical bytes -> paths
    for r in rows:
        groups[_file_digest(os.path.join(root, r["path"]))].append(r["path"])
    leader = {}
    for paths in groups.values():
        for p in paths:
            leader[p] = sorted(paths)[0]
    strata = defaultdict(list)
    for r in rows:
        if leader[r["path"]] == r["path"]:
            strata[(r["dataset"], r["original_class"])].append(r["path"])
    rng = np.random.default_rng(seed)
    split = {}
    for key in sorted(strata):
        paths = sorted(strata[key])
        order = rng.permutation(len(paths))
        n_val = int(round(val_fraction * len(paths)))
        for k, i in enumerate(order):
            split[paths[i]] = "val" if k < n_val else "train"
    for r in rows:
        split[r["path"]] = split[leader[r["path"]]]
    return split


def write_split(split, path=SPLIT_CSV):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "split"])
        for p in sorted(split):
            w.writerow([p, split[p]])
    os.replace(tmp, path)


def read_split(path=SPLIT_CSV):
    with open(path, newline="", encoding="utf-8") as f:
        return {r["path"]: r["split"] for r in csv.DictReader(f)}


def load_split(rows, root, seed=0, val_fraction=0.2, path=SPLIT_CSV, log=print):
    """The committed split when it matches the manifest, else a new one written to ``path``."""
    if os.path.isfile(path):
        split = read_split(path)
        if set(split) == {r["path"] for r in rows}:
            return split
        log(f"    {os.path.relpath(path, REPO_ROOT)} does not match the manifest: re-splitting")
    split = make_split(rows, root, val_fraction, seed)
    write_split(split, path)
    log(f"    wrote {os.path.relpath(path, REPO_ROOT)}")
    return split


def _cache_key(rows, size):
    h = hashlib.sha256()
    h.update(f"box-resize v1 {size}".encode())
    for r in rows:
        h.update(f"{r['path']},{r['width']},{r['height']}\n".encode())
    return h.hexdigest()[:12]


def decode(path, size):
    """One image as uint8 [size, size, 3], area-averaged (PIL box filter) from the original."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BOX)
        return np.asarray(im, dtype=np.uint8)


def image_cache(rows, root, size, cache_dir=CACHE_DIR, log=print):
    """uint8 [N, size, size, 3] of every manifest row (in order), decoded once and cached."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"images_{size}px_{_cache_key(rows, size)}.npy")
    if os.path.exists(path):
        return np.load(path, mmap_mode="r")
    t = time.perf_counter()
    arr = np.empty((len(rows), size, size, 3), np.uint8)
    for i, r in enumerate(rows):
        arr[i] = decode(os.path.join(root, r["path"]), size)
    tmp = path + ".tmp.npy"
    np.save(tmp, arr)
    os.replace(tmp, path)
    with open(os.path.splitext(path)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"size": size, "images": len(rows), "root": root}, f)
    log(f"    decoded {len(rows)} images to {size} px in {time.perf_counter() - t:.0f} s "
        f"({os.path.relpath(path, REPO_ROOT)})")
    return np.load(path, mmap_mode="r")
