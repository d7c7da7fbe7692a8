"""Turning QGIS layers, extents and polygons into the engine's plain inputs (paths, WKT).

Shared by the dialog and the Processing algorithm so both accept and reject the same things.
"""
import os

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsWkbTypes,
)


def crs_wkt(crs):
    """WKT of a QgsCoordinateReferenceSystem in the flavour GDAL/OSR reads best."""
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)


def raster_layer_path(layer, label=None):
    """(path, problem): the file GDAL should read for ``layer``, or why it cannot be used.

    The engine reads files with GDAL itself (in a worker thread), so layers must be file-based
    GDAL rasters: a WMS/XYZ/WCS layer or an in-memory layer has to be exported first.
    """
    label = label or layer.name()
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        return None, f"{label}: '{layer.name()}' is not a valid raster layer."
    if layer.providerType() != "gdal":
        return None, (f"{label}: '{layer.name()}' comes from the '{layer.providerType()}' "
                      "provider, not a raster file. Save it as a GeoTIFF first (right-click the "
                      "layer > Export > Save As...) and choose that layer instead.")
    source = layer.source()
    parts = QgsProviderRegistry.instance().decodeUri("gdal", source)
    path = parts.get("path") or source
    if os.path.isfile(path) and not parts.get("layerName") and not parts.get("vsiPrefix"):
        return path, None
    # a table in a GeoPackage, a file inside a zip, a subdataset...
    return None, (f"{label}: '{layer.name()}' is not a plain raster file ({source}). Save it as "
                  "a GeoTIFF first (right-click the layer > Export > Save As...) and choose "
                  "that layer instead.")


def extent_tuple(rectangle, crs):
    """(xmin, ymin, xmax, ymax, crs_wkt) for the engine, or ``None`` for an empty rectangle."""
    if rectangle is None or rectangle.isNull() or rectangle.isEmpty():
        return None
    return (rectangle.xMinimum(), rectangle.yMinimum(), rectangle.xMaximum(),
            rectangle.yMaximum(), crs_wkt(crs))


def polygon_union(features):
    """Union of the polygon geometries of ``features`` (a QgsGeometry, null if none)."""
    geoms = []
    for feature in features:
        geom = feature.geometry()
        if geom is None or geom.isNull() or geom.isEmpty():
            continue
        if QgsWkbTypes.geometryType(geom.wkbType()) != QgsWkbTypes.PolygonGeometry:
            continue
        if not geom.isGeosValid():
            geom = geom.makeValid()
        geoms.append(geom)
    if not geoms:
        return QgsGeometry()
    return QgsGeometry.unaryUnion(geoms) if len(geoms) > 1 else geoms[0]


def aoi_tuple(geometry, crs):
    """(polygon_wkt, crs_wkt) for the engine, or ``None`` for a null geometry."""
    if geometry is None or geometry.isNull() or geometry.isEmpty():
        return None
    return geometry.asWkt(), crs_wkt(crs)


def layer_aoi(layer, selected_only=False):
    """(aoi tuple or None, problem or None) from a polygon vector layer."""
    if layer is None:
        return None, "Choose the polygon layer that outlines the area to process."
    if selected_only:
        if layer.selectedFeatureCount() == 0:
            return None, (f"'{layer.name()}' has no selected features: select the polygons to "
                          "process or untick 'Selected features only'.")
        features = layer.getSelectedFeatures()
    else:
        features = layer.getFeatures(QgsFeatureRequest())
    aoi = aoi_tuple(polygon_union(features), layer.crs())
    if aoi is None:
        return None, f"'{layer.name()}' has no polygon to process."
    return aoi, None
