"""The "Classify urban functions" dialog (built in code, no .ui file).

It is non-modal: the run is a :class:`ClassifyTask` in QGIS's task manager, so the map stays
usable, the progress shows in the dialog and the task manager, and either can cancel it.
"""
import os

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsSettings,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox, QgsMessageBar
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFrame,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.model_card import MODALITIES, MODALITY_LABELS
from ..core.inference_modes import MODE_CHOICES
from ..lcz.so2sat_h5 import DOWNLOAD_URL as SO2SAT_DOWNLOAD_URL
from ..lcz.so2sat_h5 import FILENAME as SO2SAT_FILENAME
from ..qgis_common import qgis_inputs
from .results import add_extra_layers, add_result_layer, push_failure, push_success
from ..qgis_common.styling import PROP_MODALITY
from .task import ClassifyTask
from ..qgis_common.user_models import user_models_dir

SETTINGS = "UrbanFunctions/dialog/"
ICON = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "resources", "icons", "urban_functions.svg")
AREA_INPUTS, AREA_CANVAS, AREA_POLYGONS = "inputs", "canvas", "polygons"
DEVICES = (("Automatic (GPU if available)", "auto"), ("CPU", "cpu"), ("GPU (CUDA)", "cuda"))
OTHER_MODEL = "__file__"
MODEL_DEFAULT_TEXT = "Model default"
NO_INPUT_MESSAGE = ("Choose at least one input layer: VHR imagery, night-time light or a "
                    "Sentinel-2 season.")


