"""Dock panel to label validation points by eye: one point at a time, one click (or key) per label.

Pick the points layer and its reference field; the panel zooms the map canvas to each point at
the chosen scale and marks it, and offers a button per class (keys 1-9 too; left/right arrows
step through the points, Ctrl+Z undoes the last label). While the panel is open the classified
maps are hidden, so that points are labelled from the imagery, not from the map being judged. The classes come from
the field's drop-down (the ValueMap that *Create validation points* sets), else from the category
names of a chosen classified raster, else from the plugin's eight classes. Every label is saved to
the layer's file immediately (start editing / change value / commit), so nothing is lost if QGIS
closes. If the layer was already in edit mode, it stays so, but pending edits are committed too.
"""
from qgis.core import (
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsFieldProxyModel,
    QgsMapLayerProxyModel,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsDockWidget, QgsFieldComboBox, QgsMapLayerComboBox, QgsVertexMarker
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor, QKeySequence
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QShortcut,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.classes import FUNCTION_CLASSES

DEFAULT_FIELD = "ref_class"
# the fields Create validation points writes beside ref_class: the dock never writes into them
SAMPLE_FIELDS = ("point_id", "map_class", "map_label", "stratum", "weight", "incl_prob")
DEFAULT_SCALE = 1500


def value_map_choices(layer, field_name):
    """[(code, label)] from a ValueMap editor widget on ``field_name``, or []."""
    if layer is None or not field_name:
        return []
    idx = layer.fields().indexFromName(field_name)
    if idx < 0:
        return []
    setup = layer.editorWidgetSetup(idx)
    if setup.type() != "ValueMap":
        return []
    entries = setup.config().get("map", [])
    if isinstance(entries, dict):  # old style: {label: value}
        entries = [{k: v} for k, v in entries.items()]
    out = []
    for entry in entries:
        for label, value in entry.items():
            try:
                code = int(value)
            except (TypeError, ValueError):
                continue  # the NULL placeholder or text values
            out.append((code, str(label)))
    return out


def raster_choices(layer):
    """[(code, label)] from the category names of a GDAL raster layer, or []."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        return []
    try:
        from ..validation.raster_access import raster_info
        info = raster_info(layer.source())
    except Exception:  # not a plain file, unreadable...
        return []
    return [(c, f"{info.labels[c]} ({c})") for c in sorted(info.labels)]


def default_choices():
    return [(c.code, f"{c.label} ({c.code})") for c in FUNCTION_CLASSES]


class LabellingDock(QgsDockWidget):
    """Step through validation points and label their reference class."""

    def __init__(self, iface, parent=None):
        super().__init__("Urban Functions: label validation points", parent)
        self.setObjectName("UrbanFunctionsLabellingDock")
        self.iface = iface
        self.canvas = iface.mapCanvas() if iface is not None else None
        self.layer = None
        self.fids = []
        self.index = -1
        self.labelled = 0
        self.marker = None
        self.class_buttons = []
        self.shortcuts = []
        self.choices = []
        self.undo_stack = []   # (fid, value before) of the labels given, last last
        self.hidden_maps = []  # layer ids of the classified maps hidden while labelling
        self._build()
        self._install_shortcuts()
        self.visibilityChanged.connect(self._on_visibility)
        self.layer_combo.layerChanged.connect(self._on_layer_changed)
        self.field_combo.fieldChanged.connect(self._on_field_changed)
        self.raster_combo.layerChanged.connect(lambda _: self._rebuild_classes())
        self._on_layer_changed(self.layer_combo.currentLayer())

    # UI ---------------------------------------------------------------------------------------
    def _build(self):
        body = QWidget()
        lay = QVBoxLayout(body)
        form = QFormLayout()
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.PointLayer)
        self.layer_combo.setAllowEmptyLayer(True)
        form.addRow("Points", self.layer_combo)
        self.field_combo = QgsFieldComboBox()
        self.field_combo.setFilters(QgsFieldProxyModel.Numeric)
        # never a field picked for the user: the dock writes into it at the first key press
        self.field_combo.setAllowEmptyFieldName(True)
        self.field_combo.setToolTip(f"The integer field the labels are written into ("
                                    f"{DEFAULT_FIELD}, as Create validation points makes it). "
                                    "Its values are replaced as you label.")
        form.addRow("Reference field", self.field_combo)
        self.raster_combo = QgsMapLayerComboBox()
        self.raster_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.raster_combo.setAllowEmptyLayer(True)
        self.raster_combo.setLayer(None)
        self.raster_combo.setToolTip("Used for the class names when the reference field has no "
                                     "drop-down (value map).")
        form.addRow("Classes from", self.raster_combo)
        self.scale_spin = QSpinBox()
        self.scale_spin.setRange(50, 10_000_000)
        self.scale_spin.setSingleStep(250)
        self.scale_spin.setPrefix("1:")
        self.scale_spin.setValue(DEFAULT_SCALE)
        form.addRow("Zoom scale", self.scale_spin)
        self.skip_check = QCheckBox("Next / previous skip labelled points")
        form.addRow(self.skip_check)
        lay.addLayout(form)

        nav = QHBoxLayout()
        self.prev_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.unlabelled_button = QPushButton("Next unlabelled")
        self.prev_button.clicked.connect(self.previous)
        self.next_button.clicked.connect(self.next)
        self.unlabelled_button.clicked.connect(self.next_unlabelled)
        for b in (self.prev_button, self.next_button, self.unlabelled_button):
            nav.addWidget(b)
        lay.addLayout(nav)
        self.point_label = QLabel("No point layer")
        self.point_label.setWordWrap(True)
        lay.addWidget(self.point_label)
        self.progress_label = QLabel("")
        self.progress_bar = QProgressBar()
        lay.addWidget(self.progress_label)
        lay.addWidget(self.progress_bar)
        self.buttons_box = QWidget()
        self.buttons_grid = QGridLayout(self.buttons_box)
        self.buttons_grid.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.buttons_box)
        self.clear_button = QPushButton("Clear label")
        self.clear_button.clicked.connect(lambda: self.label_current(None))
        lay.addWidget(self.clear_button)
        hint = QLabel("Keys 1-9 label the point (with the map or this panel focused) and move to "
                      "the next unlabelled one; left/right arrows step through the points; "
                      "Ctrl+Z undoes the last label. Classified maps are hidden while this "
                      "panel is open.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: gray")
        lay.addWidget(hint)
        lay.addStretch(1)
        self.setWidget(body)

    def _install_shortcuts(self):
        targets = [(self, Qt.WidgetWithChildrenShortcut)]
        if self.canvas is not None:
            targets.append((self.canvas, Qt.WidgetShortcut))
        for widget, context in targets:
            keys = [(str(k), lambda k=k: self._on_key(k)) for k in range(1, 10)]
            keys += [("Right", self.next), ("Left", self.previous), ("Ctrl+Z", self.undo)]
            for key, slot in keys:
                sc = QShortcut(QKeySequence(key), widget)
                sc.setContext(context)
                sc.activated.connect(slot)
                self.shortcuts.append(sc)

    def _on_visibility(self, visible):
        for sc in self.shortcuts:
            sc.setEnabled(bool(visible))
        if self.marker is not None:
            self.marker.setVisible(bool(visible))
        if visible:
            self.hide_maps()
        else:
            self.restore_maps()

    def _on_key(self, k):
        if 1 <= k <= len(self.choices):
            self.label_current(self.choices[k - 1][0], advance=True)
        else:
            self._message(f"Key {k} has no class: keys 1-{min(len(self.choices), 9)} are "
                          f"{', '.join(label for _, label in self.choices[:9])}.")

    def hide_maps(self):
        """Hide the classified maps (and their derived outputs) in the layer tree; returns the
        ids hidden. Labels must come from the imagery, not from the map being judged."""
        from ..qgis_common.styling import PROP_KIND
        root = QgsProject.instance().layerTreeRoot()
        for layer in QgsProject.instance().mapLayers().values():
            if layer.customProperty(PROP_KIND) not in ("classes", "fraction", "weights"):
                continue
            node = root.findLayer(layer.id())
            if node is not None and node.isVisible() and layer.id() not in self.hidden_maps:
                node.setItemVisibilityChecked(False)
                self.hidden_maps.append(layer.id())
        return list(self.hidden_maps)

    def restore_maps(self):
        """Show again the maps :meth:`hide_maps` hid (those still in the project)."""
        root = QgsProject.instance().layerTreeRoot()
        for layer_id in self.hidden_maps:
            node = root.findLayer(layer_id)
            if node is not None:
                node.setItemVisibilityChecked(True)
        self.hidden_maps = []

    # layer / field ----------------------------------------------------------------------------
    def set_layer(self, layer):
        self.layer_combo.setLayer(layer)
        if self.layer is not layer:  # the signal does not fire when nothing changed
            self._on_layer_changed(layer)

    def set_field(self, name):
        self.field_combo.setField(name)
        self._on_field_changed(name)

    @property
    def field_name(self):
        return self.field_combo.currentField()

    def _on_layer_changed(self, layer):
        if self.layer is not None:
            try:
                self.layer.featureAdded.disconnect(self._reload)
                self.layer.featureDeleted.disconnect(self._reload)
            except (TypeError, RuntimeError):
                pass
        self.layer = layer if isinstance(layer, QgsVectorLayer) else None
        self.field_combo.setLayer(self.layer)
        if self.layer is not None:
            has_default = self.layer.fields().indexFromName(DEFAULT_FIELD) >= 0
            self.field_combo.setField(DEFAULT_FIELD if has_default else "")
            self.layer.featureAdded.connect(self._reload)
            self.layer.featureDeleted.connect(self._reload)
        self._reload()
        self._rebuild_classes()
        if self.fids:
            self.go_to(self._first_unlabelled_or_first())

    def _on_field_changed(self, name):
        self._reload()
        self._rebuild_classes()
        self._show_current()

    def _reload(self, *args):
        self.fids = []
        self.labelled = 0
        if self.layer is None:
            self.index = -1
            self._show_current()
            return
        fields = self.layer.fields()
        order_field = "point_id" if fields.indexFromName("point_id") >= 0 else None
        request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
        rows = []
        idx = fields.indexFromName(self.field_name) if self.field_name else -1
        for f in self.layer.getFeatures(request):
            key = f[order_field] if order_field else f.id()
            try:
                key = int(key)
            except (TypeError, ValueError):
                key = f.id()
            rows.append((key, f.id()))
            if idx >= 0 and _has_value(f.attribute(idx)):
                self.labelled += 1
        rows.sort()
        self.fids = [fid for _, fid in rows]
        if self.index >= len(self.fids):
            self.index = len(self.fids) - 1
        self._update_progress()

    def _rebuild_classes(self):
        choices = value_map_choices(self.layer, self.field_name)
        if not choices:
            choices = raster_choices(self.raster_combo.currentLayer())
        if not choices:
            choices = default_choices()
        self.choices = choices
        for b in self.class_buttons:
            self.buttons_grid.removeWidget(b)
            b.deleteLater()
        self.class_buttons = []
        for i, (code, label) in enumerate(choices):
            text = f"{i + 1}  {label}" if i < 9 else label
            b = QPushButton(text)
            b.setToolTip(f"Reference class {code}" + (f" (key {i + 1})" if i < 9 else ""))
            b.clicked.connect(lambda _=False, code=code: self.label_current(code, advance=True))
            self.class_buttons.append(b)
            self.buttons_grid.addWidget(b, i // 2, i % 2)

    # navigation -------------------------------------------------------------------------------
    def _value(self, fid):
        if self.layer is None or not self.field_name:
            return None
        f = self.layer.getFeature(fid)
        if not f.isValid():
            return None
        v = f[self.field_name]
        return v if _has_value(v) else None

    def _first_unlabelled_or_first(self):
        for i, fid in enumerate(self.fids):
            if self._value(fid) is None:
                return i
        return 0

    def go_to(self, index):
        if not self.fids:
            self.index = -1
            self._show_current()
            return False
        self.index = max(0, min(int(index), len(self.fids) - 1))
        self._show_current()
        self.zoom_to_current()
        return True

    def _step(self, direction):
        if not self.fids:
            return False
        i = self.index
        for _ in range(len(self.fids)):
            i += direction
            if i < 0 or i >= len(self.fids):
                return False
            if not self.skip_check.isChecked() or self._value(self.fids[i]) is None:
                return self.go_to(i)
        return False

    def next(self):
        return self._step(1)

    def previous(self):
        return self._step(-1)

    def next_unlabelled(self):
        """Go to the next unlabelled point after the current one (wrapping); False if none."""
        n = len(self.fids)
        for k in range(1, n + 1):
            i = (self.index + k) % n
            if self._value(self.fids[i]) is None:
                return self.go_to(i)
        self._show_current()
        return False

    @property
    def current_fid(self):
        return self.fids[self.index] if 0 <= self.index < len(self.fids) else None

    def zoom_to_current(self):
        fid = self.current_fid
        if fid is None or self.canvas is None:
            return
        f = self.layer.getFeature(fid)
        g = f.geometry()
        if g is None or g.isNull() or g.isEmpty():
            return
        pt = g.centroid().asPoint()
        dest = self.canvas.mapSettings().destinationCrs()
        if dest.isValid() and self.layer.crs().isValid() and dest != self.layer.crs():
            ct = QgsCoordinateTransform(self.layer.crs(), dest, QgsProject.instance())
            pt = ct.transform(pt)
        extent = self.canvas.extent()
        if extent.isEmpty():  # a canvas that never showed anything ignores setCenter
            self.canvas.setExtent(QgsRectangle(pt.x() - 100, pt.y() - 100,
                                               pt.x() + 100, pt.y() + 100))
        self.canvas.setCenter(QgsPointXY(pt))
        self.canvas.zoomScale(float(self.scale_spin.value()))
        if self.marker is None:
            self.marker = QgsVertexMarker(self.canvas)
            self.marker.setColor(QColor(255, 0, 255))
            self.marker.setIconType(QgsVertexMarker.ICON_CROSS)
            self.marker.setIconSize(18)
            self.marker.setPenWidth(2)
        self.marker.setCenter(QgsPointXY(pt))
        self.canvas.refresh()

    # labelling --------------------------------------------------------------------------------
    def undo(self):
        """Give the last labelled point its previous value back and go to it."""
        if not self.undo_stack:
            self._message("Nothing to undo.", info=True)
            return False
        fid, before = self.undo_stack.pop()
        if fid not in self.fids:
            return False
        self.go_to(self.fids.index(fid))
        return self.label_current(None if before is None else int(before), undoing=True)

    def label_current(self, code, advance=False, undoing=False):
        """Save ``code`` (None clears) as the current point's reference class, at once.

        With ``advance`` the panel then moves to the next unlabelled point. Returns True if saved.
        """
        fid = self.current_fid
        if fid is None or self.layer is None:
            return False
        idx = self.layer.fields().indexFromName(self.field_name) if self.field_name else -1
        if idx < 0:
            self._message("Choose the reference field first" + (
                f" ({DEFAULT_FIELD})." if self.layer.fields().indexFromName(DEFAULT_FIELD) >= 0
                else f" ('{self.layer.name()}' has no {DEFAULT_FIELD} field: add an integer "
                     f"field {DEFAULT_FIELD}, or pick the field the labels go into)."))
            return False
        problem = self._not_writable(idx)
        if problem:
            self._message(problem)
            return False
        before = self._value(fid)
        layer = self.layer
        was_editing = layer.isEditable()
        if not was_editing and not layer.startEditing():
            self._message(f"'{layer.name()}' cannot be edited (read-only file or format?).")
            return False
        ok = layer.changeAttributeValue(fid, idx, None if code is None else int(code))
        ok = layer.commitChanges(not was_editing) and ok
        if not ok:
            errors = "; ".join(layer.commitErrors())
            if not was_editing and layer.isEditable():
                layer.rollBack()
            self._message(f"The label could not be saved: {errors}")
            return False
        if not undoing:
            self.undo_stack.append((fid, before))
        if before is None and code is not None:
            self.labelled += 1
        elif before is not None and code is None:
            self.labelled -= 1
        self._update_progress()
        self._show_current()
        if advance and code is not None:
            if not self.next_unlabelled():
                self._message("Every point is labelled: run Assess map accuracy "
                              "(Processing toolbox, Urban Functions > Validation).", info=True)
        return True

    def _not_writable(self, idx):
        """Why labels must not go into field ``idx`` (the layer's key, or a field of the sample
        design that the accuracy estimates read), or ''."""
        name = self.layer.fields().at(idx).name()
        if idx in self.layer.primaryKeyAttributes() or name.lower() == "fid":
            return f"'{name}' identifies the points: choose another reference field."
        if name in SAMPLE_FIELDS:
            return (f"'{name}' belongs to the sample design (Assess map accuracy reads it): "
                    f"choose {DEFAULT_FIELD} or another field for the labels.")
        return ""

    def _message(self, text, info=False):
        self.point_label.setText(text)
        bar = self.iface.messageBar() if self.iface is not None and hasattr(
            self.iface, "messageBar") else None
        if bar is not None:
            from qgis.core import Qgis
            bar.pushMessage("Validation", text, Qgis.Info if info else Qgis.Warning, 5)

    # display ----------------------------------------------------------------------------------
    def label_of(self, code):
        for c, label in self.choices:
            if c == code:
                return label
        return str(code)

    def _show_current(self):
        fid = self.current_fid
        if fid is None:
            self.point_label.setText("No point layer" if self.layer is None else "No point")
            return
        f = self.layer.getFeature(fid)
        parts = [f"Point {self.index + 1} of {len(self.fids)}"]
        if self.layer.fields().indexFromName("point_id") >= 0:
            parts[0] += f" (id {f['point_id']})"
        ref = self._value(fid)
        parts.append("reference: " + ("— not labelled —" if ref is None
                                      else self.label_of(int(ref))))
        self.point_label.setText("\n".join(parts))

    def _update_progress(self):
        total = len(self.fids)
        self.progress_label.setText(f"{self.labelled} of {total} labelled")
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(self.labelled)

    def progress(self):
        """(labelled, total)."""
        return self.labelled, len(self.fids)

    # clean-up ---------------------------------------------------------------------------------
    def cleanup(self):
        """Remove the canvas marker and shortcuts and show the hidden maps again (call before
        deleting the dock)."""
        self.restore_maps()
        for sc in self.shortcuts:
            sc.setEnabled(False)
            sc.deleteLater()
        self.shortcuts = []
        if self.marker is not None and self.canvas is not None:
            self.canvas.scene().removeItem(self.marker)
            self.marker = None

    def closeEvent(self, event):
        if self.marker is not None:
            self.marker.setVisible(False)
        super().closeEvent(event)


def _has_value(v):
    if v is None:
        return False
    try:
        from qgis.PyQt.QtCore import QVariant
        if isinstance(v, QVariant):
            return not v.isNull()
    except ImportError:  # pragma: no cover
        pass
    return not (isinstance(v, str) and not v.strip())
