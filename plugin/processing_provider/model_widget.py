"""MODEL in the Processing dialog: a drop-down of the installed models that still takes a path.

The parameter stays a string, so ``qgis_process`` and scripts pass a model name or an .onnx
path as before; only the toolbox dialog gets this widget (through the parameter's
``widget_wrapper`` metadata).
"""
from processing.gui.wrappers import WidgetWrapper
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QToolButton, QWidget

BEST_FIT = "Best fit for the inputs (empty)"


class ModelWidgetWrapper(WidgetWrapper):
    def createWidget(self):
        from ..qgis_common.user_models import list_models
        widget = QWidget()
        layout = QHBoxLayout(widget)
        layout.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.NoInsert)
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(30)
        self.combo.setToolTip("An installed model, or the path of an .onnx model file")
        self.combo.addItem(BEST_FIT, "")
        for entry in list_models():
            self.combo.addItem(f"{entry.card.name}: {entry.card.title}", entry.card.name)
            self.combo.setItemData(self.combo.count() - 1, entry.card.summary, Qt.ToolTipRole)
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("Choose an .onnx model file")
        browse.clicked.connect(self._browse)
        layout.addWidget(self.combo, 1)
        layout.addWidget(browse)
        return widget

    def _browse(self):
        path, _filter = QFileDialog.getOpenFileName(self.widget, "Urban Functions model", "",
                                                    "ONNX model (*.onnx)")
        if path:
            self.combo.setEditText(path)

    def setValue(self, value):
        value = "" if value is None else str(value)
        index = self.combo.findData(value)
        if index >= 0:
            self.combo.setCurrentIndex(index)
        else:
            self.combo.setEditText(value)

    def value(self):
        """The model's card name for a listed model, else the text typed (a path or a name)."""
        text = self.combo.currentText().strip()
        index = self.combo.findText(text)
        if index >= 0:
            return self.combo.itemData(index)
        return text
