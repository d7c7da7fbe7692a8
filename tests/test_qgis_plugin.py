"""The plugin in a real QGIS: classFactory/initGui/unload, the dialog and its background task,
the styled result layer, "Load sample city", and loading without onnxruntime."""
import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT

pytestmark = pytest.mark.qgis


def wait_for(predicate, timeout=120.0):
    """Spin the Qt event loop (task manager callbacks run there) until ``predicate()``."""
    from qgis.PyQt.QtCore import QCoreApplication
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _remove_registered_provider():
    from qgis.core import QgsApplication
    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("urbanfunctions")
    if existing is not None:
        registry.removeProvider(existing)


@pytest.fixture
def city_layers(clean_project, city_inputs):
    """The sample-city inputs the model accepts, as raster layers in the project."""
    from qgis.core import QgsRasterLayer
    layers = {}
    for modality, path in city_inputs.items():
        layer = QgsRasterLayer(path, f"city {modality}", "gdal")
        assert layer.isValid()
        clean_project.addMapLayer(layer)
        layers[modality] = layer
    return layers


@pytest.fixture
def dialog(iface, qgis_app, tmp_path):
    from qgis.core import QgsSettings

    from plugin.gui.dialog import ClassifyDialog
    QgsSettings().remove("UrbanFunctions")  # no settings from a previous test
    dlg = ClassifyDialog(iface)
    yield dlg
    if dlg.task is not None:
        dlg.cancel()
        wait_for(lambda: dlg.task is None, 60)
    dlg.close()
    dlg.deleteLater()


# --- plugin life cycle -----------------------------------------------------------------------
def test_class_factory_init_gui_and_unload(iface, urban_functions_package, processing_app):
    from qgis.core import QgsApplication
    _remove_registered_provider()
    plugin = urban_functions_package.classFactory(iface)
    assert plugin.missing == [], plugin.missing
    plugin.initGui()
    try:
        menu = iface.plugin_menu_actions("&Urban Functions")
        texts = [a.text() for a in menu]
        assert texts == ["Classify urban functions…", "Train on my area…", "Load sample city",
                         "Label validation points…", "Install dependencies…",
                         "About and diagnostics…"]
        assert all(not a.icon().isNull() for a in menu)
        assert plugin.classify_action in iface.toolbar_actions()
        provider = QgsApplication.processingRegistry().providerById("urbanfunctions")
        assert provider is not None and provider.name() == "Urban Functions"
        for alg in ("classify", "train", "createvalidationpoints", "assessaccuracy"):
            assert QgsApplication.processingRegistry().algorithmById(f"urbanfunctions:{alg}"), alg
        # the labelling menu entry docks the labelling widget into the main window
        plugin.labelling_action.trigger()
        assert plugin.labelling_dock is not None and plugin.labelling_dock.isVisibleTo(iface.mainWindow())
        plugin.labelling_action.trigger()
        assert not plugin.labelling_dock.isVisibleTo(iface.mainWindow())
        # the toolbar button opens the dialog
        plugin.classify_action.trigger()
        assert plugin.dialog is not None and plugin.dialog.isVisible()
        assert plugin.dialog.windowTitle() == "Classify urban functions"
        plugin.train_action.trigger()
        assert plugin.train_dialog is not None and plugin.train_dialog.isVisible()
    finally:
        plugin.unload()
    assert iface.plugin_menu_actions("&Urban Functions") == []
    assert iface.toolbar_actions() == []
    assert QgsApplication.processingRegistry().providerById("urbanfunctions") is None
    assert plugin.dialog is None and plugin.labelling_dock is None


def test_init_processing_alone_like_qgis_process(urban_functions_package, processing_app):
    from qgis.core import QgsApplication
    _remove_registered_provider()
    plugin = urban_functions_package.classFactory(None)
    plugin.initProcessing()
    plugin.initProcessing()  # idempotent (QGIS desktop calls it, then initGui calls it again)
    try:
        assert QgsApplication.processingRegistry().algorithmById("urbanfunctions:classify")
    finally:
        QgsApplication.processingRegistry().removeProvider(plugin.provider)


