"""Shared pieces of the documentation scripts (screenshots.py, validation_screenshots.py):
a widget-backed QgisInterface stand-in, an event-loop wait, and print-layout helpers."""
import time


class WidgetIface:
    """The parts of QgisInterface the dialog and the docks use, as real widgets."""

    def __init__(self, title=""):
        from qgis.gui import QgsMapCanvas, QgsMessageBar
        from qgis.PyQt.QtWidgets import QMainWindow, QVBoxLayout, QWidget
        self._main = QMainWindow()
        self._main.setWindowTitle(title)
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self._bar = QgsMessageBar()
        self._canvas = QgsMapCanvas()
        self._canvas.resize(800, 600)
        lay.addWidget(self._bar)
        lay.addWidget(self._canvas)
        self._main.setCentralWidget(central)

    def mainWindow(self):
        return self._main

    def mapCanvas(self):
        return self._canvas

    def messageBar(self):
        return self._bar

    def addDockWidget(self, area, dock):
        self._main.addDockWidget(area, dock)


def wait_for(predicate, timeout):
    """Process Qt events until ``predicate()`` is true; False after ``timeout`` seconds."""
    from qgis.PyQt.QtCore import QCoreApplication
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.02)
    return False


def add_label(layout, text, size, x, y, w, bold=False, lines=1):
    from qgis.core import QgsLayoutItemLabel, QgsLayoutPoint, QgsLayoutSize, QgsUnitTypes
    from qgis.PyQt.QtGui import QFont
    mm = QgsUnitTypes.LayoutMillimeters
    label = QgsLayoutItemLabel(layout)
    label.setText(text)
    font = QFont("Sans")
    font.setPointSizeF(size)
    font.setBold(bold)
    label.setFont(font)
    layout.addLayoutItem(label)
    label.attemptMove(QgsLayoutPoint(x, y, mm))
    label.attemptResize(QgsLayoutSize(w, size * 0.6 * lines, mm))
    return label


def add_map(layout, layers, extent, crs, x, y, w, h):
    from qgis.core import QgsLayoutItemMap, QgsLayoutPoint, QgsLayoutSize, QgsUnitTypes
    mm = QgsUnitTypes.LayoutMillimeters
    item = QgsLayoutItemMap(layout)
    layout.addLayoutItem(item)
    item.attemptMove(QgsLayoutPoint(x, y, mm))
    item.attemptResize(QgsLayoutSize(w, h, mm))
    item.setLayers(layers)
    item.setCrs(crs)
    item.setExtent(extent)
    item.attemptResize(QgsLayoutSize(w, h, mm))
    item.zoomToExtent(extent)
    item.setFrameEnabled(True)
    return item


def add_class_legend(layout, map_item, layer, title, x_mm, y_mm, title_pt=13, label_pt=10.0,
                     symbol_height=None):
    """A legend of one classified layer: its class entries only (no layer name, no "Band 1")."""
    from qgis.core import (QgsLayoutItemLegend, QgsLayoutPoint, QgsLegendRenderer,
                           QgsLegendStyle, QgsMapLayerLegendUtils, QgsUnitTypes)
    from qgis.PyQt.QtGui import QFont
    legend = QgsLayoutItemLegend(layout)
    layout.addLayoutItem(legend)
    legend.setTitle(title)
    legend.setLinkedMap(map_item)
    legend.setAutoUpdateModel(False)
    root = legend.model().rootGroup()
    root.removeAllChildren()
    node = root.addLayer(layer)
    QgsLegendRenderer.setNodeLegendStyle(node, QgsLegendStyle.Hidden)  # no layer name line
    count = len(legend.model().layerLegendNodes(node, True))
    QgsMapLayerLegendUtils.setLegendNodeOrder(node, list(range(1, count)))  # no "Band 1" line
    legend.model().refreshLayerLegend(node)
    legend.setStyleFont(QgsLegendStyle.Title, QFont("Sans", title_pt, QFont.Bold))
    font = QFont("Sans")
    font.setPointSizeF(label_pt)
    legend.setStyleFont(QgsLegendStyle.SymbolLabel, font)
    if symbol_height:
        legend.setSymbolHeight(symbol_height)
    legend.attemptMove(QgsLayoutPoint(x_mm, y_mm, QgsUnitTypes.LayoutMillimeters))
    legend.adjustBoxSize()
    return legend


def add_scale_bar(layout, map_item, extent, x_mm, y_mm):
    """A two-segment kilometre scale bar with a round step for the map's width."""
    from qgis.core import (QgsLayoutItemScaleBar, QgsLayoutPoint, QgsUnitTypes)
    scale = QgsLayoutItemScaleBar(layout)
    layout.addLayoutItem(scale)
    scale.setStyle("Single Box")
    scale.setLinkedMap(map_item)
    scale.applyDefaultSize()
    scale.setUnits(QgsUnitTypes.DistanceKilometers)
    scale.setUnitLabel("km")
    scale.setNumberOfSegmentsLeft(0)
    scale.setNumberOfSegments(2)
    width_km = extent.width() / 1000.0
    step = next(s for s in (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50) if s * 2 >= width_km / 6)
    scale.setUnitsPerSegment(step)
    scale.update()
    scale.attemptMove(QgsLayoutPoint(x_mm, y_mm, QgsUnitTypes.LayoutMillimeters))
    return scale


def export_png(layout, path, dpi=110):
    from qgis.core import QgsLayoutExporter
    exporter = QgsLayoutExporter(layout)
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = dpi
    settings.exportMetadata = False  # no creation time or user name: same run, same bytes
    status = exporter.exportToImage(path, settings)
    if status != QgsLayoutExporter.Success:
        raise SystemExit(f"Layout export failed ({status}) for {path}")
    return path
