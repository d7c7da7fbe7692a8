"""Co-registered training scenes for :class:`~.net.UrbanFusionNet`: real VHR scene images painted
onto sample-city layouts, with simulated night-time light, Sentinel-2 and temporal signatures.

One scene is a square tile of ``cells x cells`` output cells of 10 m (default 128: 1.28 km)::

    from plugin.learning.fusion.scenes import make_scene
    s = make_scene(seed=0, split="train")
    s["vhr"]        float32 [3, 5H, 5W]   2 m RGB, digital numbers 0..255
    s["ntl"]        float32 [1, H/4, W/4] 40 m radiance, nW/cm2/sr (simulated)
    s["s2_spring"]  float32 [10, H, W]    10 m reflectance x 10000 (also summer/autumn/winter)
    s["temporal"]   float32 [12, H/4, W/4] monthly radiance Jan..Dec at 40 m, nW/cm2/sr
    s["valid"]      float32 [7, H, W]     all ones (MODALITY_ORDER; modality dropout is the
                                          training loop's job)
    s["labels"]     uint8 [H, W]          class index 0..7 (code - 1), 255 = ignore
    s["built_up"]   float32 [H, W]        share of the 2 m pixels that are roofs or paved
    s["meta"]       dict (JSON-serialisable): seeds, the scene image of every zone, NTL PSF,
                                          mis-registration, gain...

What is real and what is simulated, with every number, is in ``docs/fusion_training_data.md``.
In short:

* layout: ``samplecity.plan_city`` for a city of the tile's size, painted by
  ``samplecity.scene.paint_scene`` at 2 m (materials, classes, shadows) and looked up on the map
  grid with ``map_to_plan_index`` -- the same code the sample city is made with;
* labels: mode of the 5 x 5 class pixels of each cell; built-up: share of roof / paved materials;
* VHR: every zone (a block, one river bank, the river, or a pond) gets one REAL
  scene image of its class from the requested split of ``plugin/learning/vhr_split.csv``,
  scaled to 100-150 m, mirror-tiled over the zone with a random offset and orientation;
  streets, major roads and the railway stay as the sample-city VHR renderer draws them; zone
  edges are feathered over ``FEATHER_PX`` pixels;
* NTL: the sample city's per-(class, material) radiance table averaged to 10 m, times a scene
  gain, Gaussian PSF (FWHM 40 / 130 / 500 m), sub-pixel mis-registration of 0-2 NTL pixels,
  area average to 40 m, multiplicative + additive noise;
* S2: the sample city's Sentinel-2 renderer (``render_s2.reflectance``) on the tile's 10 m
  material fractions, four seasons, cloud-free, co-registered;
* temporal: each zone's mean radiance times a class-typical monthly pattern, at 40 m, + noise.

Deterministic per (seed, split, cells): the layout seed is derived from both, so validation
scenes never share a layout with training scenes of the same seed, and scene images come only
from the requested split. Decoded scene images are kept in a small LRU cache (``_image``).
"""
import math
import os
import time
import zlib
from collections import OrderedDict

import numpy as np

from ...core.classes import CLASS_BY_CODE
from ...samplecity import materials as M
from ...samplecity import render_ntl, render_s2
from ...samplecity.layout import (GRE, TRA, WAT, paint_block_ids, paint_overlays, plan_city)
from ...samplecity.plan_grid import map_to_plan_index
from ...samplecity.randomness import stream
from ...samplecity.render_vhr import VhrRenderer
from ...samplecity.scene import paint_scene
from ..vhr_data import SPLIT_CSV, data_dir, read_manifest, read_split

SCENES_VERSION = "1.0.0"
# The fusion network's grid factors and season names (..model; repeated here so that making
# scenes does not import torch; tests/test_fusion_scenes.py checks that they agree).
VHR_FACTOR = 5                    # 2 m pixels per 10 m cell
NTL_FACTOR = 4                    # 10 m cells per 40 m pixel
S2_SEASONS = ("s2_spring", "s2_summer", "s2_autumn", "s2_winter")
CELL_M = 10.0
VHR_GSD_M = CELL_M / VHR_FACTOR          # 2 m
NTL_GSD_M = CELL_M * NTL_FACTOR          # 40 m
N_CLASSES = 8
IGNORE = 255
MONTHS = 12
SPLITS = ("train", "val")

