"""Automatic reference labels from a reference ("truth") raster -- for tests and demos.

Real validation labels come from a person looking at imagery (the labelling dock); this reads the
class of a reference raster at each point instead. The reference raster may be in another CRS and
resolution: point coordinates are transformed with OSR and the containing reference pixel is read.
"""
import numpy as np

from .raster_access import raster_info, transform_coords, values_at


def _coords(points):
    xs, ys = [], []
    for p in points:
        if hasattr(p, "x"):
            xs.append(float(p.x))
            ys.append(float(p.y))
        else:
            xs.append(float(p[0]))
            ys.append(float(p[1]))
    return np.array(xs), np.array(ys)


def label_from_reference(points, reference_raster, points_crs=None, band=1, nodata="auto"):
    """Reference class at each point (list of int, None outside the raster or on nodata).

    ``points``: a :class:`SampleResult` (its CRS is used), a sequence of :class:`SamplePoint`
    or of (x, y). ``points_crs``: WKT / "EPSG:n" / int EPSG of the coordinates; None = the
    sample's CRS, or the reference raster's CRS for plain coordinates.
    """
    if hasattr(points, "points") and hasattr(points, "crs_wkt"):
        points_crs = points_crs or points.crs_wkt
        points = points.points
    points = list(points)
    if not points:
        return []
    info = raster_info(reference_raster, band, nodata)
    x, y = _coords(points)
    if points_crs is not None and info.crs_wkt:
        crs = points_crs if isinstance(points_crs, str) else points_crs
        if isinstance(crs, int):
            crs = f"EPSG:{crs}"
        x, y = transform_coords(x, y, crs, info.crs_wkt)
    rows, cols = info.pixel_of(x, y)
    vals = values_at(reference_raster, rows, cols, band)
    out = []
    for v in vals:
        if not np.isfinite(v) or (info.nodata is not None and v == info.nodata):
            out.append(None)
        else:
            out.append(int(round(v)))
    return out


def label_points_file(points_path, reference_raster, field="ref_class", layer=None, band=1):
    """Fill ``field`` of a points file from a reference raster; returns the labels written."""
    from .points_io import read_points, set_field
    pts = read_points(points_path, layer, reference_field=None)
    labels = label_from_reference(list(zip(pts["x"], pts["y"])), reference_raster,
                                  pts["crs_wkt"] or None, band)
    set_field(points_path, pts["fid"], labels, field, layer)
    return labels
