"""The sample city generator (plugin/samplecity): real GDAL, small cities to stay fast."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal, osr

from plugin.core.classes import CLASS_BY_KEY, FUNCTION_CLASSES
from plugin.core.model_card import MODALITIES
from plugin.samplecity import (FILES, METADATA_FILE, SampleCity, generate_sample_city,
                               load_existing, render_layout)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 600.0
SEED = 7
COM = CLASS_BY_KEY["commercial"].code
IND = CLASS_BY_KEY["industrial"].code
GRE = CLASS_BY_KEY["green_space"].code
WAT = CLASS_BY_KEY["water"].code
AGR = CLASS_BY_KEY["agricultural_undeveloped"].code
S2_BANDS = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return generate_sample_city(str(tmp_path_factory.mktemp("city")), seed=SEED, size_m=SIZE)


def _read(path):
    ds = gdal.Open(path)
    assert ds is not None, path
    return ds.ReadAsArray()


def _epsg(ds):
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    srs.AutoIdentifyEPSG()
    return int(srs.GetAuthorityCode(None))


def _on_truth_grid(path, truth_path, resample="bilinear"):
    """A raster warped onto the ground-truth grid (float32, NaN where it has no data)."""
    truth = gdal.Open(truth_path)
    gt = truth.GetGeoTransform()
    w, h = truth.RasterXSize, truth.RasterYSize
    ds = gdal.Warp("", path, format="MEM", dstSRS=truth.GetProjection(),
                   outputBounds=(gt[0], gt[3] + h * gt[5], gt[0] + w * gt[1], gt[3]),
                   width=w, height=h, resampleAlg=resample, outputType=gdal.GDT_Float32,
                   dstNodata=float("nan"))
    arr = ds.ReadAsArray()
    return arr if arr.ndim == 3 else arr[None]


# ---------------------------------------------------------------------------------------------
# API

def test_paths_inputs_and_metadata(city):
    assert isinstance(city, SampleCity)
    assert city.seed == SEED
    # every model input except the temporal signature, which a sample city does not have
    assert set(city.inputs) == set(MODALITIES) - {"temporal"}
    assert set(city.inputs) == {"vhr", "ntl", "s2_spring", "s2_summer", "s2_autumn", "s2_winter"}
    assert city.inputs["vhr"] == city.vhr and city.inputs["s2_winter"] == city.s2_winter
    for key in FILES:
        path = getattr(city, key)
        assert os.path.isabs(path) and os.path.isfile(path), path
    assert os.path.basename(city.metadata) == METADATA_FILE
    meta = json.load(open(city.metadata, encoding="utf-8"))
    assert meta["seed"] == SEED and meta["complete"] is True
    assert set(meta["files"]) == set(FILES)
    assert meta["files"]["s2_autumn"]["crs"] == "EPSG:3035"
    assert {"ntl", "s2", "vhr", "ground_truth"} <= set(meta["modalities"])
    ntl = meta["modalities"]["ntl"]
    assert ntl["class_radiance"]["commercial"] > ntl["class_radiance"]["residential"]
    shift = ntl["misregistration_m"]
    assert 20 <= math.hypot(shift["east"], shift["north"]) <= 60
    assert "summer" in meta["modalities"]["s2"]["material_spectra"]
    shares = meta["class_shares"]
    assert set(shares) == {c.key for c in FUNCTION_CLASSES}
    assert abs(sum(shares.values()) - 1.0) < 1e-3


def test_no_temporary_files_left(city):
    names = os.listdir(city.out_dir)
    assert not [n for n in names if ".part" in n], names


def test_same_seed_gives_identical_pixels(city, tmp_path):
    again = generate_sample_city(str(tmp_path), seed=SEED, size_m=SIZE)
    for key in FILES:
        a, b = _read(getattr(city, key)), _read(getattr(again, key))
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), key


def test_different_seeds_differ(city, tmp_path):
    other = generate_sample_city(str(tmp_path), seed=SEED + 1, size_m=SIZE)
    a, b = _read(city.ground_truth), _read(other.ground_truth)
    assert (a != b).mean() > 0.3
    assert not np.array_equal(_read(city.s2_summer), _read(other.s2_summer))
    for s in range(3):
        assert (render_layout(s, 1200.0, 10.0) != render_layout(s + 10, 1200.0, 10.0)).mean() > 0.3


def test_render_layout_matches_the_ground_truth(city):
    # same plan; only block edges may differ (rasterised at 5 m vs sampled from the 0.8 m scene)
    assert (render_layout(SEED, SIZE, 5.0) == _read(city.ground_truth)).mean() > 0.97


@pytest.mark.parametrize("size_m", [600.0, 1200.0, 2400.0])
def test_every_class_has_a_real_share(size_m):
    for seed in range(12):
        classes = render_layout(seed, size_m, 8.0)
        shares = np.bincount(classes.ravel(), minlength=9) / classes.size
        assert shares[0] == 0
        assert shares[1:].min() >= 0.02, (seed, shares)


def test_layout_does_not_touch_global_numpy_random_state():
    np.random.seed(5)
    expected = np.random.random()
    np.random.seed(5)
    render_layout(3, SIZE, 10.0)
    assert np.random.random() == expected


# ---------------------------------------------------------------------------------------------
# georeferencing

EXPECTED = {  # key: (EPSG, pixel size)
    "ground_truth": (32633, 5.0), "vhr": (25833, 0.8), "ntl": (4326, 0.001),
    "s2_spring": (32633, 10.0), "s2_summer": (32633, 10.0), "s2_autumn": (3035, 10.0),
    "s2_winter": (32633, 10.0),
}


def test_each_output_in_its_own_crs_and_resolution(city):
    grids = {}
    for key, (epsg, res) in EXPECTED.items():
        ds = gdal.Open(getattr(city, key))
        gt = ds.GetGeoTransform()
        assert _epsg(ds) == epsg, key
        assert gt[1] == pytest.approx(res) and gt[5] == pytest.approx(-res), key
        assert gt[2] == 0 and gt[4] == 0
        grids[key] = (epsg, tuple(round(v, 6) for v in gt), ds.RasterXSize, ds.RasterYSize)
        s = ds.GetMetadata("IMAGE_STRUCTURE")
        assert s.get("COMPRESSION") == "DEFLATE", key
        assert ds.GetRasterBand(1).GetBlockSize() == [256, 256], key
    # the inputs arrive on different grids (spring and summer share one, as specified)
    inputs = {k: v for k, v in grids.items() if k != "ground_truth"}
    assert len(set(inputs.values())) == len(inputs) - 1
    assert grids["s2_spring"] == grids["s2_summer"]
    spring, winter = grids["s2_spring"][1], grids["s2_winter"][1]
    assert (spring[0] - winter[0]) % 10 == pytest.approx(5.0)
    assert (winter[3] - spring[3]) % 10 == pytest.approx(5.0)


def test_footprints_overlap_over_the_city(city):
    for key in city.inputs:
        arr = _on_truth_grid(getattr(city, key), city.ground_truth, "near")
        valid = ~np.isnan(arr).any(axis=0)
        # all inputs cover the city (VHR minus its corner wedge, NTL shifted by <= 60 m)
        assert valid.mean() > 0.9, (key, valid.mean())
    lon, lat = json.load(open(city.metadata, encoding="utf-8"))["location"]["centre_lonlat"]
    assert 13.0 < lon < 13.2 and 52.3 < lat < 52.5      # Brandenburg, near Potsdam
    ntl = gdal.Open(city.ntl)
    gt = ntl.GetGeoTransform()
    assert gt[0] < lon < gt[0] + ntl.RasterXSize * gt[1]
    assert gt[3] + ntl.RasterYSize * gt[5] < lat < gt[3]


# ---------------------------------------------------------------------------------------------
# file contents

def test_ground_truth_has_colours_and_names(city):
    ds = gdal.Open(city.ground_truth)
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Byte and band.GetNoDataValue() == 0
    ct = band.GetColorTable()
    names = band.GetCategoryNames()
    for c in FUNCTION_CLASSES:
        rgb = tuple(int(c.color[i:i + 2], 16) for i in (1, 3, 5))
        assert ct.GetColorEntry(c.code)[:3] == rgb
        assert names[c.code] == c.key
    codes = band.ReadAsArray()
    assert codes.min() >= 1 and codes.max() <= 8


def test_vhr_bands_and_values(city):
    ds = gdal.Open(city.vhr)
    assert ds.RasterCount == 4
    interp = [ds.GetRasterBand(i + 1).GetColorInterpretation() for i in range(4)]
    assert interp == [gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand, gdal.GCI_Undefined]
    assert ds.GetRasterBand(4).GetDescription() == "nir"
    for i in range(4):
        b = ds.GetRasterBand(i + 1)
        assert b.DataType == gdal.GDT_Byte and b.GetNoDataValue() == 0


def test_vhr_has_a_nodata_wedge_in_one_corner(city):
    arr = _read(city.vhr)
    empty = (arr == 0).all(axis=0)
    partial = (arr == 0).any(axis=0) & ~empty
    assert not partial.any()    # nodata is all bands at once, real pixels are >= 1
    h, w = empty.shape
    assert empty[0, -1] and not empty[0, 0] and not empty[-1, 0] and not empty[-1, -1]
    meta = json.load(open(city.metadata, encoding="utf-8"))["modalities"]["vhr"]["nodata_wedge"]
    lx, ly = meta["legs_px"]
    assert empty.sum() == pytest.approx(lx * ly / 2, rel=0.05)
    assert 0.002 < empty.mean() < 0.05


def test_ntl_values(city):
    ds = gdal.Open(city.ntl)
    b = ds.GetRasterBand(1)
    assert b.DataType == gdal.GDT_Float32 and math.isnan(b.GetNoDataValue())
    arr = b.ReadAsArray()
    assert np.isnan(arr).any()              # outside the imaged swath
    assert np.nanmin(arr) >= 0 and np.nanmax(arr) > 20


def test_s2_bands_and_values(city):
    for season in ("spring", "summer", "autumn", "winter"):
        ds = gdal.Open(getattr(city, f"s2_{season}"))
        assert ds.RasterCount == 10
        assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(10)] == S2_BANDS
        for i in range(10):
            b = ds.GetRasterBand(i + 1)
            assert b.DataType == gdal.GDT_UInt16 and b.GetNoDataValue() == 0
        arr = ds.ReadAsArray()
        valid = arr[0] > 0
        assert valid.mean() > 0.5
        assert 100 < np.median(arr[2][valid]) < 3000        # red reflectance 1%..30%
    autumn = _read(city.s2_autumn)
    assert (autumn == 0).all(axis=0).any()                # reprojected: no-data corners


# ---------------------------------------------------------------------------------------------
# physical plausibility

def test_ntl_brighter_over_commercial_than_over_water(city):
    truth = _read(city.ground_truth)
    ntl = _on_truth_grid(city.ntl, city.ground_truth)[0]
    com = np.nanmean(ntl[truth == COM])
    wat = np.nanmean(ntl[truth == WAT])
    assert com > 1.5 * wat, (com, wat)


def _ndvi(city, season):
    arr = _on_truth_grid(getattr(city, f"s2_{season}"), city.ground_truth)
    red, nir = arr[S2_BANDS.index("B4")], arr[S2_BANDS.index("B8")]
    return (nir - red) / (nir + red)


def test_s2_ndvi_follows_land_use_and_seasons(city):
    truth = _read(city.ground_truth)
    summer, winter = _ndvi(city, "summer"), _ndvi(city, "winter")
    assert np.nanmean(summer[truth == GRE]) > np.nanmean(summer[truth == IND]) + 0.2
    assert np.nanmean(winter[truth == AGR]) < np.nanmean(summer[truth == AGR]) - 0.1
    assert np.nanmean(summer[truth == WAT]) < np.nanmean(summer[truth == GRE]) - 0.3


# ---------------------------------------------------------------------------------------------
# caching and CLI

def test_complete_city_is_not_regenerated(tmp_path):
    first = generate_sample_city(str(tmp_path), seed=2, size_m=400.0)
    stamps = {k: os.stat(getattr(first, k)).st_mtime_ns for k in FILES}
    second = generate_sample_city(str(tmp_path), seed=2, size_m=400.0)
    assert second == first
    assert stamps == {k: os.stat(getattr(second, k)).st_mtime_ns for k in FILES}
    assert load_existing(str(tmp_path), seed=2, size_m=400.0) == first
    assert load_existing(str(tmp_path), seed=3, size_m=400.0) is None
    os.remove(first.ntl)                     # incomplete: regenerated
    assert load_existing(str(tmp_path), seed=2, size_m=400.0) is None
    third = generate_sample_city(str(tmp_path), seed=2, size_m=400.0)
    assert os.path.isfile(third.ntl)


def test_cli_prints_the_paths(tmp_path):
    out = subprocess.run([sys.executable, "-m", "plugin.samplecity", "--out", str(tmp_path),
                          "--seed", "1", "--size-m", "400", "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split("\t") for line in out.stdout.strip().splitlines())
    assert set(lines) == set(FILES) | {"metadata"}
    assert all(os.path.isfile(p) for p in lines.values())