# --- VHR -------------------------------------------------------------------------------------
SCENE_GROUND_M = (100.0, 150.0)   # ground size one scene image is stretched to (uniform)
DECODE_PX = 80                    # images are decoded once to this size (>= 150 m / 2 m)
FEATHER_PX = 3                    # zone edges: alpha ramps from 0.5 to 1 over this many pixels
LRU_IMAGES = 4096                 # decoded images kept (80 x 80 x 3 bytes each: ~79 MB at most)

# --- built-up fraction: materials counted as built (roofs or sealed/paved surfaces) -----------
BUILT_MATERIALS = M.ROOFS + (M.ASPHALT, M.CONCRETE, M.PAINT, M.VEHICLE, M.RAIL, M.TRACK)

# --- NTL -------------------------------------------------------------------------------------
PSF_FWHM_M = (40.0, 130.0, 500.0)  # SDGSAT-1 GIU ~40 m, Luojia 1-01 ~130 m, VIIRS DNB ~500 m
MAX_SHIFT_PX = 2.0                 # mis-registration magnitude, uniform in [0, 2] NTL pixels
GAIN_RANGE = (0.7, 1.4)            # scene radiance gain (city brightness / sensor calibration)
NTL_MULT_SIGMA = render_ntl.NOISE_MULT_SIGMA    # 0.10, lognormal per pixel
NTL_ADD_SIGMA = render_ntl.NOISE_ADD_SIGMA      # 0.08 nW/cm2/sr, Gaussian per pixel

# --- temporal signature: monthly multipliers (Jan..Dec) of a zone's mean radiance, by class ----
# Invented, plausible shapes (not fitted to data); each is normalised to a mean of 1 below.
MONTHLY_PATTERN = {
    1: (1.25, 1.15, 1.00, 0.90, 0.85, 0.80, 0.80, 0.82, 0.90, 1.00, 1.15, 1.35),  # residential
    2: (1.00, 0.97, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.06, 1.20),  # commercial
    3: (0.95, 1.00, 1.00, 1.00, 1.00, 1.00, 0.95, 0.85, 1.00, 1.00, 1.00, 0.90),  # industrial
    4: (0.95, 0.95, 1.00, 1.00, 1.00, 1.05, 1.10, 1.10, 1.00, 1.00, 0.95, 1.00),  # transport
    5: (1.05, 1.05, 1.05, 1.00, 1.00, 1.00, 0.75, 0.75, 1.05, 1.05, 1.05, 0.95),  # public
    6: (0.80, 0.80, 0.90, 1.00, 1.10, 1.20, 1.25, 1.20, 1.05, 0.95, 0.85, 0.80),  # green
    7: (1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00),  # water
    8: (0.70, 0.70, 0.80, 0.90, 1.00, 1.10, 1.40, 1.60, 1.40, 1.00, 0.80, 0.70),  # agricultural
}
ZONE_AMPLITUDE = (0.5, 1.5)        # per-zone scaling of the pattern's deviation from 1
TEMPORAL_MONTH_SIGMA = 0.05        # lognormal factor per month, shared by the whole scene
TEMPORAL_MULT_SIGMA = 0.10         # lognormal per pixel and month
TEMPORAL_ADD_SIGMA = 0.08          # nW/cm2/sr, Gaussian per pixel and month
TEMPORAL_FWHM_M = 40.0             # light Gaussian blur; no mis-registration (see the docs)


# ---------------------------------------------------------------------------------------------
# scene images: split pools and an LRU cache of decoded images

_POOLS = {}
_CACHE = OrderedDict()


