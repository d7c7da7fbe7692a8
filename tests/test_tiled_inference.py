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
