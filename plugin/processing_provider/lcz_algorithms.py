"""Processing algorithm ``urbanfunctions:importso2sat`` (group "Models"): install the pretrained
So2Sat LCZ42 Sentinel-2 network from its original Keras weights file::

    qgis_process.bin run urbanfunctions:importso2sat -- H5=S2_RESNET20_..._2019-06-27.h5

The weights are third-party (MIT, So2Sat project team) and not shipped with the plugin: the user
downloads the ``.h5`` and this algorithm converts it (:mod:`plugin.lcz.importer`) into an ONNX
model with a model card, installed with its licence into the user models folder
(``<QGIS profile>/urban_functions/models``) where the classify algorithm and the dialog find it.
"""
import os

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
)
from qgis.PyQt.QtGui import QIcon

from ..qgis_common import qgis_inputs
from .help_links import help_url
from ..qgis_common.user_models import user_models_dir

GROUP = "Models"
GROUP_ID = "models"
ICON = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "resources", "icons", "urban_functions.svg")



class ImportSo2SatAlgorithm(QgsProcessingAlgorithm):
    H5 = "H5"
    MODELS_DIR = "MODELS_DIR"
    OVERWRITE = "OVERWRITE"
    MODEL = "MODEL"
    NAME = "NAME"
    LICENCE = "LICENCE"

    def createInstance(self):
        return ImportSo2SatAlgorithm()

    def name(self):
        return "importso2sat"

    def helpUrl(self):
        return help_url(self.name())

    def displayName(self):
        return "Import So2Sat LCZ weights"

    def group(self):
        return GROUP

    def groupId(self):
        return GROUP_ID

    def tags(self):
        return ["so2sat", "lcz", "local climate zones", "sentinel-2", "model", "import", "keras",
                "h5", "onnx", "resnet"]

    def icon(self):
        return QIcon(ICON)

    def svgIconPath(self):
        return ICON

    def shortHelpString(self):
        from ..lcz import so2sat_h5 as h5
        from ..lcz.card import CITATIONS
        cites = "".join(f"<li>{c}</li>" for c in CITATIONS)
        return (
            "Installs the pretrained <b>So2Sat LCZ42</b> Sentinel-2 ResNet20 (17 Local Climate "
            "Zones on a 100 m grid, from Sentinel-2 Level-1C) as an Urban Functions model."
            f"<p><b>Weights file</b>: the original Keras file <tt>{h5.FILENAME}</tt>, "
            f"downloaded from <a href='{h5.DOWNLOAD_URL}'>{h5.DOWNLOAD_URL}</a> (about 2.4 MB). "
            "It is checked (sha256, every layer and shape), converted to ONNX without "
            "TensorFlow, verified against an independent NumPy forward pass, and installed with "
            "its MIT licence notice.</p>"
            "<p><b>Models folder</b>: where the model is installed; empty = the plugin's user "
            f"models folder (<tt>{user_models_dir()}</tt>), which the classify algorithm and the "
            "dialog always search. An installed So2Sat model that differs from this import is "
            "only replaced when <b>Replace</b> is ticked; importing the same file again changes "
            "nothing.</p>"
            "<p>Then run <i>Classify urban functions</i> with one to four Sentinel-2 L1C seasons "
            "(bands B2 B3 B4 B5 B6 B7 B8 B8A B11 B12 at 10 m) and this model: its output is the "
            "map of urban functions derived from the LCZ probabilities, with the LCZ map "
            "(<tt>&lt;output&gt;_lcz.tif</tt>) and a settlement extent beside it.</p>"
            "<p>The weights are &copy; 2021 ERC starting grant So2Sat project team (MIT). Please "
            f"cite:</p><ul>{cites}</ul>"
            "<p>Needs the Python packages h5py, onnx and onnxruntime.</p>")

    def checkParameterValues(self, parameters, context):
        return qgis_inputs.check_parameter_values(self, parameters, context)

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFile(
            self.H5, "So2Sat weights file (Keras .h5)",
            behavior=QgsProcessingParameterFile.File, extension="h5"))
        self.addParameter(QgsProcessingParameterFile(
            self.MODELS_DIR, "Models folder (empty = the user models folder)",
            behavior=QgsProcessingParameterFile.Folder, defaultValue=user_models_dir(),
            optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            self.OVERWRITE, "Replace an installed So2Sat model that differs", defaultValue=False))
        self.addOutput(QgsProcessingOutputFile(self.MODEL, "Installed model (.onnx)"))
        self.addOutput(QgsProcessingOutputString(self.NAME, "Model name"))
        self.addOutput(QgsProcessingOutputFile(self.LICENCE, "Licence notice of the weights"))

    def processAlgorithm(self, parameters, context, feedback):
        from ..core.errors import MissingDependencyError, ModelError, OutputError
        from ..lcz.card import NAME
        from ..lcz.importer import import_so2sat_weights

        h5_path = self.parameterAsFile(parameters, self.H5, context)
        if not h5_path or not os.path.isfile(h5_path):
            raise QgsProcessingException(f"So2Sat weights file not found: {h5_path!r}.")
        folder = None
        if not qgis_inputs.is_unset(parameters.get(self.MODELS_DIR)):
            folder = self.parameterAsFile(parameters, self.MODELS_DIR, context)
        folder = folder or user_models_dir()
        overwrite = self.parameterAsBoolean(parameters, self.OVERWRITE, context)
        report = {}
        try:
            path = import_so2sat_weights(h5_path, folder, overwrite=overwrite,
                                         feedback=feedback.pushInfo, report=report)
        except (ModelError, OutputError, MissingDependencyError) as exc:
            raise QgsProcessingException(str(exc)) from exc
        checks = report.get("self_check", {})
        if checks:
            feedback.pushInfo("Self-check, max |onnxruntime - NumPy|: " + ", ".join(
                f"{k} {v:.2g}" for k, v in checks.items()))
        if report.get("unchanged"):
            feedback.pushInfo("The same model was already installed; it was left as it is.")
        feedback.pushInfo(f"Licence: {report.get('licence')}")
        feedback.pushInfo(f"Done in {report.get('seconds', 0):.2f} s. Choose the model "
                          f"'{NAME}' (or {path}) in 'Classify urban functions'.")
        feedback.setProgress(100)
        return {self.MODEL: path, self.NAME: NAME, self.LICENCE: report.get("licence", "")}


def lcz_algorithms():
    return [ImportSo2SatAlgorithm()]
