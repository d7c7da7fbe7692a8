"""Where the user's own models live inside QGIS, and the model look-ups that include them.

The plugin's user models folder is ``<QGIS profile>/urban_functions/models`` (next to
``urban_functions/sample_city``): models imported in QGIS (e.g. the So2Sat LCZ network) are
installed there.  The engine's :mod:`plugin.core.models` knows the bundled folder and
``$URBAN_FUNCTIONS_MODELS``; the dialog and the Processing algorithms pass this folder as
``extra_dirs`` through :func:`model_dirs_for_qgis`, so every front end sees the same models.
"""
import os

from qgis.core import QgsApplication


def user_models_dir():
    """``<QGIS profile>/urban_functions/models`` (it may not exist yet)."""
    return os.path.join(QgsApplication.qgisSettingsDirPath(), "urban_functions", "models")


def model_dirs_for_qgis():
    """The ``extra_dirs`` for :mod:`plugin.core.models` in QGIS: the user models folder, unless
    it is already one of the engine's folders (``$URBAN_FUNCTIONS_MODELS`` may point there)."""
    from ..core.models import model_dirs
    folder = user_models_dir()
    known = {os.path.realpath(d) for d in model_dirs()}
    return () if os.path.realpath(folder) in known else (folder,)


def list_models(errors=None):
    from ..core import models
    return models.list_models(extra_dirs=model_dirs_for_qgis(), errors=errors)


def find_model(name_or_path):
    from ..core import models
    return models.find_model(name_or_path, extra_dirs=model_dirs_for_qgis())


def default_model_for(modalities, inputs=None):
    from ..core import models
    return models.default_model_for(modalities, extra_dirs=model_dirs_for_qgis(), inputs=inputs)


def how_to_use(model_path, name, holds_up):
    """How classify reaches a trained model: by default, by name, or (saved outside the folders
    classify lists) by its path only. One sentence for the train dialog and Processing log."""
    from ..core.models import model_dirs
    folder = os.path.realpath(os.path.dirname(model_path))
    if folder not in {os.path.realpath(d) for d in model_dirs(model_dirs_for_qgis())}:
        return ("It is outside the model folders classify lists, so classify uses it only when "
                f"given its path: MODEL={model_path} (leave the output model empty to save it "
                "in your user models folder, where classify lists it" +
                (" and picks it by default)." if holds_up else
                 "; it does not hold up, so even there it is used only when named)."))
    if holds_up:
        return f"Classify uses it by default for these inputs over this area (MODEL={name})."
    return ("It does not hold up: classify will not pick it by default; give "
            f"MODEL={name} to use it anyway.")
