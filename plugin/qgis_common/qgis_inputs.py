"""Turning QGIS layers, extents and polygons into the engine's plain inputs (paths, WKT).

Shared by the dialog and the Processing algorithm so both accept and reject the same things.
"""
import os

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessingParameterRasterLayer,
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


def is_unset(value):
    """True for an empty Processing parameter (None, '', or a QVariant NULL from the GUI and
    the model designer)."""
    if value is None:
        return True
    try:
        from qgis.PyQt.QtCore import QVariant
        if isinstance(value, QVariant) and value.isNull():
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(value, str) and value.strip() == ""


def label_set(source, field, name, path=None):
    """The engine's LabelSet (plugin.learning.labels) from a Processing feature source or a
    vector layer: geometries as WKB with the ``field`` value, in the layer's CRS. The hash is
    the file's when the layer is a plain file, else the features'."""
    from ..learning.labels import LabelSet, features_sha256, file_sha256
    features = []
    for f in source.getFeatures():
        geom = f.geometry()
        if geom is None or geom.isNull() or geom.isEmpty():
            continue
        features.append((bytes(geom.asWkb()), f[field]))
    features = [(g, (None if _is_null(v) else v)) for g, v in features]
    crs = source.sourceCrs() if hasattr(source, "sourceCrs") else source.crs()
    sha = file_sha256(path) if path and os.path.isfile(path) else features_sha256(features)
    return LabelSet(name, crs_wkt(crs), features, field, sha, path or "")


def _is_null(value):
    try:
        from qgis.PyQt.QtCore import QVariant
        return value is None or (isinstance(value, QVariant) and value.isNull())
    except ImportError:  # pragma: no cover
        return value is None


def vector_layer_path(layer):
    """The plain file behind a vector layer, or None (memory layers, databases...)."""
    if layer is None:
        return None
    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    path = parts.get("path")
    return path if path and os.path.isfile(path) else None


def processing_raster_inputs(alg, parameters, context, modality_params, labels):
    """{modality: path} of the raster parameters given to a Processing algorithm
    (``modality_params``: (parameter name, modality) pairs; ``labels``: modality -> label);
    raises QgsProcessingException for a layer the engine cannot read."""
    from qgis.core import QgsProcessingException
    inputs = {}
    for param, modality in modality_params:
        value = parameters.get(param)
        if is_unset(value):
            continue
        if isinstance(value, str) and os.path.isfile(value):
            # a file path goes to GDAL as it is: a QGIS layer made from it would compute
            # statistics and leave <input>.aux.xml beside the user's file
            inputs[modality] = value
            continue
        layer = alg.parameterAsRasterLayer(parameters, param, context)
        if layer is None:
            raise QgsProcessingException(f"{labels[modality]}: cannot open "
                                         f"{parameters.get(param)!r} as a raster layer.")
        path, problem = raster_layer_path(layer, labels[modality])
        if problem:
            raise QgsProcessingException(problem)
        inputs[modality] = path
    return inputs


class RasterFileParameter(QgsProcessingParameterRasterLayer):
    """A raster-layer parameter that accepts an existing file path without loading it.

    qgis_process checks every parameter with ``checkValueIsAcceptable`` before the algorithm
    runs; the stock check opens a path as a QGIS layer, whose statistics GDAL then saves as
    ``<input>.aux.xml`` beside the user's file. The engine opens the file read-only itself and
    says what is wrong with it.
    """

    def checkValueIsAcceptable(self, value, context=None):
        if isinstance(value, str) and os.path.isfile(value):
            return True
        return super().checkValueIsAcceptable(value, context)

    def clone(self):
        # keep the Python class (the model designer and batch dialog copy parameters)
        copy = RasterFileParameter(self.name(), self.description(), self.defaultValue(),
                                   bool(self.flags() & self.FlagOptional))
        copy.setFlags(self.flags())
        copy.setHelp(self.help())
        copy.setMetadata(self.metadata())
        return copy



def check_parameter_values(alg, parameters, context):
    """``checkParameterValues`` whose refusal names the parameter and what it accepts (the
    stock message, "Incorrect parameter value", gives neither)."""
    from qgis.core import QgsProcessingParameterEnum, QgsProcessingParameterNumber
    for definition in alg.parameterDefinitions():
        value = parameters.get(definition.name())
        if definition.checkValueIsAcceptable(value, context):
            continue
        message = (f"Incorrect value for {definition.description()} ({definition.name()}): "
                   f"{value!r}.")
        if isinstance(definition, QgsProcessingParameterNumber):
            integer = definition.dataType() == QgsProcessingParameterNumber.Integer
            lo, hi = definition.minimum(), definition.maximum()

            def fmt(v):
                return f"{int(v)}" if integer else f"{v:g}"
            kind = "a whole number" if integer else "a number"
            if hi < 1e300:
                message += f" Give {kind} from {fmt(lo)} to {fmt(hi)}."
            else:
                message += f" Give {kind} of at least {fmt(lo)}."
        elif isinstance(definition, QgsProcessingParameterEnum):
            options = ", ".join(f"{i} ({o})" for i, o in enumerate(definition.options()))
            message += f" Choose one of {options}."
        elif value is None or value == "":
            message += " This parameter is required."
        elif isinstance(value, str) and not os.path.exists(value) and (
                os.sep in value or "." in os.path.basename(value)):
            # a path, not a layer name: say the file is missing
            message += " No such file."
        return False, message
    return True, ""
