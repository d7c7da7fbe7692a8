"""The So2Sat LCZ model in QGIS: the user models folder, ``urbanfunctions:importso2sat`` (toolbox,
qgis_process), the dialog's import button, and the LCZ map of the real Ketzin Sentinel-2 stack
through ``urbanfunctions:classify`` with its derived outputs (settlement extent, function map).

The weights and the Sentinel-2 stack are third-party data read from ``<repo>/../shared/data``;
tests that need them are skipped when it is absent. The weights are never copied into the repo:
every import goes to a temporary folder or to the session's temporary QGIS profile.
"""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from osgeo import gdal

from conftest import ROOT

pytestmark = pytest.mark.qgis

SHARED = os.path.join(ROOT, "..", "shared", "data")
S2_STACK = os.path.join(SHARED, "s2", "ketzin_20170216_s2l1c_10band.tif")
SO2SAT_H5 = os.path.join(SHARED, "so2sat",
                         "S2_RESNET20_BS16_LR2e-4_IN32-32-10_PRO-52-0R12_2019-06-27.h5")
_skip_without_shared = pytest.mark.skipif(
    not (os.path.isfile(S2_STACK) and os.path.isfile(SO2SAT_H5)),
    reason="../shared/data (So2Sat LCZ42 weights, Ketzin Sentinel-2 L1C stack) is not available "
           "next to this checkout")


def needs_shared(test):
    return pytest.mark.shared(_skip_without_shared(test))
IMPORT = "urbanfunctions:importso2sat"
CLASSIFY = "urbanfunctions:classify"
LCZ_NAME = "so2sat-lcz42-s2-resnet20"
BUILT = list(range(1, 11))           # LCZ 1-10
A, B, D, G = 11, 12, 14, 17          # dense trees, scattered trees, low plants, water


def _h5py_available():
    try:
        import h5py  # noqa: F401
        return True
    except ImportError:
        return False


needs_h5py = pytest.mark.skipif(not _h5py_available(), reason="h5py is not installed")


@pytest.fixture
def user_models(qgis_app):
    """The session profile's user models folder, emptied after the test (other tests pick
    default models and must not see what a test installed there)."""
    from plugin.qgis_common.user_models import user_models_dir
    folder = user_models_dir()
    existed = os.path.isdir(folder)
    before = set(os.listdir(folder)) if existed else set()
    yield folder
    if os.path.isdir(folder):
        for name in set(os.listdir(folder)) - before:
            os.remove(os.path.join(folder, name))
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read(path, band=None):
    ds = gdal.Open(str(path))
    try:
        return ds.ReadAsArray() if band is None else ds.GetRasterBand(band).ReadAsArray()
    finally:
        ds = None


# --- the user models folder -----------------------------------------------------------------
def test_user_models_folder_is_in_the_profile_and_searched(qgis_app, user_models, tmp_path,
                                                           monkeypatch):
    from qgis.core import QgsApplication

    from onnx_factory import tiny_card, write_tiny_model
    from plugin.core.models import USER_DIR_ENV
    from plugin.qgis_common import user_models as um
    monkeypatch.delenv(USER_DIR_ENV, raising=False)
    assert user_models == os.path.join(QgsApplication.qgisSettingsDirPath(), "urban_functions",
                                       "models")
    assert um.model_dirs_for_qgis() == (user_models,)
    os.makedirs(user_models, exist_ok=True)
    path = write_tiny_model(os.path.join(user_models, "user_tiny.onnx"),
                            tiny_card("user-tiny-model"))
    names = [e.card.name for e in um.list_models()]
    assert "user-tiny-model" in names
    entry = um.find_model("user-tiny-model")
    assert entry.path == path and not entry.bundled
    # $URBAN_FUNCTIONS_MODELS pointing at the same folder does not list the models twice
    monkeypatch.setenv(USER_DIR_ENV, user_models)
    assert um.model_dirs_for_qgis() == ()
    assert [e.card.name for e in um.list_models()].count("user-tiny-model") == 1


def test_classify_finds_a_model_of_the_user_folder_by_name(provider, user_models, sample_city,
                                                          tmp_path):
    import processing

    from onnx_factory import tiny_card, write_tiny_model
    os.makedirs(user_models, exist_ok=True)
    write_tiny_model(os.path.join(user_models, "user_tiny.onnx"), tiny_card("user-tiny-model"))
    out = tmp_path / "by_name.tif"
    inputs = {"S2_SUMMER": sample_city.inputs["s2_summer"]}
    res = processing.run(CLASSIFY, dict(inputs, MODEL="user-tiny-model", OUTPUT=str(out)))
    assert os.path.isfile(res["OUTPUT"])
    manifest = _json(res["MANIFEST"])
    assert manifest["model"]["name"] == "user-tiny-model"
    assert json.loads(res["EXTRA_OUTPUTS"]) == {}


