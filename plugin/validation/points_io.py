"""Validation points as GeoPackage (or any OGR vector format), read and written with OGR.

Fields: ``point_id``, ``map_class``, ``map_label``, ``stratum``, ``weight`` (N_h / n_h),
``incl_prob`` (n_h / N_h) and ``ref_class`` (empty until labelled).
"""
import os

from osgeo import ogr

from .raster_access import ValidationError, srs_from

ogr.UseExceptions()

FIELDS = (("point_id", ogr.OFTInteger), ("map_class", ogr.OFTInteger),
          ("map_label", ogr.OFTString), ("stratum", ogr.OFTInteger),
          ("weight", ogr.OFTReal), ("incl_prob", ogr.OFTReal), ("ref_class", ogr.OFTInteger))
DEFAULT_LAYER = "validation_points"
REFERENCE_FIELD = "ref_class"


def _driver_for(path):
    ext = os.path.splitext(str(path))[1].lower()
    return {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON",
            ".json": "GeoJSON", ".fgb": "FlatGeobuf", ".csv": "CSV"}.get(ext, "GPKG")


def write_points(sample, path, layer_name=DEFAULT_LAYER, overwrite=True):
    """Write a :class:`SampleResult` to a vector file (GeoPackage by default). Returns the path."""
    path = str(path)
    drv = ogr.GetDriverByName(_driver_for(path))
    if os.path.exists(path):
        if not overwrite:
            raise ValidationError(f"{path!r} already exists.")
        drv.DeleteDataSource(path)
    ds = drv.CreateDataSource(path)
    try:
        srs = srs_from(sample.crs_wkt) if sample.crs_wkt else None
        lyr = ds.CreateLayer(layer_name, srs, ogr.wkbPoint)
        for name, kind in FIELDS:
            lyr.CreateField(ogr.FieldDefn(name, kind))
        defn = lyr.GetLayerDefn()
        lyr.StartTransaction()
        for p in sample.points:
            f = ogr.Feature(defn)
            f.SetField("point_id", int(p.id))
            f.SetField("map_class", int(p.map_class))
            f.SetField("map_label", sample.label(p.map_class))
            f.SetField("stratum", int(p.stratum))
            f.SetField("weight", float(p.weight))
            f.SetField("incl_prob", float(p.incl_prob))
            f.SetFieldNull("ref_class")
            g = ogr.Geometry(ogr.wkbPoint)
            g.AddPoint_2D(float(p.x), float(p.y))
            f.SetGeometry(g)
            lyr.CreateFeature(f)
        lyr.CommitTransaction()
    finally:
        ds = None
    return path


def read_points(path, layer=None, reference_field=REFERENCE_FIELD, map_field="map_class",
                stratum_field="stratum"):
    """Read points: dict with fids, x, y, map_class, stratum, reference (None when empty), crs_wkt.

    A field name given as None or absent from the layer yields None values for that column.
    """
    ds = ogr.Open(str(path))
    if ds is None:
        raise ValidationError(f"Cannot open {path!r} as a vector file.")
    try:
        lyr = ds.GetLayerByName(layer) if layer else ds.GetLayer(0)
        if lyr is None:
            raise ValidationError(f"{path!r} has no layer {layer!r}.")
        names = [lyr.GetLayerDefn().GetFieldDefn(i).GetName()
                 for i in range(lyr.GetLayerDefn().GetFieldCount())]
        for fld in (reference_field,):
            if fld and fld not in names:
                raise ValidationError(f"{path!r} has no field {fld!r} (fields: {names}).")
        srs = lyr.GetSpatialRef()
        out = {"fid": [], "x": [], "y": [], "map_class": [], "stratum": [], "reference": [],
               "crs_wkt": srs.ExportToWkt() if srs else ""}

        def get(f, name):
            if not name or name not in names or not f.IsFieldSetAndNotNull(name):
                return None
            return f.GetField(name)

        for f in lyr:
            g = f.GetGeometryRef()
            if g is None:
                continue
            out["fid"].append(f.GetFID())
            out["x"].append(g.GetX())
            out["y"].append(g.GetY())
            out["map_class"].append(get(f, map_field))
            out["stratum"].append(get(f, stratum_field))
            out["reference"].append(get(f, reference_field))
        return out
    finally:
        ds = None


def set_field(path, fids, values, field=REFERENCE_FIELD, layer=None):
    """Write ``values`` (None = empty) into ``field`` of the features ``fids``."""
    ds = ogr.Open(str(path), 1)
    if ds is None:
        raise ValidationError(f"Cannot open {path!r} for writing.")
    try:
        lyr = ds.GetLayerByName(layer) if layer else ds.GetLayer(0)
        if lyr.GetLayerDefn().GetFieldIndex(field) < 0:
            lyr.CreateField(ogr.FieldDefn(field, ogr.OFTInteger))
        lyr.StartTransaction()
        for fid, v in zip(fids, values):
            f = lyr.GetFeature(int(fid))
            if v is None:
                f.SetFieldNull(field)
            else:
                f.SetField(field, int(v))
            lyr.SetFeature(f)
        lyr.CommitTransaction()
    finally:
        ds = None


__all__ = ["write_points", "read_points", "set_field", "FIELDS", "DEFAULT_LAYER",
           "REFERENCE_FIELD"]
