"""Adapting the VHR scene model to the user's imagery: ``urbanfunctions:train`` with
BASE_MODEL=vhr-scenes-resnet fine-tunes the patch classifier on the patches classify feeds, and
the scale the engine reads VHR at agrees with training. Real QGIS Processing, GDAL, torch and
onnxruntime; the mosaic of real scenes needs ../shared (skipped without it)."""
import json
import os

import numpy as np
import pytest
from osgeo import gdal, ogr

from test_processing_algorithm import CollectingFeedback
from test_train_algorithm import gt_points

pytest.importorskip("torch", reason="torch is not installed (training extra)")
gdal.UseExceptions()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENES = os.path.join(os.path.dirname(ROOT), "shared", "data", "vhr_scenes")
VHR_MODEL = os.path.join(ROOT, "models", "vhr_scenes_resnet.onnx")


def _corner_extent(path, cells=40, cell=30.0):
    """A ``cells`` x ``cells`` corner (30 m cells) of a raster, as a Processing extent string."""
    ds = gdal.Open(path)
    gt = ds.GetGeoTransform()
    from osgeo import osr
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    epsg = srs.GetAuthorityCode(None)
    x0, y1 = gt[0] + 300.0, gt[3] - 300.0
    return f"{x0},{x0 + cells * cell},{y1 - cells * cell},{y1} [EPSG:{epsg}]"


def test_patch_store_windows_are_the_patches_classify_feeds(sample_city):
    """One data path: a training patch is the window the engine's PatchReader feeds the
    network for the same cell."""
    from plugin.core.grid import plan_grid
    from plugin.core.model_card import read_card
    from plugin.core.patches import PatchReader
    from plugin.learning.patch_training import PatchStore
    card = read_card(VHR_MODEL)
    inputs = {"vhr": sample_city.inputs["vhr"]}
    full = plan_grid(card, inputs)
    grid = plan_grid(card, inputs, (full.left + 600, full.top - 2100, full.left + 1800,
                                    full.top - 600, full.crs_wkt))
    store = PatchStore(card, inputs, grid)
    p = card.patch
    with PatchReader(card, inputs, grid) as reader:
        for col, row, w, h in ((0, 0, 8, 8), (13, 21, 9, 5), (grid.width - 6, 31, 6, 9)):
            windows, valid = reader.read(col, row, w, h)
            x, cells = windows["vhr"]
            view = np.lib.stride_tricks.sliding_window_view(
                x, (p.patch_px, p.patch_px), axis=(1, 2))[:, ::p.stride_px, ::p.stride_px]
            rr, cc = np.nonzero(cells)
            fed = view[:, rr, cc].transpose(1, 0, 2, 3)
            got = store.patches(rr + row, cc + col)
            assert got.shape == fed.shape and np.array_equal(got, fed), (col, row)
            assert np.array_equal(store.cells[row:row + h, col:col + w], valid)
    feats = store.cell_features()
    assert feats.shape == (grid.height, grid.width, 12) and np.isfinite(feats).all()


