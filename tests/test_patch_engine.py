"""Patch classifiers in the engine: exact agreement with the original-pipeline recipe (symmetric
padding at raster edges, one patch per cell), tiling, reprojection, and multi-input averaging."""
import os

import numpy as np
import pytest
from osgeo import gdal

from onnx_factory import reference_patch_classes, write_tiny_patch_model
from plugin.core.engine import ClassifyRequest, run_classification
from rasters_factory import X0, Y0, read, write_raster

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                      "data")
S2_STACK = os.path.join(SHARED, "s2", "ketzin_20170216_s2l1c_10band.tif")
SO2SAT_H5 = os.path.join(SHARED, "so2sat", "S2_RESNET20_BS16_LR2e-4_IN32-32-10_PRO-52-0R12_2019-06-27.h5")
needs_shared = pytest.mark.skipif(not (os.path.exists(S2_STACK) and os.path.exists(SO2SAT_H5)),
                                  reason="../shared/data (Ketzin S2 stack, So2Sat weights) is not "
                                         "available in this checkout")


@pytest.fixture(scope="module")
def patch_model(tmp_path_factory):
    return write_tiny_patch_model(tmp_path_factory.mktemp("patch") / "tiny_patch.onnx")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """RGB 2 m image, 101 x 94 px (not a multiple of the stride: edge cells need padding)."""
    rng = np.random.default_rng(4)
    arr = rng.integers(1, 255, (3, 94, 101)).astype(np.uint8)
    path = write_raster(tmp_path_factory.mktemp("img") / "rgb.tif", arr, 32633,
                        (X0, 2, 0, Y0, 0, -2), gdal.GDT_Byte, 0)
    return path, arr


def test_patch_map_equals_the_whole_image_recipe_for_any_tiling(patch_model, image, tmp_path):
    path, arr = image
    expected = reference_patch_classes(arr)
    for tile in (4, 7, 512):
        res = run_classification(ClassifyRequest({"vhr": path}, patch_model,
                                                 str(tmp_path / f"t{tile}.tif"), tile_size=tile))
        assert (res.grid.left, res.grid.top) == (X0, Y0), "a single input keeps its origin"
        assert (res.grid.height, res.grid.width) == expected.shape  # ceil(size / stride)
        assert np.array_equal(read(res.output_path), expected), f"tile {tile}"
        assert any("without resampling" in m for m in res.messages)
        # the last tiles are shifted back to end flush with the grid; the cells they share with
        # earlier tiles are not classified twice
        assert res.timings["patches"] == expected.size, f"tile {tile}"


def test_patch_input_in_another_crs_is_warped_and_still_classified(patch_model, image, tmp_path):
    path, arr = image
    moved = str(tmp_path / "rgb_4326.tif")  # geographic: the output grid goes to UTM
    gdal.Warp(moved, path, dstSRS="EPSG:4326", resampleAlg="near")
    res = run_classification(ClassifyRequest({"vhr": moved}, patch_model, str(tmp_path / "o.tif")))
    assert "UTM zone 33N" in res.grid.crs_wkt
    assert any("resampled" in m for m in res.messages)
    out = read(res.output_path)
    assert (out > 0).mean() > 0.6 and set(np.unique(out)) <= set(range(9))


def test_patch_nodata_and_overlap_request(patch_model, image, tmp_path):
    path, arr = image
    holed = arr.copy()
    holed[:, :, :40] = 0  # the left 40 px are nodata: cells 0..9 have no data
    p = write_raster(tmp_path / "holed.tif", holed, 32633, (X0, 2, 0, Y0, 0, -2), gdal.GDT_Byte, 0)
    res = run_classification(ClassifyRequest({"vhr": p}, patch_model, str(tmp_path / "o.tif"),
                                             overlap=8))
    out = read(res.output_path)
    assert (out[:, :10] == 0).all() and (out[:, 11:] > 0).all()
    assert any("Overlap is not needed" in m for m in res.messages)


@pytest.fixture(scope="module")
def so2sat_model(tmp_path_factory):
    from plugin.lcz.importer import import_so2sat_weights
    return import_so2sat_weights(SO2SAT_H5, str(tmp_path_factory.mktemp("lcz_models")))


def _reference_probs(model, stacks):
    """The original pipeline: float16 scaling, symmetric padding, patches every 10 px, the
    softmax averaged over seasons."""
    import onnxruntime as ort
    from plugin.lcz.preprocess import extract_patches, grid_shape, scale_dn
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    total = 0
    for stack in stacks:
        patches = extract_patches(scale_dn(stack))
        total = total + np.concatenate([sess.run(["probs"], {"s2": patches[i:i + 1024]})[0]
                                        for i in range(0, len(patches), 1024)])
    return (total / len(stacks)).reshape(*grid_shape(*stacks[0].shape[1:]), -1)


@pytest.fixture(scope="module")
def ketzin_quarter(tmp_path_factory):
    """The north-west quarter of the real Ketzin stack (768 x 384 px), as a GeoTIFF."""
    path = str(tmp_path_factory.mktemp("ketzin") / "ketzin_nw.tif")
    gdal.Translate(path, S2_STACK, srcWin=[0, 0, 768, 384], creationOptions=["TILED=YES"])
    return path


@needs_shared
@pytest.mark.parametrize("n_seasons", [1, 2, 4])
def test_so2sat_lcz_map_matches_the_original_pipeline(so2sat_model, ketzin_quarter, n_seasons,
                                                      tmp_path):
    stack = gdal.Open(ketzin_quarter).ReadAsArray()
    seasons = {"s2_winter": ketzin_quarter}
    stacks = [stack]
    # further "seasons" made from the real stack: brighter / darker copies on the same grid
    for season, factor in (("s2_spring", 1.15), ("s2_summer", 0.9), ("s2_autumn", 1.05))[:n_seasons - 1]:
        arr = np.clip(stack * factor, 1, 65000).astype(np.uint16)
        seasons[season] = write_raster(tmp_path / f"{season}.tif", arr, 32633,
                                       (330000, 10, 0, 5822040, 0, -10), gdal.GDT_UInt16)
        stacks.append(arr)
    res = run_classification(ClassifyRequest(seasons, so2sat_model, str(tmp_path / "lcz.tif"),
                                             confidence=True))
    probs = _reference_probs(so2sat_model, stacks)
    # the LCZ map is written beside the output (the output holds the functions derived from it)
    assert set(res.extra_outputs) == {"lcz", "settlement_extent"}
    ours = read(res.extra_outputs["lcz"])
    assert ours.shape == probs.shape[:2] == (39, 77)  # ceil(384 / 10), ceil(768 / 10)
    assert (ours == probs.argmax(-1) + 1).mean() >= 0.999
    from plugin.lcz.classes import function_groups
    groups = function_groups()
    sums = np.stack([probs[..., [c - 1 for c in g["from"]]].sum(-1) for g in groups], -1)
    codes = np.array([g["code"] for g in groups])
    functions = read(res.output_path)
    from plugin.core.classes import FUNCTION_CLASSES
    assert [c.name for c in res.classes] == [f.key for f in FUNCTION_CLASSES]
    assert "public_services" not in [g["name"] for g in groups]
    assert (functions == codes[sums.argmax(-1)]).mean() >= 0.999
    conf = read(res.output_path, 2).astype(int)
    assert np.abs(conf - np.clip(np.round(sums.max(-1) * 100), 1, 100)).max() <= 1
    manifest = open(res.manifest_path).read()
    for season in seasons:
        assert f'"{season}"' in manifest, "the manifest lists the seasons used"