# --- the import algorithm -------------------------------------------------------------------
def test_import_algorithm_is_listed_with_its_parameters(provider):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    from plugin.qgis_common.user_models import user_models_dir
    from plugin.lcz.so2sat_h5 import DOWNLOAD_URL
    alg = QgsApplication.processingRegistry().algorithmById(IMPORT)
    assert alg is not None and alg.displayName() == "Import So2Sat LCZ weights"
    assert alg.group() == "Models"
    assert [p.name() for p in alg.parameterDefinitions()] == ["H5", "MODELS_DIR", "OVERWRITE"]
    folder = alg.parameterDefinition("MODELS_DIR")
    assert folder.defaultValue() == user_models_dir()
    assert folder.flags() & QgsProcessingParameterDefinition.FlagOptional
    assert {o.name() for o in alg.outputDefinitions()} >= {"MODEL", "NAME"}
    assert DOWNLOAD_URL in alg.shortHelpString()
    classify = QgsApplication.processingRegistry().algorithmById(CLASSIFY)
    probs = classify.parameterDefinition("PROBABILITIES")
    assert probs is not None and probs.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert "EXTRA_OUTPUTS" in {o.name() for o in classify.outputDefinitions()}


@needs_h5py
def test_import_algorithm_turns_a_wrong_file_into_a_clear_error(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException
    bad = tmp_path / "not_so2sat.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 1000)
    with pytest.raises(QgsProcessingException, match="sha256"):
        processing.run(IMPORT, {"H5": str(bad), "MODELS_DIR": str(tmp_path / "models")})
    assert not (tmp_path / "models").exists()
    with pytest.raises(QgsProcessingException):
        processing.run(IMPORT, {"H5": str(tmp_path / "missing.h5"),
                                "MODELS_DIR": str(tmp_path / "models")})


@pytest.fixture(scope="module")
def imported(provider, tmp_path_factory):
    """The So2Sat model imported by the toolbox algorithm into a temporary models folder."""
    if not (os.path.isfile(S2_STACK) and os.path.isfile(SO2SAT_H5)):
        pytest.skip("../shared/data is not available")
    if not _h5py_available():
        pytest.skip("h5py is not installed")
    import processing
    folder = tmp_path_factory.mktemp("lcz_models")
    res = processing.run(IMPORT, {"H5": SO2SAT_H5, "MODELS_DIR": str(folder)})
    return dict(res, folder=str(folder))


@needs_shared
def test_import_algorithm_installs_the_model_and_its_licence(imported, provider):
    import processing

    from plugin.core.model_card import read_card
    from plugin.lcz.card import FILE_STEM, licence_filename
    assert imported["NAME"] == LCZ_NAME
    assert imported["MODEL"] == os.path.join(imported["folder"], FILE_STEM + ".onnx")
    assert sorted(os.listdir(imported["folder"])) == sorted([FILE_STEM + ".onnx",
                                                            licence_filename()])
    with open(imported["LICENCE"], encoding="utf-8") as f:
        assert "MIT License" in f.read()
    card = read_card(imported["MODEL"])
    assert card.task == "patch_classification" and len(card.classes) == 17
    assert [d.name for d in card.derived_outputs] == ["settlement_extent", "urban_functions"]
    # importing the same file again changes nothing; a differing model needs OVERWRITE
    mtime = os.path.getmtime(imported["MODEL"])
    again = processing.run(IMPORT, {"H5": SO2SAT_H5, "MODELS_DIR": imported["folder"]})
    assert again["MODEL"] == imported["MODEL"] and os.path.getmtime(imported["MODEL"]) == mtime


@needs_shared
def test_import_refuses_to_replace_a_different_model_without_overwrite(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException
    folder = tmp_path / "models"
    res = processing.run(IMPORT, {"H5": SO2SAT_H5, "MODELS_DIR": str(folder)})
    with open(res["MODEL"], "ab") as f:
        f.write(b"\0")
    size = os.path.getsize(res["MODEL"])
    with pytest.raises(QgsProcessingException, match="already installed"):
        processing.run(IMPORT, {"H5": SO2SAT_H5, "MODELS_DIR": str(folder)})
    assert os.path.getsize(res["MODEL"]) == size
    processing.run(IMPORT, {"H5": SO2SAT_H5, "MODELS_DIR": str(folder), "OVERWRITE": True})
    assert os.path.getsize(res["MODEL"]) == size - 1


# --- the real Ketzin stack through the classify algorithm -------------------------------------
def clear_water_cells(stack, grid_shape):
    """Cells whose whole 32 x 32 patch (centred on the cell's upper-left corner, symmetric
    padding) is clearly open water: NIR B8 < 900 and SWIR B11 < 400 on every pixel (land in
    this February scene has B8 > 1000 and B11 > 700; the Havel lakes have B8 400-700, B11 < 300
    even under the thin haze)."""
    b8 = np.pad(stack[6].astype(np.float32), 16, mode="symmetric")
    b11 = np.pad(stack[8].astype(np.float32), 16, mode="symmetric")
    cells = np.zeros(grid_shape, bool)
    for r in range(grid_shape[0]):
        for c in range(grid_shape[1]):
            win = (slice(10 * r, 10 * r + 32), slice(10 * c, 10 * c + 32))
            cells[r, c] = b8[win].max() < 900 and b11[win].max() < 400
    return cells


@pytest.fixture(scope="module")
def ketzin(imported, provider, tmp_path_factory):
    """The whole Ketzin stack classified by ``urbanfunctions:classify`` (winter season only)."""
    import processing
    out = tmp_path_factory.mktemp("ketzin") / "ketzin.tif"
    res = processing.run(CLASSIFY, {"S2_WINTER": S2_STACK, "MODEL": imported["MODEL"],
                                    "OUTPUT": str(out), "PROBABILITIES": True,
                                    "CONFIDENCE": True})
    return res


@needs_shared
def test_ketzin_lakes_are_water_and_the_countryside_is_plants_and_trees(ketzin):
    lcz = _read(json.loads(ketzin["EXTRA_OUTPUTS"])["lcz"], 1)
    stack = _read(S2_STACK)
    assert lcz.shape == (77, 154)                     # ceil(768 / 10), ceil(1536 / 10)
    assert (lcz > 0).all(), "no nodata in a stack without nodata"
    water = clear_water_cells(stack, lcz.shape)
    assert water.sum() >= 80, "the Beetzsee / Havel lakes give many clear-water cells"
    assert (lcz[water] == G).mean() >= 0.95, np.unique(lcz[water], return_counts=True)
    share = {code: float((lcz == code).mean()) for code in range(1, 18)}
    assert share[D] > 0.5, share                      # February fields and meadows
    assert share[A] + share[B] > 0.05, share          # the forests
    assert share[D] + share[A] + share[B] > 0.8, share
    built = sum(share[c] for c in BUILT)
    assert 0.005 < built < 0.15, f"villages only: built LCZ share {built:.3f}"
    # the output and its class areas are urban functions ("Classify urban functions"): LCZ D
    # low plants is agricultural / undeveloped, LCZ G water is water
    functions = _read(ketzin["OUTPUT"], 1)
    areas = json.loads(ketzin["CLASS_AREAS"])
    assert "low_plants" not in areas and 5 not in functions
    for name, code in (("agricultural_undeveloped", 8), ("water", 7), ("residential", 1)):
        assert areas[name] == pytest.approx(float((functions == code).sum()) * 1e4)
    assert areas["agricultural_undeveloped"] > 0.5 * lcz.size * 1e4


@needs_shared
def test_ketzin_lcz_map_is_styled_with_the_17_lcz_classes_of_the_card(ketzin, imported):
    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer

    from plugin.core.model_card import read_card
    from plugin.qgis_common.styling import legend_entries
    card = read_card(imported["MODEL"])
    lcz_path = json.loads(ketzin["EXTRA_OUTPUTS"])["lcz"]
    ds = gdal.Open(lcz_path)
    band = ds.GetRasterBand(1)
    band.GetDescription()   # GDAL 3.6 GTiff: loads the PAM .aux.xml with the category names
    names, table = band.GetCategoryNames(), band.GetColorTable()
    for c in card.classes:
        assert names[c.code] == c.label
        assert table.GetColorEntry(c.code)[:3] == tuple(int(c.color[i:i + 2], 16)
                                                        for i in (1, 3, 5))
    band = ds = None
    layer = QgsRasterLayer(lcz_path, "reloaded", "gdal")  # .qml sidecar = default style
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    entries = legend_entries(layer)
    assert len(entries) == 17
    assert entries == [(c.code, c.label, c.color.lower()) for c in card.classes]
    assert entries[16] == (17, "LCZ G – Water", "#6a6aff")


@needs_shared
def test_ketzin_settlement_extent_and_function_map_agree_with_the_lcz(ketzin, imported):
    from plugin.lcz.classes import function_lut
    extra = json.loads(ketzin["EXTRA_OUTPUTS"])
    assert set(extra) == {"probabilities", "settlement_extent", "lcz"}
    stem = os.path.splitext(ketzin["OUTPUT"])[0]
    for name, path in extra.items():
        assert path == f"{stem}_{name}.tif" and os.path.isfile(path)
    lcz = _read(extra["lcz"], 1)
    probs = _read(extra["probabilities"])
    settlement = _read(extra["settlement_extent"])
    functions = _read(ketzin["OUTPUT"], 1)   # the main output: functions from the LCZ
    assert probs.shape == (17,) + lcz.shape and settlement.shape == functions.shape == lcz.shape
    assert np.array_equal(probs.argmax(0) + 1, lcz)
    assert np.allclose(settlement, probs[:10].sum(0), atol=1e-5)
    assert 0 <= settlement.min() and settlement.max() <= 1.0   # clipped: a float32 sum can pass 1
    built = np.isin(lcz, BUILT)
    assert settlement[built].mean() > 0.7 and np.median(settlement[built]) > 0.9
    assert settlement[~built].mean() < 0.05 and settlement[lcz == G].max() < 0.5
    assert ((settlement > 0.5) == built).mean() > 0.99
    # the function map: argmax of the LCZ probabilities summed per function
    lut = function_lut()
    sums = np.stack([probs[lut[1:] == code].sum(0) if (lut[1:] == code).any()
                     else np.full(lcz.shape, -1.0) for code in range(1, 9)])
    assert np.array_equal(functions, sums.argmax(0) + 1)
    assert 5 not in functions, "no LCZ maps to public services"
    assert (functions[lcz == G] == 7).mean() > 0.9      # water
    assert (functions[lcz == D] == 8).mean() > 0.95     # agricultural / undeveloped
    assert np.isin(functions[settlement > 0.5], [1, 2, 3]).mean() > 0.95
    # their .qml sidecars: pseudocolour 0-1 and the palette of our function classes
    from qgis.core import (QgsPalettedRasterRenderer, QgsRasterLayer,
                           QgsSingleBandPseudoColorRenderer)

    from plugin.core.classes import FUNCTION_CLASSES
    from plugin.qgis_common.styling import legend_entries
    layer = QgsRasterLayer(extra["settlement_extent"], "se", "gdal")
    renderer = layer.renderer()
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer)
    assert (renderer.classificationMin(), renderer.classificationMax()) == (0.0, 1.0)
    layer = QgsRasterLayer(ketzin["OUTPUT"], "fn", "gdal")
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    # all eight functions, as with every model (a validation sample can record a school)
    assert legend_entries(layer) == [(f.code, f.label, f.color) for f in FUNCTION_CLASSES]


@needs_shared
def test_ketzin_manifest_lists_the_season_used(ketzin, imported):
    manifest = _json(ketzin["MANIFEST"])
    assert list(manifest["inputs"]) == ["s2_winter"]
    assert os.path.samefile(manifest["inputs"]["s2_winter"]["path"], S2_STACK)
    assert manifest["model"]["name"] == LCZ_NAME
    assert set(manifest["extra_outputs"]) == {"probabilities", "settlement_extent", "lcz"}
    assert any(m.startswith("The map holds urban functions derived from the 17 classes")
               for m in manifest["messages"])


@pytest.fixture(scope="module")
def ketzin_window(tmp_path_factory):
    """A 4 x 3 km window of the stack (Beetzsee shore with a village), as a GeoTIFF."""
    if not os.path.isfile(S2_STACK):
        pytest.skip("../shared/data is not available")
    path = str(tmp_path_factory.mktemp("ketzin_window") / "ketzin_window.tif")
    gdal.Translate(path, S2_STACK, srcWin=[1000, 200, 400, 300])
    return path


@needs_shared
def test_two_seasons_are_averaged_and_listed(imported, provider, ketzin_window, tmp_path):
    import processing
    out = tmp_path / "two.tif"
    res = processing.run(CLASSIFY, {"S2_WINTER": ketzin_window, "S2_SPRING": ketzin_window,
                                    "MODEL": imported["MODEL"], "OUTPUT": str(out)})
    manifest = _json(res["MANIFEST"])
    assert set(manifest["inputs"]) == {"s2_winter", "s2_spring"}
    single = processing.run(CLASSIFY, {"S2_WINTER": ketzin_window, "MODEL": imported["MODEL"],
                                       "OUTPUT": str(tmp_path / "one.tif")})
    # the same image twice: the mean of two identical softmaxes is the same map
    assert np.array_equal(_read(out, 1), _read(single["OUTPUT"], 1))
    assert np.array_equal(_read(json.loads(res["EXTRA_OUTPUTS"])["lcz"], 1),
                          _read(json.loads(single["EXTRA_OUTPUTS"])["lcz"], 1))


@needs_shared
def test_run_and_load_results_adds_the_styled_derived_layers(imported, provider, ketzin_window,
                                                            tmp_path):
    import processing
    from qgis.core import (QgsPalettedRasterRenderer, QgsProject,
                           QgsSingleBandPseudoColorRenderer)
    out = tmp_path / "loaded.tif"
    before = set(QgsProject.instance().mapLayers())
    processing.runAndLoadResults(CLASSIFY, {"S2_WINTER": ketzin_window,
                                            "MODEL": imported["MODEL"], "OUTPUT": str(out)})
    added = {os.path.basename(lyr.source()): lyr
             for lid, lyr in QgsProject.instance().mapLayers().items() if lid not in before}
    try:
        assert set(added) == {"loaded.tif", "loaded_settlement_extent.tif", "loaded_lcz.tif"}
        functions = added["loaded.tif"]   # "Classify urban functions": functions on top
        assert isinstance(functions.renderer(), QgsPalettedRasterRenderer)
        assert "Residential" in [c.label for c in functions.renderer().classes()]
        assert len(functions.renderer().classes()) == 8   # public services too (never mapped)
        settlement = added["loaded_settlement_extent.tif"]
        assert isinstance(settlement.renderer(), QgsSingleBandPseudoColorRenderer)
        assert "not a trained regression" in settlement.name()
        lcz = added["loaded_lcz.tif"]
        assert isinstance(lcz.renderer(), QgsPalettedRasterRenderer)
        assert len(lcz.renderer().classes()) == 17
        assert lcz.name().startswith("Local Climate Zones")
    finally:
        QgsProject.instance().removeMapLayers([lyr.id() for lyr in added.values()])


# --- the dialog's import button ---------------------------------------------------------------
@pytest.fixture
def dialog(iface, qgis_app):
    from qgis.core import QgsSettings

    from plugin.gui.dialog import ClassifyDialog
    QgsSettings().remove("UrbanFunctions")
    dlg = ClassifyDialog(iface)
    yield dlg
    if dlg.task is not None:
        dlg.cancel()
    dlg.close()
    dlg.deleteLater()


def test_dialog_has_the_import_button_with_the_download_url(dialog):
    from plugin.lcz.so2sat_h5 import DOWNLOAD_URL
    button = dialog.import_so2sat_button
    assert button.text() == "Import So2Sat LCZ weights…"
    assert DOWNLOAD_URL in button.toolTip()
    assert button.isEnabled()


@needs_h5py
def test_dialog_import_of_a_wrong_file_says_why(dialog, user_models, tmp_path):
    bad = tmp_path / "wrong.h5"
    bad.write_bytes(b"not an h5 file at all")
    count = dialog.model_combo.count()
    assert dialog.import_so2sat(str(bad)) is None
    assert "So2Sat import failed" in dialog.status.text() and "sha256" in dialog.status.text()
    assert dialog.model_combo.count() == count
    assert not os.path.exists(os.path.join(user_models, "so2sat_lcz42_s2_resnet20.onnx"))


def _wait_for(predicate, timeout):
    import time

    from qgis.PyQt.QtCore import QCoreApplication
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.01)
    return False


