"""Reading ahead in a thread (issue: speed): the same map, bit for bit, as reading in line;
errors and cancels stop the reader thread; memory stays bounded by the queue depth."""
import threading
import time

import numpy as np
import pytest
from osgeo import gdal

from plugin.core import engine
from plugin.core.engine import ClassifyRequest, run_classification
from plugin.core.errors import Cancelled
from plugin.core.prefetch import TilePrefetcher


def _reader_threads():
    return [t for t in threading.enumerate() if t.name == "urban-functions-reader"]


def _arrays(path):
    ds = gdal.Open(path)
    return [ds.GetRasterBand(b + 1).ReadAsArray() for b in range(ds.RasterCount)]


@pytest.mark.parametrize("model", ["sample_city_fusion", "urban_fusion"])
def test_read_ahead_gives_the_same_map_bit_for_bit(sample_city, tmp_path, monkeypatch, model):
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "models", f"{model}.onnx")
    maps = {}
    for prefetch in (False, True):
        monkeypatch.setattr(engine, "PREFETCH", prefetch)
        out = str(tmp_path / f"{model}_{prefetch}.tif")
        res = run_classification(ClassifyRequest(
            sample_city.inputs, path, out, tile_size=64, batch_size=3, confidence=True,
            probabilities=True))
        maps[prefetch] = _arrays(out) + _arrays(res.extra_outputs["probabilities"])
        assert res.timings["read_wait_s"] <= res.timings["read_s"] + 1e-6
    assert len(maps[True]) == len(maps[False])
    for a, b in zip(maps[False], maps[True]):
        assert np.array_equal(a, b)
    assert _reader_threads() == []


def test_a_read_error_is_raised_at_its_tile_and_stops_the_thread():
    seen = []

    def read(i):
        if i == 3:
            raise OSError("disk gone")
        seen.append(i)
        return i

    got = []
    with pytest.raises(OSError, match="disk gone"):
        with TilePrefetcher(read, [(i,) for i in range(10)], depth=2) as tiles:
            for value, _seconds in tiles:
                got.append(value)
    assert got == [0, 1, 2] and max(seen) == 2     # nothing read past the failing tile
    assert _reader_threads() == []


def test_the_queue_bounds_what_is_read_ahead():
    read_count = []

    def read(i):
        read_count.append(i)
        return np.zeros(10)

    with TilePrefetcher(read, [(i,) for i in range(50)], depth=2) as tiles:
        stream = iter(tiles)
        next(stream)
        time.sleep(0.3)                 # a slow inference: the reader must not run away
        assert len(read_count) <= 1 + 2 + 1   # the one consumed, the queue, one in hand
    assert _reader_threads() == []


def test_cancel_with_read_ahead_leaves_no_file_and_no_thread(sample_city, tmp_path):
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 3

    out = tmp_path / "o.tif"
    with pytest.raises(Cancelled):
        run_classification(ClassifyRequest(
            sample_city.inputs, os.path.join(root, "models", "sample_city_fusion.onnx"),
            str(out), tile_size=48), is_cancelled=cancelled)
    assert list(tmp_path.iterdir()) == []
    assert _reader_threads() == []
