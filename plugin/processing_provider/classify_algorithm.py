"""Processing algorithm ``urbanfunctions:classify``: the dialog's job for the toolbox, batch mode,
the model designer and ``qgis_process``::

    qgis_process.bin run urbanfunctions:classify -- VHR=vhr.tif NTL=ntl.tif S2_SUMMER=s2.tif \
        MODEL=sample_city_fusion OUTPUT=functions.tif
"""
import json
import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtGui import QIcon

from ..core.inference_modes import MODE_CHOICES
from ..core.model_card import MODALITIES, MODALITY_LABELS
from ..qgis_common import qgis_inputs
from .help_links import help_url
from ..qgis_common.termination import sigterm_cancels
from ..qgis_common.styling import (apply_class_style, apply_derived_style, write_derived_style_sidecar,
                           write_style_sidecar)
from ..qgis_common.summary import text_summary

ICON = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "resources", "icons", "urban_functions.svg")

# parameter name per modality: VHR, NTL, S2_SPRING, S2_SUMMER, S2_AUTUMN, S2_WINTER, TEMPORAL
MODALITY_PARAMS = tuple((m.upper(), m) for m in MODALITIES)

DEVICES = (("Automatic (GPU if available)", "auto"), ("CPU", "cpu"), ("GPU (CUDA)", "cuda"))
PRECISIONS = (("float32", "fp32"),
              ("float16 (GPU only; the first batch is checked against float32)", "fp16"))
# how the network is run over a tile: one view, test-time views, or (patch classifiers) each
# window alone
INFERENCE_MODES = MODE_CHOICES


def _user_models_dir():
    from ..qgis_common.user_models import user_models_dir
    return user_models_dir()



class ClassStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applies the paletted class style to the output when Processing loads it into a project.

    Processing takes ownership of the C++ object; a reference is kept here so the Python side
    survives until Processing calls it (a known PyQGIS pitfall).
    """

    _alive = []

    def __init__(self, classes, name=None):
        super().__init__()
        self.classes = classes
        self.name = name

    @classmethod
    def create(cls, classes, name=None):
        processor = cls(classes, name)
        cls._alive = cls._alive[-15:] + [processor]
        return processor

    def postProcessLayer(self, layer, context, feedback):
        apply_class_style(layer, self.classes)
        if self.name:
            layer.setName(self.name)


class DerivedStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles a derived output (card ``derived_outputs``) when Processing loads it: a 0-1
    pseudocolour ramp for ``class_sum``, a paletted class style for ``class_groups``."""

    _alive = []

    def __init__(self, derived):
        super().__init__()
        self.derived = derived

    @classmethod
    def create(cls, derived):
        processor = cls(derived)
        cls._alive = cls._alive[-15:] + [processor]
        return processor

    def postProcessLayer(self, layer, context, feedback):
        apply_derived_style(layer, self.derived)
        layer.setName(self.derived.label)


