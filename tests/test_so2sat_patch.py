"""The So2Sat LCZ42 network fine-tuned as a patch classifier of functions (``urbanfunctions:train``
with BASE_MODEL = the imported So2Sat model): it starts as exactly the imported model's
LCZ -> functions, trains on the windows classify feeds, exports with parity and runs through
classify. Held-out ground given as rectangles (how the evidence scores models on other grids on
the same blocks). Real QGIS Processing, GDAL, torch and onnxruntime; the So2Sat weights and the
real Sentinel-2 clip come from ../shared (skipped without them)."""
import os

import numpy as np
import pytest
from osgeo import gdal

from test_processing_algorithm import CollectingFeedback

torch = pytest.importorskip("torch", reason="torch is not installed (training extra)")
pytest.importorskip("onnx")
gdal.UseExceptions()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
H5 = os.path.join(SHARED, "so2sat", "S2_RESNET20_BS16_LR2e-4_IN32-32-10_PRO-52-0R12_2019-06-27.h5")
S2 = os.path.join(SHARED, "s2", "ketzin_20170216_s2l1c_10band.tif")
OSM = os.path.join(SHARED, "osm", "havelland_osm_landuse_west.gpkg")
needs_h5 = pytest.mark.skipif(not os.path.isfile(H5), reason=f"So2Sat weights absent ({H5}; "
                              "never part of the repository)")
needs_real = pytest.mark.skipif(
    not all(os.path.isfile(p) for p in (H5, S2, OSM)),
    reason="needs ../shared/data/so2sat, s2 and osm (real data)")
# the western corner of the clip (as in test_train_algorithm), 800 m blocks
EXTENT = (330000.0, 5818840.0, 334800.0, 5822040.0)


@pytest.fixture(scope="module")
def so2sat_onnx(tmp_path_factory):
    from plugin.lcz.importer import import_so2sat_weights
    return import_so2sat_weights(H5, str(tmp_path_factory.mktemp("so2sat")))


