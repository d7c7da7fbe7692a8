"""What happens in QGIS once a run is over: styled layer in the project, message bar summary."""
import os

from qgis.core import Qgis, QgsMessageLog, QgsProject
from qgis.PyQt.QtWidgets import QMessageBox, QPushButton

from ..qgis_common.styling import (apply_class_style, apply_derived_style, apply_fraction_style,
                      load_class_layer, write_derived_style_sidecar, write_style_sidecar)
from ..qgis_common.summary import html_summary, short_summary, text_summary

TITLE = "Urban Functions"
LOG_TAG = "Urban Functions"


def result_layer_name(result):
    stem = os.path.splitext(os.path.basename(result.output_path))[0]
    from ..core.map_layout import map_layout
    # a map derived from another class scheme (So2Sat's LCZ) must not read as that scheme
    derived = map_layout(result.card).derives_functions
    return f"{stem} ({'urban functions from ' if derived else ''}{result.card.title})"


def add_result_layer(result, project=None):
    """Style the output, save its .qml sidecar and add it to ``project``. Returns the layer."""
    project = project or QgsProject.instance()
    classes = result.classes
    try:
        write_style_sidecar(result.output_path, classes)
    except OSError as exc:
        QgsMessageLog.logMessage(f"Style not saved: {exc}", LOG_TAG, Qgis.Warning)
    # a rerun that overwrote a file already in the project: refresh that layer, no duplicate
    target = os.path.realpath(result.output_path)
    for existing in project.mapLayers().values():
        if existing.providerType() == "gdal" and \
                os.path.realpath(existing.source()) == target:
            existing.reload()  # reopens the file
            apply_class_style(existing, classes)
            existing.setName(result_layer_name(result))
            return existing
    layer = load_class_layer(result.output_path, result_layer_name(result), classes)
    if layer is None:
        return None
    project.addMapLayer(layer)
    return layer


def extra_layer_name(result, name):
    """Layer name of an extra output: the derived output's label, or what the file holds."""
    stem = os.path.splitext(os.path.basename(result.output_path))[0]
    for d in result.derived_outputs:
        if d.name == name:
            return f"{stem}: {d.label}"
    if name == "probabilities":
        return f"{stem}: class probabilities (one band per class)"
    return f"{stem}: {name}"


def _style_extra(layer, result, name):
    for d in result.derived_outputs:
        if d.name == name:
            return apply_derived_style(layer, d)
    return apply_fraction_style(layer)  # probabilities: band 1 on the 0-1 ramp


def add_extra_layers(result, project=None, visible=False):
    """Add the extra rasters of ``result`` (derived outputs, class probabilities) to
    ``project``, styled (derived outputs also get a .qml sidecar). They are added unticked
    unless ``visible``: the class map goes on top of them. Returns {name: layer}."""
    from qgis.core import QgsRasterLayer
    project = project or QgsProject.instance()
    derived = {d.name: d for d in result.derived_outputs}
    layers = {}
    for name, path in (getattr(result, "extra_outputs", None) or {}).items():
        if name in derived:
            try:
                write_derived_style_sidecar(path, derived[name])
            except OSError as exc:
                QgsMessageLog.logMessage(f"Style not saved: {exc}", LOG_TAG, Qgis.Warning)
        target = os.path.realpath(path)
        layer = next((lyr for lyr in project.mapLayers().values()
                      if lyr.providerType() == "gdal" and os.path.realpath(lyr.source()) == target),
                     None)
        if layer is not None:  # a rerun onto the same files: refresh, no duplicate
            layer.reload()
            _style_extra(layer, result, name)
            layer.setName(extra_layer_name(result, name))
        else:
            layer = QgsRasterLayer(str(path), extra_layer_name(result, name), "gdal")
            if not layer.isValid():
                continue
            _style_extra(layer, result, name)
            project.addMapLayer(layer)
            node = project.layerTreeRoot().findLayer(layer.id())
            if node is not None:
                node.setItemVisibilityChecked(visible)
                node.setExpanded(False)
        layers[name] = layer
    return layers


def push_success(message_bar, result, parent=None):
    """Message bar summary (provider, time, area per class) with a Details button."""
    QgsMessageLog.logMessage(text_summary(result), LOG_TAG, Qgis.Success)
    if message_bar is None:
        return None
    item = message_bar.createMessage(TITLE, short_summary(result))
    button = QPushButton("Details", item)
    html = html_summary(result)

    def show_details():
        box = QMessageBox(QMessageBox.Information, TITLE, html, QMessageBox.Ok, parent)
        box.setTextFormat(1)  # Qt.RichText
        box.exec_()

    button.clicked.connect(show_details)
    item.layout().addWidget(button)
    message_bar.pushWidget(item, Qgis.Success, 0)
    return item


def push_failure(message_bar, message, cancelled=False):
    level = Qgis.Warning if cancelled else Qgis.Critical
    QgsMessageLog.logMessage(message, LOG_TAG, level)
    if message_bar is not None:
        message_bar.pushMessage(TITLE, message, level, 10 if cancelled else 0)
