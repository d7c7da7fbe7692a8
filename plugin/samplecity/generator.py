"""Generate a complete sample city: ground truth + six co-registered (but differently gridded)
input modalities + a JSON description, in one folder.

Pipeline: plan (vector) -> fine scene in the plan frame (materials, heights, shadows) -> one
pass over the VHR map grid in row chunks that writes the VHR and accumulates what Sentinel-2
(material fractions) and night-time light (radiance) need -> S2 and NTL are warped with GDAL
onto their own CRS/grids -> ground truth sampled at 5 m.
"""
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, osr

from ..core.classes import FUNCTION_CLASSES, NODATA_CODE
from ..core.model_card import MODALITIES

# what a sample city provides (no temporal signature)
SAMPLE_MODALITIES = tuple(m for m in MODALITIES if m != "temporal")
from . import materials as M
from . import render_ntl, render_s2
from .frame import CITY_EPSG, CITY_SOUTH, CITY_WEST, Grid, city_grid
from .layout import plan_city, to_map
from .plan_grid import map_to_plan_index
from .render_vhr import BANDS as VHR_BANDS
from .render_vhr import VhrRenderer, nodata_wedge
from .scene import paint_scene
from .writer import GeoTiffWriter, srs_from_epsg, write_array, write_class_raster

GENERATOR_VERSION = "1.0.0"
METADATA_FILE = "sample_city.json"
FILES = {
    "ground_truth": "ground_truth.tif",
    "vhr": "vhr.tif",
    "ntl": "ntl.tif",
    "s2_spring": "s2_spring.tif",
    "s2_summer": "s2_summer.tif",
    "s2_autumn": "s2_autumn.tif",
    "s2_winter": "s2_winter.tif",
}
GT_GSD_M = 5.0
S2_GSD_M = 10.0
VHR_EPSG = 25833            # ETRS89 / UTM 33N, as national orthophotos come
S2_AUTUMN_EPSG = 3035       # ETRS89 / LAEA Europe, as pan-European mosaics come
NTL_EPSG = 4326
WINTER_OFFSET_M = 5.0       # winter scene's grid is offset by half a pixel
WEDGE_FRACTION = 0.12       # VHR no-data triangle legs, share of the image side
S2_WORK_GSD_M = 2.4         # material fractions are accumulated on about this cell size
NTL_WORK_GSD_M = 10.0


@dataclass(frozen=True)
class SampleCity:
    seed: int
    out_dir: str
    ground_truth: str
    vhr: str
    ntl: str
    s2_spring: str
    s2_summer: str
    s2_autumn: str
    s2_winter: str

    @property
    def inputs(self):
        """Modality key -> raster path, for the six inputs a sample city has."""
        return {m: getattr(self, m) for m in SAMPLE_MODALITIES}

    @property
    def metadata(self):
        return os.path.join(self.out_dir, METADATA_FILE)

    @staticmethod
    def in_folder(out_dir, seed):
        out_dir = os.path.abspath(out_dir)
        return SampleCity(seed, out_dir, **{k: os.path.join(out_dir, f) for k, f in FILES.items()})


