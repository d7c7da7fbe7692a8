"""File-to-file validation steps shared by Processing, scripts and tests (no qgis)."""
import os

import numpy as np

from .accuracy import assess
from .labelling import label_from_reference
from .points_io import read_points, write_points
from .raster_access import ValidationError, count_classes
from .report import write_report
from .sampling import draw_sample


def create_points_file(raster_path, out_path, **design):
    """Draw a sample (keywords of :func:`draw_sample`) and write it; returns the SampleResult."""
    sample = draw_sample(raster_path, **design)
    write_points(sample, out_path)
    return sample


def map_classes_at(raster_path, x, y, points_crs_wkt=None, band=1):
    """Map class at each point (None outside / nodata), transforming coordinates if needed."""
    return label_from_reference(list(zip(x, y)), raster_path, points_crs_wkt or None, band)


def assess_points(x, y, reference, raster_path, map_class=None, stratum=None, points_crs_wkt=None,
                  band=1, design="", metadata=None, counts=None):
    """Assessment of labelled points against the map ``raster_path`` (gives the strata sizes).

    ``map_class``: per point, or None to read it from the raster; ``stratum``: per point, or None
    (= map class). Points falling outside the map or on nodata are left out with a warning.
    """
    counts = counts or count_classes(raster_path, band)
    info = counts.info
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if map_class is None or all(v is None for v in map_class):
        map_class = map_classes_at(raster_path, x, y, points_crs_wkt, band)
    map_class = list(map_class)
    keep = [i for i, v in enumerate(map_class) if v is not None]
    warnings = []
    if len(keep) < len(map_class):
        warnings.append(f"{len(map_class) - len(keep)} point(s) outside the map or on nodata "
                        "were left out.")
    st = None
    if stratum is not None and not all(v is None for v in stratum):
        st = [stratum[i] if stratum[i] is not None else map_class[i] for i in keep]
    a = assess([map_class[i] for i in keep], [reference[i] for i in keep], counts.totals,
               strata=st, pixel_area_m2=info.pixel_area_m2,
               labels={c: info.label(c) for c in set(counts.totals) | _codes(reference)},
               colors={c: info.color(c) for c in set(counts.totals) | _codes(reference)},
               design=design, metadata=metadata)
    a.warnings[:0] = warnings
    if info.pixel_area_m2 is None:
        a.warnings.append("The map's CRS is not projected: areas are given as shares of the map "
                          "only.")
    return a


def _codes(values):
    out = set()
    for v in values:
        try:
            if v is not None and np.isfinite(float(v)):
                out.add(int(round(float(v))))
        except (TypeError, ValueError):
            pass
    return out


def assess_points_file(points_path, raster_path, reference_field="ref_class",
                       map_field="map_class", stratum_field="stratum", html_path=None,
                       csv_path=None, json_path=None, layer=None, band=1, title=None):
    """Read labelled points, assess, write the report files; returns the Assessment."""
    pts = read_points(points_path, layer, reference_field, map_field, stratum_field)
    if not pts["fid"]:
        raise ValidationError(f"{points_path!r} holds no point.")
    x, y = np.array(pts["x"]), np.array(pts["y"])
    a = assess_points(x, y, pts["reference"], raster_path,
                      None if not map_field else pts["map_class"],
                      None if not stratum_field else pts["stratum"], pts["crs_wkt"], band,
                      metadata={"map": os.path.abspath(raster_path),
                                "points": os.path.abspath(points_path),
                                "reference_field": reference_field})
    write_report(a, html_path, csv_path, json_path,
                 title or "Map accuracy assessment: " + os.path.basename(raster_path))
    return a


__all__ = ["create_points_file", "assess_points", "assess_points_file", "map_classes_at"]