MISSING_ONNXRUNTIME_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    sys.path.append('/usr/share/qgis/python/plugins')
    from qgis.core import QgsApplication
    app = QgsApplication([], True, {profile!r}); app.initQgis()
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'urban_functions', {pkg!r} + '/__init__.py', submodule_search_locations=[{pkg!r}])
    mod = importlib.util.module_from_spec(spec); sys.modules['urban_functions'] = mod
    spec.loader.exec_module(mod)
    from stub_iface import StubIface
    iface = StubIface()
    plugin = mod.classFactory(iface)
    plugin.initGui()
    print('MISSING', plugin.missing)
    print('BAR', iface.message_texts())
    alg = QgsApplication.processingRegistry().algorithmById('urbanfunctions:classify')
    print('CAN_EXECUTE', alg.canExecute())
    from processing.core.Processing import Processing
    Processing.initialize()
    import processing
    try:
        processing.run('urbanfunctions:classify', {{'OUTPUT': {out!r}}})
    except Exception as exc:
        print('RUN_ERROR', exc)
    dlg = plugin.show_dialog()
    print('DIALOG', dlg.problems())
    print('MODELS', [dlg.model_combo.itemText(i) for i in range(dlg.model_combo.count())])
    print('RUN_ENABLED', dlg.run_button.isEnabled(), dlg.install_button.isVisible())
    print('RUN_HINT', dlg.run_hint.text())
    from qgis.PyQt.QtWidgets import QPushButton
    print('BAR_BUTTONS', [b.text() for b in iface.messageBar().findChildren(QPushButton)])
    plugin.unload()
    app.exitQgis()
