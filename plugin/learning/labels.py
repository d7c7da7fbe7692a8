"""User labels (polygons or points, any CRS) rasterised onto the model's output grid.

A polygon labels the cells that lie *fully* inside it (its centre inside and no edge of the
polygon crossing the cell); a point labels the cell under it. Cells claimed by two different
classes, and cells no label covers, are unlabelled (ignored by the loss and by validation).
Pure GDAL/OGR and numpy.
"""
import hashlib
from collections import Counter
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, ogr, osr

from ..core.classes import FUNCTION_CLASSES
from ..core.errors import InputError
from ..core.rasters import srs_from_wkt

gdal.UseExceptions()
ogr.UseExceptions()

UNLABELLED = -1
KEYS = tuple(c.key for c in FUNCTION_CLASSES)


@dataclass
class LabelSet:
    """Label features in memory: [(geometry WKB, value)] in ``crs_wkt``."""
    name: str
    crs_wkt: str
    features: list
    field: str
    sha256: str          # of the label file when there is one, else of the features
    source: str = ""

    @property
    def count(self):
        return len(self.features)

    @property
    def kind(self):
        types = {ogr.GT_Flatten(ogr.CreateGeometryFromWkb(g).GetGeometryType())
                 for g, _ in self.features[:1000]}
        if types <= {ogr.wkbPoint, ogr.wkbMultiPoint}:
            return "points"
        if types <= {ogr.wkbPolygon, ogr.wkbMultiPolygon}:
            return "polygons"
        return "mixed"

    def bounds(self, dst_wkt):
        """(xmin, ymin, xmax, ymax) of the features in ``dst_wkt``."""
        ct = _transform(self.crs_wkt, dst_wkt)
        env = None
        for wkb, _ in self.features:
            g = ogr.CreateGeometryFromWkb(wkb)
            if ct is not None:
                transform_geometry(g, ct, self)
            x0, x1, y0, y1 = g.GetEnvelope()
            env = (x0, y0, x1, y1) if env is None else (
                min(env[0], x0), min(env[1], y0), max(env[2], x1), max(env[3], y1))
        return env


def has_no_crs(wkt):
    """No CRS, or GeoPackage's placeholders for none ('Undefined geographic/Cartesian SRS')."""
    return not (wkt or "").strip() or srs_from_wkt(wkt).GetName().lower().startswith(
        "undefined")


def _transform(src_wkt, dst_wkt):
    """Labels -> grid, or None when the CRSs are the same; the one place a label layer without
    a CRS is refused (a file read here, or a QGIS layer whose CRS is invalid: empty WKT)."""
    if has_no_crs(src_wkt):
        raise InputError("Labels: the label layer has no coordinate reference system: assign "
                         "the right one (Layer Properties > Source, or Assign projection).")
    src, dst = srs_from_wkt(src_wkt), srs_from_wkt(dst_wkt)
    if src.IsSame(dst):
        return None
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(src, dst)


def transform_geometry(g, ct, labelset):
    """``g`` reprojected in place; a clear error when its coordinates cannot be in the layer's
    CRS (a layer without a CRS that QGIS took for WGS 84, or a wrong CRS)."""
    x0, x1, y0, y1 = g.GetEnvelope()
    try:
        g.Transform(ct)
    except RuntimeError as exc:
        srs = srs_from_wkt(labelset.crs_wkt)
        raise InputError(
            f"Labels: the features of {labelset.name!r} cannot be reprojected from its CRS "
            f"({srs.GetName() or 'unnamed'}): coordinates such as ({x0:.6g}, {y0:.6g}) do not "
            "belong to it. The layer probably has no CRS or a wrong one: assign the right one "
            f"(Layer Properties > Source). ({exc})") from exc


def features_sha256(features):
    h = hashlib.sha256()
    for wkb, value in features:
        h.update(bytes(wkb))
        h.update(repr(value).encode())
    return h.hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_label_file(path, field, layer=None):
    """A :class:`LabelSet` from a vector file (GeoPackage, shapefile...), read with OGR."""
    try:
        ds = ogr.Open(path, 0)
    except RuntimeError as exc:
        raise InputError(f"Labels: cannot open {path!r} as a vector file ({exc}).") from exc
    if ds is None:
        raise InputError(f"Labels: cannot open {path!r} as a vector file.")
    lyr = ds.GetLayerByName(layer) if layer else ds.GetLayer(0)
    if lyr is None:
        raise InputError(f"Labels: {path!r} has no layer {layer!r}.")
    defn = lyr.GetLayerDefn()
    names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    if field not in names:
        raise InputError(f"Labels: {path!r} has no field {field!r}; its fields are "
                         f"{', '.join(names) or 'none'}.")
    srs = lyr.GetSpatialRef()   # none: _transform says so when the labels are placed
    feats = []
    for f in lyr:
        g = f.GetGeometryRef()
        if g is None or g.IsEmpty():
            continue
        feats.append((bytes(g.ExportToWkb()), f.GetField(field)))
    return LabelSet(lyr.GetName(), srs.ExportToWkt() if srs else "", feats, field,
                    file_sha256(path), path)


@dataclass
class Rasterised:
    labels: np.ndarray         # [H, W] int16 class index (card order), UNLABELLED elsewhere
    counts: dict               # function key -> labelled cells
    features_by_class: dict    # function key -> features
    ignored_features: int      # features mapped to ``ignore``
    conflict_cells: int        # cells claimed by two classes (left unlabelled)
    outside_features: int      # features outside the grid
    empty_features: int = 0    # features whose label value is empty (NULL or blank): unused
    repaired_features: int = 0  # invalid polygons (self-intersecting...) made valid first


