"""The "Train on my area" dialog: pick the layers you will classify and your labels, and train.

It runs the Processing algorithm ``urbanfunctions:train`` as a background task
(QgsProcessingAlgRunnerTask), so the dialog, the toolbox and ``qgis_process`` do the same job.
Progress shows the epoch, the held-out score and the time left; Cancel stops it with nothing
written.
"""
import html

from qgis.core import (
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
)
from qgis.gui import QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.model_card import MODALITIES, MODALITY_LABELS
from ..qgis_common.styling import PROP_MODALITY
from ..qgis_common.user_models import how_to_use

ALGORITHM = "urbanfunctions:train"
BASES = (("Best measured start for these inputs", ""),
         ("Fine-tune the bundled fusion network", "urban-fusion"),
         ("Sentinel-2 stream from the imported So2Sat LCZ network", "so2sat"),
         ("Fine-tune the imported So2Sat LCZ network itself (Sentinel-2 only, 40 m)",
          "so2sat-lcz42-s2-resnet20"),
         ("Fine-tune the VHR scene model (VHR imagery only)", "vhr-scenes-resnet"),
         ("Train the fusion network from scratch", "scratch"))


class _Feedback(QgsProcessingFeedback):
    """Processing feedback that re-emits texts as Qt signals (queued into the GUI thread)."""

    text = pyqtSignal(str)
    info = pyqtSignal(str)

    def setProgressText(self, text):
        super().setProgressText(text)
        self.text.emit(text)

    def pushInfo(self, info):
        super().pushInfo(info)
        self.info.emit(info)

    def reportError(self, error, fatalError=False):
        super().reportError(error, fatalError)
        self.info.emit(f"Error: {error}")


