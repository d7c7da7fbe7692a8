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

    The map class is always read from the raster at each point: points outside the map or on
    nodata are left out (counted in the warnings; all of them outside is an error). A
    ``map_class`` given per point (e.g. the attribute Create validation points wrote) is only
    compared with the raster: disagreements are counted in a warning, the raster wins.
    ``stratum``: per point, or None (= map class). Reference values must be classes of the map.
    """
    counts = counts or count_classes(raster_path, band)
    info = counts.info
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    from_raster = list(map_classes_at(raster_path, x, y, points_crs_wkt, band))
    keep = [i for i, v in enumerate(from_raster) if v is not None]
    warnings = []
    if not keep:
        raise ValidationError(
            f"None of the {len(from_raster)} point(s) lies on the map {raster_path!r} (all are "
            "outside it or on nodata). Are the points and the map of the same place, and is the "
            "points layer's CRS right?")
    if len(keep) < len(from_raster):
        warnings.append(f"{len(from_raster) - len(keep)} point(s) outside the map or on nodata "
                        "were left out.")
    _check_reference_codes([reference[i] for i in keep], info, counts)
    if map_class is not None and not all(v is None for v in map_class):
        differ = sum(1 for i in keep if map_class[i] is not None and
                     int(round(float(map_class[i]))) != from_raster[i])
        if differ:
            warnings.append(f"{differ} point(s) carry a map class that differs from the map at "
                            "their place (was the map changed since the points were drawn?); the "
                            "map's class is used.")
    st = None
    if stratum is not None and not all(v is None for v in stratum):
        st = [stratum[i] if stratum[i] is not None else from_raster[i] for i in keep]
    refs = [reference[i] for i in keep]
    a = assess([from_raster[i] for i in keep], refs, counts.totals,
               strata=st, pixel_area_m2=info.pixel_area_m2,
               labels={c: info.label(c) for c in set(counts.totals) | _codes(refs)},
               colors={c: info.color(c) for c in set(counts.totals) | _codes(refs)},
               design=design, metadata=metadata)
    a.warnings[:0] = warnings
    if info.pixel_area_m2 is None:
        a.warnings.append("The map's CRS is not projected: areas are given as shares of the map "
                          "only.")
    return a


def _check_reference_codes(refs, info, counts):
    """Reference values must be classes of the map (its named categories, else the classes
    it shows): anything else is a typo or another legend, never "class 99"."""
    known = set(info.labels) or set(counts.totals)
    bad = sorted({int(round(float(v))) for v in refs
                  if v is not None and int(round(float(v))) not in known})
    if bad:
        classes = ", ".join(f"{c} {info.label(c)}" for c in sorted(known))
        raise ValidationError(
            f"Reference value(s) {', '.join(map(str, bad))} are not classes of this map "
            f"(its classes: {classes}). Correct the reference field.")


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