class ClassifyDialog(QDialog):
    """Pick inputs, model, area and output; run in the background; add the styled result."""

    resultReady = pyqtSignal(object, object)  # ClassifyResult, QgsRasterLayer (or None)
    runFailed = pyqtSignal(str, bool)          # message, cancelled
    installRequested = pyqtSignal()            # "Install dependencies…" pressed
    diagnosticsRequested = pyqtSignal()        # "Diagnostics…" pressed

    def __init__(self, iface=None, parent=None):
        super().__init__(parent or (iface.mainWindow() if iface else None))
        self.iface = iface
        self.task = None
        self.extra_layers = {}
        self._model_picked_by_user = False
        self._models = []
        self._model_errors = []
        self._model_file_error = ""
        self._cannot_run_shown = False
        self.setWindowTitle("Classify urban functions")
        self.setWindowIcon(QIcon(ICON))
        self.setMinimumWidth(560)
        self._build()
        self.reload_models()
        self.restore_settings()
        self.autofill_inputs()
        self._update_model_info()
        self._update_area_widgets()
        self._show_dependency_warning()
        self._update_run_state()
        self.fit_to_screen()

    def fit_to_screen(self, free=None):
        """Open no larger than the screen's free area (``free``: a QRect; default: this
        screen's). On a 1366x768 laptop the settings scroll and the buttons stay visible."""
        if free is None:
            screen = self.screen() if hasattr(self, "screen") else None
            screen = screen or QApplication.primaryScreen()
            if screen is None:
                return
            free = screen.availableGeometry()
        hint = self.sizeHint()
        # the window frame and title bar are not part of the dialog's own height
        self.resize(min(max(hint.width(), 640), free.width() - 16),
                    min(max(hint.height(), 600), free.height() - 48))

    # construction -----------------------------------------------------------------------------
    def _build(self):
        outer = QVBoxLayout(self)
        self.bar = QgsMessageBar(self)
        self.bar.setSizePolicy(QSizePolicy.Minimum, QSizePolicy.Fixed)
        outer.addWidget(self.bar)
        # the settings scroll, so the dialog fits a 1366x768 laptop screen with Advanced open;
        # the progress, status and Run/Cancel/Close stay outside, always visible
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        content = QWidget()
        root = QVBoxLayout(content)
        root.setContentsMargins(0, 0, 0, 0)
        self.scroll.setWidget(content)
        outer.addWidget(self.scroll, 1)

        # inputs
        box = QGroupBox("Input layers (any of them; at least one)")
        grid = QGridLayout(box)
        self.input_combos, self.input_notes = {}, {}
        for row, modality in enumerate(MODALITIES):
            combo = QgsMapLayerComboBox()
            combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
            combo.setAllowEmptyLayer(True)
            combo.setLayer(None)
            combo.setToolTip(f"Raster layer with {MODALITY_LABELS[modality].lower()} (optional)"
                             + (": one band per time step, e.g. monthly night light"
                                if modality == "temporal" else ""))
            combo.layerChanged.connect(self._inputs_changed)
            note = QLabel("")
            note.setStyleSheet("color: #777;")
            label = QLabel(MODALITY_LABELS[modality])
            label.setBuddy(combo)
            grid.addWidget(label, row, 0)
            grid.addWidget(combo, row, 1)
            grid.addWidget(note, row, 2)
            self.input_combos[modality] = combo
            self.input_notes[modality] = note
        grid.setColumnStretch(1, 1)
        root.addWidget(box)

        # model
        box = QGroupBox("Model")
        lay = QVBoxLayout(box)
        self.model_combo = QComboBox()
        # long model titles must not widen the dialog past a laptop screen (full title: tooltip)
        self.model_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(28)
        self.model_combo.activated.connect(self._model_activated)
        self.model_combo.currentIndexChanged.connect(self._update_model_info)
        self.model_combo.currentIndexChanged.connect(self._settings_changed)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        self.import_so2sat_button = QPushButton("Import So2Sat LCZ weights…")
        self.import_so2sat_button.setToolTip(
            "Install the pretrained So2Sat LCZ42 network (17 Local Climate Zones from "
            "Sentinel-2 L1C, 100 m; MIT licence) from its original Keras weights file, "
            f"downloaded from\n{SO2SAT_DOWNLOAD_URL}\ninto {user_models_dir()}")
        self.import_so2sat_button.clicked.connect(lambda _checked=False: self.import_so2sat())
        row.addWidget(self.import_so2sat_button)
        lay.addLayout(row)
        self.model_file = QgsFileWidget()
        self.model_file.setStorageMode(QgsFileWidget.GetFile)
        self.model_file.setFilter("ONNX model (*.onnx)")
        self.model_file.setDialogTitle("Choose an Urban Functions model")
        self.model_file.fileChanged.connect(self._update_model_info)
        self.model_file.setVisible(False)
        lay.addWidget(self.model_file)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        self.model_info.setTextFormat(Qt.RichText)
        lay.addWidget(self.model_info)
        root.addWidget(box)

        # area
        box = QGroupBox("Area to process")
        lay = QGridLayout(box)
        self.area_group = QButtonGroup(self)
        self.area_inputs = QRadioButton("Whole overlap of the input layers")
        self.area_canvas = QRadioButton("Current map canvas extent")
        self.area_polygons = QRadioButton("Inside the polygons of")
        self.aoi_combo = QgsMapLayerComboBox()
        self.aoi_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.aoi_combo.setAllowEmptyLayer(True)
        self.aoi_combo.setLayer(None)
        self.aoi_selected = QCheckBox("Selected features only")
        for i, button in enumerate((self.area_inputs, self.area_canvas, self.area_polygons)):
            self.area_group.addButton(button, i)
            button.toggled.connect(self._update_area_widgets)
        self.area_inputs.setChecked(True)
        if self.iface is None:
            self.area_canvas.setEnabled(False)
            self.area_canvas.setToolTip("No map canvas is available.")
        lay.addWidget(self.area_inputs, 0, 0, 1, 3)
        lay.addWidget(self.area_canvas, 1, 0, 1, 3)
        lay.addWidget(self.area_polygons, 2, 0)
        lay.addWidget(self.aoi_combo, 2, 1)
        lay.addWidget(self.aoi_selected, 2, 2)
        lay.setColumnStretch(1, 1)
        root.addWidget(box)

        # output
        box = QGroupBox("Output")
        form = QFormLayout(box)
        self.output_file = QgsFileWidget()
        self.output_file.setStorageMode(QgsFileWidget.SaveFile)
        self.output_file.setFilter("GeoTIFF (*.tif *.tiff)")
        self.output_file.setDialogTitle("Save urban functions as")
        self.output_file.lineEdit().setPlaceholderText("functions.tif")
        form.addRow("Output GeoTIFF", self.output_file)
        row = QHBoxLayout()
        self.confidence = QCheckBox("Add a confidence band")
        self.confidence.setToolTip("Band 2: probability of the chosen class, in percent.")
        self.overwrite = QCheckBox("Overwrite an existing file")
        row.addWidget(self.confidence)
        row.addWidget(self.overwrite)
        row.addStretch(1)
        form.addRow(row)
        root.addWidget(box)

        # advanced
        self.advanced = QgsCollapsibleGroupBox("Advanced")
        self.advanced.setCollapsed(True)
        self.advanced.setSaveCollapsedState(False)
        form = QFormLayout(self.advanced)
        self.tile_size = QSpinBox()
        self.tile_size.setRange(0, 4096)
        self.tile_size.setSpecialValueText(MODEL_DEFAULT_TEXT)
        self.tile_size.setSuffix(" cells")
        self.tile_size.setToolTip("Tile edge in output cells; larger tiles need more memory.")
        self.overlap = QSpinBox()
        self.overlap.setRange(-1, 2048)
        self.overlap.setSpecialValueText(MODEL_DEFAULT_TEXT)
        self.overlap.setSuffix(" cells")
        self.overlap.setValue(-1)
        self.overlap.setToolTip("Overlap between neighbouring tiles, blended to hide seams.")
        self.batch_size = QSpinBox()
        self.batch_size.setRange(0, 256)
        self.batch_size.setSpecialValueText("Automatic")
        self.batch_size.setValue(0)
        self.batch_size.setToolTip("Tiles per inference call. Automatic: 4 on the CPU; on a GPU "
                                   "as many as fit in half of its free memory.")
        self.device = QComboBox()
        for label, value in DEVICES:
            self.device.addItem(label, value)
        form.addRow("Tile size", self.tile_size)
        form.addRow("Tile overlap", self.overlap)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Device", self.device)
        self.precision = QComboBox()
        self.precision.addItem("float32", "fp32")
        self.precision.addItem("float16 (GPU only)", "fp16")
        self.precision.setToolTip("float16 runs faster on most GPUs; the first 4,096 cells are "
                                  "also run in float32 and the run goes on in float32 when "
                                  "classes change. Refused on the CPU.")
        form.addRow("Precision", self.precision)
        from ..core.diagnostics import device_summary
        self.device_info = QLabel(device_summary())
        self.device_info.setWordWrap(True)
        self.device_info.setStyleSheet("color: #555;")
        form.addRow("", self.device_info)
        self.probabilities = QCheckBox("Write class probabilities (one float32 band per class)")
        self.probabilities.setToolTip("Also writes …_probabilities.tif next to the output. The "
                                      "outputs a model card derives (e.g. the So2Sat LCZ "
                                      "model's settlement extent and function map) are always "
                                      "written.")
        form.addRow("Probabilities", self.probabilities)
        self.optional_outputs = QCheckBox("Write the model's optional outputs")
        self.optional_outputs.setToolTip(
            "For models that have them: e.g. the input weights of a fusion model "
            "(…_gates.tif: how much each layer drove each cell, shown as RGB).")
        form.addRow("Optional outputs", self.optional_outputs)
        self.inference_mode = QComboBox()
        # long choices must not widen the dialog beyond a small screen
        self.inference_mode.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.inference_mode.setMinimumContentsLength(24)
        for label, value in MODE_CHOICES:
            self.inference_mode.addItem(label, value)
        self.inference_mode.setToolTip(
            "Fast runs the network once per tile (patch classifiers such as the VHR scene model: "
            "their trunk once per tile). Accurate also runs it on the tile flipped and "
            "transposed and averages the views (four times the inference time). Per window "
            "(patch classifiers only) runs every cell's window on its own, as on the scene "
            "benchmark (about ten times slower). The cards of the VHR scene model and of models "
            "trained on your labels give each mode's measured accuracy.")
        form.addRow("Inference mode", self.inference_mode)
        root.addWidget(self.advanced)

        root.addStretch(1)

        # progress + buttons: outside the scroll area
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.run_hint = QLabel("")
        self.run_hint.setWordWrap(True)
        self.run_hint.setStyleSheet("color: #c00;")
        self.run_hint.setVisible(False)
        outer.addWidget(self.progress)
        outer.addWidget(self.status)
        outer.addWidget(self.run_hint)
        self.buttons = QDialogButtonBox()
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.setEnabled(False)
        self.install_button = QPushButton("Install dependencies…")
        self.install_button.setVisible(False)
        self.install_button.clicked.connect(lambda _checked=False: self.installRequested.emit())
        self.diagnostics_button = QPushButton("Diagnostics…")
        self.diagnostics_button.setToolTip("Versions, execution providers and GPU, with Copy "
                                           "for bug reports")
        self.diagnostics_button.clicked.connect(
            lambda _checked=False: self.diagnosticsRequested.emit())
        self.close_button = self.buttons.addButton(QDialogButtonBox.Close)
        self.buttons.addButton(self.diagnostics_button, QDialogButtonBox.HelpRole)
        self.buttons.addButton(self.install_button, QDialogButtonBox.ActionRole)
        self.buttons.addButton(self.run_button, QDialogButtonBox.ActionRole)
        self.buttons.addButton(self.cancel_button, QDialogButtonBox.ActionRole)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.buttons.rejected.connect(self.reject)
        outer.addWidget(self.buttons)
        self.output_file.fileChanged.connect(self._settings_changed)
        self.overwrite.toggled.connect(self._settings_changed)
        self.model_file.fileChanged.connect(self._settings_changed)
        for button in (self.area_inputs, self.area_canvas, self.area_polygons):
            button.toggled.connect(self._settings_changed)
        self.aoi_combo.layerChanged.connect(self._settings_changed)

    # models -----------------------------------------------------------------------------------
    def reload_models(self):
        """Fill the model picker with the installed models (their cards are read without
        onnxruntime too, so a user sees the models before installing it)."""
        from ..qgis_common.user_models import list_models
        current = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self._models, self._model_errors = [], []
        self._models = list_models(errors=self._model_errors)
        for entry in self._models:
            self.model_combo.addItem(entry.card.title, entry.path)
            self.model_combo.setItemData(self.model_combo.count() - 1, entry.card.summary,
                                         Qt.ToolTipRole)
        self.model_combo.addItem("Other model file…", OTHER_MODEL)
        index = self.model_combo.findData(current)
        self.model_combo.setCurrentIndex(max(0, index))
        self.model_combo.blockSignals(False)
        self._update_model_info()

    def _model_activated(self, _index):
        self._model_picked_by_user = True

    def selected_model(self):
        """(path, card) of the chosen model, or (path or None, None) if it cannot be read."""
        data = self.model_combo.currentData()
        if data == OTHER_MODEL:
            path = self.model_file.filePath().strip()
            if not path:
                return None, None
            try:
                from ..core.models import cached_card
                self._model_file_error = ""
                return path, cached_card(path)
            except Exception as exc:  # ModelError, missing file, missing onnxruntime
                self._model_file_error = str(exc)
                return path, None
        for entry in self._models:
            if entry.path == data:
                return entry.path, entry.card
        return None, None

    def select_model(self, name_or_path):
        """Select a model by card name or file path, as the user would (scripts, tests)."""
        for i, entry in enumerate(self._models):
            if name_or_path in (entry.card.name, entry.path):
                self.model_combo.setCurrentIndex(i)
                self._model_picked_by_user = True
                return True
        if name_or_path and os.path.isfile(name_or_path):
            self.model_combo.setCurrentIndex(self.model_combo.findData(OTHER_MODEL))
            self.model_file.setFilePath(name_or_path)
            self._model_picked_by_user = True
            return True
        return False

    # So2Sat LCZ import ------------------------------------------------------------------------
    def import_so2sat(self, h5_path=None, confirm_replace=None):
        """Install the So2Sat LCZ42 model from its Keras ``.h5`` into the user models folder,
        refresh the picker and select it.  Without ``h5_path`` a file dialog asks for the file.
        ``confirm_replace(message) -> bool`` decides whether a differing installed copy is
        replaced (default: ask with a message box).  Returns the model path, or ``None``."""
        if h5_path is None:
            h5_path = self._ask_so2sat_file()
            if not h5_path:
                return None
        from ..core.errors import OutputError, UrbanFunctionsError
        from ..lcz.card import FILE_STEM
        from ..lcz.importer import import_so2sat_weights
        folder = user_models_dir()
        target = os.path.join(folder, FILE_STEM + ".onnx")
        confirm = confirm_replace or self._confirm_replace
        report = {}
        self.bar.clearWidgets()
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            try:
                path = import_so2sat_weights(h5_path, folder, feedback=self.status.setText,
                                             report=report)
            except OutputError as exc:
                if not os.path.isfile(target):
                    raise
                QApplication.restoreOverrideCursor()
                try:
                    replace = confirm(f"{exc}\n\nReplace it with this import?")
                finally:
                    QApplication.setOverrideCursor(Qt.WaitCursor)
                if not replace:
                    self.status.setText(f"So2Sat import: kept the installed model {target}.")
                    return None
                path = import_so2sat_weights(h5_path, folder, overwrite=True,
                                             feedback=self.status.setText, report=report)
        except UrbanFunctionsError as exc:
            self.bar.pushCritical("So2Sat import failed", str(exc))
            self.status.setText(f"So2Sat import failed: {exc}")
            return None
        except Exception as exc:  # a bug, not a user error: say so, keep the dialog usable
            import traceback
            from qgis.core import Qgis, QgsMessageLog
            QgsMessageLog.logMessage(traceback.format_exc(), "Urban Functions", Qgis.Critical)
            message = f"Unexpected error: {exc.__class__.__name__}: {exc}"
            self.bar.pushCritical("So2Sat import failed", message)
            self.status.setText(message)
            return None
        finally:
            QApplication.restoreOverrideCursor()
        QgsSettings().setValue(SETTINGS + "so2sat_dir", os.path.dirname(os.path.abspath(h5_path)))
        self.reload_models()
        if not self.select_model(path):
            self.select_model(os.path.abspath(path))
        self._update_model_info()
        self.bar.pushSuccess("So2Sat LCZ model installed",
                             f"{path} (MIT licence notice: {report.get('licence', '')}). It is "
                             "selected: give it one to four Sentinel-2 L1C seasons.")
        self.status.setText(f"Imported the So2Sat LCZ42 model in {report.get('seconds', 0):.1f} s: "
                            f"{path}")
        return path

    def _ask_so2sat_file(self):
        start = QgsSettings().value(SETTINGS + "so2sat_dir", os.path.expanduser("~"), type=str)
        path, _filter = QFileDialog.getOpenFileName(
            self, f"So2Sat LCZ42 weights {SO2SAT_FILENAME} (download: {SO2SAT_DOWNLOAD_URL})",
            start, "Keras weights (*.h5);;All files (*)")
        return path or None

    def _confirm_replace(self, message):
        answer = QMessageBox.question(self, "Replace the So2Sat model?", message,
                                      QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    def _update_model_info(self, *_):
        self.model_file.setVisible(self.model_combo.currentData() == OTHER_MODEL)
        path, card = self.selected_model()
        chosen = set(self.selected_inputs())
        if card is None:
            if self.model_combo.currentData() == OTHER_MODEL:
                from html import escape
                text = ("Choose an .onnx model exported for Urban Functions." if not path else
                        f"<span style='color:#c00'>{escape(path)} is not a readable Urban "
                        f"Functions model: {escape(self._model_file_error)}</span>")
            elif not self._models:
                text = "<span style='color:#c00'>No model is installed.</span>"
            elif getattr(self, "_default_problem", ""):
                from html import escape
                text = f"<span style='color:#c00'>{escape(self._default_problem)}</span>"
            else:
                text = ""
            self.model_info.setText(text)
            for note in self.input_notes.values():
                note.setText("")
            return
        accepted = []
        for m in MODALITIES:
            name = MODALITY_LABELS[m]
            if m in card.modalities:
                accepted.append(f"<b>{name}</b>" if m in chosen else name)
        from html import escape
        validation = card.validation_summary()
        colour = "#a60" if "Warning" in validation else "#262"
        from ..core.map_layout import map_layout
        layout = map_layout(card)
        classes = (f"a map of {len(layout.classes)} urban functions derived from its "
                   f"{len(card.classes)} classes (its own class map is written beside it)"
                   if layout.derives_functions else f"{len(card.classes)} classes")
        self.model_info.setText(f"{escape(card.summary)}<br><small>Accepts: "
                                f"{', '.join(accepted)}. {classes}, "
                                f"{card.output.gsd_m:g} m cells.</small><br><small "
                                f"style='color:{colour}'>{escape(validation)}</small>")
        for m, note in self.input_notes.items():
            if m in card.modalities:
                note.setText("")
                note.setStyleSheet("color: #777;")
            elif m in chosen:
                note.setText("not used by this model")
                note.setStyleSheet("color: #c00;")
            else:
                note.setText("not used by this model")
                note.setStyleSheet("color: #777;")

    # inputs -----------------------------------------------------------------------------------
    def selected_inputs(self):
        """{modality: layer} of the pickers that have a layer."""
        return {m: c.currentLayer() for m, c in self.input_combos.items() if c.currentLayer()}

    def set_input(self, modality, layer):
        self.input_combos[modality].setLayer(layer)

    def autofill_inputs(self):
        """Fill empty pickers with layers tagged with their modality (e.g. the sample city)."""
        for layer in QgsProject.instance().mapLayers().values():
            modality = layer.customProperty(PROP_MODALITY)
            if modality in self.input_combos and self.input_combos[modality].currentLayer() is None:
                self.input_combos[modality].setLayer(layer)

    def _input_paths(self):
        paths = {}
        for modality, layer in self.selected_inputs().items():
            path, _ = qgis_inputs.raster_layer_path(layer)
            if path:
                paths[modality] = path
        return paths

    def _inputs_changed(self, *_):
        chosen = list(self.selected_inputs())
        self._default_problem = ""
        if chosen and not self._model_picked_by_user and self._models:
            from ..core.errors import ModelError
            from ..qgis_common.user_models import default_model_for
            try:
                entry = default_model_for(chosen, self._input_paths())
            except ModelError as exc:
                entry = None
                # never keep a model chosen for other layers (e.g. the sample city's demo
                # model) when no validated model fits these ones: say how to get one
                self._default_problem = str(exc)
                self.model_combo.setCurrentIndex(-1)
            if entry is not None:
                index = self.model_combo.findData(entry.path)
                if index >= 0:
                    self.model_combo.setCurrentIndex(index)
        if chosen and not self.output_file.filePath().strip():
            self.output_file.setFilePath(self._suggest_output())
        self._update_model_info()
        self._update_run_state()

    def _suggest_output(self):
        layer = next(iter(self.selected_inputs().values()))
        path, _ = qgis_inputs.raster_layer_path(layer)
        folder = os.path.dirname(path) if path and os.path.exists(path) else os.path.expanduser("~")
        candidate = os.path.join(folder, "urban_functions.tif")
        n = 2
        while os.path.exists(candidate):
            candidate = os.path.join(folder, f"urban_functions_{n}.tif")
            n += 1
        return candidate

    # area -------------------------------------------------------------------------------------
    def area_mode(self):
        if self.area_canvas.isChecked():
            return AREA_CANVAS
        if self.area_polygons.isChecked():
            return AREA_POLYGONS
        return AREA_INPUTS

    def set_area_mode(self, mode):
        {AREA_CANVAS: self.area_canvas, AREA_POLYGONS: self.area_polygons}.get(
            mode, self.area_inputs).setChecked(True)

    def _update_area_widgets(self, *_):
        polygons = self.area_polygons.isChecked()
        self.aoi_combo.setEnabled(polygons)
        self.aoi_selected.setEnabled(polygons)

    # output -----------------------------------------------------------------------------------
    def output_path(self):
        path = self.output_file.filePath().strip()
        if path and not os.path.splitext(path)[1]:
            path += ".tif"
        return path

    # validation -------------------------------------------------------------------------------
    def problems(self):
        """Everything that stops a run, as messages for the user (empty list: ready to run)."""
        from ..core.environment import missing_dependencies
        problems = list(missing_dependencies())
        inputs = self.selected_inputs()
        if not inputs:
            problems.append(NO_INPUT_MESSAGE)
        for modality, layer in inputs.items():
            _path, problem = qgis_inputs.raster_layer_path(layer, MODALITY_LABELS[modality])
            if problem:
                problems.append(problem)
        path, card = self.selected_model()
        if card is None:
            if path:
                problems.append(f"{path} is not a readable Urban Functions model (.onnx with a "
                                f"model card): {self._model_file_error}")
            elif not self._models and not missing_dependencies():
                problems.append("No model is installed: choose an Urban Functions .onnx file "
                                "under 'Other model file…', put one in the user models folder "
                                f"({user_models_dir()}) or import the So2Sat LCZ weights.")
            elif self._models:
                problems.append("Choose a model, or an .onnx file under 'Other model file…'.")
        else:
            unused = [MODALITY_LABELS[m] for m in inputs if m not in card.modalities]
            if unused:
                problems.append(
                    f"The model '{card.title}' does not use {', '.join(unused)}: clear "
                    f"{'that input' if len(unused) == 1 else 'those inputs'} or choose a model "
                    f"that accepts {'it' if len(unused) == 1 else 'them'} (this one accepts "
                    f"{', '.join(MODALITY_LABELS[m] for m in card.modalities)}).")
            elif inputs and len(inputs) < card.min_inputs:
                problems.append(f"The model '{card.title}' needs at least {card.min_inputs} "
                                "inputs.")
        mode = self.area_mode()
        if mode == AREA_POLYGONS:
            _aoi, problem = qgis_inputs.layer_aoi(self.aoi_combo.currentLayer(),
                                                  self.aoi_selected.isChecked())
            if problem:
                problems.append(problem)
        elif mode == AREA_CANVAS and self.iface is None:
            problems.append("There is no map canvas to take the extent from.")
        out = self.output_path()
        if not out:
            problems.append("Choose where to save the output GeoTIFF.")
        else:
            folder = os.path.dirname(os.path.abspath(out))
            if not out.lower().endswith((".tif", ".tiff")):
                problems.append(f"The output must be a GeoTIFF (.tif): {out}")
            elif not os.path.isdir(folder):
                problems.append(f"The output folder does not exist: {folder}")
            elif os.path.exists(out) and not self.overwrite.isChecked():
                problems.append(f"{out} already exists: tick 'Overwrite an existing file' or "
                                "choose another name.")
            elif self.task is not None and out == self.task.request.output_path:
                problems.append("A run writing this output is still in progress.")
        return problems

    def build_request(self):
        """The engine request for the current settings (call after ``problems()`` is empty)."""
        from ..core.engine import ClassifyRequest
        inputs = {}
        for modality, layer in self.selected_inputs().items():
            path, _problem = qgis_inputs.raster_layer_path(layer)
            inputs[modality] = path
        model_path, _card = self.selected_model()
        extent = aoi = None
        mode = self.area_mode()
        if mode == AREA_CANVAS and self.iface is not None:
            canvas = self.iface.mapCanvas()
            extent = qgis_inputs.extent_tuple(canvas.extent(),
                                              canvas.mapSettings().destinationCrs())
        elif mode == AREA_POLYGONS:
            aoi, _problem = qgis_inputs.layer_aoi(self.aoi_combo.currentLayer(),
                                                  self.aoi_selected.isChecked())
        return ClassifyRequest(
            inputs=inputs, model_path=model_path, output_path=self.output_path(),
            extent=extent, aoi=aoi,
            tile_size=self.tile_size.value() or None,
            overlap=None if self.overlap.value() < 0 else self.overlap.value(),
            batch_size=self.batch_size.value(), device=self.device.currentData(),
            precision=self.precision.currentData(),
            confidence=self.confidence.isChecked(), overwrite=self.overwrite.isChecked(),
            probabilities=self.probabilities.isChecked(),
            optional_outputs=self.optional_outputs.isChecked(),
            inference_mode=self.inference_mode.currentData())

    def _show_dependency_warning(self):
        from ..core.environment import missing_dependencies
        missing = missing_dependencies()
        if missing:
            item = self.bar.createMessage("Missing dependencies", " ".join(missing))
            button = QPushButton("Install dependencies…", item)
            button.clicked.connect(lambda _checked=False: self.installRequested.emit())
            item.layout().addWidget(button)
            self.bar.pushWidget(item, Qgis.Critical, 0)
        elif self._model_errors:
            self.bar.pushWarning("Some models could not be read", " ".join(self._model_errors))

    def dependencies_changed(self):
        """After "Install dependencies": re-read the models, clear the old warning."""
        self.bar.clearWidgets()
        self.reload_models()
        self._show_dependency_warning()
        from ..core.diagnostics import device_summary
        self.device_info.setText(device_summary())
        self._inputs_changed()

    def _settings_changed(self, *_):
        self._update_run_state()

    def _update_run_state(self):
        """Run is enabled only when it can work, and the dialog says why when it is not; a
        "Cannot run" message goes away once its problems are fixed."""
        from ..core.environment import missing_dependencies
        missing = missing_dependencies()
        self.run_button.setEnabled(self.task is None and not missing)
        self.install_button.setVisible(bool(missing))
        if missing:
            names = ", ".join(line.split(" ", 1)[0] for line in missing)
            self.run_hint.setText(f"Run is disabled: {names} cannot be imported. Press "
                                  "'Install dependencies…' (nothing needs a restart).")
        self.run_hint.setVisible(bool(missing))
        self.run_button.setToolTip(self.run_hint.text() if missing else "")
        if self._cannot_run_shown and self.task is None and not self.problems():
            self.bar.clearWidgets()
            self.status.setText("")
            self._cannot_run_shown = False

    # running ----------------------------------------------------------------------------------
    def is_running(self):
        return self.task is not None

    def run(self):
        """Validate and start the task. Returns the task, or ``None`` (problems shown)."""
        if self.task is not None:
            return None
        problems = self.problems()
        if problems:
            self.bar.clearWidgets()
            self.bar.pushCritical("Cannot run", " ".join(problems))
            self.status.setText("\n".join(problems))
            self._cannot_run_shown = True
            return None
        self._cannot_run_shown = False
        self.bar.clearWidgets()
        self.save_settings()
        request = self.build_request()
        _path, card = self.selected_model()
        task = ClassifyTask(request, f"Urban functions: {os.path.basename(request.output_path)}")
        # bound methods of widgets: queued into the GUI thread (the task emits from its thread)
        task.progressChanged.connect(self._on_progress)
        task.progressText.connect(self.status.setText)
        task.succeeded.connect(self._succeeded)
        task.failed.connect(self._failed)
        self.task = task
        self._set_running(True)
        self.progress.setValue(0)
        self.status.setText(f"Running {card.title if card else 'the model'}…")
        QgsApplication.taskManager().addTask(task)
        return task

    def _on_progress(self, value):
        self.progress.setValue(int(value))

    def cancel(self):
        if self.task is not None:
            self.status.setText("Cancelling…")
            self.task.cancel()

    def _set_running(self, running):
        self.cancel_button.setEnabled(running)
        self._update_run_state()
        if running:
            self.run_button.setEnabled(False)

    def _message_bar(self):
        return self.iface.messageBar() if self.iface is not None else self.bar

    def _succeeded(self, result):
        self.task = None
        self._set_running(False)
        self.progress.setValue(100)
        self.extra_layers = add_extra_layers(result)  # first: the class map goes on top
        layer = add_result_layer(result)
        push_success(self._message_bar(), result, self)
        from ..qgis_common.summary import short_summary
        extra = getattr(result, "extra_outputs", None) or {}
        also = f" (and {', '.join(os.path.basename(p) for p in extra.values())})" if extra else ""
        self.status.setText(f"{short_summary(result)}\nSaved as {result.output_path}{also}")
        self.resultReady.emit(result, layer)

    def _failed(self, message, cancelled):
        self.task = None
        self._set_running(False)
        self.progress.setValue(0)
        push_failure(self._message_bar(), message, cancelled)
        if self.iface is not None:
            push_failure(self.bar, message, cancelled)
        self.status.setText(message)
        self.runFailed.emit(message, cancelled)

    # settings ---------------------------------------------------------------------------------
    def save_settings(self):
        s = QgsSettings()
        for modality, combo in self.input_combos.items():
            layer = combo.currentLayer()
            s.setValue(SETTINGS + f"input/{modality}", layer.source() if layer else "")
        path, _card = self.selected_model()
        # only a model the user chose is remembered; otherwise the best fit is picked again
        s.setValue(SETTINGS + "model", (path or "") if self._model_picked_by_user else "")
        s.setValue(SETTINGS + "area", self.area_mode())
        aoi = self.aoi_combo.currentLayer()
        s.setValue(SETTINGS + "aoi", aoi.source() if aoi else "")
        s.setValue(SETTINGS + "aoi_selected", self.aoi_selected.isChecked())
        s.setValue(SETTINGS + "output", self.output_file.filePath())
        s.setValue(SETTINGS + "confidence", self.confidence.isChecked())
        s.setValue(SETTINGS + "overwrite", self.overwrite.isChecked())
        s.setValue(SETTINGS + "tile_size", self.tile_size.value())
        s.setValue(SETTINGS + "overlap", self.overlap.value())
        s.setValue(SETTINGS + "batch_size", self.batch_size.value())
        s.setValue(SETTINGS + "device", self.device.currentData())
        s.setValue(SETTINGS + "precision", self.precision.currentData())
        s.setValue(SETTINGS + "probabilities", self.probabilities.isChecked())
        s.setValue(SETTINGS + "optional_outputs", self.optional_outputs.isChecked())
        s.setValue(SETTINGS + "inference_mode", self.inference_mode.currentData() or "")

    def restore_settings(self):
        s = QgsSettings()
        layers = list(QgsProject.instance().mapLayers().values())

        def by_source(source):
            return next((lyr for lyr in layers if source and lyr.source() == source), None)

        for modality, combo in self.input_combos.items():
            layer = by_source(s.value(SETTINGS + f"input/{modality}", "", type=str))
            if layer is not None and combo.currentLayer() is None:
                combo.setLayer(layer)
        model = s.value(SETTINGS + "model", "", type=str)
        if model:
            self.select_model(model)
        self.set_area_mode(s.value(SETTINGS + "area", AREA_INPUTS, type=str))
        aoi = by_source(s.value(SETTINGS + "aoi", "", type=str))
        if aoi is not None:
            self.aoi_combo.setLayer(aoi)
        self.aoi_selected.setChecked(s.value(SETTINGS + "aoi_selected", False, type=bool))
        self.output_file.setFilePath(s.value(SETTINGS + "output", "", type=str))
        self.confidence.setChecked(s.value(SETTINGS + "confidence", False, type=bool))
        self.overwrite.setChecked(s.value(SETTINGS + "overwrite", False, type=bool))
        self.tile_size.setValue(s.value(SETTINGS + "tile_size", 0, type=int))
        self.overlap.setValue(s.value(SETTINGS + "overlap", -1, type=int))
        self.batch_size.setValue(s.value(SETTINGS + "batch_size", 0, type=int))
        index = self.device.findData(s.value(SETTINGS + "device", "auto", type=str))
        self.device.setCurrentIndex(max(0, index))
        index = self.precision.findData(s.value(SETTINGS + "precision", "fp32", type=str))
        self.precision.setCurrentIndex(max(0, index))
        self.probabilities.setChecked(s.value(SETTINGS + "probabilities", False, type=bool))
        self.optional_outputs.setChecked(s.value(SETTINGS + "optional_outputs", False, type=bool))
        # "patch_mode": the setting's name before 0.2.0's fusion test-time views
        mode = s.value(SETTINGS + "inference_mode", s.value(SETTINGS + "patch_mode", "", type=str),
                       type=str) or None
        self.inference_mode.setCurrentIndex(max(0, self.inference_mode.findData(mode)))

    def reject(self):  # Close / Esc: keep the settings; a running task keeps running
        self.save_settings()
        super().reject()

    def shutdown(self):
        """Cancel a running task and stop listening to it (plugin unload)."""
        task, self.task = self.task, None
        if task is not None:
            for signal, slot in ((task.progressChanged, self._on_progress),
                                 (task.progressText, self.status.setText),
                                 (task.succeeded, self._succeeded), (task.failed, self._failed)):
                try:
                    signal.disconnect(slot)
                except (TypeError, RuntimeError):
                    pass
            task.cancel()
