"""Tiled inference with blending equals whole-image inference (the bundled model, real rasters)."""
import os

import numpy as np
import pytest

from plugin.core.engine import ClassifyRequest, run_classification
from plugin.samplecity import generate_sample_city
from rasters_factory import read

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "sample_city_fusion.onnx")


@pytest.fixture(scope="module")
def small_city(tmp_path_factory):
    return generate_sample_city(str(tmp_path_factory.mktemp("city3")), seed=3, size_m=800.0)


def test_tiled_equals_whole_image_within_tolerance(small_city, tmp_path):
    whole = run_classification(ClassifyRequest(small_city.inputs, MODEL, str(tmp_path / "whole.tif"),
                                               tile_size=512, overlap=0, confidence=True))
    assert whole.grid.width <= 512 and whole.grid.height <= 512, "one tile covers the raster"
    tiled = run_classification(ClassifyRequest(small_city.inputs, MODEL, str(tmp_path / "tiled.tif"),
                                               tile_size=32, overlap=16, confidence=True))
    assert tiled.grid == whole.grid
    a, b = read(whole.output_path), read(tiled.output_path)
    ca, cb = read(whole.output_path, 2).astype(int), read(tiled.output_path, 2).astype(int)
    valid = a > 0
    agreement = (a[valid] == b[valid]).mean()
    assert agreement >= 0.99, f"tiled vs whole-image class agreement {agreement:.4f}"
    assert np.abs(ca - cb)[valid].mean() < 1.0, "mean confidence difference under 1 %"

    # without overlap the tile borders show: blending is what removes the seams
    seams = run_classification(ClassifyRequest(small_city.inputs, MODEL, str(tmp_path / "seams.tif"),
                                               tile_size=32, overlap=0, confidence=True))
    cs = read(seams.output_path, 2).astype(int)
    assert np.abs(ca - cb)[valid].mean() < np.abs(ca - cs)[valid].mean()


def test_16_bit_vhr_is_standardised_and_classified_like_8_bit(small_city, tmp_path):
    from osgeo import gdal
    src16 = str(tmp_path / "vhr16.tif")
    gdal.Translate(src16, small_city.vhr, outputType=gdal.GDT_UInt16,
                   scaleParams=[[0, 255, 0, 65535]], creationOptions=["TILED=YES"])
    before = sorted(os.listdir(tmp_path))
    r8 = run_classification(ClassifyRequest({"vhr": small_city.vhr}, MODEL, str(tmp_path / "a.tif")))
    r16 = run_classification(ClassifyRequest({"vhr": src16}, MODEL, str(tmp_path / "b.tif")))
    assert any("standardised by its own mean" in m for m in r16.messages)
    assert not any("standardised" in m for m in r8.messages)
    a, b = read(r8.output_path), read(r16.output_path)
    valid = a > 0
    assert (a[valid] == b[valid]).mean() >= 0.9
    assert not os.path.exists(src16 + ".aux.xml"), "statistics must not be stored beside the input"
    assert set(before) <= set(os.listdir(tmp_path))
