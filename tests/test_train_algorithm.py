"""``urbanfunctions:train`` end to end through real QGIS Processing, torch and onnxruntime: on
the sample city (always) and on a small real subset of ../shared (Sentinel-2 clip + real
OpenStreetMap land use; skipped without it). The trained model then runs through
``urbanfunctions:classify`` and is picked by default over its area, never a simulation-only
model for real inputs."""
import json
import os

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from test_processing_algorithm import (CollectingFeedback, copied_inputs, folder_state,
                                       qgis_process_env)

pytest.importorskip("torch", reason="torch is not installed (training extra)")
pytestmark = pytest.mark.usefixtures("provider")
gdal.UseExceptions()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
S2 = os.path.join(SHARED, "s2", "ketzin_20170216_s2l1c_10band.tif")
OSM = os.path.join(SHARED, "osm", "havelland_osm_landuse_west.gpkg")
KEYS = ("residential", "commercial", "industrial", "transportation", "public_services",
        "green_space", "water", "agricultural_undeveloped")


def gt_points(gt_path, out, n=1500, seed=0, epsg=4326, drop=(), keep_only=None):
    """Points at random ground-truth cells of the sample city, class names in ``function``,
    stored in ``epsg`` (not the rasters' CRS). ``drop``: classes left out; ``keep_only``:
    {class: count} caps."""
    ds = gdal.Open(gt_path)
    gt = ds.GetGeoTransform()
    codes = ds.ReadAsArray()
    src = osr.SpatialReference(wkt=ds.GetProjection())
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(epsg)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(src, dst)
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(codes > 0)
    pick = rng.choice(rows.size, min(n, rows.size), replace=False)
    drv = ogr.GetDriverByName("GPKG")
    vds = drv.CreateDataSource(str(out))
    lyr = vds.CreateLayer("city_points", srs=dst, geom_type=ogr.wkbPoint)
    lyr.CreateField(ogr.FieldDefn("function", ogr.OFTString))
    taken = {}
    for i in pick:
        key = KEYS[int(codes[rows[i], cols[i]]) - 1]
        if key in drop:
            continue
        if keep_only and key in keep_only:
            if taken.get(key, 0) >= keep_only[key]:
                continue
        taken[key] = taken.get(key, 0) + 1
        x = gt[0] + (cols[i] + 0.5) * gt[1]
        y = gt[3] + (rows[i] + 0.5) * gt[5]
        px, py, _ = ct.TransformPoint(x, y)
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT({px} {py})"))
        f.SetField("function", key)
        lyr.CreateFeature(f)
    vds = None
    return str(out)


def _train(params, feedback=None):
    import processing
    feedback = feedback or CollectingFeedback()
    return processing.run("urbanfunctions:train", params, feedback=feedback), feedback


def _files(folder):
    return sorted(os.listdir(folder))


@pytest.fixture(scope="module")
def city_model(sample_city, tmp_path_factory):
    """A model trained on sample-city points (S2 summer + NTL), one epoch."""
    folder = tmp_path_factory.mktemp("trained")
    labels = gt_points(sample_city.ground_truth, folder / "points.gpkg",
                       drop=("commercial",), keep_only={"water": 20})
    out = folder / "city.onnx"
    result, feedback = _train({
        "S2_SUMMER": sample_city.inputs["s2_summer"], "NTL": sample_city.inputs["ntl"],
        "LABELS": labels, "LABEL_FIELD": "function", "EPOCHS": 1, "MAX_MINUTES": 5,
        "BLOCK_SIZE": 600, "OUTPUT_MODEL": str(out)})
    return result, feedback, out, labels


