"""Styling of urban-function rasters: one place used by the dialog, Processing and the screenshots.

A class raster (band 1: class codes, 0 = nodata) is drawn with a :class:`QgsPalettedRasterRenderer`
whose classes, labels and colours come from the model card, so the legend reads "Residential",
"Commercial"... in the card's colours.  Value 0 is not a class, hence transparent.

``write_style_sidecar`` also saves that style as ``<output>.qml`` next to the GeoTIFF: QGIS loads a
``.qml`` with the raster's name as the layer's default style, so the output is styled in any later
session too (drag and drop, Browser, another project).
"""
import os

from qgis.core import (
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsColorRampShader,
    QgsGradientColorRamp,
    QgsGradientStop,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.PyQt.QtGui import QColor

from ..core.classes import NODATA_CODE

CLASS_BAND = 1
# 0-1 fraction rasters (e.g. a settlement extent): ColorBrewer "Reds", interpolated
FRACTION_RAMP = ((0.0, "#fff5f0"), (0.25, "#fcbba1"), (0.5, "#fb6a4a"), (0.75, "#cb181d"),
                 (1.0, "#67000d"))
# Custom layer properties the plugin sets, so it can recognise its own layers later.
PROP_KIND = "urban_functions/kind"          # "classes", "input", "ground_truth"
PROP_MODALITY = "urban_functions/modality"  # for inputs: vhr, ntl, s2_summer...


def _class_fields(c):
    """(code, label, color) of a card class, a class-area entry or a plain dict."""
    if isinstance(c, dict):
        return int(c["code"]), str(c.get("label") or c.get("name")), str(c["color"])
    return int(c.code), str(getattr(c, "label", "") or c.name), str(c.color)


def palette_classes(classes):
    """Renderer classes for the card's classes (ordered by code, nodata code skipped)."""
    out = []
    for code, label, color in sorted(_class_fields(c) for c in classes):
        if code == NODATA_CODE:
            continue
        out.append(QgsPalettedRasterRenderer.Class(code, QColor(color), label))
    return out


def paletted_renderer(layer, classes, band=CLASS_BAND):
    """A paletted renderer for ``layer``'s class band."""
    return QgsPalettedRasterRenderer(layer.dataProvider(), band, palette_classes(classes))


def apply_class_style(layer, classes, band=CLASS_BAND):
    """Style ``layer`` as a class raster: paletted, labelled, value 0 transparent.

    Returns the layer for chaining.
    """
    provider = layer.dataProvider()
    # The engine writes nodata = 0; make sure QGIS treats it so even if the file lacks the tag.
    if not provider.sourceHasNoDataValue(band):
        from qgis.core import QgsRasterRange
        provider.setUserNoDataValue(band, [QgsRasterRange(NODATA_CODE, NODATA_CODE)])
    layer.setRenderer(paletted_renderer(layer, classes, band))
    layer.setCustomProperty(PROP_KIND, "classes")
    layer.triggerRepaint()
    # let legends (layer tree, layouts) pick up the new symbology
    layer.emitStyleChanged()
    return layer


def fraction_renderer(layer, band=1, stops=FRACTION_RAMP):
    """A single-band pseudocolour renderer over 0..1 (interpolated ``stops``)."""
    lo, hi = stops[0][0], stops[-1][0]
    shader = QgsColorRampShader(lo, hi)
    shader.setColorRampType(QgsColorRampShader.Interpolated)
    ramp = QgsGradientColorRamp(QColor(stops[0][1]), QColor(stops[-1][1]), False,
                                [QgsGradientStop((v - lo) / (hi - lo), QColor(c))
                                 for v, c in stops[1:-1]])
    shader.setSourceColorRamp(ramp)
    shader.setColorRampItemList([QgsColorRampShader.ColorRampItem(v, QColor(c), f"{v:g}")
                                 for v, c in stops])
    raster_shader = QgsRasterShader(lo, hi)
    raster_shader.setRasterShaderFunction(shader)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, raster_shader)
    renderer.setClassificationMin(lo)
    renderer.setClassificationMax(hi)
    return renderer