def is_empty_label(value):
    """NULL or blank: a feature without a label, not an unknown label."""
    return value is None or (isinstance(value, str) and not value.strip())


def _mem_layer(srs_wkt):
    """(data source, layer): keep the data source referenced while the layer is used."""
    ds = ogr.GetDriverByName("Memory").CreateDataSource("labels")
    lyr = ds.CreateLayer("labels", srs=srs_from_wkt(srs_wkt), geom_type=ogr.wkbUnknown)
    return ds, lyr


def _burn(grid, lyr, all_touched=False):
    mem = gdal.GetDriverByName("MEM").Create("", grid.width, grid.height, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(grid.geotransform)
    mem.SetProjection(grid.crs_wkt)
    opts = ["ALL_TOUCHED=TRUE"] if all_touched else []
    gdal.RasterizeLayer(mem, [1], lyr, burn_values=[1], options=opts)
    return mem.ReadAsArray().astype(bool)


def rasterise(labelset, class_map, grid, class_keys=KEYS):
    """Labels on ``grid`` as class indices into ``class_keys`` (the model card's class order)."""
    given = [(w, v) for w, v in labelset.features if not is_empty_label(v)]
    mapping = class_map.resolve({v for _, v in given}, field=labelset.field)
    ct = _transform(labelset.crs_wkt, grid.crs_wkt)
    groups = {}
    ignored = 0
    for wkb, value in given:
        key = mapping[value]
        if key == "ignore":
            ignored += 1
            continue
        g = ogr.CreateGeometryFromWkb(wkb)
        if ct is not None:
            transform_geometry(g, ct, labelset)
        groups.setdefault(key, []).append(g)
    index = {k: i for i, k in enumerate(class_keys)}
    claimed = np.zeros((grid.height, grid.width), np.int16)
    labels = np.full((grid.height, grid.width), UNLABELLED, np.int16)
    gx0, gy0, gx1, gy1 = grid.bounds
    outside = repaired = 0
    for key, geoms in groups.items():
        if key not in index:
            raise InputError(f"Labels: the class {key!r} is not a class of this model "
                             f"({', '.join(class_keys)}).")
        # one burn per class (fast on large layers): areas, points, and the polygon edges
        areas_ds, areas = _mem_layer(grid.crs_wkt)
        edges_ds, edges = _mem_layer(grid.crs_wkt)
        for g in geoms:
            x0, x1, y0, y1 = g.GetEnvelope()
            if x1 < gx0 or x0 > gx1 or y1 < gy0 or y0 > gy1:
                outside += 1
                continue
            gtype = ogr.GT_Flatten(g.GetGeometryType())
            if gtype not in (ogr.wkbPoint, ogr.wkbMultiPoint, ogr.wkbPolygon,
                             ogr.wkbMultiPolygon):
                raise InputError("Labels must be polygons or points; a feature is "
                                 f"{ogr.GeometryTypeToName(gtype)}.")
            if gtype in (ogr.wkbPolygon, ogr.wkbMultiPolygon) and not _is_valid(g):
                # a bow-tie or self-touching ring would burn (and edge) the wrong cells
                g = polygons_of(g.MakeValid())
                repaired += 1
                if g is None:
                    continue
            feat = ogr.Feature(areas.GetLayerDefn())
            feat.SetGeometry(g)
            areas.CreateFeature(feat)
            if gtype in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
                edge = ogr.Feature(edges.GetLayerDefn())
                edge.SetGeometry(g.GetBoundary())
                edges.CreateFeature(edge)
        # a polygon labels the cells fully inside it: drop every cell one of its edges touches
        inside = _burn(grid, areas) & ~_burn(grid, edges, all_touched=True)
        areas = edges = areas_ds = edges_ds = None   # layers before their data sources
        claimed += inside
        labels[inside] = index[key]
    labels[claimed > 1] = UNLABELLED
    counts = Counter()
    for key in class_keys:
        counts[key] = int((labels == index[key]).sum())
    return Rasterised(labels, dict(counts), {k: len(v) for k, v in groups.items()}, ignored,
                      int((claimed > 1).sum()), outside,
                      len(labelset.features) - len(given), repaired)


def _is_valid(geometry):
    """GEOS validity without its 'Self-intersection at or near…' warning on stderr."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        return geometry.IsValid()
    finally:
        gdal.PopErrorHandler()


def polygons_of(geometry):
    """The polygonal part of ``geometry`` (MakeValid may return a collection with lines) as a
    MultiPolygon, or None when there is none."""
    out = ogr.Geometry(ogr.wkbMultiPolygon)
    parts = [geometry] if geometry.GetGeometryCount() == 0 else \
        [geometry.GetGeometryRef(i) for i in range(geometry.GetGeometryCount())]
    for part in parts:
        t = ogr.GT_Flatten(part.GetGeometryType())
        if t == ogr.wkbPolygon:
            out.AddGeometry(part)
        elif t in (ogr.wkbMultiPolygon, ogr.wkbGeometryCollection):
            sub = polygons_of(part)
            if sub is not None:
                for i in range(sub.GetGeometryCount()):
                    out.AddGeometry(sub.GetGeometryRef(i))
    return out if out.GetGeometryCount() else None