def test_train_writes_model_card_metrics_and_report(city_model, sample_city):
    result, feedback, out, labels = city_model
    assert result["MODEL"] == str(out) and out.exists()
    stem = str(out)[:-5]
    for extra in (".md", "_metrics.json", "_report.html"):
        assert os.path.exists(stem + extra), extra
    assert result["REPORT"] == stem + "_report.html"
    assert not [f for f in os.listdir(out.parent) if "partial" in f or f.startswith("tmp")]
    from plugin.core.model_card import read_card
    card = read_card(str(out))
    raw = card.raw
    assert raw["trained_on"] == "user labels" and card.user_trained
    assert card.validated_on_real_data
    assert card.modalities == ("ntl", "s2_summer")      # only what it was trained on
    assert raw["base_model"]["name"] == "urban-fusion" and len(raw["base_model"]["sha256"]) == 64
    lab = raw["labels"]
    assert "points" in lab["layer"] and lab["features"] > 1000 and lab["kind"] == "points"
    assert len(lab["sha256"]) == 64 and lab["field"] == "function"
    assert raw["class_map"]["used"]["water"] == "water"
    s2 = card.input_for("s2_summer").label
    assert "surface reflectance" not in s2, "the bundled card's words for its simulated data"
    assert os.path.basename(sample_city.inputs["s2_summer"]) in s2 and "L1C or L2A" in s2
    assert raw["training"]["seed"] == 0 and raw["training"]["epochs"] == 1
    assert raw["training"]["device"] == "cpu" and raw["training"]["time_s"] > 0
    assert raw["extent"]["crs_wkt"] and raw["coverage"]["bounds"]
    m = raw["metrics"]
    assert set(m["comparisons"]) == {"random_forest", "untrained_base"}
    assert 0.0 <= m["validation"]["overall_accuracy"] <= 1.0
    assert m["split"]["validation_cells"] > 0 and m["split"]["buffer_cells"] >= 20
    assert m["onnx_torch_parity_max_abs_diff"] < 1e-4
    assert json.loads(result["METRICS"])["validation"] == m["validation"]
    # fused inputs never below the best single input on the held-out blocks: each input group
    # alone was scored, and classify's own score is at least the best of them
    check = raw["input_check"]
    assert set(check) == {"all", "s2", "ntl"}
    assert m["validation"]["overall_accuracy"] >= max(check.values()) - 0.005
    best = max(check, key=check.get)
    assert raw.get("ignored_inputs", []) == ([] if best == "all" else
                                             [x for x in ("ntl", "s2_summer")
                                              if not x.startswith(best)])
    # the averaged test-time views and one view are both scored on the held-out blocks;
    # classify's default is the better (a tie: fast), and the card's validation is that mode's
    modes = m["by_inference_mode"]
    assert set(modes) == {"accurate", "fast"}
    oa = {k: v["overall_accuracy"] for k, v in modes.items()}
    assert card.output.default_mode == ("accurate" if oa["accurate"] > oa["fast"] else "fast")
    assert m["validation"]["overall_accuracy"] == max(oa.values())
    assert oa["accurate"] != oa["fast"], "both modes ran, and they do not give the same map"
    assert card.output.test_time_views == ("identity", "flip_x", "flip_y", "transpose")
    html = open(stem + "_report.html", encoding="utf-8").read()
    assert "Inference modes on the held-out blocks" in html
    assert "<svg" in html and "RandomForest baseline" in html and "Labels used" in html
    assert "Each input on the held-out blocks" in html
    texts = " ".join(feedback.infos)
    assert f"classify uses {card.output.default_mode} by default with this model" in texts
    # the run's warnings travel with the model (card, Markdown, report); the Markdown card
    # gives the area and CRS, and the command repeats the run
    assert any(w.startswith("Warning: no labels for commercial") for w in raw["warnings"])
    md = open(stem + ".md", encoding="utf-8").read()
    assert "## Warnings of the training run" in md and "no labels for commercial" in md
    assert "## Area" in md and f"{raw['extent']['cells'][0]} x" in md
    assert "Warning: no labels for commercial" in html
    cmd = raw["training"]["command"]
    for part in (f"S2_SUMMER={os.path.basename(sample_city.inputs['s2_summer'])}",
                 "LABELS=points.gpkg", "LABEL_FIELD=function", "BASE_MODEL=urban-fusion",
                 "BLOCK_SIZE=600", "SEED=0", "EPOCHS=1"):
        assert part in cmd, (part, cmd)
    assert "Warning: no labels for commercial" in texts
    # a class without training labels is switched off in the exported model, and said so
    assert raw["training"]["classes_not_predicted"] == ["commercial"]
    assert "It never predicts commercial" in raw["limitations"]
    assert "Not predicted by the trained model: commercial" in texts
    assert "Warning: few labels" in texts and "water" in texts.split("Warning: few labels")[1]
    assert any(t.startswith("Epoch 1 of 1") for t in feedback.texts)