@needs_h5
def test_untrained_network_is_the_imported_models_lcz_to_functions(so2sat_onnx):
    import onnxruntime as ort
    from plugin.lcz.classes import function_probabilities
    from plugin.learning.so2sat_patch import ProbabilityNet, net_from_base
    net = net_from_base(so2sat_onnx, {"n_classes": 8, "kind": "so2sat_patch"})
    x = np.random.default_rng(3).uniform(0, 0.35, (6, 10, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(so2sat_onnx, providers=["CPUExecutionProvider"])
    ref = function_probabilities(sess.run(["probs"], {"s2": x})[0])
    with torch.no_grad():
        got = ProbabilityNet(net)(torch.from_numpy(x)).numpy()
    # to EPS (1e-4 added per function before the log)
    assert np.abs(got - ref).max() < 2e-3
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    assert got[:, 4].max() < 1e-3           # public services: no LCZ maps to it


@needs_h5
def test_function_card_of_the_so2sat_network(so2sat_onnx):
    from plugin.core.model_card import parse_card, read_card
    from plugin.learning.so2sat_patch_card import is_so2sat_model
    from plugin.learning.user_training import KEYS, load_base, training_card
    base, path, config = load_base(so2sat_onnx)
    assert is_so2sat_model(base) and path == so2sat_onnx and config["kind"] == "so2sat_patch"
    card = parse_card(training_card(base, {"s2_winter"}))
    assert [c.name for c in card.classes] == list(KEYS)
    assert [i.modality for i in card.inputs] == ["s2_winter"]
    assert card.output.gsd_m == 40.0 and card.patch.stride_px == 4
    # the window is centred on the cell (pixels 0..3 in the middle of the 32)
    assert card.patch.window_lo == -14 and card.patch.window_hi == 17
    assert not card.derived_outputs and "function_mapping" not in card.raw
    assert card.raw["inputs"][0]["rounding"] == "float16"     # fed as So2Sat was trained
    assert card.raw["fusion"]["over"] == ["s2_winter"] and "8 function" in \
        card.raw["fusion"]["description"]
    assert read_card(so2sat_onnx).output.gsd_m == 100.0       # the import itself unchanged


def _summer_copy(tmp_path):
    """A second "season": the clip's corner copied (values changed) into the test folder."""
    ds = gdal.Translate(str(tmp_path / "s2_summer.tif"), S2,
                        projWin=[EXTENT[0] - 400, EXTENT[3] + 400, EXTENT[2] + 400,
                                 EXTENT[1] - 400])
    for b in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(b)
        band.WriteArray((band.ReadAsArray() * 0.8).astype(np.uint16))
    ds = None
    return str(tmp_path / "s2_summer.tif")


@needs_real
def test_patch_store_windows_are_the_patches_classify_feeds(so2sat_onnx, tmp_path):
    """One data path for the So2Sat card too: a training window is the window classify feeds,
    season by season."""
    from plugin.core.grid import plan_grid
    from plugin.core.model_card import parse_card
    from plugin.core.patches import PatchReader
    from plugin.learning.patch_training import PatchStore
    from plugin.learning.user_training import load_base, training_card
    base, _, _ = load_base(so2sat_onnx)
    inputs = {"s2_winter": S2, "s2_summer": _summer_copy(tmp_path)}
    card = parse_card(training_card(base, set(inputs)))
    probe = plan_grid(card, inputs)
    grid = plan_grid(card, inputs, EXTENT + (probe.crs_wkt,))
    store = PatchStore(card, inputs, grid)
    p = card.patch
    assert sorted(store.modalities) == ["s2_summer", "s2_winter"]
    with PatchReader(card, inputs, grid, mode="windows") as reader:
        for col, row, w, h in ((0, 0, 8, 8), (37, 21, 9, 5), (grid.width - 6, 31, 6, 9)):
            windows, valid = reader.read(col, row, w, h)
            for m, (x, cells) in windows.items():
                view = np.lib.stride_tricks.sliding_window_view(
                    x, (p.patch_px, p.patch_px), axis=(1, 2))[:, ::p.stride_px, ::p.stride_px]
                rr, cc = np.nonzero(cells)
                assert rr.size
                fed = view[:, rr, cc].transpose(1, 0, 2, 3)
                assert np.array_equal(store.patches(rr + row, cc + col, m), fed), (m, col, row)
                assert np.array_equal(store.valid[m][row:row + h, col:col + w], cells)
            assert np.array_equal(store.cells[row:row + h, col:col + w], valid)
    assert not np.array_equal(store.patches([5], [5], "s2_summer"),
                              store.patches([5], [5], "s2_winter"))
    assert store.cell_features().shape[-1] == 2 * 4 * 10       # both seasons' features


@needs_real
@pytest.mark.usefixtures("provider")
def test_train_fine_tunes_the_so2sat_network_and_classify_runs_it(so2sat_onnx, tmp_path):
    import processing
    from plugin.core.model_card import read_card
    out = tmp_path / "so2sat_osm.onnx"
    extent = f"{EXTENT[0]},{EXTENT[2]},{EXTENT[1]},{EXTENT[3]} [EPSG:32633]"
    summer = _summer_copy(tmp_path)
    feedback = CollectingFeedback()
    result = processing.run("urbanfunctions:train", {
        "S2_WINTER": S2, "S2_SUMMER": summer, "LABELS": OSM, "LABEL_FIELD": "fclass", "BASE_MODEL": so2sat_onnx,
        "EXTENT": extent, "BLOCK_SIZE": 800, "EPOCHS": 1, "OUTPUT_MODEL": str(out)},
        feedback=feedback)
    assert result["MODEL"] == str(out) and out.exists()
    card = read_card(str(out))
    raw = card.raw
    assert card.task == "patch_classification" and card.user_trained
    assert raw["architecture"]["config"] == {"n_classes": 8, "kind": "so2sat_patch"}
    assert raw["base_model"]["name"] == "so2sat-lcz42-s2-resnet20"
    assert len(raw["base_model"]["sha256"]) == 64 and "MIT" in raw["licence"]
    assert "licence_file" not in raw and any("So2Sat LCZ42" in c for c in raw["citation"])
    assert card.output.gsd_m == 40.0 and len(card.classes) == 8
    # both seasons through the one network, their probabilities averaged
    assert sorted(i.modality for i in card.inputs) == ["s2_summer", "s2_winter"]
    assert sorted(raw["fusion"]["over"]) == ["s2_summer", "s2_winter"]
    m = raw["metrics"]
    assert m["onnx_torch_parity_max_abs_diff"] < 1e-4
    assert m["split"]["buffer_cells"] == 4          # the 320 m window reaches 4 cells out
    assert m["comparisons"]["untrained_base"]["model"].endswith("(LCZ -> functions)")
    assert m["comparisons"]["random_forest"]["cells"] == m["validation"]["cells"] > 100
    assert raw["training"]["epochs"] == 1 and "no distillation" in raw["training"]["loss"]
    # a model fine-tuned from it is itself a So2Sat patch model (it can be trained further)
    from plugin.learning.user_training import load_base
    assert load_base(str(out))[2]["kind"] == "so2sat_patch"
    res = processing.run("urbanfunctions:classify", {
        "S2_WINTER": S2, "S2_SUMMER": summer, "MODEL": str(out),
        "OUTPUT": str(tmp_path / "map.tif"), "EXTENT": extent}, feedback=CollectingFeedback())
    ds = gdal.Open(res["OUTPUT"])
    codes = ds.ReadAsArray()
    assert ds.GetGeoTransform()[1] == 40.0 and codes.shape == (80, 120)
    assert len(np.unique(codes[codes > 0])) >= 2


@needs_real
def test_so2sat_patch_model_takes_sentinel2_only(so2sat_onnx, tmp_path):
    from osgeo import osr
    from plugin.core.errors import InputError
    from plugin.learning.labels import read_label_file
    from plugin.learning.user_training import TrainRequest, run_training
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    with pytest.raises(InputError, match="takes Sentinel-2 seasons only"):
        run_training(TrainRequest(inputs={"s2_winter": S2, "ntl": S2},
                                  labels=read_label_file(OSM, "fclass"), base_model=so2sat_onnx,
                                  output_path=str(tmp_path / "m.onnx"),
                                  extent=EXTENT + (srs.ExportToWkt(),), block_m=800))
    assert os.listdir(tmp_path) == []


def test_held_out_rectangles_give_the_same_ground_on_another_grid():
    """A split's held-out blocks as ground rectangles: on the same grid they are exactly its
    held-out cells; on a grid of 4x coarser cells with the same origin, exactly the cells
    inside them, and the buffer is counted in that grid's cells."""
    from plugin.learning.blocks import (cells_in_rectangles, held_out_rectangles, split_blocks,
                                        split_held)
    from plugin.learning.labels import UNLABELLED
    rng = np.random.default_rng(0)
    labels = np.where(rng.random((120, 96)) < 0.5, rng.integers(0, 4, (120, 96)),
                      UNLABELLED).astype(np.int16)
    split = split_blocks(labels, 20, 3, 0.25, seed=1, n_classes=8)
    left, top, cell = 500000.0, 4200000.0, 10.0
    rects = held_out_rectangles(split, left, top, cell)
    assert len(rects) == split.blocks_validation
    held = cells_in_rectangles(rects, left, top, cell, 120, 96)
    assert np.array_equal(np.where(held, labels, UNLABELLED), split.validation)
    again = split_held(labels, held, 20, 3, split.blocks_total, len(rects))
    assert np.array_equal(again.train, split.train)
    coarse = cells_in_rectangles(rects, left, top, 4 * cell, 30, 24)
    assert np.array_equal(coarse, held[::4, ::4])


def test_held_out_rectangles_off_the_grid_lines_add_a_cell_of_buffer():
    from types import SimpleNamespace
    from plugin.learning.user_training import _on_grid_lines
    grid = SimpleNamespace(left=100.0, top=900.0, cell=40.0)
    assert _on_grid_lines([(140.0, 500.0, 1140.0, 860.0)], grid)
    assert not _on_grid_lines([(150.0, 500.0, 1150.0, 860.0)], grid)


@needs_real
def test_held_out_rectangles_without_labels_say_so(so2sat_onnx, tmp_path):
    from osgeo import osr
    from plugin.core.errors import InputError
    from plugin.learning.labels import read_label_file
    from plugin.learning.user_training import TrainRequest, run_training
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    with pytest.raises(InputError, match="held-out rectangles given holds a labelled"):
        run_training(TrainRequest(inputs={"s2_winter": S2},
                                  labels=read_label_file(OSM, "fclass"), base_model=so2sat_onnx,
                                  output_path=str(tmp_path / "m.onnx"),
                                  extent=EXTENT + (srs.ExportToWkt(),),
                                  held_out=[(0.0, 0.0, 10.0, 10.0)],
                                  held_out_crs=srs.ExportToWkt()))
    assert os.listdir(tmp_path) == []
