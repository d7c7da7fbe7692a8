"""Processing algorithms for map validation (group "Validation"):

* ``urbanfunctions:createvalidationpoints`` -- draw validation points from a classified raster
  (stratified random / simple random / systematic), as a point layer with an empty reference
  field whose editor is a drop-down of the class names;
* ``urbanfunctions:assessaccuracy`` -- accuracy and area estimates with confidence intervals from
  the labelled points (Olofsson et al. 2014): HTML report, CSV and JSON.

The statistics live in ``plugin.validation`` (pure Python); this module only adapts QGIS layers.
"""
import os

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsEditorWidgetSetup,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterDistance,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ..qgis_common import qgis_inputs
from .help_links import help_url

GROUP = "Validation"
GROUP_ID = "validation"
REFERENCE_FIELD = "ref_class"
STYLE_NAME = "urban_functions_validation"
CITATION = ("Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A."
            " (2014). Good practices for estimating area and assessing accuracy of land change. "
            "Remote Sensing of Environment 148, 42-57.")

DESIGNS = (("Stratified random (strata = map classes)", "stratified"),
           ("Simple random", "simple"),
           ("Systematic (square grid, random origin)", "systematic"))
ALLOCATIONS = (("Proportional to mapped area", "proportional"),
               ("Equal per class", "equal"),
               ("Neyman (optimal for overall accuracy; uses the expected user's accuracies)",
                "neyman"))


def _raster_source(alg, parameters, name, context, label):
    """(file, display name, QgsCoordinateReferenceSystem) of the classified raster. A path is
    read with GDAL as it is (a QGIS layer made from it would compute statistics into the
    map's .aux.xml); a layer must be a plain GDAL file."""
    value = parameters.get(name)
    if isinstance(value, str) and os.path.isfile(value):
        from osgeo import gdal
        try:
            ds = gdal.OpenEx(value, gdal.OF_RASTER | gdal.OF_READONLY)
            if ds is None:
                raise RuntimeError("not a raster GDAL can read")
            wkt = ds.GetProjection()
            ds = None
        except RuntimeError as exc:
            raise QgsProcessingException(f"{label}: cannot open {value!r} ({exc}).") from exc
        return (value, os.path.splitext(os.path.basename(value))[0],
                QgsCoordinateReferenceSystem.fromWkt(wkt))
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        raise QgsProcessingException(f"{label}: cannot open the raster layer.")
    path, problem = qgis_inputs.raster_layer_path(layer, label)
    if problem:
        raise QgsProcessingException(problem)
    return path, layer.name(), layer.crs()


def value_map_setup(choices):
    """A ValueMap editor widget offering ``choices`` [(code, label)] (shown as "label (code)")."""
    return QgsEditorWidgetSetup("ValueMap", {"map": [{f"{label} ({code})": int(code)}
                                                     for code, label in choices]})


def apply_reference_widget(layer, choices, field=REFERENCE_FIELD):
    """Set the class drop-down on ``field`` of ``layer``; returns False if the field is absent."""
    idx = layer.fields().indexFromName(field)
    if idx < 0:
        return False
    layer.setEditorWidgetSetup(idx, value_map_setup(choices))
    layer.setFieldAlias(idx, "Reference class")
    return True


def save_reference_style(uri, choices, field=REFERENCE_FIELD):
    """Store the class drop-down as the default style inside a GeoPackage / SpatiaLite file, so
    it comes back whenever the layer is opened. Returns "" or an error message."""
    layer = QgsVectorLayer(uri, "validation points", "ogr")
    if not layer.isValid():
        return f"cannot open {uri}"
    if not apply_reference_widget(layer, choices, field):
        return f"no field {field!r}"
    if not layer.dataProvider().isSaveAndLoadStyleToDatabaseSupported():
        return "this format cannot store styles"
    error = layer.saveStyleToDatabase(STYLE_NAME, "Urban Functions validation points: reference "
                                      "class drop-down", True, "")
    return error or ""


class ReferenceWidgetPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Sets the reference-class drop-down when Processing loads the points into the project.

    Processing takes ownership of the C++ object; a Python reference is kept so the Python side
    survives until Processing calls it.
    """

    _alive = []

    def __init__(self, choices):
        super().__init__()
        self.choices = choices

    @classmethod
    def create(cls, choices):
        processor = cls(choices)
        cls._alive = cls._alive[-15:] + [processor]
        return processor

    def postProcessLayer(self, layer, context, feedback):
        if isinstance(layer, QgsVectorLayer):
            apply_reference_widget(layer, self.choices)


def _add_sample_size_parameters(alg, allocation_label, default_n):
    """Allocation, sample size, target SE, expected UA and minimum per class: shared by the
    planning and the drawing algorithm so both read the same settings the same way."""
    alg.addParameter(QgsProcessingParameterEnum(
        "ALLOCATION", allocation_label, [a for a, _ in ALLOCATIONS], False, 0))
    alg.addParameter(QgsProcessingParameterNumber(
        "SAMPLE_SIZE", "Number of points (0 = from the target standard error below)",
        QgsProcessingParameterNumber.Integer, default_n, False, 0, 10_000_000))
    alg.addParameter(QgsProcessingParameterNumber(
        "TARGET_SE", "Target standard error of overall accuracy (used when the number of points "
        "is 0)", QgsProcessingParameterNumber.Double, 0.01, False, 0.0001, 0.5))
    alg.addParameter(QgsProcessingParameterString(
        "EXPECTED_UA", "Expected user's accuracy (0.8, or per class: 1=0.9, 2=0.7, 0.8)",
        defaultValue="0.8", optional=True))
    alg.addParameter(QgsProcessingParameterNumber(
        "MIN_PER_STRATUM", "Minimum number of points per class",
        QgsProcessingParameterNumber.Integer, 50, False, 0, 1_000_000))


OVERWRITE = "OVERWRITE"


def _add_overwrite(alg, what):
    alg.addParameter(QgsProcessingParameterBoolean(
        OVERWRITE, f"Overwrite an existing {what}", False))


def _refuse_existing(paths, overwrite, what):
    """Fail before any work when an output file exists and OVERWRITE is not set: validation
    points are labelled by hand, and a report may be the only copy of an assessment."""
    if overwrite:
        return
    for path in paths:
        file = (path or "").split("|")[0]
        if file.startswith("ogr:"):
            continue   # a database connection, not a file the user named
        if file and os.path.exists(file):
            raise QgsProcessingException(
                f"{file!r} already exists{what}; choose another name, or overwrite it "
                "(OVERWRITE=true).")


class _Base(QgsProcessingAlgorithm):

    def group(self):
        return GROUP

    def groupId(self):
        return GROUP_ID

    def flags(self):
        return super().flags() | QgsProcessingAlgorithm.FlagCanCancel

    def helpUrl(self):
        return help_url(self.name())

    def checkParameterValues(self, parameters, context):
        return qgis_inputs.check_parameter_values(self, parameters, context)


class CreateValidationPointsAlgorithm(_Base):
    INPUT = "INPUT"
    BAND = "BAND"
    DESIGN = "DESIGN"
    ALLOCATION = "ALLOCATION"
    SAMPLE_SIZE = "SAMPLE_SIZE"
    TARGET_SE = "TARGET_SE"
    EXPECTED_UA = "EXPECTED_UA"
    MIN_PER_STRATUM = "MIN_PER_STRATUM"
    MIN_DISTANCE = "MIN_DISTANCE"
    SEED = "SEED"
    OUTPUT = "OUTPUT"
    N_POINTS = "N_POINTS"
    SEED_USED = "SEED_USED"
    EXPECTED_SE_OA = "EXPECTED_SE_OA"

    def createInstance(self):
        return CreateValidationPointsAlgorithm()

    def name(self):
        return "createvalidationpoints"

    def displayName(self):
        return "Create validation points"

    def tags(self):
        return ["validation", "accuracy", "sampling", "stratified", "random", "points",
                "reference", "olofsson", "error matrix"]

    def shortHelpString(self):
        return (
            "Draws validation points from a classified raster, following the good practices of "
            "Olofsson et al. (2014).<p><b>Design</b>: <i>stratified random</i> (strata = map "
            "classes; recommended), <i>simple random</i> or <i>systematic</i> (regular grid with a "
            "random origin). Simple random and systematic samples are assessed post-stratified by "
            "map class.</p><p><b>Sample size</b>: a total number of points, or 0 to derive it "
            "from a <b>target standard error of overall accuracy</b> and the <b>expected user's "
            "accuracies</b> (one number such as 0.8, or class=value pairs such as "
            "<tt>1=0.9, 2=0.7, 0.8</tt>) with Olofsson et al. 2014 eq. 13.</p>"
            "<p><b>Allocation</b> (stratified): proportional to the mapped area, equal, or Neyman; "
            "each class gets at least the <b>minimum per class</b> (Olofsson et al. suggest "
            "50-100) so rare classes can be assessed.</p><p><b>Minimum distance</b> between "
            "points (map units) reduces spatial clustering; when it cannot be kept the log says "
            "how many points are missing. The <b>seed</b> makes the sample reproducible (empty = "
            "random; the seed used is reported).</p><p><b>Output</b>: points at pixel centres "
            "with map_class, map_label, stratum, weight (N<sub>h</sub>/n<sub>h</sub>), incl_prob "
            "and an empty <b>ref_class</b> field to fill in (a drop-down of the class names; use "
            "the Urban Functions labelling panel), then run <i>Assess map accuracy</i>.</p>"
            "<p>Nodata pixels are never sampled. 100 million pixels take a few seconds.</p>")

    def initAlgorithm(self, config=None):
        self.addParameter(qgis_inputs.RasterFileParameter(self.INPUT, "Classified raster"))
        band = QgsProcessingParameterBand(self.BAND, "Class band", 1, self.INPUT, True)
        band.setFlags(band.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(band)
        self.addParameter(QgsProcessingParameterEnum(
            self.DESIGN, "Sampling design", [d for d, _ in DESIGNS], False, 0))
        _add_sample_size_parameters(self, "Allocation to classes (stratified design)", 500)
        self.addParameter(QgsProcessingParameterDistance(
            self.MIN_DISTANCE, "Minimum distance between points", 0.0, self.INPUT, False, 0.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, "Random seed (empty = random)", QgsProcessingParameterNumber.Integer,
            None, True, 0, 2 ** 31 - 2))
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, "Validation points", QgsProcessing.TypeVectorPoint))
        _add_overwrite(self, "points file (its labels are lost)")
        self.addOutput(QgsProcessingOutputNumber(self.N_POINTS, "Number of points"))
        self.addOutput(QgsProcessingOutputNumber(self.SEED_USED, "Seed used"))
        self.addOutput(QgsProcessingOutputNumber(
            self.EXPECTED_SE_OA, "Expected SE of overall accuracy (stratified design)"))

    @staticmethod
    def fields():
        fields = QgsFields()
        fields.append(QgsField("point_id", QVariant.Int))
        fields.append(QgsField("map_class", QVariant.Int))
        fields.append(QgsField("map_label", QVariant.String, len=80))
        fields.append(QgsField("stratum", QVariant.Int))
        fields.append(QgsField("weight", QVariant.Double))
        fields.append(QgsField("incl_prob", QVariant.Double))
        fields.append(QgsField(REFERENCE_FIELD, QVariant.Int))
        return fields

    def processAlgorithm(self, parameters, context, feedback):
        from ..validation.raster_access import ValidationError, reference_classes
        from ..validation.sample_size import parse_expected_ua
        from ..validation.sampling import draw_sample

        path, _, crs = _raster_source(self, parameters, self.INPUT, context,
                                      "Classified raster")
        _refuse_existing([self.parameterAsOutputLayer(parameters, self.OUTPUT, context)],
                         self.parameterAsBoolean(parameters, OVERWRITE, context),
                         " (its points may already be labelled)")
        band = self.parameterAsInt(parameters, self.BAND, context) or 1
        design = DESIGNS[self.parameterAsEnum(parameters, self.DESIGN, context)][1]
        allocation = ALLOCATIONS[self.parameterAsEnum(parameters, self.ALLOCATION, context)][1]
        n = self.parameterAsInt(parameters, self.SAMPLE_SIZE, context)
        target_se = self.parameterAsDouble(parameters, self.TARGET_SE, context)
        try:
            expected_ua = parse_expected_ua(
                self.parameterAsString(parameters, self.EXPECTED_UA, context))
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from exc
        seed_value = parameters.get(self.SEED)
        seed = None if qgis_inputs.is_unset(seed_value) else \
            self.parameterAsInt(parameters, self.SEED, context)
        try:
            sample = draw_sample(
                path, n=n if n > 0 else None, design=design, allocation=allocation,
                min_per_stratum=self.parameterAsInt(parameters, self.MIN_PER_STRATUM, context),
                target_se=target_se, expected_ua=expected_ua,
                min_distance=self.parameterAsDouble(parameters, self.MIN_DISTANCE, context),
                seed=seed, band=band,
                progress=lambda f: feedback.setProgress(100.0 * f),
                is_cancelled=feedback.isCanceled, log=feedback.pushInfo)
        except (ValidationError, ValueError) as exc:
            raise QgsProcessingException(str(exc)) from exc

        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, self.fields(),
                                             QgsWkbTypes.Point, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        fields = self.fields()
        for p in sample.points:
            f = QgsFeature(fields)
            f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(p.x, p.y)))
            f.setAttributes([int(p.id), int(p.map_class), sample.label(p.map_class),
                             int(p.stratum), float(p.weight), float(p.incl_prob), None])
            sink.addFeature(f, QgsFeatureSink.FastInsert)
        del sink  # flush and close the file before its style is stored in it

        for c in sorted(sample.stratum_sizes):
            feedback.pushInfo(f"{sample.label(c)} ({c}): {sample.stratum_sizes[c]} pixels, "
                              f"{sample.achieved.get(c, 0)} points")
        feedback.pushInfo(f"{sample.n} points drawn ({design}"
                          + (f", {allocation} allocation" if design == "stratified" else "")
                          + f"), seed {sample.seed}, in {sample.seconds:.2f} s.")
        if sample.expected_oa_se is not None:
            feedback.pushInfo(f"Expected SE of overall accuracy: {sample.expected_oa_se:.4f}")
        else:
            feedback.pushInfo("Expected SE of overall accuracy: computed for the stratified "
                              "design only (EXPECTED_SE_OA is NaN for this design).")

        choices = reference_classes(path, band, present=sample.stratum_sizes)
        uri = str(dest_id)
        if uri.split("|")[0].lower().endswith((".gpkg", ".sqlite")) and os.path.exists(
                uri.split("|")[0]):
            problem = save_reference_style(uri, choices)
            if problem:
                feedback.pushInfo(f"The class drop-down could not be stored in the file "
                                  f"({problem}); it is set when the layer is loaded.")
        if context.willLoadLayerOnCompletion(dest_id):
            details = context.layerToLoadOnCompletionDetails(dest_id)
            details.setPostProcessor(ReferenceWidgetPostProcessor.create(choices))
        return {self.OUTPUT: dest_id, self.N_POINTS: sample.n, self.SEED_USED: sample.seed,
                self.EXPECTED_SE_OA: sample.expected_oa_se
                if sample.expected_oa_se is not None else float("nan")}


class AssessAccuracyAlgorithm(_Base):
    POINTS = "POINTS"
    REFERENCE_FIELD = "REFERENCE_FIELD"
    RASTER = "RASTER"
    BAND = "BAND"
    MAP_FIELD = "MAP_FIELD"
    STRATUM_FIELD = "STRATUM_FIELD"
    OUTPUT_HTML = "OUTPUT_HTML"
    OUTPUT_CSV = "OUTPUT_CSV"
    OUTPUT_JSON = "OUTPUT_JSON"
    OVERALL_ACCURACY = "OVERALL_ACCURACY"
    OA_SE = "OA_SE"
    OA_CI_LOW = "OA_CI_LOW"
    OA_CI_HIGH = "OA_CI_HIGH"
    N_POINTS = "N_POINTS"

    def createInstance(self):
        return AssessAccuracyAlgorithm()

    def name(self):
        return "assessaccuracy"

    def displayName(self):
        return "Assess map accuracy"

    def tags(self):
        return ["validation", "accuracy", "error matrix", "confusion matrix", "overall accuracy",
                "user's accuracy", "producer's accuracy", "area", "olofsson", "kappa"]

    def shortHelpString(self):
        return (
            "Estimates the accuracy of a classified map and the area of each class from labelled "
            "validation points, with standard errors and 95% confidence intervals (stratified "
            "estimators of Olofsson et al. 2014, eqs. 1-11, and Stehman 2014).<p><b>Points</b>: "
            "usually the output of <i>Create validation points</i>, with the <b>reference "
            "field</b> filled in (points without a reference value are skipped). <b>Classified "
            "raster</b>: the map the points were drawn on; its pixel counts per class are the "
            "stratum sizes. The map class is read from the <b>map class field</b> (empty: from "
            "the raster) and the stratum from the <b>stratum field</b> (empty: the map class; "
            "this post-stratifies simple random and systematic samples).</p><p><b>Outputs</b>: "
            "an HTML report (error matrix heat map, overall/user's/producer's accuracy, area "
            "estimates with confidence intervals, mapped vs estimated area chart) and every "
            "number as CSV and JSON. Kappa, F1 and IoU are given for comparison with papers "
            "only: they are computed on the raw sample counts, not design-based.</p>")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.POINTS, "Labelled validation points", [QgsProcessing.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField(
            self.REFERENCE_FIELD, "Reference class field", REFERENCE_FIELD, self.POINTS,
            QgsProcessingParameterField.Numeric))
        self.addParameter(qgis_inputs.RasterFileParameter(
            self.RASTER, "Classified raster (the map the points were drawn on)"))
        advanced = [
            QgsProcessingParameterBand(self.BAND, "Class band", 1, self.RASTER, True),
            QgsProcessingParameterField(
                self.MAP_FIELD, "Map class field, compared with the raster (the class is always "
                "read from the raster; empty = no comparison)", "map_class",
                self.POINTS, QgsProcessingParameterField.Numeric, optional=True),
            QgsProcessingParameterField(
                self.STRATUM_FIELD, "Stratum field (empty = the map class)", "stratum",
                self.POINTS, QgsProcessingParameterField.Numeric, optional=True),
        ]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, "Accuracy report (HTML)", "HTML files (*.html)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_CSV, "All numbers (CSV)", "CSV files (*.csv)", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_JSON, "All numbers (JSON)", "JSON files (*.json)", optional=True))
        _add_overwrite(self, "report, CSV or JSON")
        for name, label in ((self.OVERALL_ACCURACY, "Overall accuracy"),
                            (self.OA_SE, "Standard error of overall accuracy"),
                            (self.OA_CI_LOW, "Overall accuracy, lower 95% bound"),
                            (self.OA_CI_HIGH, "Overall accuracy, upper 95% bound"),
                            (self.N_POINTS, "Labelled points used")):
            self.addOutput(QgsProcessingOutputNumber(name, label))

    def _field_values(self, source, parameters, name, context):
        field = (self.parameterAsString(parameters, name, context) or "").strip()
        if not field:
            return None, None
        if source.fields().indexFromName(field) < 0:
            return None, field
        return field, None

    def processAlgorithm(self, parameters, context, feedback):
        from ..validation.raster_access import ValidationError, count_classes
        from ..validation.report import write_report
        from ..validation.workflow import assess_points

        html_path = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        csv_path = self.parameterAsFileOutput(parameters, self.OUTPUT_CSV, context) \
            if not qgis_inputs.is_unset(parameters.get(self.OUTPUT_CSV)) else None
        json_path = self.parameterAsFileOutput(parameters, self.OUTPUT_JSON, context) \
            if not qgis_inputs.is_unset(parameters.get(self.OUTPUT_JSON)) else None
        _refuse_existing([html_path, csv_path, json_path],
                         self.parameterAsBoolean(parameters, OVERWRITE, context), "")
        source = self.parameterAsSource(parameters, self.POINTS, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.POINTS))
        path, raster_name, _ = _raster_source(self, parameters, self.RASTER, context,
                                              "Classified raster")
        band = self.parameterAsInt(parameters, self.BAND, context) or 1
        ref_field = self.parameterAsString(parameters, self.REFERENCE_FIELD, context)
        if source.fields().indexFromName(ref_field) < 0:
            raise QgsProcessingException(f"The points have no field {ref_field!r}.")
        map_field, missing_map = self._field_values(source, parameters, self.MAP_FIELD, context)
        stratum_field, missing_st = self._field_values(source, parameters, self.STRATUM_FIELD,
                                                       context)
        if missing_map:
            feedback.pushInfo(f"No field {missing_map!r}: map classes are read from the raster.")
        if missing_st:
            feedback.pushInfo(f"No field {missing_st!r}: strata are the map classes.")

        xs, ys, refs, maps, strata = [], [], [], [], []
        texts = set()
        for f in source.getFeatures():
            if feedback.isCanceled():
                raise QgsProcessingException("Cancelled.")
            g = f.geometry()
            if g is None or g.isNull() or g.isEmpty():
                continue
            pt = g.asPoint() if not g.isMultipart() else g.asMultiPoint()[0]
            xs.append(pt.x())
            ys.append(pt.y())
            raw = f[ref_field]
            refs.append(_number(raw))
            if refs[-1] is None and raw is not None and not (
                    isinstance(raw, QVariant) and raw.isNull()) and str(raw).strip():
                texts.add(str(raw))
            maps.append(_number(f[map_field]) if map_field else None)
            strata.append(_number(f[stratum_field]) if stratum_field else None)
        if not xs:
            raise QgsProcessingException("The points layer holds no point.")
        if texts:
            shown = ", ".join(repr(t) for t in sorted(texts)[:5])
            raise QgsProcessingException(
                f"The reference field {ref_field!r} holds text ({shown}"
                f"{', ...' if len(texts) > 5 else ''}); it must hold the map's class codes "
                "(1 residential ... 8 agricultural/undeveloped, as the labelling dock writes).")
        feedback.setProgress(10)
        try:
            counts = count_classes(path, band, progress=lambda p: feedback.setProgress(10 + 80 * p),
                                   is_cancelled=feedback.isCanceled)
            a = assess_points(xs, ys, refs, path, maps if map_field else None,
                              strata if stratum_field else None,
                              qgis_inputs.crs_wkt(source.sourceCrs()), band, counts=counts,
                              metadata={"map": path, "points": str(parameters.get(self.POINTS)),
                                        "reference_field": ref_field})
        except (ValidationError, ValueError) as exc:
            raise QgsProcessingException(str(exc)) from exc
        write_report(a, html_path, csv_path, json_path,
                     "Map accuracy assessment: " + (raster_name or os.path.basename(path)))
        feedback.setProgress(100)

        lo, hi = a.overall.ci
        feedback.pushInfo(f"Overall accuracy: {100 * a.overall.value:.1f}% "
                          f"± {100 * a.overall.half_width:.1f}% (95% CI {100 * lo:.1f}% to "
                          f"{100 * hi:.1f}%), {a.n} labelled points"
                          + (f", {a.n_unlabelled} unlabelled skipped" if a.n_unlabelled else ""))
        if lo < 0 or hi > 1:
            feedback.pushInfo("The interval (estimate ± 1.96 SE) reaches past 0-100 %: too few "
                              "labelled points for a normal approximation; label more.")
        for c in a.codes:
            u, p = a.users[c], a.producers[c]
            feedback.pushInfo(f"  {a.label(c)}: user's {_pct(u)}, producer's {_pct(p)}")
        for w in a.warnings:
            # pushInfo: qgis_process (QGIS 3.22) does not print pushWarning lines at all
            feedback.pushInfo(w if w.startswith("Warning") else f"Warning: {w}")
        results = {self.OUTPUT_HTML: html_path, self.OVERALL_ACCURACY: a.overall.value,
                   self.OA_SE: a.overall.se, self.OA_CI_LOW: lo, self.OA_CI_HIGH: hi,
                   self.N_POINTS: a.n}
        if csv_path:
            results[self.OUTPUT_CSV] = csv_path
        if json_path:
            results[self.OUTPUT_JSON] = json_path
        return results


def _number(v):
    if v is None:
        return None
    if isinstance(v, QVariant):
        if v.isNull():
            return None
        v = v.value()
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _pct(est):
    import math
    if not math.isfinite(est.value):
        return "undefined"
    return f"{100 * est.value:.1f}% ± {100 * est.half_width:.1f}%"


class PlanValidationSampleAlgorithm(_Base):
    """The sample size and allocation a design would draw, shown before drawing anything."""
    INPUT = "INPUT"
    BAND = "BAND"
    ALLOCATION = "ALLOCATION"
    SAMPLE_SIZE = "SAMPLE_SIZE"
    TARGET_SE = "TARGET_SE"
    EXPECTED_UA = "EXPECTED_UA"
    MIN_PER_STRATUM = "MIN_PER_STRATUM"
    N_POINTS = "N_POINTS"
    EQ13_N = "EQ13_N"
    EXPECTED_SE_OA = "EXPECTED_SE_OA"

    def createInstance(self):
        return PlanValidationSampleAlgorithm()

    def name(self):
        return "planvalidationsample"

    def displayName(self):
        return "Plan validation sample size"

    def tags(self):
        return ["validation", "sample size", "allocation", "standard error", "olofsson"]

    def shortHelpString(self):
        return ("Shows, without drawing any point, how many validation points a stratified random "
                "design needs and how they are split between the map classes: the sample size "
                "from a target standard error of overall accuracy and the expected user's "
                "accuracies (Olofsson et al. 2014, eq. 13), raised when per-class minimums move "
                "points away from the optimal split, and the expected standard errors of overall "
                "and user's accuracies. Then run <i>Create validation points</i> with the same "
                "settings.")

    def initAlgorithm(self, config=None):
        self.addParameter(qgis_inputs.RasterFileParameter(self.INPUT, "Classified raster"))
        band = QgsProcessingParameterBand(self.BAND, "Class band", 1, self.INPUT, True)
        band.setFlags(band.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(band)
        _add_sample_size_parameters(self, "Allocation to classes", 0)
        self.addOutput(QgsProcessingOutputNumber(self.N_POINTS, "Number of points"))
        self.addOutput(QgsProcessingOutputNumber(self.EQ13_N, "Sample size from eq. 13"))
        self.addOutput(QgsProcessingOutputNumber(self.EXPECTED_SE_OA,
                                                 "Expected SE of overall accuracy"))

    def processAlgorithm(self, parameters, context, feedback):
        from ..validation.raster_access import ValidationError, count_classes
        from ..validation.sample_size import parse_expected_ua, plan

        path, _, crs = _raster_source(self, parameters, self.INPUT, context,
                                      "Classified raster")
        band = self.parameterAsInt(parameters, self.BAND, context) or 1
        n = self.parameterAsInt(parameters, self.SAMPLE_SIZE, context)
        try:
            expected_ua = parse_expected_ua(
                self.parameterAsString(parameters, self.EXPECTED_UA, context))
            counts = count_classes(path, band, progress=lambda f: feedback.setProgress(100 * f),
                                   is_cancelled=feedback.isCanceled)
            sizes = {c: v for c, v in counts.totals.items() if v > 0}
            p = plan(sizes, n if n > 0 else None,
                     self.parameterAsDouble(parameters, self.TARGET_SE, context),
                     ALLOCATIONS[self.parameterAsEnum(parameters, self.ALLOCATION, context)][1],
                     self.parameterAsInt(parameters, self.MIN_PER_STRATUM, context), expected_ua)
        except (ValidationError, ValueError) as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.pushInfo(f"Sample size from eq. 13: {p['requested_n']}; to draw: {p['n']} "
                          f"points; expected SE of overall accuracy {p['expected_oa_se']:.4f}.")
        for c in sorted(p["allocation"]):
            feedback.pushInfo(f"{counts.info.label(c)} ({c}): weight {p['weights'][c]:.4f}, "
                              f"{p['allocation'][c]} points, expected SE of user's accuracy "
                              f"{p['expected_ua_se'][c]:.3f}")
        for note in p["notes"]:
            feedback.pushInfo(note)
        return {self.N_POINTS: p["n"], self.EQ13_N: p["requested_n"],
                self.EXPECTED_SE_OA: p["expected_oa_se"]}


def validation_algorithms():
    """The algorithms to add in the provider's ``loadAlgorithms``."""
    return [PlanValidationSampleAlgorithm(), CreateValidationPointsAlgorithm(),
            AssessAccuracyAlgorithm()]
