"""Georeferenced mosaics of labelled scene images: a map to train and score a VHR model on.

A scene benchmark scores one image at a time, centred and alone; a map is scored cell by cell,
where each window reaches into the neighbours. To measure the second on real imagery, scenes of
one source are laid out at their true ground resolution in *zones* of ``k x k`` scenes of the
same class (a city's land use comes in patches larger than one scene, not as a random
checkerboard), the zones in seeded random order on a grid. The mosaic is a GeoTIFF (RGB,
uint8, projected CRS) and the labels are one polygon per zone (field ``function``: our class
key), i.e. what a user brings to ``urbanfunctions:train`` or the evidence scripts score with.

Mosaics are built under ``build/`` from ``../shared`` and never committed.
"""
import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, ogr, osr

gdal.UseExceptions()
ogr.UseExceptions()

CRS_EPSG = 32633               # UTM 33N: any projected CRS in metres would do
ORIGIN = (500000.0, 5820000.0)
LABEL_FIELD = "function"


@dataclass
class Mosaic:
    raster: str
    labels: str
    zones: int
    scenes: int
    dropped: int          # scenes that did not fill a whole zone
    gsd_m: float
    scene_px: int
    zone_m: float
    classes: dict         # class key -> zones


def scene_gsd(row):
    """The ground sampling distance (m) of a manifest row, or None when the source does not
    state it (a map needs the true scale)."""
    try:
        return float(row["approx_gsd_m"])
    except (KeyError, TypeError, ValueError):
        return None


def _load(path, px):
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (px, px):    # a few UC Merced images are 247-255 px
            im = im.resize((px, px), Image.BOX)
        return np.asarray(im, np.uint8)


def build_mosaic(rows, root, raster_path, labels_path, zone_scenes=2, seed=0, scene_px=256,
                 class_key=lambda r: r["function_name"]):
    """Lay ``rows`` (manifest rows of one source with a stated GSD) out as zones of
    ``zone_scenes`` x ``zone_scenes`` scenes of one class; write the GeoTIFF and the label
    GeoPackage. Returns a :class:`Mosaic`."""
    gsds = {scene_gsd(r) for r in rows}
    if None in gsds or len(gsds) != 1:
        raise ValueError("A mosaic needs scenes of one known ground sampling distance "
                         f"(got {sorted(map(str, gsds))}).")
    gsd = gsds.pop()
    rng = np.random.default_rng(seed)
    by_class = defaultdict(list)
    for r in rows:
        by_class[class_key(r)].append(r)
    per_zone = zone_scenes * zone_scenes
    zones, dropped = [], 0
    for key in sorted(by_class):
        members = [by_class[key][i] for i in rng.permutation(len(by_class[key]))]
        full = len(members) // per_zone * per_zone
        dropped += len(members) - full
        zones += [(key, members[i:i + per_zone]) for i in range(0, full, per_zone)]
    if not zones:
        raise ValueError(f"Too few scenes for one zone of {per_zone}.")
    zones = [zones[i] for i in rng.permutation(len(zones))]
    ncols = int(np.ceil(np.sqrt(len(zones))))
    nrows = int(np.ceil(len(zones) / ncols))
    zpx = zone_scenes * scene_px
    img = np.zeros((3, nrows * zpx, ncols * zpx), np.uint8)
    for z, (_, members) in enumerate(zones):
        zr, zc = divmod(z, ncols)
        for s, r in enumerate(members):
            sr, sc = divmod(s, zone_scenes)
            y0, x0 = zr * zpx + sr * scene_px, zc * zpx + sc * scene_px
            img[:, y0:y0 + scene_px, x0:x0 + scene_px] = _load(
                os.path.join(root, r["path"]), scene_px).transpose(2, 0, 1)
    # the last row's empty places: copies of earlier zones, unlabelled (no nodata holes)
    for z in range(len(zones), nrows * ncols):
        zr, zc = divmod(z, ncols)
        sr, sc = divmod(int(rng.integers(len(zones))), ncols)
        img[:, zr * zpx:(zr + 1) * zpx, zc * zpx:(zc + 1) * zpx] = \
            img[:, sr * zpx:(sr + 1) * zpx, sc * zpx:(sc + 1) * zpx]
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(CRS_EPSG)
    gt = (ORIGIN[0], gsd, 0.0, ORIGIN[1], 0.0, -gsd)
    _write_labels(labels_path, zones, ncols, zpx * gsd, srs)
    try:
        _write_raster(raster_path, img, gt, srs.ExportToWkt())
    except BaseException:    # no labels without their raster
        os.remove(labels_path)
        raise
    counts = defaultdict(int)
    for key, _ in zones:
        counts[key] += 1
    return Mosaic(raster_path, labels_path, len(zones), len(zones) * per_zone, dropped, gsd,
                  scene_px, zpx * gsd, dict(counts))


def _write_raster(path, img, gt, wkt):
    tmp = path + ".partial.tif"
    try:
        ds = gdal.GetDriverByName("GTiff").Create(
            tmp, img.shape[2], img.shape[1], 3, gdal.GDT_Byte,
            options=["COMPRESS=DEFLATE", "TILED=YES", "PHOTOMETRIC=RGB"])
        ds.SetGeoTransform(gt)
        ds.SetProjection(wkt)
        for b in range(3):
            ds.GetRasterBand(b + 1).WriteArray(img[b])
            ds.GetRasterBand(b + 1).SetColorInterpretation(
                (gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand)[b])
        ds = None
        os.replace(tmp, path)
    except BaseException:
        ds = None
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_labels(path, zones, ncols, zone_m, srs):
    tmp = path + ".partial.gpkg"
    if os.path.exists(tmp):
        os.remove(tmp)
    try:
        _fill_labels(tmp, zones, ncols, zone_m, srs)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _fill_labels(tmp, zones, ncols, zone_m, srs):
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(tmp)
    lyr = ds.CreateLayer("labels", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn(LABEL_FIELD, ogr.OFTString))
    lyr.CreateField(ogr.FieldDefn("scenes", ogr.OFTInteger))
    for z, (key, members) in enumerate(zones):
        zr, zc = divmod(z, ncols)
        x0, y1 = ORIGIN[0] + zc * zone_m, ORIGIN[1] - zr * zone_m
        x1, y0 = x0 + zone_m, y1 - zone_m
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)):
            ring.AddPoint_2D(x, y)
        poly = ogr.Geometry(ogr.wkbPolygon)
        poly.AddGeometry(ring)
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField(LABEL_FIELD, key)
        f.SetField("scenes", len(members))
        f.SetGeometry(poly)
        lyr.CreateFeature(f)
    ds = None