class TrainDialog(QDialog):
    finished_training = pyqtSignal(bool, dict)   # ok, the algorithm's results
    installRequested = pyqtSignal()              # "Install dependencies…" (with PyTorch)

    def __init__(self, iface=None, parent=None):
        super().__init__(parent or (iface.mainWindow() if iface else None))
        self.iface = iface
        self.setWindowTitle("Urban Functions: train on my area")
        self.task = None
        self.feedback = None
        self.context = None
        self.results = {}
        outer = QVBoxLayout(self)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)   # the form fits its width
        body = QWidget()
        lay = QVBoxLayout(body)
        scroll.setWidget(body)
        outer.addWidget(scroll, 1)

        intro = QLabel("Adapt the network to your city from labels you have: OpenStreetMap "
                       "land use, your own polygons, or points from the labelling dock. Whole "
                       "1 km blocks are held out to measure the result against a RandomForest.")
        intro.setWordWrap(True)
        lay.addWidget(intro)

        inputs = QGroupBox("Layers you will classify (any subset)")
        form = QFormLayout(inputs)
        self.input_combos = {}
        for m in MODALITIES:
            combo = QgsMapLayerComboBox()
            combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
            combo.setAllowEmptyLayer(True)
            combo.setLayer(None)
            self.input_combos[m] = combo
            form.addRow(MODALITY_LABELS[m], combo)
        lay.addWidget(inputs)

        labels = QGroupBox("Labels")
        form = QFormLayout(labels)
        self.labels_combo = QgsMapLayerComboBox()
        self.labels_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer |
                                     QgsMapLayerProxyModel.PointLayer)
        self.field_combo = QgsFieldComboBox()
        self.labels_combo.layerChanged.connect(self.field_combo.setLayer)
        self.field_combo.setLayer(self.labels_combo.currentLayer())
        self.class_map = QgsFileWidget()
        self.class_map.setFilter("CSV (*.csv)")
        self.class_map.lineEdit().setPlaceholderText("empty = OpenStreetMap land use and our "
                                                     "class names")
        form.addRow("Label layer (polygons or points)", self.labels_combo)
        form.addRow("Label field", self.field_combo)
        form.addRow("Class map (CSV)", self.class_map)
        lay.addWidget(labels)

        settings = QGroupBox("Training")
        form = QFormLayout(settings)
        self.base_combo = QComboBox()
        for label, value in BASES:
            self.base_combo.addItem(label, value)
        self.base_combo.setItemData(0, "VHR alone: the real-data VHR scene model. With "
                                    "Sentinel-2: its stream from the imported So2Sat LCZ network "
                                    "(else the fusion network). Measured in the README.",
                                    Qt.ToolTipRole)
        self.minutes = QSpinBox()
        self.minutes.setRange(1, 1440)
        self.minutes.setValue(15)
        self.minutes.setSuffix(" min")
        self.epochs = QSpinBox()
        self.epochs.setRange(0, 1000)
        self.epochs.setSpecialValueText("as many as the time limit allows")
        self.output = QgsFileWidget()
        self.output.setStorageMode(QgsFileWidget.SaveFile)
        self.output.setFilter("ONNX model (*.onnx)")
        self.output.lineEdit().setPlaceholderText("empty = your user models folder")
        form.addRow("Start from", self.base_combo)
        form.addRow("Time limit", self.minutes)
        form.addRow("Epochs", self.epochs)
        self.overwrite = QCheckBox("Overwrite")
        self.overwrite.setToolTip("Replace a model of that name (and its card, metrics and "
                                  "report); off, an existing file is never touched.")
        out_row = QWidget()
        out_lay = QHBoxLayout(out_row)
        out_lay.setContentsMargins(0, 0, 0, 0)
        out_lay.addWidget(self.output, 1)
        out_lay.addWidget(self.overwrite)
        form.addRow("Output model", out_row)
        lay.addWidget(settings)

        # always visible below the scroll area: progress, status and the buttons
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.RichText)
        self.status.setOpenExternalLinks(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumHeight(110)
        outer.addWidget(self.progress)
        outer.addWidget(self.status)
        outer.addWidget(self.log)
        self.buttons = QDialogButtonBox()
        self.train_button = self.buttons.addButton("Train", QDialogButtonBox.AcceptRole)
        self.cancel_button = self.buttons.addButton("Cancel", QDialogButtonBox.RejectRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.Close)
        self.install_button = self.buttons.addButton("Install dependencies…",
                                                     QDialogButtonBox.ActionRole)
        self.install_button.clicked.connect(lambda _checked=False: self.installRequested.emit())
        self.train_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)
        self.cancel_button.setEnabled(False)
        outer.addWidget(self.buttons)
        for combo in list(self.input_combos.values()) + [self.labels_combo, self.field_combo,
                                                          self.base_combo]:
            # long layer names must not widen the dialog past a laptop screen
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        self.resize(620, 640)
        self.autofill_inputs()
        self.dependencies_changed()

    def missing_packages(self):
        """What training needs and cannot find (torch is looked up, not imported: seconds)."""
        import importlib.util

        from ..core.environment import missing_dependencies
        missing = [line.split(" ", 1)[0] for line in missing_dependencies()]
        if importlib.util.find_spec("torch") is None:
            missing.append("PyTorch")
        return missing

    def dependencies_changed(self):
        """Show Install dependencies while something is missing, and say what (after an
        install, the plugin calls this again)."""
        missing = self.missing_packages()
        self.install_button.setVisible(bool(missing))
        self.train_button.setEnabled(not missing and self.task is None)
        if missing:
            self.status.setText(
                f"<span style='color:#c00'>Training needs {html.escape(', '.join(missing))}: "
                "press Install dependencies… and tick 'Also PyTorch and scikit-learn' (no "
                "restart needed).</span>")
        elif self.task is None:
            self.status.setText("")

    # inputs -------------------------------------------------------------------------------
    def autofill_inputs(self):
        """Fill empty pickers with layers tagged with their modality (e.g. the sample city)."""
        for layer in QgsProject.instance().mapLayers().values():
            modality = layer.customProperty(PROP_MODALITY)
            combo = self.input_combos.get(modality)
            if combo is not None and combo.currentLayer() is None:
                combo.setLayer(layer)

    def parameters(self):
        params = {}
        for m, combo in self.input_combos.items():
            if combo.currentLayer() is not None:
                params[m.upper()] = combo.currentLayer()
        # the project's layers themselves, as QGIS's own Processing dialogs pass them: a layer
        # loaded inside the background task would belong to its thread
        params["LABELS"] = self.labels_combo.currentLayer()
        params["LABEL_FIELD"] = self.field_combo.currentField()
        if self.class_map.filePath().strip():
            params["CLASS_MAP"] = self.class_map.filePath().strip()
        params["BASE_MODEL"] = self.base_combo.currentData()
        params["MAX_MINUTES"] = float(self.minutes.value())
        params["EPOCHS"] = int(self.epochs.value())
        out = self.output.filePath().strip()
        if out:
            params["OUTPUT_MODEL"] = out   # the algorithm adds .onnx or refuses another type
            params["OVERWRITE"] = self.overwrite.isChecked()
        return params

    def problem(self, params):
        """Why Train cannot start, or ''."""
        if not any(m.upper() in params for m in MODALITIES):
            return "Choose at least one layer to classify."
        if params.get("LABELS") is None:
            return "Choose the label layer (polygons or points)."
        if not params.get("LABEL_FIELD"):
            return "Choose the field that holds the labels."
        return ""

    # running ------------------------------------------------------------------------------
    def start(self):
        params = self.parameters()
        problem = self.problem(params)
        if problem:
            self.status.setText(f"<span style='color:#c00'>{html.escape(problem)}</span>")
            return None
        alg = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
        if alg is None:
            self.status.setText("<span style='color:#c00'>The Urban Functions Processing "
                                "provider is not loaded.</span>")
            return None
        self.log.clear()
        self.progress.setValue(0)
        self.status.setText("Starting…")
        self.context = QgsProcessingContext()
        self.context.setProject(QgsProject.instance())
        self.feedback = _Feedback()
        self.feedback.progressChanged.connect(lambda v: self.progress.setValue(int(v)))
        self.feedback.text.connect(lambda t: self.status.setText(html.escape(t)))
        self.feedback.info.connect(self.log.appendPlainText)
        self.task = QgsProcessingAlgRunnerTask(alg, params, self.context, self.feedback)
        self.task.executed.connect(self._done)
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self):
        if self.feedback is not None:
            self.feedback.cancel()
            self.status.setText("Cancelling… nothing will be written.")

    def _holds_up(self):
        import json
        try:
            return bool(json.loads(self.results.get("METRICS") or "{}").get("holds_up", True))
        except ValueError:
            return True

    def _score_line(self):
        """The held-out score next to the RandomForest's, in red when it does not hold up."""
        import json
        try:
            metrics = json.loads(self.results.get("METRICS") or "{}")
            oa = metrics["validation"]["overall_accuracy"]
        except (ValueError, KeyError, TypeError):
            return ""
        rf = (metrics.get("comparisons") or {}).get("random_forest")
        text = f"Held-out blocks: overall agreement {oa:.3f}"
        if rf:
            text += f" (RandomForest {rf['overall_accuracy']:.3f})"
            if rf["overall_accuracy"] > oa:
                return (f"<span style='color:#c00'>{text}: the model does not hold up here; "
                        "see the report.</span>")
        return text + "."

    def _done(self, ok, results):
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.results = dict(results or {})
        self.task = None
        if ok and self.results.get("MODEL"):
            report = self.results.get("REPORT", "")
            self.progress.setValue(100)
            self.status.setText(
                f"<b>Trained:</b> {html.escape(self.results.get('NAME', ''))} "
                f"({html.escape(self.results['MODEL'])}).<br>{self._score_line()} "
                f"<a href='file://{html.escape(report)}'>Open the report</a>. " +
                html.escape(how_to_use(self.results["MODEL"], self.results.get("NAME", ""),
                                       self._holds_up())))
        else:
            reason = "cancelled; nothing was written" if (
                self.feedback is not None and self.feedback.isCanceled()) else \
                "failed; see the log below"
            self.status.setText(f"<span style='color:#c00'>Training {reason}.</span>")
        self.finished_training.emit(bool(ok), self.results)