def class_pools(split, vhr_root=None):
    """{function code: sorted list of image paths (relative to the data folder)} of one split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    root = data_dir(vhr_root)
    key = (root, split)
    if key not in _POOLS:
        rows = read_manifest(root)
        wanted = read_split(SPLIT_CSV)
        pools = {c: [] for c in range(1, N_CLASSES + 1)}
        for r in rows:
            if wanted.get(r["path"]) == split:
                pools[r["function_code"]].append(r["path"])
        for c, paths in pools.items():
            if not paths:
                raise ValueError(f"no {split} image of class {c} in {root}")
            paths.sort()
        _POOLS[key] = pools
    return _POOLS[key]


def _image(root, path):
    """uint8 [DECODE_PX, DECODE_PX, 3] of one scene image (PIL box filter), LRU-cached."""
    key = (root, path)
    img = _CACHE.get(key)
    if img is not None:
        _CACHE.move_to_end(key)
        return img
    from PIL import Image
    with Image.open(os.path.join(root, path)) as im:
        im.draft("RGB", (DECODE_PX, DECODE_PX))   # JPEG: decode at a reduced scale when possible
        im = im.convert("RGB")
        if im.size != (DECODE_PX, DECODE_PX):
            im = im.resize((DECODE_PX, DECODE_PX), Image.BOX)
        img = np.asarray(im, dtype=np.uint8)
    _CACHE[key] = img
    if len(_CACHE) > LRU_IMAGES:
        _CACHE.popitem(last=False)
    return img


def _zone_texture(root, path, px):
    """float32 [px, px, 3]: the image resized to px pixels of 2 m (bilinear)."""
    from PIL import Image
    img = _image(root, path)
    if px != DECODE_PX:
        img = np.asarray(Image.fromarray(img).resize((px, px), Image.BILINEAR))
    return img.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# layout

def layout_seed(seed, split):
    """Seed of the sample-city plan of scene (seed, split): train and val layouts differ."""
    return zlib.crc32(f"fusion-scene/{split}/{int(seed)}".encode()) & 0x7FFFFFFF


def _block_mean(arr, k):
    h, w = arr.shape[-2] // k, arr.shape[-1] // k
    return arr.reshape(arr.shape[:-2] + (h, k, w, k)).mean(axis=(-3, -1))


def _cell_index(n_px, k):
    """Flat index of the k x k cell of every pixel of an n_px x n_px grid."""
    c = np.arange(n_px) // k
    return c[:, None] * (n_px // k) + c[None, :]


def build_layout(seed, split="train", cells=128):
    """The sample-city tile of a scene at 2 m on the map grid (dict of arrays + the plan).

    Keys: ``classes`` (codes 1..8), ``material``, ``tone``, ``relief``, ``shadow``, ``block``
    (block id + 1), ``overlay`` (class code of river / bank / pond / railway / major road, 0
    elsewhere), ``feature`` (see ``_water_features``), ``street`` (bool: minor streets, tracks
    and paths), ``plan``, ``layout_seed``.
    """
    cells = int(cells)
    if cells < 32 or cells % NTL_FACTOR:
        raise ValueError(f"cells must be a multiple of {NTL_FACTOR} and >= 32, not {cells}")
    lseed = layout_seed(seed, split)
    size_m = cells * CELL_M
    plan = plan_city(lseed, size_m)
    scene = paint_scene(plan, VHR_GSD_M)
    grid = scene.grid
    idx = map_to_plan_index(grid, plan.shear, size_m, VHR_GSD_M)
    street = np.zeros((grid.n, grid.n), bool)
    for s in plan.streets:
        rs, cs, _, _ = grid.window(s.rect)
        street[rs, cs] = True
    overlay = paint_overlays(plan, grid)
    cv = scene.canvas

    def look(a):
        return a.reshape(-1)[idx]

    return {"classes": look(scene.classes), "material": look(cv.material),
            "tone": look(cv.tone), "relief": look(cv.relief), "shadow": look(scene.shadow),
            "block": look(paint_block_ids(plan, grid)), "overlay": look(overlay),
            "feature": look(_water_features(plan, grid, overlay)), "street": look(street),
            "plan": plan, "layout_seed": lseed}


def _water_features(plan, grid, overlay):
    """Which river-side feature a plan pixel belongs to: 1 / 2 the bank on either side of the
    river, 3 the river, 4 + k pond k; 0 elsewhere (and under roads / the railway)."""
    uu, vv = grid.centres()
    r = plan.river
    along, across = (uu, vv) if r.axis == "u" else (vv, uu)
    side = across > r.centre(along)
    feat = np.zeros(overlay.shape, np.uint8)
    bank = overlay == GRE
    feat[bank] = 1 + side[bank]
    feat[overlay == WAT] = 3
    for k, p in enumerate(plan.ponds):
        rs, cs, pu, pv = grid.window(p.bbox)
        feat[rs, cs][p.inside(pu, pv) & (overlay[rs, cs] == WAT)] = 4 + k
    return feat


def _zones(lay):
    """Zone id per 2 m pixel (0 = drawn by the sample-city renderer) and the class of each zone.

    Zones are the blocks (where no network feature covers them), the two river banks, the river
    and each pond. Streets, major roads and the railway are zone 0.
    """
    block, ov, feat = lay["block"], lay["overlay"], lay["feature"]
    plan = lay["plan"]
    synthetic = (ov == TRA) | (lay["street"] & (ov == 0))
    nb = len(plan.blocks)
    zone = np.where((ov == 0) & ~synthetic, block, 0).astype(np.int32)
    zone = np.where(feat > 0, nb + feat.astype(np.int32), zone)
    zone_cls = np.zeros(nb + 4 + len(plan.ponds), np.int64)
    for b in plan.blocks:
        zone_cls[b.id + 1] = b.cls
    zone_cls[nb + 1:nb + 3] = GRE
    zone_cls[nb + 3:] = WAT
    return zone, zone_cls


def _shifted(a, axis, step, fill):
    """a moved by one pixel along axis (step +1: out[i] = a[i - 1]), the new edge filled."""
    out = np.full_like(a, fill)
    src = [slice(None)] * 2
    dst = [slice(None)] * 2
    if step > 0:
        src[axis], dst[axis] = slice(0, -1), slice(1, None)
    else:
        src[axis], dst[axis] = slice(1, None), slice(0, -1)
    out[tuple(dst)] = a[tuple(src)]
    return out


def _feather(zone):
    """(other zone, alpha of the own zone) per pixel.

    d = 4-connected steps to the nearest pixel of another zone (1 next to an edge); alpha =
    0.5 + (d - 0.5) / (2 FEATHER_PX), clipped to [0.5, 1]: both sides of an edge meet at 0.5,
    so the blend is continuous, and alpha reaches 1 FEATHER_PX pixels inside a zone.
    """
    d = np.zeros(zone.shape, np.int32)
    other = np.zeros_like(zone)
    moves = [(axis, step) for axis in (0, 1) for step in (1, -1)]
    for axis, step in moves:
        nb = _shifted(zone, axis, step, -1)
        take = (d == 0) & (nb >= 0) & (nb != zone)
        other[take] = nb[take]
        d[take] = 1
    for ring in range(2, FEATHER_PX + 1):
        new = np.zeros(zone.shape, bool)
        for axis, step in moves:
            nd = _shifted(d, axis, step, 0)
            take = (d == 0) & ~new & (nd == ring - 1) & (_shifted(zone, axis, step, -1) == zone)
            other[take] = _shifted(other, axis, step, 0)[take]
            new |= take
        d[new] = ring
    alpha = np.where(d > 0, np.clip(0.5 + (d - 0.5) / (2.0 * FEATHER_PX), 0.5, 1.0), 1.0)
    return other, alpha.astype(np.float32)


def _paint_vhr(lay, zone, zone_cls, split, root, rng, vhr_seed):
    """float32 [3, n, n] VHR and the per-zone records for meta."""
    n = zone.shape[0]
    nz = len(zone_cls)
    pools = class_pools(split, root)
    present = np.zeros(nz, bool)
    present[np.unique(zone)] = True
    # one real scene image per zone (zone 0: the renderer); draws for every zone id, present or
    # not, so the choice of one zone never depends on which others are visible
    tex = np.zeros((nz, int(SCENE_GROUND_M[1] / VHR_GSD_M) + 1,
                    int(SCENE_GROUND_M[1] / VHR_GSD_M) + 1, 3), np.float32)
    size = np.ones(nz, np.int64)
    off = np.zeros((nz, 2), np.int64)
    transpose = np.zeros(nz, bool)
    records = []
    for z in range(1, nz):
        c = int(zone_cls[z])
        path = pools[c][int(rng.integers(len(pools[c])))]
        ground = float(rng.uniform(*SCENE_GROUND_M))
        px = int(round(ground / VHR_GSD_M))
        oy, ox = (int(v) for v in rng.integers(0, 2 * px, 2))
        tr = bool(rng.random() < 0.5)
        if not present[z]:
            continue
        tex[z, :px, :px] = _zone_texture(root, path, px)
        size[z], off[z], transpose[z] = px, (oy, ox), tr
        records.append({"zone": z, "class_code": c, "class": CLASS_BY_CODE[c].key, "path": path,
                        "ground_m": round(px * VHR_GSD_M, 1), "px": px, "offset_px": [oy, ox],
                        "transpose": tr, "pixels": 0})
    counts = np.bincount(zone.ravel(), minlength=nz)
    for r in records:
        r["pixels"] = int(counts[r["zone"]])

    rows, cols = np.indices((n, n))

    def sample(z, r, c):
        """Colour of zone z's mirror-tiled texture at pixels (r, c), float32 [..., 3]."""
        p = size[z]
        ty = (r + off[z, 0]) % (2 * p)
        tx = (c + off[z, 1]) % (2 * p)
        ty = np.where(ty < p, ty, 2 * p - 1 - ty)
        tx = np.where(tx < p, tx, 2 * p - 1 - tx)
        t = transpose[z]
        return tex[z, np.where(t, tx, ty), np.where(t, ty, tx)]

    synth = VhrRenderer(vhr_seed, n, n, VHR_GSD_M).render(
        0, lay["material"], lay["tone"], lay["relief"], lay["shadow"])[..., :3]
    synth = synth.astype(np.float32)
    rgb = sample(zone, rows, cols)
    rgb[zone == 0] = synth[zone == 0]
    other, alpha = _feather(zone)
    blend = alpha < 1.0
    oz = other[blend]
    oth = sample(oz, rows[blend], cols[blend])
    oth[oz == 0] = synth[blend][oz == 0]
    a = alpha[blend][:, None]
    rgb[blend] = a * rgb[blend] + (1.0 - a) * oth
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)), records


