"""Processing algorithm ``urbanfunctions:train`` "Train a model on your labels" (group Models)::

    qgis_process.bin run urbanfunctions:train -- S2_WINTER=s2.tif LABELS=osm_landuse.gpkg \
        LABEL_FIELD=fclass MAX_MINUTES=15 OUTPUT_MODEL=havelland.onnx

The inputs have classify's names; the labels are polygons or points in any CRS. The job itself
is :func:`plugin.learning.user_training.run_training` (torch, never qgis).
"""
import json
import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputHtml,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtGui import QIcon

from ..core.model_card import MODALITY_LABELS
from ..qgis_common import qgis_inputs
from .help_links import help_url
from ..qgis_common.termination import sigterm_cancels
from ..qgis_common.user_models import how_to_use, user_models_dir
from .classify_algorithm import DEVICES, ICON, MODALITY_PARAMS
from .lcz_algorithms import GROUP, GROUP_ID

SO2SAT = "so2sat"


def model_output_path(out):
    """The .onnx path the user gave; a path without extension gets .onnx, a folder or another
    extension is refused (a model named 'x.tif.onnx' beside a raster is never what was meant)."""
    if out.endswith(("/", os.sep)) or os.path.isdir(out):
        raise QgsProcessingException(f"Output model: {out!r} is a folder; give a file name "
                                     "ending in .onnx (or leave it empty for the user models "
                                     "folder).")
    ext = os.path.splitext(out)[1].lower()
    if ext == ".onnx":
        return out
    if ext in OTHER_FILE_TYPES:
        raise QgsProcessingException(f"Output model: {out!r} must be an .onnx file, not {ext}.")
    return out + ".onnx"   # 'berlin_v1.2' -> 'berlin_v1.2.onnx'


# extensions of files a model path must never be taken for (rasters, vectors, tables, reports)
OTHER_FILE_TYPES = {".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".jpg", ".jpeg", ".nc",
                    ".h5", ".gpkg", ".shp", ".geojson", ".json", ".csv", ".txt", ".md",
                    ".html", ".qml", ".pt", ".pth", ".zip"}


def unique_model_path(folder, stem):
    """``folder/stem.onnx``, or ``stem-2.onnx``... when taken (a default name never overwrites)."""
    path = os.path.join(folder, f"{stem}.onnx")
    n = 2
    while os.path.exists(path) or os.path.exists(path[:-5] + ".md"):
        path = os.path.join(folder, f"{stem}-{n}.onnx")
        n += 1
    return path


def _imported_so2sat():
    """The installed So2Sat LCZ42 model's path, or None."""
    from ..core.errors import ModelError
    from ..lcz.card import NAME
    from ..qgis_common.user_models import find_model
    try:
        return find_model(NAME).path
    except ModelError:
        return None