def code_fingerprint():
    """Hash of this package's source: a city made by other code is not reused."""
    h = hashlib.sha256()
    folder = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            h.update(name.encode())
            with open(os.path.join(folder, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def _params(seed, size_m, vhr_gsd_m, ntl_gsd_deg):
    return {"seed": int(seed), "size_m": float(size_m), "vhr_gsd_m": float(vhr_gsd_m),
            "ntl_gsd_deg": float(ntl_gsd_deg)}


def load_existing(out_dir, seed=0, size_m=2400.0, vhr_gsd_m=0.8, ntl_gsd_deg=0.001):
    """The city already in out_dir if it is complete and made by this code with these params."""
    path = os.path.join(out_dir, METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if meta.get("version") != GENERATOR_VERSION or meta.get("code") != code_fingerprint() or \
            meta.get("params") != _params(seed, size_m, vhr_gsd_m, ntl_gsd_deg):
        return None
    city = SampleCity.in_folder(out_dir, seed)
    if not all(os.path.isfile(getattr(city, k)) for k in FILES):
        return None
    return city


# ---------------------------------------------------------------------------------------------
# grids

def _transform(src_epsg, dst_epsg):
    return osr.CoordinateTransformation(srs_from_epsg(src_epsg), srs_from_epsg(dst_epsg))


def _outline(west, south, east, north, n=16):
    """Points along a rectangle's edges (densified: edges curve in other projections)."""
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([west + (east - west) * t, np.full(n, east),
                         east - (east - west) * t, np.full(n, west)])
    ys = np.concatenate([np.full(n, south), south + (north - south) * t,
                         np.full(n, north), north - (north - south) * t])
    return np.stack([xs, ys], 1)


def _grid_around(points, epsg, res):
    """Smallest grid aligned to multiples of res that covers the points."""
    west = math.floor(points[:, 0].min() / res) * res
    east = math.ceil(points[:, 0].max() / res) * res
    south = math.floor(points[:, 1].min() / res) * res
    north = math.ceil(points[:, 1].max() / res) * res
    w, h = int(round((east - west) / res)), int(round((north - south) / res))
    return Grid(epsg, (west, res, 0.0, north, 0.0, -res), w, h)


def _reproject(points, src_epsg, dst_epsg):
    tr = _transform(src_epsg, dst_epsg)
    return np.array([tr.TransformPoint(float(x), float(y))[:2] for x, y in points])


def _vhr_grid(size_m, gsd_m):
    """The VHR grid: the fine map grid, labelled EPSG:25833 (ETRS89 / UTM 33N).

    ETRS89 and WGS 84 coordinates differ by well under a metre here and PROJ's default
    transformation between them is the identity, so the same numbers are used: the result does
    not depend on which PROJ transformation grids an installation has.
    """
    n = int(math.ceil(size_m / gsd_m - 1e-9))
    return Grid(VHR_EPSG, (CITY_WEST, gsd_m, 0.0, CITY_SOUTH + size_m, 0.0, -gsd_m), n, n)


def _mem_dataset(array, geotransform, epsg, nodata=None):
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    gtype = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.float32): gdal.GDT_Float32}[array.dtype]
    ds = gdal.GetDriverByName("MEM").Create("", array.shape[2], array.shape[1], array.shape[0],
                                            gtype)
    ds.SetGeoTransform(list(geotransform))
    ds.SetProjection(srs_from_epsg(epsg).ExportToWkt())
    for i in range(array.shape[0]):
        b = ds.GetRasterBand(i + 1)
        if nodata is not None:
            b.SetNoDataValue(nodata)
        b.WriteArray(array[i])
    return ds


def _warp_average(src, grid, src_nodata=None, dst_nodata=-1.0):
    left, bottom, right, top = grid.bounds
    out = gdal.Warp("", src, format="MEM", dstSRS=srs_from_epsg(grid.epsg).ExportToWkt(),
                    outputBounds=(left, bottom, right, top), width=grid.width,
                    height=grid.height, resampleAlg="average", outputType=gdal.GDT_Float32,
                    srcNodata=src_nodata, dstNodata=dst_nodata, multithread=False)
    if out is None:
        raise RuntimeError(f"GDAL warp failed: {gdal.GetLastErrorMsg()}")
    arr = out.ReadAsArray().astype(np.float32)
    return arr if arr.ndim == 3 else arr[None]


# ---------------------------------------------------------------------------------------------

def generate_sample_city(out_dir, seed=0, size_m=2400.0, vhr_gsd_m=0.8, ntl_gsd_deg=0.001,
                         force=False, progress=None):
    """Write a synthetic city into out_dir and return its paths (``SampleCity``).

    Deterministic: the same seed and parameters give identical pixels.  When out_dir already
    holds a complete city for the same seed/parameters/version it is returned as is (unless
    force=True).  ``progress(fraction, message)`` is called along the way if given.
    """
    def report(f, msg):
        if progress is not None:
            progress(f, msg)

    params = _params(seed, size_m, vhr_gsd_m, ntl_gsd_deg)
    if not force:
        existing = load_existing(out_dir, seed, size_m, vhr_gsd_m, ntl_gsd_deg)
        if existing is not None:
            report(1.0, "sample city already present")
            return existing
    if vhr_gsd_m <= 0 or vhr_gsd_m > 5 or size_m < 300 or ntl_gsd_deg <= 0:
        raise ValueError("need size_m >= 300, 0 < vhr_gsd_m <= 5 and ntl_gsd_deg > 0")
    t_start = time.time()
    os.makedirs(out_dir, exist_ok=True)
    city = SampleCity.in_folder(out_dir, seed)
    # An older metadata file must not vouch for the files we are about to replace.
    if os.path.exists(city.metadata):
        os.remove(city.metadata)

    report(0.02, "planning the city")
    plan = plan_city(seed, size_m)
    report(0.08, "painting the scene")
    scene = paint_scene(plan, vhr_gsd_m)

    report(0.3, "rendering VHR")
    acc = _map_pass(scene, city.vhr, vhr_gsd_m, seed)

    report(0.75, "rendering Sentinel-2")
    s2_info = _write_s2(city, acc, size_m, seed)
    report(0.9, "rendering night-time light")
    ntl_info = _write_ntl(city, acc, size_m, seed, ntl_gsd_deg)

    report(0.95, "writing ground truth")
    gt_grid = city_grid(size_m, GT_GSD_M)
    gt = to_map(plan, scene.grid, scene.classes, GT_GSD_M)
    write_class_raster(city.ground_truth, gt_grid, gt, FUNCTION_CLASSES, NODATA_CODE)
    shares = np.bincount(gt.ravel(), minlength=9) / gt.size

    meta = _metadata(city, params, plan, acc, s2_info, ntl_info, gt_grid, shares,
                     time.time() - t_start)
    tmp = os.path.join(city.out_dir, f".{METADATA_FILE}.part-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, city.metadata)
    report(1.0, "done")
    return city


@dataclass
class _Accumulated:
    vhr_grid: Grid
    wedge_legs_px: tuple
    k_s2: int
    counts: np.ndarray       # uint8 (bands, rows, cols): materials 1.., shadowed, all pixels
    s2_work_gt: tuple        # geotransform (EPSG:32633) of the counts grid
    ntl_sum: np.ndarray
    ntl_count: np.ndarray
    ntl_cell_m: float


def _map_pass(scene, vhr_path, gsd, seed):
    """Render the VHR chunk by chunk; accumulate S2 material fractions and NTL radiance."""
    plan = scene.plan
    S = plan.size_m
    vhr_grid = _vhr_grid(S, gsd)
    H = W = vhr_grid.width
    k_s2 = int(min(15, max(1, round(S2_WORK_GSD_M / gsd))))
    k_ntl = k_s2 * max(1, int(round(NTL_WORK_GSD_M / (gsd * k_s2))))
    chunk = k_ntl * max(1, 768 // k_ntl)
    hc, wc = -(-H // k_s2), -(-W // k_s2)
    hn, wn = -(-H // k_ntl), -(-W // k_ntl)
    nm = M.COUNT - 1
    counts = np.zeros((nm + 2, hc, wc), np.uint8)
    ntl_sum = np.zeros(hn * wn, np.float64)
    ntl_cnt = np.zeros(hn * wn, np.float64)
    lut = render_ntl.radiance_lut()
    renderer = VhrRenderer(seed, H, W, gsd)
    legs, wedge = nodata_wedge(H, W, WEDGE_FRACTION)
    cv = scene.canvas
    flat = {k: a.reshape(-1) for k, a in (("mat", cv.material), ("tone", cv.tone),
                                           ("relief", cv.relief), ("shadow", scene.shadow),
                                           ("cls", scene.classes))}
    cols_s2 = np.arange(W) // k_s2
    cols_ntl = np.arange(W) // k_ntl
    with GeoTiffWriter(vhr_path, vhr_grid, 4, np.uint8, nodata=0,
                       descriptions=list(VHR_BANDS), rgb=True,
                       metadata={"SAMPLE_CITY_SEED": seed}) as out:
        out.band(3).SetColorInterpretation(gdal.GCI_Undefined)
        for r0 in range(0, H, chunk):
            idx = map_to_plan_index(scene.grid, plan.shear, S, gsd, r0, chunk)
            rows = idx.shape[0]
            mat = flat["mat"][idx]
            shadow = flat["shadow"][idx]
            rgbn = renderer.render(r0, mat, flat["tone"][idx], flat["relief"][idx], shadow)
            rgbn[wedge(r0, r0 + rows)] = 0
            out.write_pixels(rgbn, r0)
            del rgbn
            # S2: per-cell material counts (+ shadowed pixels, + pixels) on the work grid
            rc0, rc1 = r0 // k_s2, -(-(r0 + rows) // k_s2)
            cell = ((np.arange(r0, r0 + rows) // k_s2 - rc0)[:, None] * wc + cols_s2[None, :])
            n_cells = (rc1 - rc0) * wc
            c = np.bincount((mat.astype(np.int64) * n_cells + cell).ravel(),
                            minlength=(nm + 1) * n_cells).reshape(nm + 1, rc1 - rc0, wc)
            counts[:nm, rc0:rc1] += c[1:].astype(np.uint8)
            counts[nm, rc0:rc1] += np.bincount(cell[shadow], minlength=n_cells).reshape(
                rc1 - rc0, wc).astype(np.uint8)
            counts[nm + 1, rc0:rc1] += np.bincount(cell.ravel(), minlength=n_cells).reshape(
                rc1 - rc0, wc).astype(np.uint8)
            # NTL: emitted radiance summed per work cell
            ncell = (np.arange(r0, r0 + rows) // k_ntl)[:, None] * wn + cols_ntl[None, :]
            rad = lut[flat["cls"][idx], mat]
            ntl_sum += np.bincount(ncell.ravel(), weights=rad.ravel(), minlength=hn * wn)
            ntl_cnt += np.bincount(ncell.ravel(), minlength=hn * wn)
    s2_gt = (CITY_WEST, k_s2 * gsd, 0.0, CITY_SOUTH + S, 0.0, -k_s2 * gsd)
    return _Accumulated(vhr_grid, legs, k_s2, counts, s2_gt, ntl_sum.reshape(hn, wn),
                        ntl_cnt.reshape(hn, wn), k_ntl * gsd)


def s2_grids(size_m):
    """Target grid of each season: as real scenes arrive, in different CRSs/alignments."""
    aligned = city_grid(size_m, S2_GSD_M)
    outline = _outline(CITY_WEST, CITY_SOUTH, CITY_WEST + size_m, CITY_SOUTH + size_m)
    autumn = _grid_around(_reproject(outline, CITY_EPSG, S2_AUTUMN_EPSG), S2_AUTUMN_EPSG,
                          S2_GSD_M)
    winter = city_grid(size_m, S2_GSD_M, offset_m=WINTER_OFFSET_M)
    return {"spring": aligned, "summer": aligned, "autumn": autumn, "winter": winter}


def _write_s2(city, acc, size_m, seed):
    src = _mem_dataset(acc.counts, acc.s2_work_gt, CITY_EPSG)
    grids = s2_grids(size_m)
    warped = {}
    info = {}
    for season in render_s2.SEASONS:
        grid = grids[season]
        key = (grid.epsg, grid.geotransform)
        if key not in warped:
            warped = {key: _warp_average(src, grid)}   # keep only the current grid in memory
        arr = warped[key]
        pixels = arr[-1]
        valid = pixels > 0
        safe = np.where(valid, pixels, 1.0)
        fractions = np.zeros((M.COUNT,) + pixels.shape, np.float32)
        fractions[1:] = np.where(valid, arr[:-2] / safe, 0.0)
        shadow = np.where(valid, arr[-2] / safe, 0.0)
        refl = render_s2.reflectance(season, fractions, shadow, valid, seed, season)
        dn = render_s2.to_dn(refl, valid)
        path = getattr(city, f"s2_{season}")
        write_array(path, grid, dn, 0, descriptions=list(render_s2.BANDS),
                    metadata={"SEASON": season, "SAMPLE_CITY_SEED": seed,
                              "SCALE": "reflectance x 10000"})
        info[season] = grid
    return info


def _write_ntl(city, acc, size_m, seed, gsd_deg):
    mean = (acc.ntl_sum / np.maximum(acc.ntl_count, 1)).astype(np.float32)
    img, pad, shift = render_ntl.work_image(mean, acc.ntl_cell_m, size_m, seed, gsd_deg)
    cell = acc.ntl_cell_m
    gt = (CITY_WEST - pad * cell + shift[0], cell, 0.0,
          CITY_SOUTH + size_m + pad * cell + shift[1], 0.0, -cell)
    src = _mem_dataset(img, gt, CITY_EPSG, nodata=float("nan"))
    b = render_ntl.SWATH_BUFFER_M
    outline = _outline(CITY_WEST - b + shift[0], CITY_SOUTH - b + shift[1],
                       CITY_WEST + size_m + b + shift[0], CITY_SOUTH + size_m + b + shift[1])
    grid = _grid_around(_reproject(outline, CITY_EPSG, NTL_EPSG), NTL_EPSG, gsd_deg)
    arr = _warp_average(src, grid, src_nodata=float("nan"), dst_nodata=float("nan"))[0]
    arr = render_ntl.add_noise(arr, seed)
    write_array(city.ntl, grid, arr, float("nan"), descriptions=["radiance"],
                metadata={"UNIT": "nW/cm2/sr", "SAMPLE_CITY_SEED": seed})
    return {"grid": grid, "shift": shift}


# ---------------------------------------------------------------------------------------------

def _file_entry(path, grid, dtype, nodata, bands):
    return {"file": os.path.basename(path), "crs": f"EPSG:{grid.epsg}",
            "geotransform": [round(v, 10) for v in grid.geotransform],
            "width": grid.width, "height": grid.height, "dtype": dtype,
            "nodata": nodata, "bands": bands}


def _metadata(city, params, plan, acc, s2_grids_used, ntl_info, gt_grid, shares, seconds):
    from ..core.classes import CLASS_BY_CODE
    from .render_vhr import COLOURS, SHADOW_FACTOR
    from .shadows import SUN_AZIMUTH_DEG, SUN_ELEVATION_DEG
    S = params["size_m"]
    centre = _reproject([(CITY_WEST + S / 2, CITY_SOUTH + S / 2)], CITY_EPSG, NTL_EPSG)[0]
    vg = acc.vhr_grid
    lx, ly = acc.wedge_legs_px
    east, north = vg.geotransform[0] + vg.width * vg.res[0], vg.geotransform[3]
    wedge = [[east - lx * vg.res[0], north], [east, north], [east, north - ly * vg.res[1]]]
    files = {
        "ground_truth": _file_entry(city.ground_truth, gt_grid, "uint8", 0, ["function_class"]),
        "vhr": _file_entry(city.vhr, vg, "uint8", 0, list(VHR_BANDS)),
        "ntl": _file_entry(city.ntl, ntl_info["grid"], "float32", "nan", ["radiance"]),
    }
    for season, grid in s2_grids_used.items():
        files[f"s2_{season}"] = _file_entry(getattr(city, f"s2_{season}"), grid, "uint16", 0,
                                            list(render_s2.BANDS))
    return {
        "generator": "urban-functions-sample-city",
        "version": GENERATOR_VERSION,
        "code": code_fingerprint(),
        "seed": params["seed"],
        "params": params,
        "complete": True,
        "generation_seconds": round(seconds, 2),
        "location": {
            "crs": f"EPSG:{CITY_EPSG}",
            "bounds": [CITY_WEST, CITY_SOUTH, CITY_WEST + S, CITY_SOUTH + S],
            "centre_lonlat": [round(centre[0], 6), round(centre[1], 6)],
            "note": "synthetic city placed near Potsdam, Brandenburg; not a real place",
        },
        "files": files,
        "classes": [{"code": c.code, "name": c.key, "label": c.label, "color": c.color}
                    for c in FUNCTION_CLASSES],
        "class_shares": {CLASS_BY_CODE[c].key: round(float(shares[c]), 4) for c in range(1, 9)},
        "modalities": {
            "ground_truth": {"gsd_m": GT_GSD_M,
                             "sampling": "class of the fine scene at each cell centre"},
            "vhr": {
                "gsd_m": params["vhr_gsd_m"], "bands": list(VHR_BANDS),
                "sun": {"azimuth_deg": SUN_AZIMUTH_DEG, "elevation_deg": SUN_ELEVATION_DEG},
                "shadow_factor_rgbn": [float(v) for v in SHADOW_FACTOR],
                "material_colours_rgbn": {M.NAMES[m]: [list(a), list(b)]
                                          for m, (a, b) in COLOURS.items()},
                "nodata_wedge": {"corner": "north-east", "legs_px": [lx, ly],
                                 "polygon": [[round(x, 3), round(y, 3)] for x, y in wedge],
                                 "crs": f"EPSG:{VHR_EPSG}"},
            },
            "ntl": render_ntl.describe(params["ntl_gsd_deg"], ntl_info["shift"]),
            "s2": dict(render_s2.describe(),
                       grids={s: f"EPSG:{g.epsg} origin ({g.geotransform[0]}, "
                                 f"{g.geotransform[3]})" for s, g in s2_grids_used.items()},
                       winter_grid_offset_m=WINTER_OFFSET_M),
        },
        "plan": plan.describe(),
    }