def zone_image_pixels(record, vhr_root=None, rows=None, cols=None):
    """The colours zone ``record`` (from ``meta["vhr"]["zones"]``) puts at 2 m pixels (rows,
    cols) before feathering: float32 [k, 3]. For checks and figures."""
    root = data_dir(vhr_root)
    p = record["px"]
    t = _zone_texture(root, record["path"], p)
    ty = (np.asarray(rows) + record["offset_px"][0]) % (2 * p)
    tx = (np.asarray(cols) + record["offset_px"][1]) % (2 * p)
    ty = np.where(ty < p, ty, 2 * p - 1 - ty)
    tx = np.where(tx < p, tx, 2 * p - 1 - tx)
    if record["transpose"]:
        ty, tx = tx, ty
    return t[ty, tx]


# ---------------------------------------------------------------------------------------------
# night-time light

def emitted_radiance(lay):
    """Radiance emitted per 2 m pixel (nW/cm2/sr): the sample city's (class, material) table."""
    return render_ntl.radiance_lut()[lay["classes"], lay["material"]]


def _psf_matrix(n, sigma_px, shift_px):
    """(n, n) operator: Gaussian blur (sigma in cells) and a shift of the content by shift_px
    cells towards higher indices, edges reflected (symmetric)."""
    half = int(math.ceil(4.0 * sigma_px + abs(shift_px))) + 2
    i = np.arange(n)[:, None]
    k = np.arange(-half, half + 1)[None, :]
    j = np.floor(i - shift_px).astype(np.int64) + k         # source positions (virtual)
    w = np.exp(-0.5 * ((i - shift_px - j) / max(sigma_px, 1e-3)) ** 2)
    period = 2 * n
    jj = np.mod(j, period)
    jj = np.where(jj < n, jj, period - 1 - jj)               # symmetric reflection
    out = np.zeros((n, n), np.float64)
    np.add.at(out, (np.broadcast_to(i, jj.shape), jj), w)
    return out / out.sum(axis=1, keepdims=True)