class TrainAlgorithm(QgsProcessingAlgorithm):
    LABELS = "LABELS"
    LABEL_FIELD = "LABEL_FIELD"
    CLASS_MAP = "CLASS_MAP"
    BASE_MODEL = "BASE_MODEL"
    EXTENT = "EXTENT"
    AOI = "AOI"
    VALIDATION_SHARE = "VALIDATION_SHARE"
    BLOCK_SIZE = "BLOCK_SIZE"
    MAX_MINUTES = "MAX_MINUTES"
    EPOCHS = "EPOCHS"
    DEVICE = "DEVICE"
    SEED = "SEED"
    BASELINE = "BASELINE"
    OVERWRITE = "OVERWRITE"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    MODEL = "MODEL"
    NAME = "NAME"
    METRICS = "METRICS"
    REPORT = "REPORT"

    def createInstance(self):
        return TrainAlgorithm()

    def name(self):
        return "train"

    def helpUrl(self):
        return help_url(self.name())

    def displayName(self):
        return "Train a model on your labels"

    def group(self):
        return GROUP

    def groupId(self):
        return GROUP_ID

    def tags(self):
        return ["train", "fine-tune", "labels", "openstreetmap", "osm", "land use", "deep learning",
                "urban", "function", "randomforest"]

    def icon(self):
        return QIcon(ICON)

    def svgIconPath(self):
        return ICON

    def flags(self):
        return super().flags() | QgsProcessingAlgorithm.FlagCanCancel

    def shortHelpString(self):
        return (
            "Adapts the urban-function network to your city from the labels you have: "
            "OpenStreetMap land use (landuse/natural/leisure/amenity values or the Geofabrik "
            "<tt>fclass</tt>), your own polygons, or points from the labelling dock."
            "<p><b>Inputs</b>: the layers you will classify, with the classify names (VHR, "
            "NTL, S2_SPRING ... S2_WINTER, TEMPORAL; any subset).</p>"
            "<p><b>Labels</b>: polygons (the cells fully inside each polygon are labelled) or "
            "points (the cell under each point), in any CRS; <b>Label field</b>: text or "
            "integer. <b>Class map</b>: a CSV <tt>value,function</tt> (function = one of the "
            "eight classes or <tt>ignore</tt>); empty = the bundled table for OpenStreetMap and "
            "our own class names and codes. Unknown values stop the run with their list.</p>"
            "<p><b>Base model</b>: empty = the best measured start: with VHR imagery alone, "
            "the real-data VHR scene model fine-tuned on your imagery; with Sentinel-2 and the "
            "So2Sat LCZ weights imported, the fusion network with its Sentinel-2 stream "
            "started from So2Sat (real data of 42 cities), otherwise the bundled fusion "
            "network fine-tuned; <tt>urban-fusion</tt> = the latter always; <tt>scratch</tt> = "
            "the same network from random weights; <tt>so2sat</tt>; "
            "<tt>vhr-scenes-resnet</tt> = the real-data VHR scene model fine-tuned on your "
            "imagery (VHR input only); <tt>so2sat-lcz42-s2-resnet20</tt> = the imported "
            "So2Sat network itself fine-tuned as a patch classifier of functions (Sentinel-2 "
            "seasons only, 40 m cells); or a model name/path.</p>"
            "<p><b>Validation</b>: whole blocks of ground (1 km) are held out, with a buffer "
            "of the network's receptive field; the report compares the trained model with a "
            "RandomForest on the same cells and with the untrained base model, and says when "
            "the model does not hold up.</p>"
            "<p><b>Output model</b>: an .onnx file (empty = the user models folder, named after "
            "the label layer), with its card (.md), metrics (_metrics.json) and report "
            "(_report.html) beside it. In the user models folder it appears in classify's "
            "model list, and classify picks it by default for inputs over the area it was "
            "trained on when it holds up; saved elsewhere, give its path as classify's "
            "model.</p>"
            "<p><b>Time limit</b>: for the whole run. Reading the inputs, the RandomForest and "
            "the checks after training take a fixed part (about 1.5 min for the 1.2 MPix "
            "Sentinel-2 clip on 2 cores); the epochs get the rest. With fewer than 8 epochs "
            "the log says so, with the limit that would do.</p>"
            "<p>Needs PyTorch and scikit-learn in the plugin's environment.</p>")

    def checkParameterValues(self, parameters, context):
        return qgis_inputs.check_parameter_values(self, parameters, context)

    def initAlgorithm(self, config=None):
        for param, modality in MODALITY_PARAMS:
            self.addParameter(qgis_inputs.RasterFileParameter(
                param, MODALITY_LABELS[modality], optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.LABELS, "Labels (polygons or points, any CRS)",
            [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField(
            self.LABEL_FIELD, "Label field", parentLayerParameterName=self.LABELS))
        self.addParameter(QgsProcessingParameterFile(
            self.CLASS_MAP, "Class map (CSV value,function; empty = OpenStreetMap and our "
            "classes)", extension="csv", optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.BASE_MODEL, "Base model (empty = best measured start; 'urban-fusion'; 'scratch'; "
            "'so2sat'; 'vhr-scenes-resnet'; or a name/path)",
            defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.MAX_MINUTES, "Time limit (minutes)", QgsProcessingParameterNumber.Double, 15.0,
            False, 1.0, 1440.0))
        advanced = [
            QgsProcessingParameterExtent(self.EXTENT, "Extent (empty = around the labels)",
                                         optional=True),
            QgsProcessingParameterFeatureSource(
                self.AOI, "Area of interest (polygons)", [QgsProcessing.TypeVectorPolygon],
                optional=True),
            QgsProcessingParameterNumber(
                self.VALIDATION_SHARE, "Share of labelled cells held out for validation",
                QgsProcessingParameterNumber.Double, 0.2, False, 0.05, 0.5),
            QgsProcessingParameterNumber(
                self.BLOCK_SIZE, "Validation block size (m)", QgsProcessingParameterNumber.Double,
                1000.0, False, 100.0, 100000.0),
            QgsProcessingParameterNumber(
                self.EPOCHS, "Epochs (0 = as many as the time limit allows)",
                QgsProcessingParameterNumber.Integer, 0, False, 0, 1000),
            QgsProcessingParameterEnum(self.DEVICE, "Device", [d for d, _ in DEVICES],
                                       False, 0, False),
            QgsProcessingParameterNumber(self.SEED, "Random seed",
                                         QgsProcessingParameterNumber.Integer, 0, False, 0),
            QgsProcessingParameterBoolean(self.BASELINE, "Compare with a RandomForest baseline",
                                          defaultValue=True),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterBoolean(
            self.OVERWRITE, "Overwrite an existing model of that name", defaultValue=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, "Output model (.onnx; empty = user models folder)",
            "ONNX models (*.onnx)", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputFile(self.MODEL, "Trained model"))
        self.addOutput(QgsProcessingOutputString(self.NAME, "Model name"))
        self.addOutput(QgsProcessingOutputString(self.METRICS, "Metrics (JSON)"))
        self.addOutput(QgsProcessingOutputHtml(self.REPORT, "Training report"))

    def canExecute(self):
        from ..core.environment import missing_dependencies
        missing = missing_dependencies()
        if missing:
            return False, "Urban Functions cannot run: " + " ".join(missing)
        return True, ""

    def _inputs(self, parameters, context):
        inputs = qgis_inputs.processing_raster_inputs(self, parameters, context,
                                                      MODALITY_PARAMS, MODALITY_LABELS)
        if not inputs:
            raise QgsProcessingException("Give at least one input raster (VHR, NTL, S2_SPRING "
                                         "... S2_WINTER or TEMPORAL) to train on.")
        return inputs

    def processAlgorithm(self, parameters, context, feedback):
        from ..core.environment import missing_dependencies
        missing = missing_dependencies()
        if missing:
            raise QgsProcessingException("Urban Functions cannot run: " + " ".join(missing))
        from ..core.errors import Cancelled, UrbanFunctionsError
        from ..learning.user_training import SCRATCH, TrainRequest, run_training, slug
        from ..qgis_common.user_models import find_model

        inputs = self._inputs(parameters, context)
        source = self.parameterAsSource(parameters, self.LABELS, context)
        if source is None:
            raise QgsProcessingException("Labels: cannot open the layer.")
        layer = self.parameterAsVectorLayer(parameters, self.LABELS, context)
        field = self.parameterAsString(parameters, self.LABEL_FIELD, context)
        if field not in source.fields().names():
            raise QgsProcessingException(f"Labels: no field {field!r}; the layer has "
                                         f"{', '.join(source.fields().names())}.")
        name = layer.name() if layer is not None else "labels"
        out = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        if qgis_inputs.is_unset(parameters.get(self.OUTPUT_MODEL)) or not out:
            folder = user_models_dir()
            os.makedirs(folder, exist_ok=True)
            out = unique_model_path(folder, slug(name))
        else:
            out = model_output_path(out)
        class_map = None
        if not qgis_inputs.is_unset(parameters.get(self.CLASS_MAP)):
            class_map = self.parameterAsFile(parameters, self.CLASS_MAP, context)
        base = (self.parameterAsString(parameters, self.BASE_MODEL, context) or "").strip()
        s2_trunk = None
        try:
            labels = qgis_inputs.label_set(source, field, name,
                                           qgis_inputs.vector_layer_path(layer))
            if base.lower() == SO2SAT:
                from ..core.errors import ModelError
                s2_trunk = _imported_so2sat()
                if not s2_trunk:
                    raise ModelError("BASE_MODEL=so2sat starts the Sentinel-2 stream from the "
                                     "So2Sat LCZ42 network: import its weights first (Import "
                                     "So2Sat LCZ weights).")
                base = ""
            elif base and base != SCRATCH:
                base = find_model(base).path
            elif not base and set(inputs) == {"vhr"}:
                # VHR alone: the real-data scene model adapts best (README, Map your own city)
                base = find_model("vhr-scenes-resnet").path
                feedback.pushInfo("Starting point: the VHR scene model (real imagery), "
                                  "fine-tuned on your imagery (BASE_MODEL=urban-fusion to "
                                  "fine-tune the fusion network instead).")
            elif not base and any(m.startswith("s2_") for m in inputs):
                # the best measured start for Sentinel-2 (README, Map your own city): the
                # So2Sat trunk, when the user has imported it
                s2_trunk = _imported_so2sat()
                if s2_trunk:
                    feedback.pushInfo("Starting point: the Sentinel-2 stream from the imported "
                                      "So2Sat LCZ42 network, the rest from urban-fusion "
                                      "(BASE_MODEL=urban-fusion to fine-tune it alone).")
                else:
                    feedback.pushInfo("Starting point: urban-fusion. Import the So2Sat LCZ "
                                      "weights for a better start with Sentinel-2 (README, Map "
                                      "your own city).")
            extent = None
            if not qgis_inputs.is_unset(parameters.get(self.EXTENT)):
                extent = qgis_inputs.extent_tuple(
                    self.parameterAsExtent(parameters, self.EXTENT, context),
                    self.parameterAsExtentCrs(parameters, self.EXTENT, context))
            aoi = None
            if not qgis_inputs.is_unset(parameters.get(self.AOI)):
                aoi_source = self.parameterAsSource(parameters, self.AOI, context)
                if aoi_source is None:
                    raise QgsProcessingException("Area of interest: cannot open the polygon "
                                                 "layer.")
                aoi = qgis_inputs.aoi_tuple(qgis_inputs.polygon_union(aoi_source.getFeatures()),
                                            aoi_source.sourceCrs())
                if aoi is None:
                    raise QgsProcessingException(
                        "Area of interest: the layer has no polygon (or no selected polygon).")
            request = TrainRequest(
                inputs=inputs, labels=labels, output_path=out, class_map_path=class_map,
                base_model=base or None, s2_trunk=s2_trunk, extent=extent, aoi=aoi,
                validation_share=self.parameterAsDouble(parameters, self.VALIDATION_SHARE,
                                                        context),
                block_m=self.parameterAsDouble(parameters, self.BLOCK_SIZE, context),
                max_minutes=self.parameterAsDouble(parameters, self.MAX_MINUTES, context),
                epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
                device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)][1],
                seed=self.parameterAsInt(parameters, self.SEED, context),
                overwrite=self.parameterAsBoolean(parameters, self.OVERWRITE, context),
                baseline=self.parameterAsBoolean(parameters, self.BASELINE, context))
            last = {"text": None}

            def progress(fraction, message=""):
                feedback.setProgress(100.0 * max(0.0, min(1.0, float(fraction))))
                if message and message != last["text"]:
                    last["text"] = message
                    feedback.setProgressText(str(message))

            with sigterm_cancels(feedback, feedback.pushInfo):
                result = run_training(request, progress=progress,
                                      is_cancelled=feedback.isCanceled, log=feedback.pushInfo)
        except Cancelled as exc:
            raise QgsProcessingException(str(exc)) from exc
        except UrbanFunctionsError as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.pushInfo(f"Model {result.name}: {result.model_path}; report "
                          f"{result.report_path}. " + how_to_use(
                              result.model_path, result.name,
                              result.card["real_data_validation"]["holds_up"]))
        return {self.MODEL: result.model_path, self.NAME: result.name,
                self.METRICS: json.dumps(result.metrics), self.REPORT: result.report_path}