@needs_shared
@needs_h5py
def test_dialog_imports_selects_and_runs_the_lcz_model(dialog, user_models, ketzin_window,
                                                       tmp_path):
    from qgis.core import (QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer,
                           QgsSingleBandPseudoColorRenderer)
    path = dialog.import_so2sat(SO2SAT_H5)
    assert path == os.path.join(user_models, "so2sat_lcz42_s2_resnet20.onnx")
    assert os.path.isfile(path)
    selected, card = dialog.selected_model()
    assert selected == path and card.name == LCZ_NAME
    assert dialog.model_combo.currentText() == card.title
    assert "Imported the So2Sat LCZ42 model" in dialog.status.text()

    # a differing installed copy is replaced only when the user agrees
    with open(path, "ab") as f:
        f.write(b"\0")
    size = os.path.getsize(path)
    assert dialog.import_so2sat(SO2SAT_H5, confirm_replace=lambda message: False) is None
    assert os.path.getsize(path) == size
    asked = []
    assert dialog.import_so2sat(SO2SAT_H5, confirm_replace=lambda m: asked.append(m) or True)
    assert os.path.getsize(path) == size - 1 and "already installed" in asked[0]

    # run it on a window of the Ketzin stack: the class map and the derived layers are added
    project = QgsProject.instance()
    layer = QgsRasterLayer(ketzin_window, "ketzin window", "gdal")
    project.addMapLayer(layer)
    added = []
    try:
        dialog.set_input("s2_winter", layer)
        dialog.select_model(path)
        out = tmp_path / "dialog_so2sat.tif"
        dialog.output_file.setFilePath(str(out))
        dialog.probabilities.setChecked(True)
        done = []
        dialog.resultReady.connect(lambda result, lyr: done.append((result, lyr)))
        dialog.runFailed.connect(lambda message, cancelled: done.append((None, message)))
        assert dialog.run() is not None, dialog.problems()
        assert _wait_for(lambda: done, 300), "the run did not finish"
        result, main = done[0]
        assert result is not None, main
        added = [main] + list(dialog.extra_layers.values())
        assert set(dialog.extra_layers) == {"probabilities", "settlement_extent", "lcz"}
        assert main.name().startswith("dialog_so2sat (urban functions from So2Sat LCZ42")
        assert isinstance(main.renderer(), QgsPalettedRasterRenderer)
        assert "Water" in [c.label for c in main.renderer().classes()]
        assert isinstance(dialog.extra_layers["settlement_extent"].renderer(),
                          QgsSingleBandPseudoColorRenderer)
        assert isinstance(dialog.extra_layers["lcz"].renderer(), QgsPalettedRasterRenderer)
        assert len(dialog.extra_layers["lcz"].renderer().classes()) == 17
        root = project.layerTreeRoot()
        assert root.findLayer(main.id()).isVisible()
        assert not root.findLayer(dialog.extra_layers["settlement_extent"].id()).isVisible()
        order = [node.layerId() for node in root.findLayers()]
        assert order.index(main.id()) < order.index(dialog.extra_layers["lcz"].id())
        assert "8 urban functions derived from its 17 classes" in dialog.model_info.text()
    finally:
        project.removeMapLayers([lyr.id() for lyr in added if lyr is not None] + [layer.id()])