@pytest.mark.usefixtures("provider")
def test_train_fine_tunes_the_vhr_scene_model_and_classify_runs_it(sample_city, tmp_path):
    """VHR alone, BASE_MODEL empty: the scene model is fine-tuned on the patches classify
    feeds; card, parity, comparisons, and classify runs the result."""
    import processing
    from plugin.core.model_card import read_card
    import shutil
    labels = gt_points(sample_city.ground_truth, tmp_path / "points.gpkg", n=2500, epsg=3857)
    out = tmp_path / "vhr_city.onnx"
    (tmp_path / "in").mkdir()
    vhr = str(tmp_path / "in" / "vhr.tif")
    shutil.copy(sample_city.inputs["vhr"], vhr)
    extent = _corner_extent(vhr)
    feedback = CollectingFeedback()
    result = processing.run("urbanfunctions:train", {
        "VHR": vhr, "LABELS": labels, "LABEL_FIELD": "function",
        "EXTENT": extent, "BLOCK_SIZE": 300, "EPOCHS": 2,
        "MAX_MINUTES": 5, "OUTPUT_MODEL": str(out)}, feedback=feedback)
    assert result["MODEL"] == str(out) and out.exists()
    for extra in (".md", "_metrics.json", "_report.html"):
        assert os.path.exists(str(out)[:-5] + extra)
    card = read_card(str(out))
    raw = card.raw
    assert card.task == "patch_classification" and card.user_trained
    assert card.patch.gsd_m == read_card(VHR_MODEL).patch.gsd_m    # the base's geometry
    assert raw["base_model"]["name"] == "vhr-scenes-resnet"
    assert len(raw["base_model"]["sha256"]) == 64
    assert raw["labels"]["kind"] == "points" and raw["training"]["epochs"] == 2
    assert raw["architecture"]["test_time_views"] == ["identity", "flip_x", "flip_y",
                                                      "transpose"]
    m = raw["metrics"]
    assert set(m["comparisons"]) == {"random_forest", "untrained_base"}
    assert m["onnx_torch_parity_max_abs_diff"] < 1e-4
    assert m["split"]["buffer_cells"] == 2           # the 96 m window reaches 2 cells out
    # scored window by window on the held-out blocks; classify keeps the base model's shared
    # trunk mode, and the card says both
    base_mode = read_card(VHR_MODEL).patch.default_mode
    assert card.patch.trunk_stride == 32 and card.patch.default_mode == base_mode == "accurate"
    assert "window by window" in raw["training"]["held_out_scoring"]
    assert "window by window" in raw["patch"]["shared_trunk"]["note"]
    assert "learning without forgetting" in raw["training"]["loss"]
    # simulated imagery is far from the scene model's real training images: two epochs on the
    # city's own labels must beat the untrained model on the held-out blocks
    assert m["validation"]["overall_accuracy"] > \
        m["comparisons"]["untrained_base"]["overall_accuracy"] + 0.1
    assert json.loads(result["METRICS"])["validation"] == m["validation"]
    assert any("Untrained vhr-scenes-resnet" in t for t in feedback.infos)
    # BASE_MODEL empty with VHR alone: the real-data scene model is the measured best start
    assert any(t.startswith("Starting point: the VHR scene model") for t in feedback.infos)
    assert os.listdir(tmp_path / "in") == ["vhr.tif"]     # no sidecar beside the input
    res = processing.run("urbanfunctions:classify", {
        "VHR": vhr, "MODEL": str(out), "EXTENT": extent,
        "OUTPUT": str(tmp_path / "map.tif")}, feedback=CollectingFeedback())
    codes = gdal.Open(res["OUTPUT"]).ReadAsArray()
    assert codes.shape == (40, 40) and len(np.unique(codes[codes > 0])) >= 3
    with open(res["MANIFEST"], encoding="utf-8") as f:
        assert json.load(f)["tiling"]["inference_mode"] == "accurate"


def test_scene_model_cannot_start_from_so2sat(sample_city, tmp_path):
    from plugin.core.errors import InputError
    from plugin.learning.labels import read_label_file
    from plugin.learning.user_training import TrainRequest, VHR_SCENES, run_training
    labels = read_label_file(gt_points(sample_city.ground_truth, tmp_path / "p.gpkg", n=50),
                             "function")
    with pytest.raises(InputError, match="no So2Sat start"):
        run_training(TrainRequest(inputs={"vhr": sample_city.inputs["vhr"]}, labels=labels,
                                  output_path=str(tmp_path / "m.onnx"), base_model=VHR_SCENES,
                                  s2_trunk=VHR_SCENES))
    assert os.listdir(tmp_path) == ["p.gpkg"]


