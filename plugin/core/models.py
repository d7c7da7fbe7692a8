"""Which models are installed: the bundled ones (``models/``) and the user's own folder."""
import glob
import os
from dataclasses import dataclass

from .environment import PLUGIN_ROOT
from .errors import ModelError
from .model_card import ModelCard, read_card

BUNDLED_DIR = os.path.join(PLUGIN_ROOT, "models")
USER_DIR_ENV = "URBAN_FUNCTIONS_MODELS"

_cache = {}  # path -> ((mtime, size), card): the picker asks often, cards rarely change


@dataclass(frozen=True)
class ModelEntry:
    path: str
    card: ModelCard
    bundled: bool


def model_dirs(extra_dirs=()):
    dirs = [BUNDLED_DIR]
    if os.environ.get(USER_DIR_ENV):
        dirs.append(os.environ[USER_DIR_ENV])
    dirs.extend(extra_dirs)
    return dirs


def cached_card(path):
    st = os.stat(path)
    key = (st.st_mtime_ns, st.st_size)
    hit = _cache.get(path)
    if hit and hit[0] == key:
        return hit[1]
    card = read_card(path)
    _cache[path] = (key, card)
    return card


def scan_models(extra_dirs=()):
    """(readable models sorted by name, [(path, reason)] of the .onnx files that cannot be
    loaded): one pass over the model folders."""
    entries, broken = [], []
    for folder in model_dirs(extra_dirs):
        for path in sorted(glob.glob(os.path.join(folder, "*.onnx"))):
            try:
                entries.append(ModelEntry(path, cached_card(path), folder == BUNDLED_DIR))
            except ModelError as exc:
                broken.append((path, str(exc).replace(f"Cannot open model {path}: ", "")))
            except OSError as exc:
                broken.append((path, exc.strerror or str(exc)))
    return sorted(entries, key=lambda e: (not e.bundled, e.card.name)), broken


def list_models(extra_dirs=(), errors=None):
    """All readable models, sorted by name; unreadable files are reported into ``errors``."""
    entries, broken = scan_models(extra_dirs)
    if errors is not None:
        errors.extend(f"Cannot open model {path}: {reason}" for path, reason in broken)
    return entries


def find_model(name_or_path, extra_dirs=()):
    """A model by card name or by file path. A file of that name that cannot be loaded is
    named with its reason, never reported as missing."""
    if name_or_path and os.path.isfile(name_or_path):
        return ModelEntry(os.path.abspath(name_or_path), cached_card(name_or_path), False)
    entries, broken = scan_models(extra_dirs)
    for e in entries:
        if name_or_path in (e.card.name, os.path.splitext(os.path.basename(e.path))[0]):
            return e
    for path, reason in broken:
        if name_or_path == os.path.splitext(os.path.basename(path))[0]:
            raise ModelError(f"The model {name_or_path!r} ({path}) cannot be loaded: {reason}")
    listing = ", ".join(e.card.name for e in entries) or "none"
    unreadable = "".join(f" Cannot be loaded: {os.path.basename(p)} ({r})." for p, r in broken)
    raise ModelError(f"No model named {name_or_path!r}; installed: {listing}.{unreadable}")


SAMPLE_CITY_TAG = "SAMPLE_CITY_SEED"   # GDAL metadata our sample-city generator writes


def is_sample_city(paths):
    """True when every raster carries the sample-city generator's tag."""
    from osgeo import gdal
    if not paths:
        return False
    for path in paths:
        try:
            ds = gdal.Open(path)
        except RuntimeError:
            return False
        if ds is None or SAMPLE_CITY_TAG not in (ds.GetMetadata() or {}):
            return False
    return True


def inputs_footprint(inputs):
    """(xmin, ymin, xmax, ymax, crs_wkt): the common area of ``inputs`` (modality -> path) in
    the CRS the engine would map them in, or None when it cannot be worked out."""
    from .errors import UrbanFunctionsError
    from .grid import metric_crs_for, raster_bounds, transform_bounds
    from .rasters import inspect_raster
    try:
        infos = [(m, inspect_raster(p, m)) for m, p in inputs.items()]
        crs = metric_crs_for(infos)
        boxes = [transform_bounds(raster_bounds(i), i.crs_wkt, crs) for _, i in infos]
    except (UrbanFunctionsError, RuntimeError, ValueError):
        return None
    return (max(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes),
            min(b[3] for b in boxes), crs)