def apply_fraction_style(layer, band=1):
    """Style a 0..1 raster (probability, fraction) with the pseudocolour ramp."""
    layer.setRenderer(fraction_renderer(layer, band))
    layer.setCustomProperty(PROP_KIND, "fraction")
    layer.triggerRepaint()
    layer.emitStyleChanged()
    return layer


def derived_classes(derived):
    """The class list of a ``class_groups`` derived output (card :class:`DerivedOutput`)."""
    return [info for info, _codes in derived.groups]


def apply_weights_style(layer):
    """Style per-input weights (bands VHR, NTL, Sentinel-2, ...; each 0..1, summing to 1) as
    RGB: red = VHR, green = NTL, blue = Sentinel-2, each stretched 0..1. A red cell was decided
    by the imagery, a green one by night light, a blue one by Sentinel-2; mixtures mix."""
    renderer = QgsMultiBandColorRenderer(layer.dataProvider(), 1, 2, 3)
    for band, setter in ((1, renderer.setRedContrastEnhancement),
                         (2, renderer.setGreenContrastEnhancement),
                         (3, renderer.setBlueContrastEnhancement)):
        ce = QgsContrastEnhancement(layer.dataProvider().dataType(band))
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        ce.setMinimumValue(0.0)
        ce.setMaximumValue(1.0)
        setter(ce)
    layer.setRenderer(renderer)
    layer.setCustomProperty(PROP_KIND, "weights")
    layer.triggerRepaint()
    layer.emitStyleChanged()
    return layer


def apply_derived_style(layer, derived):
    """Style a derived output raster by its kind: ``class_sum`` -> 0..1 pseudocolour ramp,
    ``class_groups`` -> paletted with the groups' codes, colours and labels, ``graph_output``
    -> by its style (``fraction`` ramp, or ``weights`` as RGB)."""
    if derived.kind == "class_groups":
        return apply_class_style(layer, derived_classes(derived))
    if derived.kind == "graph_output" and derived.style == "weights":
        return apply_weights_style(layer)
    return apply_fraction_style(layer)


def write_derived_style_sidecar(raster_path, derived):
    """Save the style of a derived output as ``<raster>.qml``. Returns its path (``OSError``
    if the raster cannot be opened or the style cannot be written)."""
    layer = QgsRasterLayer(str(raster_path), derived.name, "gdal")
    if not layer.isValid():
        raise OSError(f"Cannot open {raster_path} to write its style.")
    apply_derived_style(layer, derived)
    qml = style_sidecar_path(raster_path)
    message, ok = layer.saveNamedStyle(qml)
    if not ok:
        raise OSError(f"Cannot write the style {qml}: {message}")
    return qml


def load_derived_layer(raster_path, name, derived):
    """Open a derived output as a styled layer (not added to any project). Invalid -> ``None``."""
    layer = QgsRasterLayer(str(raster_path), name, "gdal")
    if not layer.isValid():
        return None
    return apply_derived_style(layer, derived)


def style_sidecar_path(raster_path):
    """Where QGIS looks for a raster's default style: same name, ``.qml`` extension."""
    return os.path.splitext(str(raster_path))[0] + ".qml"


def write_style_sidecar(raster_path, classes):
    """Save the class style as ``<raster>.qml`` (the raster's default style). Returns its path.

    Raises ``OSError`` if the raster cannot be opened or the style cannot be written.
    """
    layer = QgsRasterLayer(str(raster_path), "urban functions", "gdal")
    if not layer.isValid():
        raise OSError(f"Cannot open {raster_path} to write its style.")
    apply_class_style(layer, classes)
    qml = style_sidecar_path(raster_path)
    message, ok = layer.saveNamedStyle(qml)
    if not ok:
        raise OSError(f"Cannot write the style {qml}: {message}")
    return qml


def load_class_layer(raster_path, name, classes):
    """Open a class raster as a styled layer (not added to any project). Invalid -> ``None``."""
    layer = QgsRasterLayer(str(raster_path), name, "gdal")
    if not layer.isValid():
        return None
    return apply_class_style(layer, classes)


def legend_entries(layer):
    """[(value, label, '#rrggbb')] of a paletted layer (for tests and summaries)."""
    renderer = layer.renderer()
    if not isinstance(renderer, QgsPalettedRasterRenderer):
        return []
    return [(int(c.value), c.label, c.color.name()) for c in renderer.classes()]
