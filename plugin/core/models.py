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


def list_models(extra_dirs=(), errors=None):
    """All readable models, sorted by name; unreadable files are reported into ``errors``."""
    entries = []
    for folder in model_dirs(extra_dirs):
        for path in sorted(glob.glob(os.path.join(folder, "*.onnx"))):
            try:
                entries.append(ModelEntry(path, cached_card(path), folder == BUNDLED_DIR))
            except ModelError as exc:
                if errors is not None:
                    errors.append(str(exc))
    return sorted(entries, key=lambda e: (not e.bundled, e.card.name))


def find_model(name_or_path, extra_dirs=()):
    """A model by card name or by file path."""
    if name_or_path and os.path.isfile(name_or_path):
        return ModelEntry(os.path.abspath(name_or_path), cached_card(name_or_path), False)
    entries = list_models(extra_dirs)
    for e in entries:
        if name_or_path in (e.card.name, os.path.splitext(os.path.basename(e.path))[0]):
            return e
    raise ModelError(f"No model named {name_or_path!r}; installed: "
                     f"{', '.join(e.card.name for e in entries) or 'none'}.")


def default_model_for(modalities, extra_dirs=()):
    """The model that accepts all ``modalities``: demo models (card ``purpose: demo``, e.g. the
    sample-city model) only when nothing else does, then the fewest unused inputs."""
    wanted = set(modalities)
    entries = [e for e in list_models(extra_dirs) if wanted <= set(e.card.modalities)]
    if not entries:
        raise ModelError(f"No installed model accepts {', '.join(sorted(wanted))} together.")
    return min(entries, key=lambda e: (e.card.purpose == "demo",
                                       len(set(e.card.modalities) - wanted), not e.bundled,
                                       e.card.name))