""")


def test_loads_and_explains_when_onnxruntime_is_missing(tmp_path):
    """System Python without the venv: the plugin loads and says what to install."""
    # the plugin as a user might install it: no .venv next to it
    pkg = tmp_path / "urban_functions"
    pkg.mkdir()
    for name in ("__init__.py", "metadata.txt", "plugin", "resources", "models"):
        os.symlink(os.path.join(ROOT, name), pkg / name)
    script = tmp_path / "run.py"
    script.write_text(MISSING_ONNXRUNTIME_SCRIPT.format(
        tests=os.path.join(ROOT, "tests"), profile=str(tmp_path / "profile"), pkg=str(pkg),
        out=str(tmp_path / "out.tif")))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("URBAN_FUNCTIONS_VENV", None)
    env.pop("PYTHONPATH", None)
    check = subprocess.run(["/usr/bin/python3", "-c", "import onnxruntime"], env=env,
                           capture_output=True)
    if check.returncode == 0:
        pytest.skip("onnxruntime is installed system-wide; cannot show it missing")
    proc = subprocess.run(["/usr/bin/python3", str(script)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=str(tmp_path))
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    lines = {line.split(" ", 1)[0]: line for line in out.splitlines() if " " in line}
    # a bare `pip install` is refused on Debian: the advice is the plugin's own installer
    assert "onnxruntime" in lines["MISSING"] and "Install dependencies" in lines["MISSING"]
    assert "pip install" not in lines["MISSING"]
    assert "onnxruntime" in lines["BAR"] and "cannot classify yet" in lines["BAR"]
    assert "Install dependencies…" in lines["BAR_BUTTONS"]
    # the bundled models are listed from their cards without onnxruntime; Run says why it is off
    for title in ("Sample-city fusion", "Urban fusion network", "VHR functional zones"):
        assert title in lines["MODELS"], lines["MODELS"]
    assert lines["RUN_ENABLED"] == "RUN_ENABLED False True"
    assert "Run is disabled: onnxruntime cannot be imported" in lines["RUN_HINT"]
    assert "(False," in lines["CAN_EXECUTE"] and "onnxruntime" in lines["CAN_EXECUTE"]
    assert "onnxruntime" in lines["RUN_ERROR"]
    assert "onnxruntime" in lines["DIALOG"]
    assert not (tmp_path / "out.tif").exists()


# --- the dialog ---------------------------------------------------------------------------------
def test_dialog_validation_messages(dialog, city_layers, model_path, tmp_path):
    from plugin.gui.dialog import NO_INPUT_MESSAGE
    for combo in dialog.input_combos.values():
        combo.setLayer(None)
    dialog.output_file.setFilePath("")
    assert NO_INPUT_MESSAGE in dialog.problems()
    assert "Choose where to save the output GeoTIFF." in dialog.problems()
    assert dialog.run() is None
    assert NO_INPUT_MESSAGE in dialog.status.text()
    assert any(NO_INPUT_MESSAGE in item.text() for item in dialog.bar.items())

    for modality, layer in city_layers.items():
        dialog.set_input(modality, layer)
    assert dialog.select_model(model_path)
    # an output name is suggested next to the first input
    assert dialog.output_path().endswith(".tif")
    existing = tmp_path / "exists.tif"
    existing.write_bytes(b"")
    dialog.output_file.setFilePath(str(existing))
    assert any("already exists" in p for p in dialog.problems())
    dialog.overwrite.setChecked(True)
    dialog.output_file.setFilePath(str(tmp_path / "no_such_folder" / "x.tif"))
    assert any("folder does not exist" in p for p in dialog.problems())
    dialog.output_file.setFilePath(str(tmp_path / "x.png"))
    assert any("GeoTIFF" in p for p in dialog.problems())
    dialog.output_file.setFilePath(str(tmp_path / "noext"))
    assert dialog.output_path() == str(tmp_path / "noext.tif")

    # polygons: need a layer, and a selection when "selected only" is ticked
    from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsVectorLayer
    dialog.set_area_mode("polygons")
    assert any("polygon layer" in p for p in dialog.problems())
    ref = next(iter(city_layers.values()))
    poly = QgsVectorLayer(f"Polygon?crs={ref.crs().authid()}", "aoi", "memory")
    feat = QgsFeature()
    feat.setGeometry(QgsGeometry.fromRect(ref.extent().buffered(-ref.extent().width() / 4)))
    poly.dataProvider().addFeatures([feat])
    QgsProject.instance().addMapLayer(poly)
    dialog.aoi_combo.setLayer(poly)
    dialog.aoi_selected.setChecked(True)
    assert any("no selected features" in p for p in dialog.problems())
    poly.selectAll()
    assert dialog.problems() == []
    request = dialog.build_request()
    assert request.aoi is not None and request.aoi[0].startswith("Polygon")
    assert set(request.inputs) == set(city_layers)
    # canvas extent goes to the request with the canvas CRS
    dialog.set_area_mode("canvas")
    iface_canvas = dialog.iface.mapCanvas()
    iface_canvas.setDestinationCrs(ref.crs())
    iface_canvas.setExtent(ref.extent())
    request = dialog.build_request()
    assert request.extent is not None and len(request.extent) == 5 and request.aoi is None
    dialog.set_area_mode("inputs")
    request = dialog.build_request()
    assert request.extent is None and request.aoi is None
    # advanced defaults mean "model default"
    assert request.tile_size is None and request.overlap is None and request.device == "auto"
    dialog.tile_size.setValue(64)
    dialog.overlap.setValue(0)
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))
    request = dialog.build_request()
    assert (request.tile_size, request.overlap, request.device) == (64, 0, "cpu")
    assert not request.optional_outputs and not request.probabilities
    dialog.optional_outputs.setChecked(True)
    assert dialog.build_request().optional_outputs


def test_dialog_rejects_rasters_that_are_not_plain_files(dialog, city_inputs, tmp_path):
    """A raster inside a zip (or a WMS, a GeoPackage table...): export it first."""
    import zipfile

    from qgis.core import QgsProject, QgsRasterLayer
    modality, path = next(iter(city_inputs.items()))
    archive = tmp_path / "inputs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(path, "input.tif")
    layer = QgsRasterLayer(f"/vsizip/{archive}/input.tif", "zipped", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    try:
        dialog.set_input(modality, layer)
        assert any("is not a plain raster file" in p and "GeoTIFF" in p
                   for p in dialog.problems())
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_dialog_flags_inputs_the_model_does_not_use(dialog, city_layers, tmp_path):
    """A model whose card lacks a modality the user picked: a clear message, before running."""
    from onnx_factory import tiny_card, write_tiny_model
    modality = next(iter(city_layers))
    card = tiny_card("no-" + modality)
    card["inputs"] = [i for i in card["inputs"] if i["modality"] != modality]
    path = write_tiny_model(tmp_path / "partial.onnx", card)
    dialog.set_input(modality, city_layers[modality])
    assert dialog.select_model(path)
    from plugin.core.model_card import MODALITY_LABELS
    problems = dialog.problems()
    assert any(f"does not use {MODALITY_LABELS[modality]}" in p for p in problems), problems
    assert dialog.input_notes[modality].text() == "not used by this model"


def test_dialog_run_adds_styled_layer_and_summary(dialog, city_layers, model_path, tmp_path):
    from qgis.core import QgsPalettedRasterRenderer, QgsProject

    from plugin.core.model_card import read_card
    from plugin.qgis_common.styling import legend_entries
    card = read_card(model_path)
    for modality, layer in city_layers.items():
        dialog.set_input(modality, layer)
    assert dialog.select_model(model_path)
    out = tmp_path / "dialog_run.tif"
    dialog.output_file.setFilePath(str(out))
    dialog.confidence.setChecked(True)
    results, failures = [], []
    dialog.resultReady.connect(lambda result, layer: results.append((result, layer)))
    dialog.runFailed.connect(lambda message, cancelled: failures.append(message))
    task = dialog.run()
    assert task is not None, dialog.problems()
    assert dialog.is_running() and not dialog.run_button.isEnabled()
    assert wait_for(lambda: results or failures, 300), "the task did not finish"
    assert not failures, failures
    result, layer = results[0]
    assert out.exists() and (tmp_path / "dialog_run.qml").exists()
    assert layer is not None and QgsProject.instance().mapLayer(layer.id()) is layer
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    assert legend_entries(layer) == [(c.code, c.label, c.color.lower())
                                     for c in sorted(card.classes, key=lambda c: c.code)]
    assert card.title in layer.name() and "dialog_run" in layer.name()
    assert dialog.progress.value() == 100 and dialog.run_button.isEnabled()
    # the QGIS message bar says which provider ran, how long it took and the areas
    texts = [text for _title, text, _level in dialog.iface.message_texts()]
    summary = next(t for t in texts if t.startswith("Done in"))
    assert "CPU" in summary or "CUDA" in summary
    assert " ha" in summary or " km²" in summary
    biggest = max(result.class_areas, key=lambda c: c.area_m2)
    assert biggest.label in summary

    # running again onto the same file refreshes that layer instead of adding a duplicate
    dialog.overwrite.setChecked(True)
    results.clear()
    assert dialog.run() is not None, dialog.problems()
    assert wait_for(lambda: results or failures, 300) and not failures, failures
    assert results[0][1].id() == layer.id()
    same_file = [lyr for lyr in QgsProject.instance().mapLayers().values()
                 if lyr.source() == str(out)]
    assert len(same_file) == 1


def test_dialog_run_in_polygon_leaves_transparent_nodata(dialog, city_layers, model_path,
                                                         tmp_path):
    """Cells outside the polygon are 0 (nodata) and render fully transparent."""
    from qgis.core import (QgsFeature, QgsGeometry, QgsMapRendererSequentialJob,
                           QgsMapSettings, QgsProject, QgsVectorLayer)
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor
    for modality, layer in city_layers.items():
        dialog.set_input(modality, layer)
    dialog.select_model(model_path)
    ref = next(iter(city_layers.values()))
    e = ref.extent()
    poly = QgsVectorLayer(f"Polygon?crs={ref.crs().authid()}", "circle", "memory")
    feat = QgsFeature()
    feat.setGeometry(QgsGeometry.fromPointXY(e.center()).buffer(min(e.width(), e.height()) / 3, 32))
    poly.dataProvider().addFeatures([feat])
    QgsProject.instance().addMapLayer(poly)
    dialog.set_area_mode("polygons")
    dialog.aoi_combo.setLayer(poly)
    dialog.output_file.setFilePath(str(tmp_path / "circle.tif"))
    results, failures = [], []
    dialog.resultReady.connect(lambda result, layer: results.append(layer))
    dialog.runFailed.connect(lambda message, cancelled: failures.append(message))
    assert dialog.run() is not None, dialog.problems()
    assert wait_for(lambda: results or failures, 300)
    assert not failures, failures
    layer = results[0]
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(100, 100))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    assert QColor(image.pixelColor(1, 1)).alpha() == 0, "corner outside the circle: transparent"
    assert QColor(image.pixelColor(50, 50)).alpha() == 255, "centre: a class colour"


def test_dialog_cancel_leaves_no_file(dialog, city_layers, model_path, tmp_path):
    for modality, layer in city_layers.items():
        dialog.set_input(modality, layer)
    dialog.select_model(model_path)
    out = tmp_path / "cancelled.tif"
    dialog.output_file.setFilePath(str(out))
    from plugin.core.model_card import read_card
    dialog.tile_size.setValue(read_card(model_path).tile_multiple())  # many small tiles
    dialog.overlap.setValue(0)
    failures = []
    dialog.runFailed.connect(lambda message, cancelled: failures.append((message, cancelled)))
    done = []
    dialog.resultReady.connect(lambda *a: done.append(a))
    task = dialog.run()
    assert task is not None
    wait_for(lambda: task.progress() > 0 or failures or done, 60)
    dialog.cancel()
    assert wait_for(lambda: failures or done, 120)
    if done:
        pytest.skip("the run finished before it could be cancelled")
    message, cancelled = failures[0]
    assert cancelled and "ancel" in message
    assert not [f for f in os.listdir(tmp_path) if "cancelled" in f]
    assert dialog.run_button.isEnabled() and not dialog.cancel_button.isEnabled()


def test_dialog_remembers_settings(iface, city_layers, model_path, tmp_path, qgis_app):
    from qgis.core import QgsSettings

    from plugin.gui.dialog import ClassifyDialog
    QgsSettings().remove("UrbanFunctions")
    first = ClassifyDialog(iface)
    for modality, layer in city_layers.items():
        first.set_input(modality, layer)
    first.select_model(model_path)
    first.output_file.setFilePath(str(tmp_path / "remember.tif"))
    first.confidence.setChecked(True)
    first.overwrite.setChecked(True)
    first.optional_outputs.setChecked(True)
    first.batch_size.setValue(7)
    first.tile_size.setValue(48)
    first.device.setCurrentIndex(first.device.findData("cpu"))
    first.set_area_mode("canvas")
    first.save_settings()
    first.deleteLater()
    second = ClassifyDialog(iface)
    try:
        assert {m: lyr.id() for m, lyr in second.selected_inputs().items()} == \
            {m: lyr.id() for m, lyr in city_layers.items()}
        assert second.selected_model()[0] == model_path
        assert second.output_file.filePath() == str(tmp_path / "remember.tif")
        assert second.confidence.isChecked() and second.overwrite.isChecked()
        assert second.optional_outputs.isChecked()
        assert second.batch_size.value() == 7 and second.tile_size.value() == 48
        assert second.device.currentData() == "cpu" and second.area_mode() == "canvas"
    finally:
        second.deleteLater()


def test_default_model_follows_the_chosen_inputs(dialog, city_layers):
    from conftest import bundled_models
    if not bundled_models():
        pytest.skip("no bundled model in models/ yet")
    from plugin.core.models import default_model_for
    for modality, layer in city_layers.items():
        dialog.set_input(modality, layer)
    paths = {m: layer.source() for m, layer in city_layers.items()}
    expected = default_model_for(list(city_layers), inputs=paths)
    assert expected.card.name == "sample-city-fusion"     # the sample city's demo model
    assert dialog.selected_model()[0] == expected.path
    assert expected.card.summary in dialog.model_info.text()
    assert "simulated data only" in dialog.model_info.text()


# --- Load sample city -------------------------------------------------------------------------
def test_load_sample_city_adds_tagged_layers(iface, clean_project, urban_functions_package,
                                             tmp_path, processing_app):
    try:
        from plugin.samplecity import generate_sample_city  # noqa: F401
    except ImportError:
        pytest.skip("plugin.samplecity is not available yet")
    from plugin.qgis_common.styling import PROP_MODALITY
    _remove_registered_provider()
    plugin = urban_functions_package.classFactory(iface)
    plugin.initGui()
    try:
        task = plugin.load_sample_city(folder=str(tmp_path / "city"))
        assert task is not None
        assert wait_for(lambda: plugin.sample_task is None, 300)
        layers = list(clean_project.mapLayers().values())
        tagged = {lyr.customProperty(PROP_MODALITY): lyr for lyr in layers
                  if lyr.customProperty(PROP_MODALITY)}
        assert len(tagged) >= 2, [lyr.name() for lyr in layers]
        assert all(lyr.isValid() for lyr in layers)
        group = clean_project.layerTreeRoot().findGroup("Urban Functions sample city")
        assert group is not None and len(group.findLayers()) == len(layers)
        assert any("Sample city loaded" in text for _t, text, _l in iface.message_texts())
        dialog = plugin.show_dialog()
        assert set(dialog.selected_inputs()) == set(tagged)
    finally:
        plugin.unload()


def test_summary_formats():
    from types import SimpleNamespace

    from plugin.qgis_common.summary import format_area, format_seconds, short_summary, text_summary
    assert format_area(12345) == "1.2 ha"
    assert format_area(25e6) == "25.00 km²"
    assert format_seconds(75) == "1 min 15 s"
    areas = [SimpleNamespace(code=1, name="residential", label="Residential", color="#e8a33d",
                             cells=100, area_m2=10000.0),
             SimpleNamespace(code=7, name="water", label="Water", color="#a6dbf0", cells=0,
                             area_m2=0.0)]
    result = SimpleNamespace(class_areas=areas, provider="CPUExecutionProvider", seconds=1.25,
                             output_path="/x/out.tif", manifest_path="/x/out.manifest.json",
                             card=SimpleNamespace(title="T"))
    assert short_summary(result) == \
        "Done in 1.2 s on CPU (CPUExecutionProvider). Residential 1.0 ha"
    text = text_summary(result)
    assert "Residential" in text and "Water" not in text and "Total" in text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
