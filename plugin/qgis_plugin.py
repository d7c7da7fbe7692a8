"""The QGIS plugin object: menu entries, toolbar button, Processing provider, sample city."""
import os

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsMessageLog,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsTask,
)
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QPushButton

PLUGIN_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ICONS = os.path.join(PLUGIN_ROOT, "resources", "icons")
MENU = "&Urban Functions"
TITLE = "Urban Functions"
LOG_TAG = "Urban Functions"
SAMPLE_GROUP = "Urban Functions sample city"


def sample_city_folder():
    """Where "Load sample city" writes: <QGIS profile>/urban_functions/sample_city."""
    return os.path.join(QgsApplication.qgisSettingsDirPath(), "urban_functions", "sample_city")


def city_folder(city):
    paths = list(city.inputs.values())
    return os.path.dirname(paths[0]) if paths else ""


class _SampleCityCancelled(Exception):
    pass


class SampleCityTask(QgsTask):
    """Generates the sample city (numpy + GDAL only) in the background."""

    done = pyqtSignal(object, str)  # SampleCity or None, error message

    def __init__(self, folder, seed=0):
        super().__init__("Generating the Urban Functions sample city", QgsTask.CanCancel)
        self.folder = folder
        self.seed = seed
        self.city = None
        self.error = ""

    def _progress(self, fraction, _message=""):
        if self.isCanceled():
            raise _SampleCityCancelled()
        self.setProgress(100.0 * float(fraction))

    def run(self):
        try:
            from .samplecity import generate_sample_city
            os.makedirs(self.folder, exist_ok=True)
            # an existing complete city (same seed and version) is reused at once
            self.city = generate_sample_city(self.folder, seed=self.seed, progress=self._progress)
            return True
        except _SampleCityCancelled:
            self.error = "Cancelled."
        except Exception as exc:  # shown to the user, with the reason
            self.error = f"Could not generate the sample city in {self.folder}: {exc}"
        return False

    def finished(self, ok):
        self.done.emit(self.city if ok else None, self.error or "Cancelled.")


def add_sample_city_layers(city, project=None, canvas=None):
    """Add the sample city's inputs (tagged with their modality) and ground truth, in a group.

    Returns the added layers, inputs first.
    """
    from .core.classes import class_table
    from .core.model_card import MODALITIES, MODALITY_LABELS
    from .qgis_common.styling import PROP_KIND, PROP_MODALITY, apply_class_style

    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.findGroup(SAMPLE_GROUP)
    if group is None:
        group = root.insertGroup(0, SAMPLE_GROUP)
    else:  # loading twice replaces the previous layers
        project.removeMapLayers([node.layerId() for node in group.findLayers()])
    layers = []
    truth = getattr(city, "ground_truth", None)
    if truth:
        layer = QgsRasterLayer(str(truth), "Ground truth (sample city)", "gdal")
        if layer.isValid():
            apply_class_style(layer, class_table())
            layer.setCustomProperty(PROP_KIND, "ground_truth")
            project.addMapLayer(layer, False)
            group.addLayer(layer)
            layer_node = group.findLayer(layer.id())
            if layer_node is not None:
                layer_node.setItemVisibilityChecked(False)
                layer_node.setExpanded(False)
            layers.append(layer)
    for modality in reversed(MODALITIES):  # VHR ends up on top
        path = city.inputs.get(modality)
        if not path:
            continue
        layer = QgsRasterLayer(str(path), f"{MODALITY_LABELS[modality]} (sample city)", "gdal")
        if not layer.isValid():
            continue
        layer.setCustomProperty(PROP_KIND, "input")
        layer.setCustomProperty(PROP_MODALITY, modality)
        project.addMapLayer(layer, False)
        node = group.insertLayer(0, layer)
        node.setExpanded(False)
        # the VHR image is the backdrop; the coarse inputs stay listed but hidden
        node.setItemVisibilityChecked(modality == "vhr" or "vhr" not in city.inputs)
        layers.insert(0, layer)
    if canvas is not None and layers:
        extent = QgsRectangle()
        dest = canvas.mapSettings().destinationCrs()
        for layer in layers:
            rect = layer.extent()
            if dest.isValid() and layer.crs() != dest:
                rect = QgsCoordinateTransform(layer.crs(), dest, project).transformBoundingBox(rect)
            extent.combineExtentWith(rect)
        canvas.setExtent(extent)
        canvas.refresh()
    return layers


