"""The model card: JSON stored in the ONNX file's ``metadata_props`` under the key ``model_card``.

The engine is driven by the card alone: which inputs exist (modality, bands, dtype, scaling,
ground sampling distance), how big tiles may be, what the output means and how to style it.

Card layout (``schema`` = ``urban-functions-model-card/1``)::

    name, version, title, summary (one line for the model picker), task ("segmentation"),
    classes:  [{code, name, label, color}]                 # code = output raster value
    inputs:   [{name, modality, label, bands, dtype, gsd_m, resampling, scale, offset,
                transform, mean, std, nodata_fill}]
    mask_input: name of the ONNX input [N, len(inputs), H, W] (1 = this modality has data here)
    min_inputs: how many modalities must be present at least (usually 1)
    output:   {name, gsd_m, size_multiple, context_cells, default_tile, default_overlap,
               default_mode (fast | accurate), test_time_views}   # see core.inference_modes
    training, metrics, licence, citation, authors           # provenance, free-form JSON
    real_data_validation: {status, summary, data, figures}  # see VALIDATION_STATUSES
    trained_on: "user labels" for models trained by urbanfunctions:train, with
    coverage: {bounds: [xmin, ymin, xmax, ymax], crs_wkt}   # the area it was trained on

Per input, the engine feeds ``((transform(raw * scale + offset)) - mean) / std`` as float32,
with ``transform`` one of ``none`` / ``log1p``.  ``gsd_m`` is the cell size the input is resampled
to; ``output.gsd_m / gsd_m`` must be such that a tile of ``size_multiple`` output cells is a whole
number of input cells.

Two tasks:

* ``segmentation``: the graph maps whole tiles of every input (plus the mask) to probabilities
  ``[N, C, H, W]`` on the output grid.
* ``patch_classification``: the graph maps patches ``[N, bands, P, P]`` fed to one ONNX input
  (``patch.input``; every card input names it in ``onnx_input``) to probabilities ``[N, C]``.
  The patch of output cell (r, c) covers input pixels ``stride*r + window_px[0] ..
  stride*r + window_px[1]`` (same for columns; pixel 0 = the cell's upper-left pixel), pixels
  beyond the raster come from ``padding`` (numpy ``symmetric``), and the probabilities of all
  present inputs are averaged (``fusion.method`` ``mean_probs``). ``rounding: float16`` feeds
  ``float16(float16(raw) * scale)`` as the original pipelines of some models do.
  With ``patch.shared_trunk`` (``stride_px``, ``pool_rows``, ``pool_cols``, ``views``,
  ``default_mode``) the graph instead takes a tile of windows plus two pooling matrices and
  returns ``[N, C, h, w]``: the trunk runs once per tile (:mod:`.shared_trunk`).
"""
import json
import math
from dataclasses import dataclass, field
from typing import Optional

from .errors import ModelError
from .inference_modes import MODES, VIEWS

SCHEMA = "urban-functions-model-card/1"
METADATA_KEY = "model_card"
MODALITIES = ("vhr", "ntl", "s2_spring", "s2_summer", "s2_autumn", "s2_winter", "temporal")


def modality_group(modality):
    """The input a user gives or leaves out: the Sentinel-2 seasons count as one ("s2")."""
    return "s2" if modality.startswith("s2_") else modality


MODALITY_LABELS = {
    "vhr": "VHR imagery",
    "ntl": "Night-time light",
    "s2_spring": "Sentinel-2 spring",
    "s2_summer": "Sentinel-2 summer",
    "s2_autumn": "Sentinel-2 autumn",
    "s2_winter": "Sentinel-2 winter",
    # a multi-band raster whose bands are time steps (monthly night light, hourly activity)
    "temporal": "Temporal signature",
}
RESAMPLING = ("nearest", "bilinear", "cubic", "average")
TRANSFORMS = ("none", "log1p")
ROUNDING = ("none", "float16")
TASKS = ("segmentation", "patch_classification")
PURPOSES = ("general", "demo")
# what a card says about real data: "validated" (on real data, with figures in ``summary`` and
# ``figures``) or "simulation_only"; a card that says nothing is "unknown". Only validated
# models are ever picked by default for a user's layers.
VALIDATION_STATUSES = ("validated", "simulation_only")
USER_LABELS = "user labels"


@dataclass(frozen=True)
class ClassInfo:
    code: int
    name: str
    label: str
    color: str