def test_bundled_card_reads_vhr_at_the_scale_it_was_trained_at():
    """A training scene is one 96 px window (UC Merced: 76.8 m, i.e. 0.8 m per pixel, 0.56-1.08
    m with the scale jitter); the engine reads 96 px at 1 m with one 30 m cell per window, and
    the card records the map-level study behind that choice."""
    from plugin.core.model_card import read_card
    card = read_card(VHR_MODEL)
    assert card.patch.patch_px == 96 and card.patch.gsd_m == 1.0
    assert card.patch.stride_px * card.patch.gsd_m == card.output.gsd_m == 30.0
    level = card.raw["metrics"]["map_level"]
    runs = level["runs"]
    assert level["chosen_gsd_m"] == 1.0 and set(runs) == {"1.25 m", "1 m", "0.75 m"}
    assert runs["1 m"]["overall_accuracy"] > runs["1.25 m"]["overall_accuracy"] + 0.02
    assert "confusion_matrix" in runs["1 m"] and runs["1 m"]["cells"] > 1000
    assert f"OA {runs['1 m']['overall_accuracy']:.3f}" in card.validation_summary()


@pytest.mark.skipif(not os.path.isfile(os.path.join(SCENES, "manifest.csv")),
                    reason="../shared/data/vhr_scenes (real scene images) is not available")
def test_mosaic_of_real_scenes_is_a_georeferenced_map_scored_cell_by_cell(tmp_path):
    from plugin.learning.labels import read_label_file
    from plugin.learning.map_scores import map_scores
    from plugin.learning.scene_mosaic import LABEL_FIELD, build_mosaic
    from plugin.learning.vhr_data import load_split, read_manifest
    rows = read_manifest(SCENES)
    split = load_split(rows, SCENES, seed=0, val_fraction=0.2, log=lambda m: None)
    pick = {}
    for r in rows:   # 4 validation scenes each of 3 UC Merced classes
        if (r["dataset"] == "UCM" and split[r["path"]] == "val"
                and r["original_class"] in ("denseresidential", "agricultural", "river")):
            pick.setdefault(r["original_class"], [])
            if len(pick[r["original_class"]]) < 4:
                pick[r["original_class"]].append(r)
    chosen = [r for v in pick.values() for r in v]
    assert len(chosen) == 12
    m = build_mosaic(chosen, SCENES, str(tmp_path / "m.tif"), str(tmp_path / "m.gpkg"),
                     zone_scenes=2, seed=0)
    assert m.zones == 3 and m.gsd_m == 0.3 and m.zone_m == pytest.approx(153.6)
    ds = gdal.Open(m.raster)
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (1024, 1024, 3)  # 2 x 2 zones
    assert ds.GetGeoTransform()[1] == 0.3 and "32633" in ds.GetProjection()
    ds = None
    vds = ogr.Open(m.labels)
    values = sorted(f.GetField(LABEL_FIELD) for f in vds.GetLayer(0))
    vds = None
    assert values == ["agricultural_undeveloped", "residential", "water"]
    s = map_scores(VHR_MODEL, {"vhr": m.raster}, read_label_file(m.labels, LABEL_FIELD))
    # cells fully inside the three 153.6 m zones (at least 4 x 4 each)
    assert s["cells"] >= 48 and s["overall_accuracy"] > 0.6
    assert not [f for f in os.listdir(tmp_path) if "partial" in f]


def test_train_vhr_recipe_trains_on_chosen_sources_only():
    """The one-source-left-out evidence trains the scene model on two sources with the same
    recipe (``--sources``); an unknown source is refused."""
    from plugin.learning.train_vhr import DEFAULTS, parse_args
    args = parse_args(["--sources", "AID, RSSCN7", "--epochs", "1"])
    assert args.sources == ("AID", "RSSCN7") and args.gsd == DEFAULTS["gsd_m"] == 1.0
    assert args.stride_px == DEFAULTS["stride_px"] == 30
    with pytest.raises(SystemExit):
        parse_args(["--sources", "AID,Potsdam"])