# --- qgis_process ---------------------------------------------------------------------------
@needs_shared
def test_qgis_process_imports_into_the_profile_and_classifies_by_name(ketzin_window, tmp_path):
    exe = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
    if not os.path.exists(exe):
        pytest.skip("qgis_process.bin is not installed")
    profile = tmp_path / "profile"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    os.symlink(ROOT, plugins / "urban_functions")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(profile),
               XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("PYTHONPATH", None)  # the plugin must find its venv by itself
    env.pop("URBAN_FUNCTIONS_MODELS", None)
    enable = subprocess.run([exe, "plugins", "enable", "urban_functions"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert enable.returncode == 0, enable.stdout + enable.stderr

    run = subprocess.run([exe, "--json", "run", IMPORT, "--", f"H5={SO2SAT_H5}"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(run.stdout[run.stdout.index("{"):])["results"]
    models = profile / "profiles" / "default" / "urban_functions" / "models"
    assert os.path.samefile(results["MODEL"], models / "so2sat_lcz42_s2_resnet20.onnx")
    assert results["NAME"] == LCZ_NAME
    assert (models / "so2sat_lcz42_s2_resnet20.LICENSE.txt").exists()

    out = tmp_path / "cli_so2sat.tif"
    run = subprocess.run([exe, "--json", "run", CLASSIFY, "--", f"S2_WINTER={ketzin_window}",
                          f"MODEL={LCZ_NAME}", f"OUTPUT={out}"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(run.stdout[run.stdout.index("{"):])["results"]
    assert os.path.samefile(results["OUTPUT"], out)
    extra = json.loads(results["EXTRA_OUTPUTS"])
    assert set(extra) == {"settlement_extent", "lcz"}
    assert all(os.path.isfile(p) for p in extra.values())
    assert (tmp_path / "cli_so2sat_settlement_extent.qml").exists()
    assert (tmp_path / "cli_so2sat_lcz.qml").exists()