class ClassifyAlgorithm(QgsProcessingAlgorithm):
    MODEL = "MODEL"
    EXTENT = "EXTENT"
    AOI = "AOI"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    OVERWRITE = "OVERWRITE"
    DEVICE = "DEVICE"
    PRECISION = "PRECISION"
    CONFIDENCE = "CONFIDENCE"
    PROBABILITIES = "PROBABILITIES"
    OPTIONAL_OUTPUTS = "OPTIONAL_OUTPUTS"
    INFERENCE_MODE = "INFERENCE_MODE"
    PATCH_MODE = "PATCH_MODE"      # INFERENCE_MODE's name before 0.2.0, kept for saved scripts
    DASK_SCHEDULER = "DASK_SCHEDULER"
    OUTPUT = "OUTPUT"
    PROVIDER = "PROVIDER"
    SECONDS = "SECONDS"
    MANIFEST = "MANIFEST"
    CLASS_AREAS = "CLASS_AREAS"
    EXTRA_OUTPUTS = "EXTRA_OUTPUTS"

    def createInstance(self):
        return ClassifyAlgorithm()

    def name(self):
        return "classify"

    def helpUrl(self):
        return help_url(self.name())

    def displayName(self):
        return "Classify urban functions"

    def group(self):
        return ""

    def groupId(self):
        return ""

    def tags(self):
        return ["urban", "function", "land use", "classification", "segmentation", "onnx",
                "night-time light", "ntl", "sentinel-2", "vhr", "deep learning"]

    def icon(self):
        return QIcon(ICON)

    def svgIconPath(self):
        return ICON

    def flags(self):
        return super().flags() | QgsProcessingAlgorithm.FlagCanCancel

    def shortHelpString(self):
        models = self._model_help()
        return (
            "Maps urban functions (residential, commercial, industrial, transportation, public "
            "services, green space, water, agricultural/undeveloped) with a bundled neural network."
            "<p><b>Inputs</b>: any of VHR imagery (VHR), night-time light (NTL), Sentinel-2 "
            "spring/summer/autumn/winter rasters (S2_SPRING ... S2_WINTER) and a temporal "
            "signature (TEMPORAL: one band per date, e.g. monthly night light) — files readable "
            "by GDAL, any CRS; at least one is needed and the model must accept each one given. "
            "Bands are matched by their names when they have them.</p>"
            "<p><b>Model</b>: the name of an installed model or the path to an .onnx file. Leave "
            "it empty to pick the installed model that fits the given inputs best.</p>"
            f"{models}"
            "<p><b>Extent</b> and <b>Area of interest</b> (polygons, selected features only if "
            "ticked) limit the area processed; without them the overlap of the inputs is "
            "processed. Cells outside the polygons are nodata.</p>"
            "<p><b>Output</b>: GeoTIFF, band 1 urban-function codes (0 = nodata) with colours "
            "and class names, optional band 2 confidence (%). A .qml style with the same name "
            "is written next to it, and a run manifest (&lt;output&gt;.manifest.json) records "
            "inputs, model and settings. With the So2Sat LCZ model the output holds the "
            "functions derived from the LCZ probabilities, and its confidence is the summed "
            "probability of the function (the LCZ map is an extra output).</p>"
            "<p><b>Extra outputs</b> are written next to the output as <tt>&lt;output&gt;_"
            "&lt;name&gt;.tif</tt> and listed in EXTRA_OUTPUTS (JSON: name -> path): the "
            "outputs a model card declares (for the So2Sat LCZ model the LCZ map, <tt>lcz</tt>, "
            "and a settlement extent, 0-1; both are loaded and styled with the result) and, "
            "with <b>Write class probabilities</b>, one float32 band per class of the model.</p>"
            "<p>Advanced: tile size and overlap in output cells (empty = the model's defaults), "
            "batch size, device, class probabilities, and the inference mode: <i>fast</i> runs the "
            "network once per tile (for patch classifiers such as the VHR scene model: its "
            "trunk once per tile), <i>accurate</i> also runs it on the tile flipped left-right, "
            "flipped up-down and transposed and averages the four (four times the inference "
            "time), <i>per window</i> (patch classifiers only) runs every cell's window on its "
            "own as on the scene benchmark (about ten times slower); empty = the model's "
            "default (accurate for the VHR scene model and the models fine-tuned from it; for "
            "fusion models trained on your labels the mode that scored better on their "
            "held-out blocks; per window for patch classifiers without a shared trunk, such "
            "as So2Sat; fast otherwise). <b>Dask "
            "scheduler</b>: run the tiles on a Dask cluster (a scheduler address, or local:N for "
            "N worker processes on this machine); every worker must read the inputs and the "
            "model at the same paths, and the map is the same as a run here (README, "
            "Command line and Dask clusters).</p>"
            "<p>Models: the bundled ones, the user models folder "
            f"(<tt>{_user_models_dir()}</tt>, where <i>Import So2Sat LCZ weights</i> installs) "
            "and $URBAN_FUNCTIONS_MODELS.</p>")

    def _model_help(self):
        try:
            from ..core.environment import missing_dependencies
            if missing_dependencies():
                return ""
            from ..core.models import scan_models
            from ..qgis_common.user_models import model_dirs_for_qgis
            entries, broken = scan_models(model_dirs_for_qgis())
        except Exception:
            return ""
        items = "".join(
            f"<li><b>{e.card.name}</b>: {e.card.summary} (inputs: "
            f"{', '.join(MODALITY_LABELS[m] for m in e.card.modalities)})</li>" for e in entries)
        items += "".join(f"<li><b>{os.path.basename(p)}</b>: cannot be loaded ({r})</li>"
                         for p, r in broken)
        if not items:
            return "<p>No model is installed.</p>"
        return f"<p>Installed models:</p><ul>{items}</ul>"

    def checkParameterValues(self, parameters, context):
        return qgis_inputs.check_parameter_values(self, parameters, context)

    def initAlgorithm(self, config=None):
        for param, modality in MODALITY_PARAMS:
            self.addParameter(qgis_inputs.RasterFileParameter(
                param, MODALITY_LABELS[modality], optional=True))
        model = QgsProcessingParameterString(
            self.MODEL, "Model (installed model name or .onnx path; empty = best fit for the inputs)",
            defaultValue="", optional=True)
        try:  # the toolbox dialog shows a drop-down of the installed models
            from .model_widget import ModelWidgetWrapper
            model.setMetadata({"widget_wrapper": {"class": ModelWidgetWrapper}})
        except ImportError:  # no Processing GUI (the string still works)
            pass
        self.addParameter(model)
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, "Extent to process (empty = overlap of the inputs)", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AOI, "Area of interest (polygons; outside is nodata)",
            [QgsProcessing.TypeVectorPolygon], optional=True))

        advanced = []
        advanced.append(QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size (output cells; empty = model default)",
            QgsProcessingParameterNumber.Integer, None, True, 1, 4096))
        advanced.append(QgsProcessingParameterNumber(
            self.OVERLAP, "Tile overlap (output cells; empty = model default)",
            QgsProcessingParameterNumber.Integer, None, True, 0, 2048))
        advanced.append(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Batch size (tiles per inference call; 0 = automatic: 4 on the "
            "CPU, from the free memory on a GPU)",
            QgsProcessingParameterNumber.Integer, 0, False, 0, 256))
        advanced.append(QgsProcessingParameterBoolean(
            self.OVERWRITE, "Replace existing output files (the map, its style, manifest and "
            "extra outputs; an input is never replaced)", defaultValue=False, optional=True))
        advanced.append(QgsProcessingParameterEnum(
            self.DEVICE, "Device", [label for label, _ in DEVICES], False, 0, False))
        advanced.append(QgsProcessingParameterEnum(
            self.PRECISION, "Precision", [label for label, _ in PRECISIONS], False, 0, True))
        advanced.append(QgsProcessingParameterBoolean(
            self.PROBABILITIES, "Write class probabilities (one float32 band per class, "
            "OUTPUT_probabilities.tif)", defaultValue=False, optional=True))
        advanced.append(QgsProcessingParameterBoolean(
            self.OPTIONAL_OUTPUTS, "Write the model's optional outputs (e.g. the input weights: "
            "how much each layer drove each cell, OUTPUT_gates.tif)", defaultValue=False,
            optional=True))
        advanced.append(QgsProcessingParameterEnum(
            self.INFERENCE_MODE, "Inference mode (accurate: test-time views, averaged)",
            [label for label, _ in INFERENCE_MODES], False, 0, False))
        advanced.append(QgsProcessingParameterString(
            self.DASK_SCHEDULER, "Dask scheduler (tcp://host:8786, or local:N worker processes; "
            "empty = run here)", defaultValue="", optional=True))
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        legacy = QgsProcessingParameterEnum(
            self.PATCH_MODE, "Inference mode (the former name PATCH_MODE; use INFERENCE_MODE)",
            [label for label, _ in INFERENCE_MODES], False, None, True)
        legacy.setFlags(legacy.flags() | QgsProcessingParameterDefinition.FlagHidden)
        self.addParameter(legacy)

        self.addParameter(QgsProcessingParameterBoolean(
            self.CONFIDENCE, "Add a confidence band (band 2, %)", defaultValue=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, "Urban functions"))
        self.addOutput(QgsProcessingOutputString(self.PROVIDER, "Execution provider that ran"))
        self.addOutput(QgsProcessingOutputNumber(self.SECONDS, "Run time (seconds)"))
        self.addOutput(QgsProcessingOutputFile(self.MANIFEST, "Run manifest (JSON)"))
        self.addOutput(QgsProcessingOutputString(
            self.CLASS_AREAS, "Area per class (JSON: name -> m²)"))
        self.addOutput(QgsProcessingOutputString(
            self.EXTRA_OUTPUTS, "Extra outputs (JSON: name -> path; probabilities, derived)"))

    def canExecute(self):
        from ..core.environment import missing_dependencies
        missing = missing_dependencies()
        if missing:
            return False, "Urban Functions cannot run: " + " ".join(missing)
        return True, ""

    # helpers ---------------------------------------------------------------------------------
    def _inference_mode(self, parameters, context):
        """INFERENCE_MODE, or PATCH_MODE (its name before 0.2.0) from saved scripts and models
        when INFERENCE_MODE is left at the model's default; the choices are the same."""
        mode = INFERENCE_MODES[self.parameterAsEnum(parameters, self.INFERENCE_MODE, context)][1]
        if mode is None and parameters.get(self.PATCH_MODE) not in (None, ""):
            mode = INFERENCE_MODES[self.parameterAsEnum(parameters, self.PATCH_MODE, context)][1]
        return mode

    def _optional_int(self, parameters, name, context):
        if qgis_inputs.is_unset(parameters.get(name)):
            return None
        return self.parameterAsInt(parameters, name, context)

    def _inputs(self, parameters, context):
        return qgis_inputs.processing_raster_inputs(self, parameters, context, MODALITY_PARAMS,
                                                    MODALITY_LABELS)

    def _model(self, parameters, context, inputs):
        from ..core.errors import ModelError
        from ..core.models import model_dirs
        from ..qgis_common.user_models import (default_model_for, find_model, list_models,
                                       model_dirs_for_qgis)
        name = (self.parameterAsString(parameters, self.MODEL, context) or "").strip()
        if name:
            return find_model(name)
        if not list_models():
            looked = ", ".join(model_dirs(model_dirs_for_qgis()))
            raise ModelError(f"No model is installed (looked in {looked}); give the path "
                             "to an .onnx model in MODEL.")
        return default_model_for(list(inputs), inputs)

    def processAlgorithm(self, parameters, context, feedback):
        from ..core.environment import missing_dependencies
        missing = missing_dependencies()
        if missing:
            raise QgsProcessingException("Urban Functions cannot run: " + " ".join(missing))
        from ..core.engine import ClassifyRequest, run_classification
        from ..core.errors import Cancelled, UrbanFunctionsError

        inputs = self._inputs(parameters, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        try:
            entry = self._model(parameters, context, inputs)
            extent = None
            if not qgis_inputs.is_unset(parameters.get(self.EXTENT)):
                rect = self.parameterAsExtent(parameters, self.EXTENT, context)
                crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
                extent = qgis_inputs.extent_tuple(rect, crs)
            aoi = None
            if not qgis_inputs.is_unset(parameters.get(self.AOI)):
                source = self.parameterAsSource(parameters, self.AOI, context)
                if source is None:
                    raise QgsProcessingException("Area of interest: cannot open the polygon layer.")
                aoi = qgis_inputs.aoi_tuple(qgis_inputs.polygon_union(source.getFeatures()),
                                            source.sourceCrs())
                if aoi is None:
                    raise QgsProcessingException(
                        "Area of interest: the layer has no polygon (or no selected polygon).")
            device = DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)][1]
            request = ClassifyRequest(
                inputs=inputs,
                model_path=entry.path,
                output_path=output,
                extent=extent,
                aoi=aoi,
                tile_size=self._optional_int(parameters, self.TILE_SIZE, context),
                overlap=self._optional_int(parameters, self.OVERLAP, context),
                batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                device=device,
                precision=PRECISIONS[self.parameterAsEnum(parameters, self.PRECISION,
                                                          context)][1],
                confidence=self.parameterAsBoolean(parameters, self.CONFIDENCE, context),
                probabilities=self.parameterAsBoolean(parameters, self.PROBABILITIES, context),
                inference_mode=self._inference_mode(parameters, context),
                dask_scheduler=(self.parameterAsString(parameters, self.DASK_SCHEDULER, context)
                                or "").strip() or None,
                optional_outputs=self.parameterAsBoolean(parameters, self.OPTIONAL_OUTPUTS,
                                                         context),
                overwrite=self.parameterAsBoolean(parameters, self.OVERWRITE, context),
            )
            feedback.pushInfo(f"Model: {entry.card.title} ({entry.path})")
            # pushInfo, also for a warning: qgis_process (QGIS 3.22) does not print pushWarning
            feedback.pushInfo(entry.card.validation_summary())
            last = {"text": None}

            def progress(fraction, message=""):
                feedback.setProgress(100.0 * max(0.0, min(1.0, float(fraction))))
                if message and message != last["text"]:
                    last["text"] = message
                    feedback.setProgressText(str(message))

            with sigterm_cancels(feedback, feedback.pushInfo):
                result = run_classification(request, progress=progress,
                                            is_cancelled=feedback.isCanceled,
                                            log=feedback.pushInfo)
        except Cancelled as exc:
            raise QgsProcessingException(str(exc) or "Cancelled; nothing was written.") from exc
        except UrbanFunctionsError as exc:
            raise QgsProcessingException(str(exc)) from exc

        feedback.pushInfo(text_summary(result))
        classes = result.classes
        try:
            write_style_sidecar(result.output_path, classes)
        except OSError as exc:
            feedback.reportError(f"The output is fine but its style could not be saved: {exc}")
        if context.willLoadLayerOnCompletion(output):
            details = context.layerToLoadOnCompletionDetails(output)
            details.setPostProcessor(ClassStylePostProcessor.create(classes))
            if not details.name or details.name == self.parameterDefinition(
                    self.OUTPUT).description():
                details.name = f"Urban functions ({result.card.title})"
        extra = dict(getattr(result, "extra_outputs", None) or {})
        self._style_and_load_extras(result, extra, context, feedback,
                                    context.willLoadLayerOnCompletion(output))
        areas = {getattr(c, "name", str(c.code)): float(c.area_m2) for c in result.class_areas}
        return {
            self.OUTPUT: result.output_path,
            self.PROVIDER: result.provider,
            self.SECONDS: float(result.seconds),
            self.MANIFEST: result.manifest_path,
            self.CLASS_AREAS: json.dumps(areas),
            self.EXTRA_OUTPUTS: json.dumps(extra),
        }

    def _style_and_load_extras(self, result, extra, context, feedback, load):
        """.qml sidecars for the derived outputs; when the result is loaded into the project,
        the derived outputs are loaded and styled too (the probabilities stay files: one band
        per class is not a map to look at)."""
        derived = {d.name: d for d in result.derived_outputs}
        for name, path in extra.items():
            spec = derived.get(name)
            if spec is None:
                continue
            try:
                write_derived_style_sidecar(path, spec)
            except OSError as exc:
                feedback.reportError(f"{path} is fine but its style could not be saved: {exc}")
            if load:
                details = QgsProcessingContext.LayerDetails(spec.label, context.project(), name)
                details.forceName = True
                details.setPostProcessor(DerivedStylePostProcessor.create(spec))
                context.addLayerToLoadOnCompletion(path, details)
