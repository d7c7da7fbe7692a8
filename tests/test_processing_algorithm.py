"""``urbanfunctions:classify`` in real QGIS Processing (processing.run, runAndLoadResults,
qgis_process in a subprocess), on the sample city whose inputs come in different CRSs."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from osgeo import gdal

from conftest import ROOT, bundled_models

pytestmark = pytest.mark.qgis

ALG = "urbanfunctions:classify"


@pytest.fixture(scope="module")
def card(model_path):
    from plugin.core.model_card import read_card
    return read_card(model_path)


def _params(inputs, model_path, output, **extra):
    params = {name: inputs[m] for name, m in (
        ("VHR", "vhr"), ("NTL", "ntl"), ("S2_SPRING", "s2_spring"), ("S2_SUMMER", "s2_summer"),
        ("S2_AUTUMN", "s2_autumn"), ("S2_WINTER", "s2_winter")) if m in inputs}
    params.update({"MODEL": model_path, "OUTPUT": str(output)})
    params.update(extra)
    return params


def _crs_of(path):
    ds = gdal.Open(str(path))
    try:
        from osgeo import osr
        srs = osr.SpatialReference(wkt=ds.GetProjection())
        return srs.GetAuthorityCode(None) or srs.GetName()
    finally:
        ds = None


def _assert_palette_matches_card(path, card):
    ds = gdal.Open(str(path))
    try:
        band = ds.GetRasterBand(1)
        band.GetDescription()  # GDAL 3.6 GTiff: loads the .aux.xml (PAM) that holds the names
        names = band.GetCategoryNames()
        table = band.GetColorTable()
        assert band.GetNoDataValue() == 0
        for c in card.classes:
            assert names[c.code] == c.label
            rgb = tuple(int(c.color[i:i + 2], 16) for i in (1, 3, 5))
            assert table.GetColorEntry(c.code)[:3] == rgb
        values = band.ReadAsArray()
    finally:
        ds = None
    return values


def _assert_legend_matches_card(layer, card):
    from qgis.core import QgsPalettedRasterRenderer

    from plugin.qgis_common.styling import legend_entries
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    assert legend_entries(layer) == [(c.code, c.label, c.color.lower()) for c in
                                     sorted(card.classes, key=lambda c: c.code)]
    # the layer tree legend shows exactly those labels
    items = layer.renderer().legendSymbologyItems()
    assert [label for label, _color in items] == [c.label for c in sorted(card.classes,
                                                                         key=lambda c: c.code)]


class CollectingFeedback:
    """A real QgsProcessingFeedback that records what the algorithm reports."""

    def __new__(cls, cancel_after_progress=False):
        from qgis.core import QgsProcessingFeedback

        class _Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.infos, self.texts, self.errors, self.progress_values = [], [], [], []
                self.progressChanged.connect(self._on_progress)

            def _on_progress(self, value):
                self.progress_values.append(value)
                if cancel_after_progress and not self.isCanceled():
                    self.cancel()

            def pushInfo(self, info):
                self.infos.append(info)
                super().pushInfo(info)

            def setProgressText(self, text):
                self.texts.append(text)
                super().setProgressText(text)

            def reportError(self, error, fatalError=False):
                self.errors.append(error)
                super().reportError(error, fatalError)

        return _Feedback()


def test_provider_lists_the_algorithm_with_its_parameters(provider):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition
    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    assert alg is not None and alg.displayName() == "Classify urban functions"
    names = [p.name() for p in alg.parameterDefinitions()]
    for name in ("VHR", "NTL", "S2_SPRING", "S2_SUMMER", "S2_AUTUMN", "S2_WINTER", "MODEL",
                 "EXTENT", "AOI", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "DEVICE", "PRECISION",
                 "CONFIDENCE", "OUTPUT"):
        assert name in names
    for name in ("TILE_SIZE", "OVERLAP", "BATCH_SIZE", "DEVICE", "PRECISION"):
        assert alg.parameterDefinition(name).flags() & QgsProcessingParameterDefinition.FlagAdvanced
    for name in ("VHR", "NTL", "S2_SUMMER", "MODEL", "EXTENT", "AOI"):
        assert alg.parameterDefinition(name).flags() & QgsProcessingParameterDefinition.FlagOptional
    assert {o.name() for o in alg.outputDefinitions()} >= {"OUTPUT", "PROVIDER", "SECONDS",
                                                            "MANIFEST"}
    assert alg.flags() & alg.FlagCanCancel
    assert alg.flags() & alg.FlagSupportsBatch
    ok, _msg = alg.canExecute()
    assert ok
    assert provider.supportedOutputRasterLayerExtensions() == ["tif"]


def test_classifies_the_sample_city_in_mixed_crss(provider, city_inputs, model_path, card,
                                                  tmp_path):
    import processing
    crss = {_crs_of(p) for p in city_inputs.values()}
    assert len(city_inputs) >= 2
    out = tmp_path / "functions.tif"
    feedback = CollectingFeedback()
    res = processing.run(ALG, _params(city_inputs, model_path, out, CONFIDENCE=True),
                         feedback=feedback)
    assert res["OUTPUT"] == str(out) and out.exists()
    assert res["PROVIDER"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert res["SECONDS"] > 0
    assert os.path.isfile(res["MANIFEST"])
    manifest = json.load(open(res["MANIFEST"], encoding="utf-8"))
    assert set(manifest["inputs"]) == set(city_inputs)
    values = _assert_palette_matches_card(out, card)
    assert set(np.unique(values)) - {0} <= {c.code for c in card.classes}
    assert (values > 0).mean() > 0.5, "most of the sample city must be classified"
    ds = gdal.Open(str(out))
    assert ds.RasterCount == 2  # confidence band
    ds = None
    areas = json.loads(res["CLASS_AREAS"])
    assert set(areas) == {c.name for c in card.classes}
    # the log tells the user which provider ran, how long it took and the area per class
    log = "\n".join(feedback.infos)
    assert "Ran on:" in log and res["PROVIDER"] in log and "Area per class" in log
    assert any(c.label in log for c in card.classes)
    assert feedback.progress_values and max(feedback.progress_values) == pytest.approx(100)
    # the .qml sidecar makes the style the raster's default in any later session
    qml = tmp_path / "functions.qml"
    assert qml.exists()
    from qgis.core import QgsRasterLayer
    layer = QgsRasterLayer(str(out), "reloaded", "gdal")
    assert layer.isValid()
    _assert_legend_matches_card(layer, card)
    if len(crss) < 2:
        pytest.fail(f"the sample city should mix CRSs, got {crss}")


def test_run_and_load_results_adds_a_paletted_layer(provider, city_inputs, model_path, card,
                                                    tmp_path):
    import processing
    from qgis.core import QgsProject
    out = tmp_path / "loaded.tif"
    before = set(QgsProject.instance().mapLayers())
    processing.runAndLoadResults(ALG, _params(city_inputs, model_path, out))
    added = [lyr for lid, lyr in QgsProject.instance().mapLayers().items() if lid not in before]
    try:
        assert len(added) == 1
        layer = added[0]
        assert os.path.samefile(layer.source(), str(out))
        _assert_legend_matches_card(layer, card)
        assert card.title in layer.name()
    finally:
        QgsProject.instance().removeMapLayers([lyr.id() for lyr in added])


def test_aoi_polygon_masks_outside_and_extent_limits_the_grid(provider, city_inputs, model_path,
                                                              tmp_path):
    import processing
    from qgis.core import (QgsFeature, QgsGeometry, QgsRasterLayer, QgsRectangle,
                           QgsVectorLayer)
    ref = QgsRasterLayer(next(iter(city_inputs.values())), "ref", "gdal")
    ext = ref.extent()
    crs = ref.crs().authid()
    # a triangle inside the first input's extent
    cx, cy = ext.center().x(), ext.center().y()
    w, h = ext.width() / 4, ext.height() / 4
    poly = QgsVectorLayer(f"Polygon?crs={crs}", "aoi", "memory")
    feat = QgsFeature()
    feat.setGeometry(QgsGeometry.fromWkt(
        f"POLYGON(({cx - w} {cy - h}, {cx + w} {cy - h}, {cx} {cy + h}, {cx - w} {cy - h}))"))
    poly.dataProvider().addFeatures([feat])
    out = tmp_path / "aoi.tif"
    processing.run(ALG, _params(city_inputs, model_path, out, AOI=poly))
    ds = gdal.Open(str(out))
    values = ds.GetRasterBand(1).ReadAsArray()
    gt = ds.GetGeoTransform()
    ds = None
    assert values.shape[1] * gt[1] <= 2 * w + 4 * gt[1] + 1e-6
    assert 0 < (values > 0).mean() < 0.75, "outside the triangle is nodata"

    out2 = tmp_path / "extent.tif"
    rect = QgsRectangle(cx - w, cy - h, cx + w, cy + h)
    extent = f"{rect.xMinimum()},{rect.xMaximum()},{rect.yMinimum()},{rect.yMaximum()} [{crs}]"
    processing.run(ALG, _params(city_inputs, model_path, out2, EXTENT=extent))
    ds = gdal.Open(str(out2))
    width_m = ds.RasterXSize * ds.GetGeoTransform()[1]
    ds = None
    assert width_m <= 2 * w + 4 * gt[1] + 1e-6


def test_inference_mode_and_its_former_name(provider, city_inputs, model_path, tmp_path):
    """INFERENCE_MODE reaches the engine; PATCH_MODE, its name before 0.2.0, still works from
    saved scripts and models and is hidden from the dialog."""
    import processing
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition
    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    assert alg.parameterDefinition("PATCH_MODE").flags() & \
        QgsProcessingParameterDefinition.FlagHidden
    for name, key, value, expected in (("new", "INFERENCE_MODE", 2, "accurate"),
                                       ("old", "PATCH_MODE", 2, "accurate"),
                                       ("default", "INFERENCE_MODE", 0, "fast")):
        out = tmp_path / f"{name}.tif"
        res = processing.run(ALG, _params(city_inputs, model_path, out, **{key: value}),
                             feedback=CollectingFeedback())
        with open(res["MANIFEST"], encoding="utf-8") as f:
            assert json.load(f)["tiling"]["inference_mode"] == expected, name


def test_bundled_model_is_picked_when_model_is_empty(provider, sample_city, tmp_path):
    if not bundled_models():
        pytest.skip("no bundled model in models/ yet")
    import processing
    from plugin.core.models import default_model_for
    entry = default_model_for(list(sample_city.inputs), inputs=sample_city.inputs)
    assert entry.card.name == "sample-city-fusion"   # the sample city: its demo model
    inputs = {m: p for m, p in sample_city.inputs.items() if m in entry.card.modalities}
    out = tmp_path / "auto.tif"
    feedback = CollectingFeedback()
    processing.run(ALG, _params(inputs, "", out), feedback=feedback)
    assert out.exists()
    assert any(entry.card.title in info for info in feedback.infos)


# --- failures: the engine's message, and no output file ------------------------------------
def _run_expecting_error(params, feedback=None):
    import processing
    from qgis.core import QgsProcessingException
    with pytest.raises(QgsProcessingException) as err:
        processing.run(ALG, params, feedback=feedback or CollectingFeedback())
    return str(err.value)


def _no_output_left(folder, stem):
    return [f for f in os.listdir(folder) if f.startswith(stem) or f.startswith("." + stem)]


def test_no_input_at_all_is_a_clear_error(provider, model_path, tmp_path):
    out = tmp_path / "none.tif"
    message = _run_expecting_error({"MODEL": model_path, "OUTPUT": str(out)})
    assert "No input raster was given" in message
    assert not _no_output_left(tmp_path, "none")


def test_wrong_band_count_is_a_clear_error(provider, city_inputs, model_path, card, tmp_path):
    modality = next(iter(city_inputs))
    spec = card.input_for(modality)
    src = gdal.Open(city_inputs[modality])
    bad = str(tmp_path / "bad_bands.tif")
    # one band fewer than the model needs (or one more for a single-band input)
    bands = list(range(1, spec.band_count)) if spec.band_count > 1 else [1, 1]
    gdal.Translate(bad, src, bandList=bands)
    src = None
    inputs = dict(city_inputs)
    inputs[modality] = bad
    out = tmp_path / "bands.tif"
    message = _run_expecting_error(_params(inputs, model_path, out))
    assert "band" in message.lower()
    assert not _no_output_left(tmp_path, "bands")


def test_inputs_that_do_not_overlap_are_a_clear_error(provider, city_inputs, model_path, tmp_path):
    if len(city_inputs) < 2:
        pytest.skip("needs two inputs")
    from osgeo import osr
    modality, path = next(iter(city_inputs.items()))
    src = gdal.Open(path)
    gt = list(src.GetGeoTransform())
    geographic = osr.SpatialReference(wkt=src.GetProjection()).IsGeographic()
    gt[0] += 5.0 if geographic else 200000.0  # 5 degrees / 200 km east: no overlap left
    shifted = str(tmp_path / "far_away.tif")
    dst = gdal.Translate(shifted, src)
    dst.SetGeoTransform(gt)
    dst = None
    src = None
    inputs = dict(city_inputs)
    inputs[modality] = shifted
    out = tmp_path / "apart.tif"
    message = _run_expecting_error(_params(inputs, model_path, out))
    assert "overlap" in message.lower()
    assert not _no_output_left(tmp_path, "apart")


def test_unknown_model_name_is_a_clear_error(provider, city_inputs, tmp_path):
    out = tmp_path / "nomodel.tif"
    message = _run_expecting_error(_params(city_inputs, "no_such_model", out))
    assert "no_such_model" in message
    assert not out.exists()


def test_cancel_after_first_progress_leaves_no_file(provider, city_inputs, model_path, tmp_path):
    out = tmp_path / "cancelled.tif"
    feedback = CollectingFeedback(cancel_after_progress=True)
    message = _run_expecting_error(_params(city_inputs, model_path, out, TILE_SIZE=16,
                                           OVERLAP=4), feedback)
    assert "cancel" in message.lower()
    assert feedback.isCanceled()
    assert not _no_output_left(tmp_path, "cancelled")


# --- qgis_process: the plugin as installed in a profile -------------------------------------
def qgis_process_env(tmp_path):
    """(qgis_process.bin, environment) with the plugin enabled in a fresh profile; skips when
    qgis_process is not installed. PYTHONPATH is dropped: the plugin finds its venv by itself."""
    exe = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
    if not os.path.exists(exe):
        pytest.skip("qgis_process.bin is not installed")
    profile = tmp_path / "profile"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    os.symlink(ROOT, plugins / "urban_functions")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(profile),
               XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("PYTHONPATH", None)
    enable = subprocess.run([exe, "plugins", "enable", "urban_functions"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    return exe, env


def copied_inputs(paths, folder):
    """Copies of ``paths`` (a dict) in ``folder``, and a snapshot of the folder (name -> bytes
    digest) to compare after a run: inputs stay byte-identical and get no sidecar."""
    folder.mkdir()
    copies = {}
    for key, path in paths.items():
        copies[key] = str(folder / os.path.basename(path))
        shutil.copy(path, copies[key])
    return copies, folder_state(folder)


def folder_state(folder):
    import hashlib
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(folder))}


def test_qgis_process_runs_the_algorithm(city_inputs, model_path, card, tmp_path):
    exe, env = qgis_process_env(tmp_path)
    # qgis_process checks every parameter before the run; the stock raster check loads the
    # file as a QGIS layer, and its statistics would land in <input>.aux.xml
    city_inputs, before = copied_inputs(city_inputs, tmp_path / "inputs")
    out = tmp_path / "cli.tif"
    args = [exe, "--json", "run", ALG, "--"]
    args += [f"{k}={v}" for k, v in _params(city_inputs, model_path, out).items()]
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    payload = json.loads(run.stdout[run.stdout.index("{"):])
    results = payload["results"]
    assert os.path.samefile(results["OUTPUT"], str(out))
    assert results["PROVIDER"] == "CPUExecutionProvider" or "CUDA" in results["PROVIDER"]
    assert os.path.isfile(results["MANIFEST"])
    _assert_palette_matches_card(out, card)
    assert (tmp_path / "cli.qml").exists()
    log = payload.get("log", {})
    text = json.dumps(log)
    assert "Area per class" in text
    assert folder_state(tmp_path / "inputs") == before


def test_optional_graph_outputs_are_written_styled_and_loaded(provider, city_inputs, tmp_path):
    """A model's extra outputs (built-up fraction; the optional input weights, i.e. why a cell
    got its class) are written when asked, styled (0-1 ramp; RGB weights) and loaded."""
    import processing
    from qgis.core import (QgsMultiBandColorRenderer, QgsProject, QgsRasterLayer,
                           QgsSingleBandPseudoColorRenderer)

    from onnx_factory import tiny_card_with_graph_outputs, write_tiny_model
    model = write_tiny_model(tmp_path / "graph.onnx", tiny_card_with_graph_outputs())
    plain = processing.run(ALG, _params(city_inputs, model, tmp_path / "plain.tif"))
    assert set(json.loads(plain["EXTRA_OUTPUTS"])) == {"built_up"}

    out = tmp_path / "why.tif"
    before = set(QgsProject.instance().mapLayers())
    res = processing.runAndLoadResults(ALG, _params(city_inputs, model, out,
                                                    OPTIONAL_OUTPUTS=True))
    added = {os.path.basename(lyr.source()): lyr
             for lid, lyr in QgsProject.instance().mapLayers().items() if lid not in before}
    try:
        extra = json.loads(res["EXTRA_OUTPUTS"])
        assert set(extra) == {"built_up", "gates"}
        assert set(added) == {"why.tif", "why_built_up.tif", "why_gates.tif"}
        assert isinstance(added["why_built_up.tif"].renderer(), QgsSingleBandPseudoColorRenderer)
        gates = added["why_gates.tif"].renderer()
        assert isinstance(gates, QgsMultiBandColorRenderer)
        assert (gates.redBand(), gates.greenBand(), gates.blueBand()) == (1, 2, 3)
        assert gates.redContrastEnhancement().maximumValue() == 1.0
        # the style is also the file's default style for later sessions
        reloaded = QgsRasterLayer(extra["gates"], "again", "gdal")
        assert isinstance(reloaded.renderer(), QgsMultiBandColorRenderer)
    finally:
        QgsProject.instance().removeMapLayers([lyr.id() for lyr in added.values()])


def test_input_files_get_no_sidecar(provider, city_inputs, model_path, tmp_path):
    """Inputs are never modified: a raster given as a path is read by GDAL, not loaded as a
    QGIS layer (whose statistics would leave <input>.aux.xml beside the user's file)."""
    src = tmp_path / "inputs"
    src.mkdir()
    inputs = {}
    for modality, path in city_inputs.items():
        inputs[modality] = str(src / os.path.basename(path))
        shutil.copy(path, inputs[modality])
    before = sorted(os.listdir(src))
    import processing
    out = tmp_path / "out" / "map.tif"
    out.parent.mkdir()
    processing.run("urbanfunctions:classify", _params(inputs, model_path, str(out)),
                   feedback=CollectingFeedback())
    assert out.exists()
    assert sorted(os.listdir(src)) == before


def test_every_algorithm_links_its_readme_section_and_classify_lists_every_input(provider):
    from plugin.processing_provider.help_links import README, SECTIONS
    algorithms = provider.algorithms()
    assert {a.name() for a in algorithms} <= set(SECTIONS)
    for alg in algorithms:
        assert alg.helpUrl() == README + SECTIONS[alg.name()]
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().lower()
    for section in set(SECTIONS.values()):
        # the GitHub anchor of a README heading
        heading = section.replace("-", " ")
        assert any(heading == "".join(ch for ch in line.lstrip("#").strip().lower()
                                      if ch.isalnum() or ch in " -").replace("-", " ")
                   for line in readme.splitlines() if line.startswith("#")), section
    classify = next(a for a in algorithms if a.name() == "classify")
    for param in ("VHR", "NTL", "S2_SPRING", "S2_WINTER", "TEMPORAL"):
        assert param in classify.shortHelpString()