@dataclass(frozen=True)
class InputSpec:
    name: str
    modality: str
    bands: tuple
    dtype: str
    gsd_m: float
    resampling: str = "bilinear"
    scale: float = 1.0
    offset: float = 0.0
    transform: str = "none"
    mean: tuple = ()
    std: tuple = ()
    label: str = ""
    onnx_input: str = ""   # the graph input fed; defaults to ``name``
    rounding: str = "none"

    @property
    def band_count(self):
        return len(self.bands)


@dataclass(frozen=True)
class OutputSpec:
    name: str
    gsd_m: float
    size_multiple: int = 1
    context_cells: int = 8
    default_tile: int = 128
    default_overlap: int = 32
    # segmentation: the inference mode classify uses by default (core.inference_modes) and
    # the views of the accurate mode
    default_mode: str = "fast"
    test_time_views: tuple = VIEWS


@dataclass(frozen=True)
class PatchSpec:
    input: str          # ONNX input receiving [N, bands, patch_px, patch_px]
    patch_px: int
    stride_px: int
    gsd_m: float
    window_lo: int      # first patch pixel relative to the cell's upper-left pixel
    window_hi: int      # last patch pixel (inclusive)
    padding: str = "symmetric"
    # shared-trunk graphs (see :mod:`.shared_trunk`); trunk_stride 0: one window per graph call
    trunk_stride: int = 0
    pool_inputs: tuple = ()
    views: tuple = ("identity",)
    default_mode: str = "windows"


@dataclass(frozen=True)
class DerivedOutput:
    """A raster computed from the class probabilities, written beside the class map.

    ``class_sum``: float32 0-1, the summed probability of ``codes`` (e.g. a settlement extent
    from the built LCZ types). ``class_groups``: a paletted class map of ``groups`` whose
    probability is the sum over each group's ``from`` codes (e.g. LCZ shown as urban functions).
    ``graph_output``: another output of the network itself (segmentation models), blended over
    tiles like the probabilities (e.g. a built-up fraction, or the fusion gate weights that say
    how much each input drove a cell).
    """
    name: str
    kind: str
    label: str
    description: str = ""
    codes: tuple = ()
    groups: tuple = ()   # ((ClassInfo, (from codes...)), ...)
    output: str = ""     # graph_output: the ONNX output [N, bands, H, W] on the class grid
    bands: tuple = ()    # graph_output: band labels
    style: str = "fraction"   # graph_output: "fraction" (one 0-1 band) or "weights" (RGB)
    optional: bool = False    # written only when the run asks for optional outputs


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    title: str
    summary: str
    task: str
    classes: tuple
    inputs: tuple
    output: OutputSpec
    mask_input: Optional[str] = None
    min_inputs: int = 1
    patch: Optional[PatchSpec] = None
    derived_outputs: tuple = ()
    purpose: str = "general"   # "demo": only chosen by default for the sample city
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    # --- what the card says about real data ------------------------------------------------
    @property
    def validation_status(self):
        """"validated", "simulation_only" or "unknown" (see VALIDATION_STATUSES)."""
        return (self.raw.get("real_data_validation") or {}).get("status", "unknown")

    @property
    def validated_on_real_data(self):
        return self.validation_status == "validated"

    def validation_summary(self):
        """One line for the dialog and the Processing log: the real data and figures, or a
        warning."""
        info = self.raw.get("real_data_validation") or {}
        if self.validation_status == "validated":
            line = f"Validated on real data: {info.get('summary', '')}".strip()
            if not self.holds_up:
                line += (" Warning: on its own held-out blocks it did not beat its comparisons "
                         "(the RandomForest, the untrained model) or was compared with none, "
                         "so it is never picked by default; its report says by how much.")
            return line
        if self.validation_status == "simulation_only":
            return ("Warning: validated on simulated data only; " +
                    (info.get("summary") or "its maps of real places are not validated."))
        return "Warning: the model card states no validation on real data."

    @property
    def holds_up(self):
        """False when its own validation found it below a baseline (a user-trained model that
        scored under the RandomForest or the untrained base model on its held-out blocks)."""
        return bool((self.raw.get("real_data_validation") or {}).get("holds_up", True))

    @property
    def ignored_inputs(self):
        """Modalities the model accepts but classify leaves out: on the held-out blocks of its
        training the map was better without them (an input unlike anything it learnt from)."""
        return tuple(self.raw.get("ignored_inputs") or ())

    @property
    def user_trained(self):
        return self.raw.get("trained_on") == USER_LABELS

    @property
    def coverage(self):
        """(xmin, ymin, xmax, ymax, crs_wkt) of the area a user model was trained on, or None."""
        cov = self.raw.get("coverage") or {}
        if not cov.get("bounds") or not cov.get("crs_wkt"):
            return None
        return tuple(float(v) for v in cov["bounds"]) + (cov["crs_wkt"],)

    # --- derived helpers -------------------------------------------------------------------
    @property
    def modalities(self):
        return tuple(i.modality for i in self.inputs)

    def input_for(self, modality) -> InputSpec:
        for spec in self.inputs:
            if spec.modality == modality:
                return spec
        raise ModelError(f"Model '{self.name}' has no '{modality}' input; it accepts: "
                         f"{', '.join(self.modalities)}.")

    def cells_per_input(self, spec: InputSpec) -> float:
        """Input pixels per output cell along one axis (5.0 for 2 m VHR under 10 m output)."""
        return self.output.gsd_m / spec.gsd_m

    @property
    def onnx_inputs(self):
        """The graph's input names the engine feeds."""
        if self.patch is not None:
            return {self.patch.input} | set(self.patch.pool_inputs)
        return {i.name for i in self.inputs} | ({self.mask_input} if self.mask_input else set())

    def tile_multiple(self) -> int:
        """Smallest tile size (in output cells) that maps to whole pixels of every input."""
        multiple = max(1, self.output.size_multiple)
        for spec in self.inputs:
            ratio = self.cells_per_input(spec)
            # ratio = p/q; a tile of n cells is n*p/q input pixels: n must be a multiple of q
            frac = _as_fraction(ratio)
            multiple = _lcm(multiple, frac[1])
        return multiple

    @property
    def graph_outputs(self):
        return tuple(d for d in self.derived_outputs if d.kind == "graph_output")

    def to_json(self) -> str:
        return json.dumps(self.raw, indent=1, sort_keys=False)