def simulate_ntl(radiance_10m, fwhm_m, shift_px, rng=None, gain=1.0):
    """40 m NTL float32 [H/4, W/4] from 10 m radiance: gain, Gaussian PSF (FWHM in metres),
    mis-registration by shift_px = (east, south) in 40 m pixels, 4 x 4 area average, noise
    (none when rng is None)."""
    h, w = radiance_10m.shape
    sigma = fwhm_m / 2.3548 / CELL_M
    dx, dy = (float(v) * NTL_FACTOR for v in shift_px)
    img = _psf_matrix(h, sigma, dy) @ (gain * radiance_10m.astype(np.float64)) \
        @ _psf_matrix(w, sigma, dx).T
    out = _block_mean(img, NTL_FACTOR)
    if rng is not None:
        out = out * np.exp(rng.normal(0.0, NTL_MULT_SIGMA, out.shape)) \
            + rng.normal(0.0, NTL_ADD_SIGMA, out.shape)
        out = np.maximum(out, 0.0)
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# temporal signature

def monthly_patterns():
    """(9, 12) multipliers per class code (row 0 unused), each with a mean of 1."""
    p = np.ones((N_CLASSES + 1, MONTHS))
    for c, v in MONTHLY_PATTERN.items():
        p[c] = np.asarray(v) / np.mean(v)
    return p