def test_exported_model_matches_torch(city_model):
    """ONNX/torch parity of the trained model, rebuilt from the file's own weights."""
    import onnxruntime as ort
    import torch
    from plugin.core.model_card import read_card
    from plugin.learning.fusion.net import UrbanFusionNet
    from plugin.learning.fusion.subset import SubsetFusionModel
    from plugin.learning.onnx_io import load_matching_weights
    from plugin.learning.user_export import example_inputs
    _, _, out, _ = city_model
    card = read_card(str(out))
    net = UrbanFusionNet(**card.raw["architecture"]["config"])
    # the graph keeps only the weights of the streams it runs (no temporal signature, no heads
    # of the other seasons)
    copied, skipped = load_matching_weights(net, str(out))
    assert any(k.startswith("s2_") for k in copied) and any(k.startswith("ntl_") for k in copied)
    assert "season_heads.0.weight" in skipped and "season_heads.1.weight" in copied
    assert any(k.startswith("temporal_encoder.") for k in skipped)
    off = [KEYS.index(k) for k in card.raw["training"]["classes_not_predicted"]]
    assert off == [1]   # commercial: no labels in the fixture
    model = SubsetFusionModel(net, card.modalities, off_classes=off).eval()
    x = example_inputs(model, 1, 40, 56, seed=5, valid_prob=0.9)
    with torch.no_grad():
        ref = [t.numpy() for t in model(*x)]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, dict(zip(list(card.modalities) + ["valid"], [t.numpy() for t in x])))
    assert max(float(np.abs(a - b).max()) for a, b in zip(ref, got)) < 1e-4
    # the switched-off class has probability 0 in the graph; the others still sum to 1
    assert float(got[0][:, 1].max()) == 0.0
    assert np.allclose(got[0].sum(axis=1), 1.0, atol=1e-5)


def test_trained_model_runs_through_classify_and_is_the_default_there(city_model, sample_city,
                                                                       tmp_path):
    import processing
    from plugin.core.models import default_model_for
    _, _, out, _ = city_model
    inputs = {"s2_summer": sample_city.inputs["s2_summer"], "ntl": sample_city.inputs["ntl"]}
    feedback = CollectingFeedback()
    res = processing.run("urbanfunctions:classify", {
        "S2_SUMMER": inputs["s2_summer"], "NTL": inputs["ntl"], "MODEL": str(out),
        "OUTPUT": str(tmp_path / "map.tif")}, feedback=feedback)
    with open(str(tmp_path / "map.manifest.json"), encoding="utf-8") as f:
        mode = json.load(f)["tiling"]["inference_mode"]
    assert "This model never predicts commercial: its training labels had none." in \
        feedback.infos
    from plugin.core.model_card import read_card
    assert mode == read_card(str(out)).output.default_mode
    ds = gdal.Open(res["OUTPUT"])
    codes = ds.ReadAsArray()
    assert codes.max() > 0 and len(np.unique(codes[codes > 0])) >= 3
    assert not (codes == 2).any(), "commercial had no labels: switched off"
    # over its own area a user-trained model that holds up comes first, before the sample
    # city's demo model; one that scored below its baseline is never the default
    chosen = default_model_for(list(inputs), extra_dirs=[str(out.parent)], inputs=inputs)
    if read_card(str(out)).holds_up:
        assert chosen.path == str(out)
    else:
        assert chosen.path != str(out) and chosen.card.purpose == "demo"


def test_cancel_leaves_no_model(sample_city, tmp_path):
    labels = gt_points(sample_city.ground_truth, tmp_path / "p.gpkg", n=400)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    from qgis.core import QgsProcessingException
    feedback = CollectingFeedback()
    feedback.progressChanged.connect(
        lambda v: feedback.cancel() if v > 15 and not feedback.isCanceled() else None)
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        _train({"S2_SUMMER": sample_city.inputs["s2_summer"], "LABELS": labels,
                "LABEL_FIELD": "function", "EPOCHS": 3, "BLOCK_SIZE": 600,
                "OUTPUT_MODEL": str(out_dir / "m.onnx")}, feedback)
    assert _files(out_dir) == []