def covers(card, footprint):
    """Whether a user-trained model's training area overlaps ``footprint``."""
    from .grid import transform_bounds
    cov = card.coverage
    if cov is None or footprint is None:
        return False
    try:
        b = transform_bounds(cov[:4], cov[4], footprint[4])
    except Exception:  # an unreadable CRS in a card: not "covering"
        return False
    return b[0] < footprint[2] and footprint[0] < b[2] and b[1] < footprint[3] and \
        footprint[1] < b[3]


NO_REAL_MODEL_HELP = (
    "Get a model for real layers in one of two ways: train one on your own labels, for example "
    "OpenStreetMap land use (Processing: Urban Functions > Train a model on your labels, or "
    "Plugins > Urban Functions > Train on my area), or, for Sentinel-2, import the So2Sat LCZ "
    "weights (Import So2Sat LCZ weights).")


def no_default_words(wanted, entries):
    """Why none of ``entries`` is classify's default for ``wanted``: user models that scored
    below their baseline are named as such (their user has just trained them), the others are
    simulation-only or say nothing of real data."""
    below = sorted({e.card.name for e in entries if e.card.user_trained and not e.card.holds_up})
    others = sorted({e.card.name for e in entries} - set(below))
    words = f"No installed model for {', '.join(sorted(wanted))} is a default for real layers. "
    if below:
        words += (f"{', '.join(below)}: trained on your labels, but below its baseline on its "
                  "held-out blocks (its report says by how much), so never picked by default; "
                  "give MODEL=<name> to use it anyway, or train again for longer or with more "
                  "labels. ")
    if others:
        words += (f"{', '.join(others)}: simulation only or not validated on real data; give "
                  "one by name to use it anyway. ")
    return words + NO_REAL_MODEL_HELP


def default_model_for(modalities, extra_dirs=(), inputs=None):
    """The model classify uses when none is named, for ``modalities`` (and, when given, the
    ``inputs`` paths, modality -> path).

    Real data first. In this order: a model trained on the user's labels (card ``trained_on``)
    whose training area overlaps the inputs; real-data models (cards that state a validation on
    real data: the VHR scene model, So2Sat once imported); user models of other areas. Demo and
    simulation-only models are never picked for a user's layers, only for the sample city
    (every input tagged by our generator), where the demo model comes right after a user model
    of the sample city. Within a rank, the fewest unused inputs win. When nothing qualifies, a
    ModelError says how to get a model.
    """
    wanted = set(modalities)
    if inputs:
        # an unreadable input is the problem to report, not the absence of a model for it
        from .rasters import inspect_raster
        for modality, path in inputs.items():
            inspect_raster(path, modality)
    entries = [e for e in list_models(extra_dirs) if wanted <= set(e.card.modalities)
               and wanted - set(e.card.ignored_inputs)]  # it would use none of them
    if not entries:
        raise ModelError(f"No installed model accepts {', '.join(sorted(wanted))} together. "
                         + NO_REAL_MODEL_HELP)
    inputs = dict(inputs or {})
    sample_city = bool(inputs) and is_sample_city(list(inputs.values()))
    footprint = inputs_footprint(inputs) if inputs else None

    def rank(e):
        card = e.card
        real = card.validated_on_real_data and card.purpose != "demo" and card.holds_up
        if card.user_trained and not card.holds_up:
            return None                      # it scored below its baseline: never the default
        if real and card.user_trained:
            return 0 if covers(card, footprint) else 3
        if sample_city and card.purpose == "demo":
            return 1
        if real:
            return 2
        return 4 if sample_city else None   # simulation only: the sample city alone

    ranked = [(rank(e), e) for e in entries]
    ranked = [(r, e) for r, e in ranked if r is not None]
    if not ranked:
        raise ModelError(no_default_words(wanted, entries))
    return min(ranked, key=lambda re: (re[0], len(set(re[1].card.modalities) - wanted),
                                       not re[1].bundled, re[1].card.name))[1]