class UrbanFunctionsPlugin:
    """Created by ``classFactory``; QGIS calls ``initGui``/``unload`` (qgis_process only
    ``initProcessing``)."""

    def __init__(self, iface, missing=None):
        self.iface = iface
        self.missing = list(missing or [])
        self.provider = None
        self.actions = []
        self.classify_action = None
        self.sample_action = None
        self.dialog = None
        self.sample_task = None
        self.labelling_action = None
        self.labelling_dock = None
        self.train_action = None
        self.train_dialog = None
        self.install_action = None
        self.install_dialog = None
        self.diagnostics_action = None
        self.missing_item = None       # our "cannot classify yet" message on QGIS's bar

    # Processing ---------------------------------------------------------------------------------
    def initProcessing(self):
        if self.provider is not None:
            return
        from .processing_provider.provider import UrbanFunctionsProvider
        self.provider = UrbanFunctionsProvider()
        if not QgsApplication.processingRegistry().addProvider(self.provider):
            QgsMessageLog.logMessage("Could not register the 'urbanfunctions' Processing "
                                     "provider (is another copy of the plugin loaded?).",
                                     LOG_TAG, Qgis.Warning)
            self.provider = None

    # GUI ------------------------------------------------------------------------------------------
    def initGui(self):
        self.initProcessing()
        parent = self.iface.mainWindow()
        self.classify_action = QAction(QIcon(os.path.join(ICONS, "urban_functions.svg")),
                                       "Classify urban functions…", parent)
        self.classify_action.setObjectName("urbanFunctionsClassify")
        self.classify_action.setToolTip("Classify urban functions from imagery, night-time light "
                                        "and Sentinel-2 layers")
        self.classify_action.triggered.connect(self.show_dialog)
        self.sample_action = QAction(QIcon(os.path.join(ICONS, "sample_city.svg")),
                                     "Load sample city", parent)
        self.sample_action.setObjectName("urbanFunctionsSampleCity")
        self.sample_action.setToolTip("Generate a small synthetic city with every input and add "
                                      "it to the map, to try the plugin")
        self.sample_action.triggered.connect(lambda _checked=False: self.load_sample_city())
        self.labelling_action = QAction(QIcon(os.path.join(ICONS, "validation_points.svg")),
                                        "Label validation points…", parent)
        self.labelling_action.setObjectName("urbanFunctionsLabelling")
        self.labelling_action.setToolTip("Step through validation points and set their reference "
                                         "class (keys 1-9)")
        self.labelling_action.setCheckable(True)
        self.labelling_action.triggered.connect(self.toggle_labelling_dock)
        self.train_action = QAction(QIcon(os.path.join(ICONS, "urban_functions.svg")),
                                    "Train on my area…", parent)
        self.train_action.setObjectName("urbanFunctionsTrain")
        self.train_action.setToolTip("Adapt the network to your city from OpenStreetMap land use, "
                                     "your own polygons or labelled points")
        self.train_action.triggered.connect(self.show_train_dialog)
        self.install_action = QAction(QgsApplication.getThemeIcon("/mActionShowPluginManager.svg"),
                                      "Install dependencies…", parent)
        self.install_action.setObjectName("urbanFunctionsInstall")
        self.install_action.setToolTip("Install onnxruntime (and optionally PyTorch for "
                                       "training) into a venv the plugin owns in your profile")
        self.install_action.triggered.connect(lambda _checked=False: self.show_install_dialog())
        self.diagnostics_action = QAction(QgsApplication.getThemeIcon("/mActionHelpAbout.svg"),
                                          "About and diagnostics…", parent)
        self.diagnostics_action.setObjectName("urbanFunctionsDiagnostics")
        self.diagnostics_action.triggered.connect(lambda _checked=False: self.show_diagnostics())
        self.actions = [self.classify_action, self.train_action, self.sample_action,
                        self.labelling_action, self.install_action, self.diagnostics_action]
        for action in self.actions:
            self.iface.addPluginToMenu(MENU, action)
        self.iface.addToolBarIcon(self.classify_action)
        if self.missing:
            bar = self.iface.messageBar()
            item = bar.createMessage(TITLE, "Urban Functions is loaded but cannot classify yet: "
                                     + " ".join(self.missing))
            button = QPushButton("Install dependencies…", item)
            button.setObjectName("urbanFunctionsInstallButton")
            button.clicked.connect(lambda _checked=False: self.show_install_dialog())
            item.layout().addWidget(button)
            bar.pushWidget(item, Qgis.Warning, 0)
            self.missing_item = item

    def unload(self):
        if self.dialog is not None:
            self.dialog.shutdown()
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None
        if self.install_dialog is not None:
            self.install_dialog.cancel()
            self.install_dialog.close()
            self.install_dialog.deleteLater()
            self.install_dialog = None
        if self.train_dialog is not None:
            self.train_dialog.cancel()
            self.train_dialog.close()
            self.train_dialog.deleteLater()
            self.train_dialog = None
        if self.sample_task is not None:
            try:
                self.sample_task.cancel()
            except RuntimeError:  # already deleted by the task manager
                pass
            self.sample_task = None
        if self.labelling_dock is not None:
            self.labelling_dock.cleanup()  # canvas marker and the 1-9 shortcuts
            self.iface.removeDockWidget(self.labelling_dock)
            self.labelling_dock.deleteLater()
            self.labelling_dock = None
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions = []
        self.classify_action = self.sample_action = self.labelling_action = None
        self.train_action = self.install_action = self.diagnostics_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # actions ----------------------------------------------------------------------------------
    def toggle_labelling_dock(self, checked):
        from .gui.labelling_dock import LabellingDock
        if self.labelling_dock is None:
            self.labelling_dock = LabellingDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.labelling_dock)
            self.labelling_dock.visibilityChanged.connect(self.labelling_action.setChecked)
        self.labelling_dock.setVisible(checked)

    def show_install_dialog(self, training=False):
        from .gui.install_dialog import InstallDialog
        if self.install_dialog is None:
            self.install_dialog = InstallDialog(self.iface.mainWindow())
            self.install_dialog.installed.connect(self._dependencies_installed)
        if training and not self.install_dialog.is_running():
            self.install_dialog.training.setChecked(True)
        self.install_dialog.show()
        self.install_dialog.raise_()
        return self.install_dialog

    def _dependencies_installed(self):
        """The packages are on sys.path now: refresh what said they were missing."""
        from .core.environment import missing_dependencies
        self.missing = missing_dependencies()
        bar = self.iface.messageBar()
        if self.missing_item is not None:   # only our own message: the bar is QGIS's
            try:
                bar.popWidget(self.missing_item)
            except RuntimeError:   # the user closed it already
                pass
            self.missing_item = None
        if self.dialog is not None:
            self.dialog.dependencies_changed()
        if self.train_dialog is not None:
            self.train_dialog.dependencies_changed()
        bar.pushMessage(TITLE, "Dependencies installed: Urban Functions can classify now.",
                        Qgis.Success, 10)

    def show_diagnostics(self):
        from .gui.diagnostics_dialog import DiagnosticsDialog
        dialog = DiagnosticsDialog(self.iface.mainWindow())
        dialog.show()
        return dialog

    def show_dialog(self):
        from .gui.dialog import ClassifyDialog
        if self.dialog is None:
            self.dialog = ClassifyDialog(self.iface)
            self.dialog.installRequested.connect(self.show_install_dialog)
            self.dialog.diagnosticsRequested.connect(self.show_diagnostics)
        else:
            self.dialog.reload_models()
            self.dialog.autofill_inputs()
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()
        return self.dialog

    def show_train_dialog(self):
        from .gui.train_dialog import TrainDialog
        if self.train_dialog is None:
            self.train_dialog = TrainDialog(self.iface)
            self.train_dialog.installRequested.connect(
                lambda: self.show_install_dialog(training=True))
            # a new model appears in the classify dialog's list at once
            self.train_dialog.finished_training.connect(
                lambda ok, _r: self.dialog.reload_models() if ok and self.dialog else None)
        else:
            self.train_dialog.autofill_inputs()
        self.train_dialog.show()
        self.train_dialog.raise_()
        return self.train_dialog

    def load_sample_city(self, folder=None):
        """Generate the sample city in the background, then add its layers. Returns the task."""
        if self.sample_task is not None:
            return self.sample_task
        folder = folder or sample_city_folder()
        task = SampleCityTask(folder, seed=0)
        task.done.connect(self._sample_city_done)
        self.sample_task = task
        self.iface.messageBar().pushMessage(TITLE, f"Generating the sample city in {folder}…",
                                            Qgis.Info, 5)
        QgsApplication.taskManager().addTask(task)
        return task

    def _sample_city_done(self, city, error):
        self.sample_task = None
        if not self.actions:  # the plugin was unloaded meanwhile
            return
        if city is None and error == "Cancelled.":
            self.iface.messageBar().pushMessage(TITLE, "Sample city: cancelled.", Qgis.Info, 5)
            return
        if city is None:
            QgsMessageLog.logMessage(error, LOG_TAG, Qgis.Critical)
            self.iface.messageBar().pushMessage(TITLE, error, Qgis.Critical, 0)
            return
        layers = add_sample_city_layers(city, canvas=self.iface.mapCanvas())
        if self.dialog is not None:
            self.dialog.autofill_inputs()
        bar = self.iface.messageBar()
        item = bar.createMessage(TITLE, f"Sample city loaded ({len(layers)} layers) from "
                                        f"{city_folder(city)}. Map its functions with "
                                        "'Classify urban functions'.")
        button = QPushButton("Classify…", item)
        button.clicked.connect(self.show_dialog)
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.Success, 15)