def test_qgis_process_trains_with_the_plugins_own_packages(sample_city, tmp_path):
    """qgis_process embeds Debian's Python, whose sympy is too old for torch: the plugin must
    take torch's pure-Python dependencies from its venv (while h5py/GDAL stay the system's), and
    leave the inputs and the label layer untouched."""
    import subprocess
    exe, env = qgis_process_env(tmp_path)
    inputs, _ = copied_inputs({"s2": sample_city.inputs["s2_summer"],
                                    "ntl": sample_city.inputs["ntl"]}, tmp_path / "inputs")
    labels = gt_points(sample_city.ground_truth, tmp_path / "inputs" / "points.gpkg", n=500)
    before = folder_state(tmp_path / "inputs")
    out = tmp_path / "cli.onnx"
    run = subprocess.run([exe, "--json", "run", "urbanfunctions:train", "--",
                          f"S2_SUMMER={inputs['s2']}", f"NTL={inputs['ntl']}", f"LABELS={labels}",
                          "LABEL_FIELD=function", "EPOCHS=1", "BLOCK_SIZE=600",
                          f"OUTPUT_MODEL={out}"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(run.stdout[run.stdout.index("{"):])["results"]
    assert os.path.samefile(results["MODEL"], str(out))
    assert json.loads(results["METRICS"])["validation"]["cells"] > 0
    assert folder_state(tmp_path / "inputs") == before


def test_unknown_label_value_stops_with_the_list(sample_city, tmp_path):
    path = gt_points(sample_city.ground_truth, tmp_path / "p.gpkg", n=50)
    ds = ogr.Open(path, 1)
    lyr = ds.GetLayer(0)
    f = lyr.GetNextFeature()
    f.SetField("function", "Kleingartenanlage")
    lyr.SetFeature(f)
    ds = None
    from qgis.core import QgsProcessingException
    with pytest.raises(QgsProcessingException) as err:
        _train({"S2_SUMMER": sample_city.inputs["s2_summer"], "LABELS": path,
                "LABEL_FIELD": "function", "OUTPUT_MODEL": str(tmp_path / "m.onnx")})
    assert "'Kleingartenanlage'" in str(err.value) and "default.csv" in str(err.value)
    assert not (tmp_path / "m.onnx").exists()


def test_existing_model_is_not_overwritten(city_model, sample_city):
    _, _, out, labels = city_model
    before = out.read_bytes()
    from qgis.core import QgsProcessingException
    with pytest.raises(QgsProcessingException, match="already exists"):
        _train({"S2_SUMMER": sample_city.inputs["s2_summer"], "LABELS": labels,
                "LABEL_FIELD": "function", "OUTPUT_MODEL": str(out)})
    assert out.read_bytes() == before


def test_simulation_only_models_are_never_the_default_for_real_inputs(sample_city, tmp_path,
                                                                      city_model):
    """Real layers (no sample-city tag): urban-fusion (simulation only) is not picked; with no
    validated model for Sentinel-2 the message says how to get one, and names a model of the
    user's that scored below its baseline as such (not as unvalidated)."""
    from plugin.core.errors import ModelError
    from plugin.core.models import default_model_for
    plain = tmp_path / "s2_copy.tif"
    gdal.Translate(str(plain), sample_city.inputs["s2_summer"])
    ds = gdal.Open(str(plain), gdal.GA_Update)
    ds.SetMetadata({})     # no sample-city tag: a user's layer
    ds = None
    with pytest.raises(ModelError) as err:
        default_model_for(["s2_summer"], extra_dirs=[str(tmp_path / "none")],
                          inputs={"s2_summer": str(plain)})
    assert "validated on real data" in str(err.value) and "So2Sat" in str(err.value)
    assert "train" in str(err.value).lower()
    from plugin.core.model_card import read_card
    from plugin.learning.onnx_io import set_card
    card = json.loads(json.dumps(read_card(str(city_model[2])).raw))
    card["name"], card["real_data_validation"]["holds_up"] = "mine-below-baseline", False
    mine = tmp_path / "mine"
    mine.mkdir()
    set_card(str(city_model[2]), card, str(mine / "mine.onnx"))
    with pytest.raises(ModelError) as err:
        default_model_for(["s2_summer"], extra_dirs=[str(mine)],
                          inputs={"s2_summer": str(plain)})
    words = str(err.value)
    assert "mine-below-baseline: trained on your labels, but below its baseline" in words
    assert "MODEL=<name>" in words and "urban-fusion: simulation only" in words
    # the sample city itself still gets the demo model
    chosen = default_model_for(["s2_summer"], inputs={"s2_summer": sample_city.inputs["s2_summer"]})
    assert chosen.card.purpose == "demo"


@pytest.mark.skipif(not (os.path.isfile(S2) and os.path.isfile(OSM)),
                    reason="needs ../shared/data/s2 and ../shared/data/osm (real data)")
def test_train_on_real_osm_land_use_and_classify(tmp_path):
    """Real Sentinel-2 + real OpenStreetMap polygons (another layer CRS is handled by the
    rasterisation tests): a 4.8 x 3.2 km corner, one epoch; the model then maps the clip."""
    import processing
    out = tmp_path / "havelland.onnx"
    # the western corner of the clip, with 800 m blocks
    extent = "330000,334800,5818840,5822040 [EPSG:32633]"
    result, feedback = _train({"S2_WINTER": S2, "LABELS": OSM, "LABEL_FIELD": "fclass",
                               "EXTENT": extent, "BLOCK_SIZE": 800, "EPOCHS": 1,
                               "OUTPUT_MODEL": str(out)})
    from plugin.core.model_card import read_card
    card = read_card(str(out))
    assert card.raw["labels"]["kind"] == "polygons" and card.raw["labels"]["field"] == "fclass"
    used = card.raw["class_map"]["used"]
    assert used["forest"] == "green_space" and used["meadow"] == "agricultural_undeveloped"
    assert card.raw["metrics"]["validation"]["cells"] > 1000
    res = processing.run("urbanfunctions:classify", {
        "S2_WINTER": S2, "MODEL": str(out), "OUTPUT": str(tmp_path / "map.tif"),
        "EXTENT": extent}, feedback=CollectingFeedback())
    assert gdal.Open(res["OUTPUT"]).ReadAsArray().max() > 0


def test_classify_is_told_how_it_reaches_a_trained_model(city_model):
    """In the user models folder: by default (or by name when it does not hold up); elsewhere:
    by its path only, and the sentence says so."""
    from plugin.qgis_common.user_models import how_to_use, user_models_dir
    inside = os.path.join(user_models_dir(), "x.onnx")
    assert how_to_use(inside, "x", True).startswith("Classify uses it by default")
    assert "give MODEL=x to use it anyway" in how_to_use(inside, "x", False)
    out = str(city_model[2])
    assert f"given its path: MODEL={out}" in how_to_use(out, "city", True)
    assert "picks it by default" in how_to_use(out, "city", True)
    # one that does not hold up is not promised as a default anywhere
    below = how_to_use(out, "city", False)
    assert "picks it by default" not in below and "does not hold up" in below


def test_a_short_time_limit_is_said_after_the_first_epoch(sample_city, tmp_path):
    """MAX_MINUTES=1 without EPOCHS: the epochs get what the limit leaves (at least 30 s), and
    the log, the card and the report say that is too few, with the limit that would do."""
    labels = gt_points(sample_city.ground_truth, tmp_path / "pts.gpkg", n=600)
    out = tmp_path / "short.onnx"
    result, feedback = _train({
        "S2_SUMMER": sample_city.inputs["s2_summer"], "LABELS": labels,
        "LABEL_FIELD": "function", "MAX_MINUTES": 1, "BLOCK_SIZE": 600,
        "OUTPUT_MODEL": str(out)})
    advice = [t for t in feedback.infos if t.startswith("Warning: MAX_MINUTES=1 leaves time")]
    assert len(advice) == 1 and "For 8 epochs give MAX_MINUTES=" in advice[0]
    from plugin.core.model_card import read_card
    raw = read_card(str(out)).raw
    assert raw["training"]["epochs"] < 8 and advice[0] in raw["warnings"]
    assert advice[0] in open(str(out)[:-5] + ".md", encoding="utf-8").read()


def _wait(done, seconds=900):
    import time
    from qgis.core import QgsApplication
    end = time.time() + seconds
    while not done and time.time() < end:
        QgsApplication.processEvents()
        time.sleep(0.05)
    assert done, "the training task did not finish"


def test_train_dialog_runs_as_a_task_with_progress_and_cancel(sample_city, tmp_path):
    """"Train on my area": the layers and labels picked in the dialog, a background task with
    per-epoch progress and the held-out score, the model written; then Cancel writes nothing."""
    from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
    from plugin.gui.train_dialog import TrainDialog
    labels = gt_points(sample_city.ground_truth, tmp_path / "dock_points.gpkg", n=800)
    project = QgsProject.instance()
    s2 = QgsRasterLayer(sample_city.inputs["s2_summer"], "s2 summer", "gdal")
    pts = QgsVectorLayer(labels, "dock points", "ogr")
    project.addMapLayers([s2, pts])
    dlg = TrainDialog()
    try:
        dlg.input_combos["s2_summer"].setLayer(s2)
        dlg.labels_combo.setLayer(pts)
        dlg.field_combo.setField("function")
        assert "Choose" not in (dlg.problem(dlg.parameters()) or "")
        dlg.epochs.setValue(1)
        out = tmp_path / "dialog_model.onnx"
        dlg.output.setFilePath(str(out))
        assert dlg.parameters()["OVERWRITE"] is False     # an existing model is never replaced
        dlg.overwrite.setChecked(True)
        assert dlg.parameters()["OVERWRITE"] is True
        dlg.overwrite.setChecked(False)
        done = []
        dlg.finished_training.connect(lambda ok, r: done.append(ok))
        assert dlg.start() is not None and not dlg.train_button.isEnabled()
        _wait(done)
        assert done == [True] and out.exists()
        assert dlg.progress.value() == 100 and "Trained" in dlg.status.text()
        assert "Held-out blocks: overall agreement" in dlg.status.text()
        assert "RandomForest" in dlg.status.text()
        import json
        assert "holds_up" in json.loads(dlg.results["METRICS"])
        # saved outside the folders classify lists: classify reaches it by its path only, and
        # the dialog says so (not "by default")
        assert f"given its path: MODEL={out}" in dlg.status.text()
        assert "uses it by default" not in dlg.status.text()
        log = dlg.log.toPlainText()
        assert "Epoch 1/1" in log and "held-out blocks OA" in log and "RandomForest" in log
        # a second run, cancelled: nothing written
        out2 = tmp_path / "cancelled.onnx"
        dlg.output.setFilePath(str(out2))
        dlg.epochs.setValue(5)
        done.clear()
        dlg.feedback = None
        dlg.start()
        dlg.feedback.progressChanged.connect(
            lambda v: dlg.cancel() if v > 15 and not dlg.feedback.isCanceled() else None)
        _wait(done)
        assert done == [False] and "nothing was written" in dlg.status.text()
        assert not [f for f in os.listdir(tmp_path) if f.startswith("cancelled")]
    finally:
        dlg.close()
        project.removeMapLayers([s2.id(), pts.id()])


def test_output_model_path_is_an_onnx_file(tmp_path):
    """A name without .onnx gets it (also a dotted version), a folder or another file type is
    refused: 'x.tif' must not become 'x.tif.onnx' beside a raster."""
    from qgis.core import QgsProcessingException

    from plugin.processing_provider.train_algorithm import model_output_path
    assert model_output_path(str(tmp_path / "berlin_v1.2")) == str(tmp_path / "berlin_v1.2.onnx")
    assert model_output_path(str(tmp_path / "m.ONNX")) == str(tmp_path / "m.ONNX")
    for bad, words in ((tmp_path / "m.tif", "not .tif"), (tmp_path / "labels.gpkg", "not .gpkg"),
                       (tmp_path, "is a folder")):
        with pytest.raises(QgsProcessingException, match=words):
            model_output_path(str(bad))
