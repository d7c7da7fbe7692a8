"""The pure-Python engine on real GeoTIFFs in different CRSs, with real onnxruntime."""
import hashlib
import json
import os

import numpy as np
import pytest
from osgeo import gdal

from onnx_factory import tiny_card, write_tiny_model
from plugin.core.engine import ClassifyRequest, run_classification
from plugin.core.errors import Cancelled, InputError, ModelError, OutputError
from rasters_factory import X0, Y0, make_scene, read, write_raster


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture
def scene(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    return make_scene(folder)


def _files(folder):
    return sorted(os.listdir(folder))


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_classifies_inputs_in_three_crss_with_palette_and_manifest(scene, tiny_model, tmp_path):
    out = tmp_path / "map.tif"
    before = {p: _sha(p) for p in scene.values()}
    res = run_classification(ClassifyRequest(scene, tiny_model, str(out), confidence=True))
    assert res.provider == "CPUExecutionProvider"
    assert {p: _sha(p) for p in scene.values()} == before, "inputs must never be modified"

    ds = gdal.Open(str(out))
    assert ds.GetProjection() == res.grid.crs_wkt and "ETRS89" in ds.GetProjection()
    assert ds.GetGeoTransform()[1] == 10.0 and ds.RasterCount == 2
    band = ds.GetRasterBand(1)
    card = tiny_card()
    names = band.GetCategoryNames()
    table = band.GetColorTable()
    for c in card["classes"]:
        assert names[c["code"]] == c["label"]
        rgb = tuple(int(c["color"][i:i + 2], 16) for i in (1, 3, 5))
        assert table.GetColorEntry(c["code"])[:3] == rgb
    assert band.GetNoDataValue() == 0
    classes = band.ReadAsArray()
    conf = ds.GetRasterBand(2).ReadAsArray()
    ds = None
    assert set(np.unique(classes)) <= set(range(0, 9))
    assert conf[classes > 0].min() >= 13 and conf.max() <= 100  # max of 8 probabilities >= 1/8

    counted = {a.code: a.cells for a in res.class_areas}
    for code in range(1, 9):
        assert counted[code] == int((classes == code).sum())
    assert sum(a.area_m2 for a in res.class_areas) == pytest.approx((classes > 0).sum() * 100.0)

    manifest = json.load(open(res.manifest_path))
    assert set(manifest["inputs"]) == {"vhr", "ntl", "s2_summer"}
    assert manifest["inputs"]["ntl"]["crs"] == "EPSG:4326"
    assert manifest["inputs"]["vhr"]["hash"]["sha256"] == before[scene["vhr"]]
    assert manifest["model"]["name"] == "tiny-test-model"
    assert manifest["execution"]["provider"] == "CPUExecutionProvider"
    assert manifest["tiling"]["tile_cells"] == 32
    assert _files(tmp_path) == ["in", "map.manifest.json", "map.tif", "map.tif.aux.xml"]


def test_grid_is_the_common_footprint_of_the_inputs(scene, tiny_model, tmp_path):
    res = run_classification(ClassifyRequest(scene, tiny_model, str(tmp_path / "o.tif")))
    xmin, ymin, xmax, ymax = res.grid.bounds
    # VHR covers 370000..370800 x 5805200..5806000 in EPSG:25833; the grid snaps outwards to 40 m
    assert xmin <= X0 and xmax >= X0 + 800 - 40 and xmax - xmin <= 800 + 2 * 40 + 40
    assert ymax >= Y0 and ymin <= Y0 - 800 + 40


def test_nodata_in_vhr_is_masked_and_output_nodata_where_no_input(tmp_path, tiny_model):
    rng = np.random.default_rng(1)
    vhr = rng.integers(1, 255, (3, 500, 500)).astype(np.uint8)
    vhr[:, :, :250] = 0  # left half nodata
    path = write_raster(tmp_path / "vhr.tif", vhr, 25833, (X0, 0.8, 0, Y0, 0, -0.8), gdal.GDT_Byte, 0)
    res = run_classification(ClassifyRequest({"vhr": path}, tiny_model, str(tmp_path / "o.tif")))
    classes = read(res.output_path)
    # 400 m wide, 10 m cells: columns 0..19 have no data, 20..39 have data; beyond 40: outside
    assert (classes[:, :19] == 0).all()
    assert (classes[:40, 21:39] > 0).all()
    assert (classes[:, 40:] == 0).all()

    s2 = rng.integers(1, 4000, (10, 40, 40)).astype(np.uint16)
    s2p = write_raster(tmp_path / "s2.tif", s2, 32633, (X0, 10, 0, Y0, 0, -10), gdal.GDT_UInt16, 0)
    res = run_classification(ClassifyRequest({"vhr": path, "s2_summer": s2p}, tiny_model,
                                             str(tmp_path / "o2.tif")))
    classes = read(res.output_path)
    assert (classes[:40, :40] > 0).all(), "S2 has data where VHR has none: cells stay valid"


def test_nan_in_float_ntl_without_declared_nodata_is_masked(tmp_path, tiny_model):
    ntl = np.full((1, 20, 25), 5.0, np.float32)
    ntl[0, :, :12] = np.nan
    path = write_raster(tmp_path / "ntl.tif", ntl, 4326, (13.08, 0.001, 0, 52.395, 0, -0.001),
                        gdal.GDT_Float32)
    res = run_classification(ClassifyRequest({"ntl": path}, tiny_model, str(tmp_path / "o.tif")))
    classes = read(res.output_path)
    assert (classes > 0).any() and (classes == 0).any()
    w = classes.shape[1]
    assert (classes[:, : w // 3] == 0).all() and (classes[10:-10, 2 * w // 3: w - 10] > 0).all()


def test_aoi_polygon_masks_cells_outside(scene, tiny_model, tmp_path):
    poly = (f"POLYGON(({X0 + 100} {Y0 - 100},{X0 + 500} {Y0 - 100},{X0 + 300} {Y0 - 500},"
            f"{X0 + 100} {Y0 - 100}))")
    from osgeo import osr
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    res = run_classification(ClassifyRequest(scene, tiny_model, str(tmp_path / "o.tif"),
                                             aoi=(poly, srs.ExportToWkt())))
    classes = read(res.output_path)
    xmin, _, xmax, ymax = res.grid.bounds
    assert xmin >= X0 + 60 and xmax <= X0 + 560
    valid = classes > 0
    assert 0.3 < valid.mean() < 0.7, "a triangle fills about half its bounding box"
    assert not valid[-1, 0] and not valid[-1, -1]


def test_extent_limits_the_processed_area(scene, tiny_model, tmp_path):
    from osgeo import osr
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(25833)
    ext = (X0 + 200, Y0 - 400, X0 + 400, Y0 - 200, srs.ExportToWkt())
    res = run_classification(ClassifyRequest(scene, tiny_model, str(tmp_path / "o.tif"), extent=ext))
    assert res.grid.width * res.grid.cell <= 200 + 80 and res.grid.height * res.grid.cell <= 200 + 80


@pytest.mark.parametrize("case", ["none", "missing_file", "two_bands", "no_overlap", "no_crs",
                                  "unknown_modality", "text_file", "bad_tile"])
def test_bad_inputs_give_clear_errors_and_leave_no_file(case, scene, tiny_model, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    inputs, kwargs, expect = dict(scene), {}, InputError
    if case == "none":
        inputs, match = {}, "No input raster"
    elif case == "missing_file":
        inputs["vhr"], match = str(tmp_path / "nope.tif"), "file not found"
    elif case == "two_bands":
        inputs["vhr"] = write_raster(tmp_path / "v2.tif", np.ones((2, 50, 50), np.uint8), 25833,
                                     (X0, 0.8, 0, Y0, 0, -0.8), gdal.GDT_Byte)
        match = "has 2 bands.*needs 3"
    elif case == "no_overlap":
        inputs["s2_summer"] = write_raster(tmp_path / "far.tif", np.ones((10, 20, 20), np.uint16),
                                           32633, (X0 + 50000, 10, 0, Y0, 0, -10), gdal.GDT_UInt16)
        match = "do not overlap"
    elif case == "no_crs":
        p = str(tmp_path / "nocrs.tif")
        ds = gdal.GetDriverByName("GTiff").Create(p, 10, 10, 3, gdal.GDT_Byte)
        ds = None
        inputs["vhr"], match = p, "no coordinate reference system"
    elif case == "unknown_modality":
        inputs = {"lidar": scene["vhr"]}
        match = "has no 'lidar' input"
        expect = ModelError
    elif case == "text_file":
        p = tmp_path / "notes.tif"
        p.write_text("not a raster")
        inputs["vhr"], match = str(p), "cannot open"
    elif case == "bad_tile":
        kwargs, match = {"tile_size": 16, "overlap": 16}, "Overlap .* smaller than the tile"
    with pytest.raises(expect, match=match):
        run_classification(ClassifyRequest(inputs, tiny_model, str(out_dir / "o.tif"), **kwargs))
    assert _files(out_dir) == []


def test_existing_output_is_not_overwritten_unless_asked(scene, tiny_model, tmp_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        run_classification(ClassifyRequest(scene, tiny_model, str(out)))
    assert out.read_bytes() == b"precious"
    run_classification(ClassifyRequest(scene, tiny_model, str(out), overwrite=True))
    assert read(out).shape[0] > 0


def test_missing_output_folder_and_bad_model(scene, tiny_model, tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        run_classification(ClassifyRequest(scene, tiny_model, str(tmp_path / "no" / "o.tif")))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="Cannot open model"):
        run_classification(ClassifyRequest(scene, str(bad), str(tmp_path / "o.tif")))
    assert not (tmp_path / "o.tif").exists()


def test_cancel_leaves_no_file(scene, tiny_model, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 2  # cancel in the middle of the run

    with pytest.raises(Cancelled):
        run_classification(ClassifyRequest(scene, tiny_model, str(out_dir / "o.tif"), tile_size=8,
                                           overlap=0), is_cancelled=cancelled)
    assert _files(out_dir) == []


def test_failure_in_the_middle_leaves_no_file(scene, tiny_model, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def progress(fraction, message):
        if fraction > 0.3:
            raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError):
        run_classification(ClassifyRequest(scene, tiny_model, str(out_dir / "o.tif"), tile_size=8,
                                           overlap=0), progress=progress)
    assert _files(out_dir) == []


def test_batch_size_and_tiling_do_not_change_a_pointwise_model(scene, tiny_model, tmp_path):
    a = run_classification(ClassifyRequest(scene, tiny_model, str(tmp_path / "a.tif"), tile_size=8,
                                           overlap=4, batch_size=1))
    b = run_classification(ClassifyRequest(scene, tiny_model, str(tmp_path / "b.tif"), tile_size=512,
                                           overlap=0, batch_size=7))
    assert np.array_equal(read(a.output_path), read(b.output_path))


def test_tile_size_is_rounded_to_the_model_multiple(scene, tiny_model, tmp_path):
    res = run_classification(ClassifyRequest(scene, tiny_model, str(tmp_path / "o.tif"), tile_size=30,
                                             overlap=5))
    assert any("rounded up to 32" in m for m in res.messages)


def test_gpu_request_without_cuda_is_a_clear_error(scene, tiny_model, tmp_path):
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA: the error path cannot be exercised")
    with pytest.raises(ModelError, match="onnxruntime-gpu"):
        run_classification(ClassifyRequest(scene, tiny_model, str(tmp_path / "o.tif"), device="cuda"))
    assert not (tmp_path / "o.tif").exists()


@pytest.fixture(scope="module")
def derived_model(tmp_path_factory):
    card = tiny_card("tiny-derived")
    card["derived_outputs"] = [
        {"name": "built_up", "kind": "class_sum", "codes": [1, 2, 3], "label": "Built-up",
         "description": "derived: P(residential) + P(commercial) + P(industrial)"},
        {"name": "broad", "kind": "class_groups", "label": "Broad function", "groups": [
            {"code": 1, "name": "built", "label": "Built", "color": "#aa0000", "from": [1, 2, 3]},
            {"code": 2, "name": "open", "label": "Open", "color": "#00aa00", "from": [6, 7, 8]},
            {"code": 3, "name": "other", "label": "Other", "color": "#0000aa", "from": [4, 5]}]}]
    return write_tiny_model(tmp_path_factory.mktemp("derived") / "derived.onnx", card)


def test_probabilities_and_derived_outputs_agree(scene, derived_model, tmp_path):
    out = tmp_path / "m.tif"
    res = run_classification(ClassifyRequest(scene, derived_model, str(out), probabilities=True))
    assert set(res.extra_outputs) == {"probabilities", "built_up", "broad"}
    classes = read(out)
    ds = gdal.Open(res.extra_outputs["probabilities"])
    probs = ds.ReadAsArray()
    assert ds.GetRasterBand(1).GetDescription() == "P(Residential)"
    ds = None
    valid = classes > 0
    assert np.allclose(probs[:, valid].sum(axis=0), 1.0, atol=1e-4)
    assert np.isnan(probs[:, ~valid]).all()
    assert np.array_equal(probs.argmax(axis=0)[valid] + 1, classes[valid])
    built = read(res.extra_outputs["built_up"])
    assert np.allclose(built[valid], probs[:3, valid].sum(axis=0), atol=1e-5)
    broad = read(res.extra_outputs["broad"])
    sums = np.stack([probs[[0, 1, 2]].sum(0), probs[[5, 6, 7]].sum(0), probs[[3, 4]].sum(0)])
    assert np.array_equal(broad[valid], sums.argmax(axis=0)[valid] + 1)
    assert (broad[~valid] == 0).all()
    ds = gdal.Open(res.extra_outputs["broad"])  # keep the dataset alive while its band is used
    band = ds.GetRasterBand(1)
    assert band.GetDescription() == "Broad function"
    assert band.GetColorTable().GetColorEntry(2)[:3] == (0, 170, 0)
    band = ds = None
    manifest = json.load(open(res.manifest_path))
    assert set(manifest["extra_outputs"]) == {"probabilities", "built_up", "broad"}


@pytest.fixture(scope="module")
def other_scheme_model(tmp_path_factory):
    """Eight classes of another scheme (like So2Sat's LCZ) with urban functions derived from
    them, as the So2Sat card declares them."""
    card = tiny_card("tiny-other-scheme")
    card["classes"] = [{"code": i, "name": f"type_{i}", "label": f"Type {i}",
                        "color": f"#{20 * i:02x}{20 * i:02x}00"} for i in range(1, 9)]
    card["derived_outputs"] = [
        {"name": "built_up", "kind": "class_sum", "codes": [1, 2], "label": "Built-up"},
        {"name": "urban_functions", "kind": "class_groups", "label": "Functions from types",
         "description": "types 1-2 residential, 3-5 industrial, 6-8 water", "groups": [
             {"code": 1, "name": "residential", "label": "Residential", "color": "#e31a1c",
              "from": [1, 2]},
             {"code": 3, "name": "industrial", "label": "Industrial", "color": "#6a3d9a",
              "from": [3, 4, 5]},
             {"code": 7, "name": "water", "label": "Water", "color": "#1f78b4",
              "from": [6, 7, 8]}]}]
    return write_tiny_model(tmp_path_factory.mktemp("other") / "other.onnx", card)


def test_a_model_of_another_scheme_writes_its_derived_functions_as_the_map(
        scene, other_scheme_model, tmp_path):
    """"Classify urban functions" puts functions at the output path whatever the model's own
    classes; those go beside it (``model_classes``), styled, with the probabilities."""
    out = tmp_path / "m.tif"
    logged = []
    res = run_classification(ClassifyRequest(scene, other_scheme_model, str(out),
                                             probabilities=True, confidence=True),
                             log=logged.append)
    assert set(res.extra_outputs) == {"probabilities", "built_up", "model_classes"}
    # all eight functions in the map's class table (the validation tools offer them as
    # reference classes); those no type stands for are never mapped
    keys = ["residential", "commercial", "industrial", "transportation", "public_services",
            "green_space", "water", "agricultural_undeveloped"]
    assert [c.name for c in res.classes] == keys
    assert [d.name for d in res.derived_outputs] == ["built_up", "model_classes"]
    probs = gdal.Open(res.extra_outputs["probabilities"]).ReadAsArray()
    own = read(res.extra_outputs["model_classes"])
    functions = read(out)
    valid = functions > 0
    assert valid.mean() > 0.9
    assert np.array_equal(own[valid], probs.argmax(0)[valid] + 1)
    sums = np.stack([probs[[0, 1]].sum(0), probs[[2, 3, 4]].sum(0), probs[[5, 6, 7]].sum(0)])
    assert np.array_equal(functions[valid], np.array([1, 3, 7])[sums.argmax(0)][valid])
    assert len(np.unique(functions[valid])) >= 2
    conf = read(out, 2).astype(int)
    assert np.abs(conf[valid] - np.clip(np.round(sums.max(0) * 100), 1, 100)[valid]).max() <= 1
    ds = gdal.Open(str(out))
    band = ds.GetRasterBand(1)
    band.GetDescription()   # GDAL 3.6 GTiff: loads the PAM .aux.xml with the category names
    names = band.GetCategoryNames()
    assert names[1] == "Residential" and names[7] == "Water" and names[5] == "Public services"
    assert band.GetDescription() == "urban function class"
    assert ds.GetRasterBand(2).GetDescription() == \
        "confidence (summed probability of the function, %)"
    assert ds.GetMetadataItem("TIFFTAG_IMAGEDESCRIPTION").endswith("(derived from its classes)")
    band = ds = None
    ds = gdal.Open(res.extra_outputs["model_classes"])
    band = ds.GetRasterBand(1)
    band.GetDescription()
    assert band.GetCategoryNames()[8] == "Type 8"
    band = ds = None
    areas = {a.name: a.cells for a in res.class_areas}
    assert list(areas) == keys and areas["commercial"] == areas["public_services"] == 0
    assert sum(areas.values()) == int(valid.sum())
    note = [m for m in logged if m.startswith("The map holds urban functions derived")]
    assert note and res.extra_outputs["model_classes"] in note[0]
    manifest = json.load(open(res.manifest_path))
    assert [a["name"] for a in manifest["class_areas"]] == keys
    assert note[0] in manifest["messages"]


def test_derived_outputs_follow_the_no_partial_file_rules(scene, derived_model, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "m_built_up.tif").write_bytes(b"keep")
    with pytest.raises(OutputError, match="m_built_up.tif' already exists"):
        run_classification(ClassifyRequest(scene, derived_model, str(out_dir / "m.tif")))
    assert _files(out_dir) == ["m_built_up.tif"]
    (out_dir / "m_built_up.tif").unlink()
    with pytest.raises(Cancelled):
        run_classification(ClassifyRequest(scene, derived_model, str(out_dir / "m.tif"),
                                           probabilities=True, tile_size=8, overlap=0),
                           is_cancelled=lambda: len(os.listdir(out_dir)) > 0)
    assert _files(out_dir) == []


def test_an_overwrite_says_which_earlier_extra_output_it_leaves(scene, derived_model, tmp_path):
    """A rerun with OVERWRITE but without the probabilities leaves the earlier run's
    probabilities file (it never deletes what it does not write) and says so."""
    out = tmp_path / "m.tif"
    first = run_classification(ClassifyRequest(scene, derived_model, str(out),
                                               probabilities=True))
    old = first.extra_outputs["probabilities"]
    before = os.path.getmtime(old), open(old, "rb").read()
    second = run_classification(ClassifyRequest(scene, derived_model, str(out), overwrite=True))
    assert "probabilities" not in second.extra_outputs
    assert (os.path.getmtime(old), open(old, "rb").read()) == before
    said = [m for m in second.messages if m.startswith(f"Warning: {old} is from an earlier run")]
    assert said and "does not belong to the new map" in said[0]
    manifest = json.load(open(second.manifest_path))
    assert said[0] in manifest["messages"] and "probabilities" not in manifest["extra_outputs"]
    third = run_classification(ClassifyRequest(scene, derived_model, str(out), overwrite=True,
                                               probabilities=True))
    assert not [m for m in third.messages if "from an earlier run" in m]


def test_scoring_reads_a_map_that_covers_less_onto_the_labels_grid(scene, tiny_model, tmp_path):
    """A trained model whose card leaves out an input maps only the other inputs' area, which
    can be smaller than the training grid: its held-out cells outside that map are scored as
    not mapped (wrong), not as an internal error."""
    from plugin.core.grid import Grid, plan_grid
    from plugin.core.model_card import read_card
    from plugin.learning.labels import UNLABELLED
    from plugin.learning.map_scores import classify_on_grid
    s2 = {"s2_summer": scene["s2_summer"]}
    g = plan_grid(read_card(tiny_model), s2)
    wider = Grid(g.crs_wkt, g.left - 5 * g.cell, g.top + 5 * g.cell, g.cell, g.width + 10,
                 g.height + 10)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    inside = classify_on_grid(tiny_model, s2, g, str(tmp_path / "a"))
    pred = classify_on_grid(tiny_model, s2, wider, str(tmp_path / "b"))
    assert pred.shape == (wider.height, wider.width)
    assert (pred[:5] == UNLABELLED).all() and (pred[:, -5:] == UNLABELLED).all()
    assert np.array_equal(pred[5:-5, 5:-5], inside) and (inside != UNLABELLED).mean() > 0.9
    assert os.listdir(tmp_path / "b") == [], "the scoring map is removed"


@pytest.fixture(scope="module")
def graph_output_model(tmp_path_factory):
    from onnx_factory import tiny_card_with_graph_outputs
    return write_tiny_model(tmp_path_factory.mktemp("graph") / "graph.onnx",
                            tiny_card_with_graph_outputs())


def test_graph_outputs_are_blended_like_the_probabilities(scene, graph_output_model, tmp_path):
    """A model's other outputs (built-up fraction, fusion gate weights) go through the same
    tiles and blending as the class probabilities; optional ones only on request."""
    res = run_classification(ClassifyRequest(scene, graph_output_model, str(tmp_path / "a.tif"),
                                             tile_size=16, overlap=8, probabilities=True))
    assert set(res.extra_outputs) == {"probabilities", "built_up"}, "gates is optional"
    classes = read(res.output_path)
    valid = classes > 0
    ds = gdal.Open(res.extra_outputs["probabilities"])
    probs = ds.ReadAsArray()
    ds = None
    built = read(res.extra_outputs["built_up"])
    # the graph computes built_up = P1 + P2 + P3 per tile; blending is linear, so it must equal
    # the sum of the blended probabilities
    assert np.allclose(built[valid], probs[:3, valid].sum(axis=0), atol=1e-5)
    assert np.isnan(built[~valid]).all()

    res2 = run_classification(ClassifyRequest(scene, graph_output_model, str(tmp_path / "b.tif"),
                                              tile_size=16, overlap=8, optional_outputs=True))
    assert set(res2.extra_outputs) == {"built_up", "gates"}
    ds = gdal.Open(res2.extra_outputs["gates"])
    gates = ds.ReadAsArray()
    names = [ds.GetRasterBand(b + 1).GetDescription() for b in range(ds.RasterCount)]
    ds = None
    assert names == ["VHR", "NTL", "Sentinel-2", "Temporal"]
    assert np.allclose(gates[:, valid].sum(axis=0), 1.0, atol=1e-4)
    assert (gates[:, valid] > 0).all()
    # the class map does not depend on which extra outputs were asked for
    assert np.array_equal(read(res2.output_path), classes)
    manifest = json.load(open(res2.manifest_path))
    assert set(manifest["extra_outputs"]) == {"built_up", "gates"}


def test_graph_outputs_need_a_segmentation_card():
    from onnx_factory import GRAPH_OUTPUTS, tiny_patch_card
    from plugin.core.model_card import parse_card
    card = tiny_patch_card()
    card["derived_outputs"] = [dict(GRAPH_OUTPUTS[0])]
    with pytest.raises(ModelError, match="needs a segmentation model"):
        parse_card(card)
    bad = tiny_card()
    bad["derived_outputs"] = [dict(GRAPH_OUTPUTS[1], style="rainbow")]
    with pytest.raises(ModelError, match="'fraction' or 'weights'"):
        parse_card(bad)


def test_default_model_is_validated_on_real_data(tmp_path, sample_city):
    """classify's default: only cards that state a real-data validation; demo and
    simulation-only models only for the sample city; a user model covering the inputs first;
    otherwise a message that says how to get a model."""
    from plugin.core.errors import ModelError
    from plugin.core.models import default_model_for
    demo = tiny_card("tiny-demo")
    demo["purpose"] = "demo"
    write_tiny_model(tmp_path / "demo.onnx", demo)
    sim = tiny_card("tiny-sim")
    sim["real_data_validation"] = {"status": "simulation_only", "summary": "generated scenes"}
    write_tiny_model(tmp_path / "sim.onnx", sim)
    real = tiny_card("tiny-real")
    real["inputs"] = real["inputs"][:2]      # VHR and NTL only
    real["real_data_validation"] = {"status": "validated", "summary": "OA 0.9 on real data"}
    write_tiny_model(tmp_path / "real.onnx", real)
    folder = [str(tmp_path)]
    assert default_model_for(["vhr", "ntl"], extra_dirs=folder).card.name == "tiny-real"
    # no validated model takes Sentinel-2 here (the bundled urban-fusion is simulation only)
    with pytest.raises(ModelError, match="validated on real data") as err:
        default_model_for(["ntl", "s2_summer"], extra_dirs=folder)
    assert "tiny-sim" in str(err.value) and "So2Sat" in str(err.value)
    # the sample city (its rasters carry our generator's tag) gets a demo model
    city = {m: sample_city.inputs[m] for m in ("ntl", "s2_summer")}
    assert default_model_for(list(city), extra_dirs=folder, inputs=city).card.purpose == "demo"
    # a user model trained over the inputs comes first; elsewhere after the real-data models
    from plugin.core.models import inputs_footprint
    fp = inputs_footprint(city)
    for name, bounds in (("tiny-user-here", fp[:4]),
                         ("tiny-user-elsewhere", (0.0, 0.0, 1000.0, 1000.0))):
        user = tiny_card(name)
        user["inputs"] = user["inputs"][:2]
        user["real_data_validation"] = {"status": "validated", "summary": "held-out blocks"}
        user["trained_on"] = "user labels"
        user["coverage"] = {"bounds": list(bounds), "crs_wkt": fp[4]}
        write_tiny_model(tmp_path / f"{name}.onnx", user)
    vn = {m: sample_city.inputs[m] for m in ("vhr", "ntl")}
    assert default_model_for(list(vn), extra_dirs=folder, inputs=vn).card.name == "tiny-user-here"
    # a user model that scored below its baseline is never the default, even over its area
    weak = tiny_card("tiny-user-weak")
    weak["inputs"] = weak["inputs"][:2]
    weak["real_data_validation"] = {"status": "validated", "summary": "below RF",
                                    "holds_up": False}
    weak["trained_on"] = "user labels"
    weak["coverage"] = {"bounds": list(fp[:4]), "crs_wkt": fp[4]}
    (tmp_path / "tiny-user-here.onnx").unlink()
    write_tiny_model(tmp_path / "tiny-user-weak.onnx", weak)
    chosen = default_model_for(list(vn), extra_dirs=folder, inputs=vn)
    assert chosen.card.name != "tiny-user-weak" and chosen.card.purpose == "demo"
    (tmp_path / "tiny-user-weak.onnx").unlink()
    assert default_model_for(["vhr", "ntl"], extra_dirs=folder).card.name == "tiny-real"
    bad = tiny_card("tiny-bad")
    bad["real_data_validation"] = {"status": "maybe"}
    with pytest.raises(ModelError, match="status 'maybe'"):
        from plugin.core.model_card import parse_card
        parse_card(bad)


def test_inputs_a_card_leaves_out_are_not_used(scene, tmp_path):
    """A user model whose held-out check found the map better without VHR (card
    ``ignored_inputs``) leaves VHR out, says so, and refuses VHR alone with a clear reason."""
    card = tiny_card("tiny-ignores-vhr")
    card["ignored_inputs"] = ["vhr"]
    model = write_tiny_model(tmp_path / "ignores.onnx", card)
    said = []
    with_vhr = run_classification(ClassifyRequest(scene, model, str(tmp_path / "a.tif")),
                                  log=said.append)
    without = {m: p for m, p in scene.items() if m != "vhr"}
    run_classification(ClassifyRequest(without, model, str(tmp_path / "b.tif")))
    assert np.array_equal(read(tmp_path / "a.tif"), read(tmp_path / "b.tif"))
    assert any("Left out vhr" in m for m in said)
    assert any("Left out vhr" in m for m in with_vhr.messages)
    with pytest.raises(InputError, match="leaves out vhr"):
        run_classification(ClassifyRequest({"vhr": scene["vhr"]}, model,
                                           str(tmp_path / "c.tif")))
    assert not os.path.exists(tmp_path / "c.tif")


def test_progress_text_gives_the_rate_and_the_time_left():
    from plugin.core.engine import TimeLeft
    eta = TimeLeft(1000)
    assert eta.text(0.5) == ""                     # too early to say
    eta.t0 -= 10.0                                 # 10 s in, half done
    assert eta.text(0.5) == "; 50 cells/s; about 10 s left"
    assert eta.text(0.05).endswith("about 3 min left")