def _temporal(lay, rad2, zone, zone_cls, rng):
    n = rad2.shape[0]
    cls = lay["classes"].astype(np.int64)
    # zones for activity: the VHR zones, with the renderer's pixels (streets, roads, railway)
    # grouped by class so that each is a zone of its own
    zk = np.where(zone > 0, zone, len(zone_cls) + cls)
    nzk = len(zone_cls) + N_CLASSES + 1
    cnt = np.bincount(zk.ravel(), minlength=nzk)
    zmean = np.bincount(zk.ravel(), weights=rad2.ravel(), minlength=nzk) / np.maximum(cnt, 1)
    amp = rng.uniform(*ZONE_AMPLITUDE, nzk)
    base = zmean[zk]
    k = VHR_FACTOR * NTL_FACTOR                              # 2 m pixels per 40 m pixel
    ncell = (n // k) ** 2
    key = (_cell_index(n, k) * (N_CLASSES + 1) + cls).ravel()
    a = np.bincount(key, weights=base.ravel(), minlength=ncell * (N_CLASSES + 1))
    b = np.bincount(key, weights=(base * amp[zk]).ravel(), minlength=ncell * (N_CLASSES + 1))
    a = a.reshape(ncell, -1) / (k * k)
    b = b.reshape(ncell, -1) / (k * k)
    dev = monthly_patterns() - 1.0
    series = a.sum(axis=1)[:, None] + b @ dev               # (cells, 12)
    m = n // k
    series = series.T.reshape(MONTHS, m, m)
    sigma = TEMPORAL_FWHM_M / 2.3548 / NTL_GSD_M
    g = _psf_matrix(m, sigma, 0.0)
    series = np.einsum("ij,tjk,lk->til", g, series, g)
    series = series * np.exp(rng.normal(0.0, TEMPORAL_MONTH_SIGMA, (MONTHS, 1, 1)))
    series = series * np.exp(rng.normal(0.0, TEMPORAL_MULT_SIGMA, series.shape)) \
        + rng.normal(0.0, TEMPORAL_ADD_SIGMA, series.shape)
    return np.maximum(series, 0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Sentinel-2 and per-cell targets

def _cell_fractions(values, n_values, n, k):
    """(n_values, n/k, n/k) share of each value among the k x k pixels of every cell."""
    m = n // k
    key = (values.astype(np.int64) * (m * m) + _cell_index(n, k)).ravel()
    c = np.bincount(key, minlength=n_values * m * m).reshape(n_values, m, m)
    return c.astype(np.float32) / (k * k)


def _s2(lay, lseed):
    n = lay["material"].shape[0]
    fractions = _cell_fractions(lay["material"], M.COUNT, n, VHR_FACTOR)
    shadow = _cell_fractions(lay["shadow"].astype(np.uint8), 2, n, VHR_FACTOR)[1]
    valid = np.ones(shadow.shape, bool)
    out = {}
    for season in render_s2.SEASONS:
        refl = render_s2.reflectance(season, fractions, shadow, valid, lseed, f"fusion-{season}")
        out[f"s2_{season}"] = np.clip(refl * 10000.0, 0.0, 65535.0).astype(np.float32)
    return out


def _labels(classes, n):
    frac = _cell_fractions(classes, N_CLASSES + 1, n, VHR_FACTOR)
    code = frac.argmax(axis=0)
    labels = np.where(code > 0, code - 1, IGNORE).astype(np.uint8)
    return labels


# ---------------------------------------------------------------------------------------------

def make_scene(seed, split="train", cells=128, vhr_root=None, ntl_fwhm_m=None, ntl_shift_px=None,
               debug=False):
    """One co-registered training scene (see the module docstring for keys, shapes and units).

    ``ntl_fwhm_m`` / ``ntl_shift_px`` (east, south in 40 m pixels) override the random PSF and
    mis-registration (e.g. an evaluation without mis-registration); the random draws are made
    either way, so the rest of the scene does not change. ``debug=True`` adds ``"debug"``: the
    2 m zone map, the 2 m emitted radiance and its 10 m mean (noise-free, unblurred).
    """
    t0 = time.perf_counter()
    root = data_dir(vhr_root)
    cells = int(cells)
    lay = build_layout(seed, split, cells)
    lseed = lay["layout_seed"]
    n = cells * VHR_FACTOR
    classes = lay["classes"]

    labels = _labels(classes, n)
    built = np.isin(lay["material"], BUILT_MATERIALS)
    built_up = _block_mean(built.astype(np.float32), VHR_FACTOR).astype(np.float32)

    zone, zone_cls = _zones(lay)
    vhr, zone_records = _paint_vhr(lay, zone, zone_cls, split, root,
                                   stream(lseed, "fusion-vhr", split), lseed)

    rng = stream(lseed, "fusion-ntl")
    fwhm = float(PSF_FWHM_M[int(rng.integers(len(PSF_FWHM_M)))])
    mag = float(rng.uniform(0.0, MAX_SHIFT_PX))
    ang = float(rng.uniform(0.0, 2 * math.pi))
    shift = (mag * math.cos(ang), mag * math.sin(ang))        # (east, south) NTL pixels
    gain = float(rng.uniform(*GAIN_RANGE))
    if ntl_fwhm_m is not None:
        fwhm = float(ntl_fwhm_m)
    if ntl_shift_px is not None:
        shift = (float(ntl_shift_px[0]), float(ntl_shift_px[1]))
    rad2 = emitted_radiance(lay)
    rad10 = _block_mean(rad2, VHR_FACTOR)
    ntl = simulate_ntl(rad10, fwhm, shift, rng, gain)

    temporal = _temporal(lay, gain * rad2, zone, zone_cls, stream(lseed, "fusion-temporal"))
    s2 = _s2(lay, lseed)

    out = {"vhr": vhr, "ntl": ntl[None]}
    out.update(s2)
    out["temporal"] = temporal
    out["valid"] = np.ones((7, cells, cells), np.float32)
    out["labels"] = labels
    out["built_up"] = built_up
    paths = sorted({r["path"] for r in zone_records})
    out["meta"] = {
        "version": SCENES_VERSION, "seed": int(seed), "split": split, "cells": cells,
        "layout_seed": int(lseed), "vhr_root": root,
        "vhr": {"gsd_m": VHR_GSD_M, "units": "digital numbers 0..255 (float32)",
                "zones": zone_records, "paths": paths, "feather_px": FEATHER_PX,
                "renderer_pixels": int((zone == 0).sum()),
                "renderer": "streets, major roads, railway: sample-city VHR renderer"},
        "ntl": {"gsd_m": NTL_GSD_M, "units": "nW/cm2/sr (simulated)", "psf_fwhm_m": fwhm,
                "shift_px": [round(shift[0], 4), round(shift[1], 4)],
                "shift_m": {"east": round(shift[0] * NTL_GSD_M, 2),
                            "north": round(-shift[1] * NTL_GSD_M, 2)},
                "gain": round(gain, 4),
                "noise": {"mult_lognormal_sigma": NTL_MULT_SIGMA, "add_sigma": NTL_ADD_SIGMA}},
        "s2": {"units": "reflectance x 10000 (float32)", "bands": list(render_s2.BANDS),
               "seasons": list(S2_SEASONS), "clouds": "none"},
        "temporal": {"gsd_m": NTL_GSD_M, "months": "Jan..Dec", "units": "nW/cm2/sr (simulated)"},
        "class_shares": {CLASS_BY_CODE[c].key: round(float((labels == c - 1).mean()), 4)
                         for c in range(1, N_CLASSES + 1)},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if debug:
        out["debug"] = {"zone": zone, "zone_class": zone_cls, "radiance_2m": rad2,
                        "radiance_10m": rad10.astype(np.float32), "classes_2m": classes}
    return out


def iter_scenes(seeds, split="train", cells=128, vhr_root=None, **kwargs):
    """make_scene for each seed in turn (a generator)."""
    for s in seeds:
        yield make_scene(s, split=split, cells=cells, vhr_root=vhr_root, **kwargs)