def _lcm(a, b):
    return a * b // math.gcd(a, b)


def _as_fraction(x, max_den=64):
    from fractions import Fraction
    f = Fraction(x).limit_denominator(max_den)
    if abs(float(f) - x) > 1e-9 * max(1.0, abs(x)):
        raise ModelError(f"Ground sampling distances give a non-rational ratio {x}.")
    return f.numerator, f.denominator


def _req(d, key, where):
    if key not in d:
        raise ModelError(f"Model card: '{key}' is missing in {where}.")
    return d[key]


def parse_card(data) -> ModelCard:
    """Validate a card (dict or JSON text) and return a :class:`ModelCard`."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ModelError(f"Model card is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError("Model card must be a JSON object.")
    if data.get("schema") != SCHEMA:
        raise ModelError(f"Model card schema is {data.get('schema')!r}; this plugin reads "
                         f"{SCHEMA!r}. Update the plugin or re-export the model.")
    classes = [_parse_class(c, "a class") for c in _req(data, "classes", "the card")]
    codes = [c.code for c in classes]
    if not classes or len(set(codes)) != len(codes) or min(codes) < 1 or max(codes) > 255:
        raise ModelError("Model card: class codes must be unique integers in 1..255 "
                         "(0 is reserved for nodata).")
    inputs = []
    for raw in _req(data, "inputs", "the card"):
        where = f"input {raw.get('name', '?')}"
        modality = _req(raw, "modality", where)
        if modality not in MODALITIES:
            raise ModelError(f"Model card: unknown modality {modality!r}; known: {MODALITIES}.")
        bands = tuple(_req(raw, "bands", where))
        mean = tuple(float(v) for v in raw.get("mean", [0.0] * len(bands)))
        std = tuple(float(v) for v in raw.get("std", [1.0] * len(bands)))
        if len(mean) != len(bands) or len(std) != len(bands) or min(std) <= 0:
            raise ModelError(f"Model card: {where} needs one mean and one positive std per band.")
        spec = InputSpec(
            name=str(_req(raw, "name", where)), modality=modality, bands=bands,
            dtype=str(raw.get("dtype", "float32")), gsd_m=float(_req(raw, "gsd_m", where)),
            resampling=str(raw.get("resampling", "bilinear")),
            scale=float(raw.get("scale", 1.0)), offset=float(raw.get("offset", 0.0)),
            transform=str(raw.get("transform", "none")), mean=mean, std=std,
            label=str(raw.get("label", MODALITY_LABELS[modality])),
            onnx_input=str(raw.get("onnx_input") or raw["name"]),
            rounding=str(raw.get("rounding", "none")))
        if spec.rounding not in ROUNDING:
            raise ModelError(f"Model card: {where} has rounding {spec.rounding!r}; allowed "
                             f"{ROUNDING}.")
        if spec.resampling not in RESAMPLING or spec.transform not in TRANSFORMS:
            raise ModelError(f"Model card: {where} has resampling {spec.resampling!r} / "
                             f"transform {spec.transform!r}; allowed {RESAMPLING} / {TRANSFORMS}.")
        inputs.append(spec)
    if not inputs:
        raise ModelError("Model card declares no inputs.")
    if len({i.modality for i in inputs}) != len(inputs):
        raise ModelError("Model card: each modality may appear once.")
    out = _req(data, "output", "the card")
    output = OutputSpec(name=str(_req(out, "name", "output")), gsd_m=float(_req(out, "gsd_m", "output")),
                        size_multiple=int(out.get("size_multiple", 1)),
                        context_cells=int(out.get("context_cells", 8)),
                        default_tile=int(out.get("default_tile", 128)),
                        default_overlap=int(out.get("default_overlap", 32)),
                        default_mode=str(out.get("default_mode", "fast")),
                        test_time_views=tuple(out.get("test_time_views") or VIEWS))
    if output.default_mode not in ("fast", "accurate") or \
            set(output.test_time_views) - set(VIEWS) or "identity" not in output.test_time_views:
        raise ModelError(f"Model card: output default_mode must be fast or accurate, and "
                         f"test_time_views among {VIEWS}, identity included.")
    task = str(data.get("task", "segmentation"))
    if task not in TASKS:
        raise ModelError(f"Model card task {task!r} is not supported by this plugin version "
                         f"(supported: {', '.join(TASKS)}).")
    patch = _parse_patch(data, inputs, output) if task == "patch_classification" else None
    card = ModelCard(name=str(_req(data, "name", "the card")), version=str(data.get("version", "0")),
                     title=str(data.get("title", data["name"])), summary=str(data.get("summary", "")),
                     task=task, classes=tuple(classes), inputs=tuple(inputs), output=output,
                     mask_input=data.get("mask_input"), min_inputs=int(data.get("min_inputs", 1)),
                     patch=patch, derived_outputs=_parse_derived(data, codes),
                     purpose=_parse_purpose(data), raw=data)
    card.tile_multiple()  # validates the gsd ratios
    status = (data.get("real_data_validation") or {}).get("status")
    if status is not None and status not in VALIDATION_STATUSES:
        raise ModelError(f"Model card: real_data_validation status {status!r} is not one of "
                         f"{VALIDATION_STATUSES}.")
    return card


def _parse_purpose(data):
    purpose = str(data.get("purpose", "general"))
    if purpose not in PURPOSES:
        raise ModelError(f"Model card: purpose {purpose!r} is not one of {PURPOSES}.")
    return purpose


def _parse_class(c, where):
    color = str(_req(c, "color", where))
    if not (len(color) == 7 and color.startswith("#")):
        raise ModelError(f"Model card: class colour {color!r} is not '#rrggbb'.")
    return ClassInfo(int(_req(c, "code", where)), str(_req(c, "name", where)),
                     str(c.get("label", c["name"])), color)


def _parse_derived(data, codes):
    out = []
    for raw in data.get("derived_outputs") or ():
        name = str(_req(raw, "name", "a derived output"))
        if not name.replace("_", "").isalnum():
            raise ModelError(f"Model card: derived output name {name!r} must be letters, digits, _.")
        kind = str(_req(raw, "kind", f"derived output {name}"))
        label, desc = str(raw.get("label", name)), str(raw.get("description", ""))
        if kind == "class_sum":
            picked = tuple(int(c) for c in _req(raw, "codes", f"derived output {name}"))
            if not picked or not set(picked) <= set(codes):
                raise ModelError(f"Model card: derived output {name} sums unknown class codes.")
            out.append(DerivedOutput(name, kind, label, desc, codes=picked))
        elif kind == "class_groups":
            groups = []
            for g in _req(raw, "groups", f"derived output {name}"):
                src = tuple(int(c) for c in _req(g, "from", f"a group of {name}"))
                if not set(src) <= set(codes):
                    raise ModelError(f"Model card: a group of {name} uses unknown class codes.")
                groups.append((_parse_class(g, f"a group of {name}"), src))
            if not groups:
                raise ModelError(f"Model card: derived output {name} has no groups.")
            out.append(DerivedOutput(name, kind, label, desc, groups=tuple(groups)))
        elif kind == "graph_output":
            if data.get("task", "segmentation") != "segmentation":
                raise ModelError(f"Model card: graph output {name} needs a segmentation model.")
            bands = tuple(str(b) for b in _req(raw, "bands", f"derived output {name}"))
            style = str(raw.get("style", "fraction"))
            if not bands or style not in ("fraction", "weights"):
                raise ModelError(f"Model card: graph output {name} needs band labels and a style "
                                 "'fraction' or 'weights'.")
            out.append(DerivedOutput(name, kind, label, desc, output=str(raw.get("output", name)),
                                     bands=bands, style=style,
                                     optional=bool(raw.get("optional", False))))
        else:
            raise ModelError(f"Model card: derived output kind {kind!r} is not supported "
                             "(class_sum, class_groups, graph_output).")
    return tuple(out)


def _parse_patch(data, inputs, output):
    raw = _req(data, "patch", "a patch_classification card")
    size = int(_req(raw, "patch_px", "patch"))
    stride = int(_req(raw, "stride_px", "patch"))
    gsd = float(_req(raw, "gsd_m", "patch"))
    lo, hi = (int(v) for v in raw.get("window_px", (-(size // 2), size - size // 2 - 1)))
    shared = raw.get("shared_trunk") or {}
    extra = {}
    if shared:
        trunk = int(_req(shared, "stride_px", "patch.shared_trunk"))
        views = tuple(shared.get("views") or ("identity",))
        extra = dict(trunk_stride=trunk, views=views,
                     pool_inputs=(str(shared.get("pool_rows", "pool_rows")),
                                  str(shared.get("pool_cols", "pool_cols"))),
                     default_mode=str(shared.get("default_mode", "accurate")))
        if trunk < 1 or size % trunk:
            raise ModelError(f"Model card: the patch ({size} px) must be a whole number of "
                             f"trunk strides ({trunk} px).")
        if extra["default_mode"] not in MODES or set(views) - set(VIEWS):
            raise ModelError(f"Model card: shared_trunk default_mode must be one of {MODES} "
                             f"and views among {VIEWS}.")
    spec = PatchSpec(input=str(raw.get("input") or inputs[0].onnx_input), patch_px=size,
                     stride_px=stride, gsd_m=gsd, window_lo=lo, window_hi=hi,
                     padding=str(raw.get("padding", "symmetric")), **extra)
    if hi - lo + 1 != size or stride < 1 or size < 1:
        raise ModelError(f"Model card: patch window {lo}..{hi} does not hold {size} pixels.")
    if lo > 0 or hi < stride - 1:
        raise ModelError(f"Model card: the patch window {lo}..{hi} must cover the cell's own "
                         f"{stride} pixels (0..{stride - 1}).")
    if spec.padding != "symmetric":
        raise ModelError(f"Model card: patch padding {spec.padding!r} is not supported "
                         "(supported: symmetric).")
    if abs(output.gsd_m - stride * gsd) > 1e-9:
        raise ModelError(f"Model card: output cells ({output.gsd_m} m) must be stride x pixel "
                         f"size ({stride} x {gsd} m).")
    for i in inputs:
        if i.onnx_input != spec.input or abs(i.gsd_m - gsd) > 1e-9:
            raise ModelError(f"Model card: input {i.name} must feed {spec.input!r} at {gsd} m.")
    method = (data.get("fusion") or {}).get("method", "mean_probs")
    if method != "mean_probs":
        raise ModelError(f"Model card: fusion {method!r} is not supported (mean_probs).")
    return spec


def card_from_metadata(metadata: dict, source="model") -> ModelCard:
    """Card from an ONNX ``metadata_props`` mapping (e.g. onnxruntime's custom_metadata_map)."""
    if METADATA_KEY not in metadata:
        raise ModelError(f"{source} has no '{METADATA_KEY}' entry in its ONNX metadata; it was not "
                         f"exported for Urban Functions.")
    return parse_card(metadata[METADATA_KEY])


def read_card(onnx_path) -> ModelCard:
    """Read the card of an ONNX file. With onnxruntime the whole model is loaded once (so a
    broken graph is reported here, before a run); without it the card is read from the
    protobuf alone, so the model picker can still list models before onnxruntime is installed."""
    from .runtime import onnxruntime_or_none
    ort = onnxruntime_or_none()
    if ort is None:
        from .onnx_metadata import NotOnnx, read_metadata_props
        try:
            props = read_metadata_props(onnx_path)
        except NotOnnx as exc:
            raise ModelError(f"Cannot open model {onnx_path}: {exc}") from exc
        return card_from_metadata(props, str(onnx_path))
    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"Cannot open model {onnx_path}: {exc}") from exc
    return card_from_metadata(sess.get_modelmeta().custom_metadata_map, str(onnx_path))
