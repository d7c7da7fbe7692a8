"""Patch classifiers with a shared trunk (``plugin/core/shared_trunk.py``): the pooling
matrices, the test-time views of a whole tile, the engine's three patch modes on the bundled
VHR scene model, and a model without a shared-trunk graph.

The bundled scene model and onnxruntime are real; torch (the training extra) gives the
independent reference of the tile computation.
"""
import json
import os

import numpy as np
import pytest
from osgeo import gdal

from conftest import ROOT
from onnx_factory import write_tiny_patch_model
from rasters_factory import X0, Y0, write_raster

MODEL = os.path.join(ROOT, "models", "vhr_scenes_resnet.onnx")


@pytest.fixture(scope="module")
def card():
    from plugin.core.model_card import read_card
    return read_card(MODEL)


@pytest.fixture(scope="module")
def session():
    import onnxruntime as ort
    return ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])


def test_pool_matrix_averages_the_positions_a_window_covers():
    from plugin.core.shared_trunk import pool_matrix
    m = pool_matrix(5, 30, 32, 3, 8)
    assert m.shape == (5, 8) and np.allclose(m.sum(axis=1), 1.0)
    assert np.allclose(m[0], [1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0, 0])   # window at pixel 0
    # cell 1 starts at pixel 30 = feature 0.9375: 1/16 of position 0, then mostly 1..3
    assert np.allclose(m[1, :4], np.array([0.0625, 1, 1, 0.9375]) / 3)
    # a window starting on a whole stride is the plain mean of its positions
    assert np.allclose(pool_matrix(3, 32, 32, 3, 6)[2], [0, 0, 1 / 3, 1 / 3, 1 / 3, 0])
    # an origin shifts every window (flipped tiles start after their unused margin)
    assert np.allclose(pool_matrix(1, 30, 32, 3, 5, origin_px=32)[0], [0, 1 / 3, 1 / 3, 1 / 3, 0])
    # positions beyond the map are clamped onto the last one (weights still sum to 1)
    assert np.allclose(pool_matrix(1, 30, 32, 3, 2)[0], [1 / 3, 2 / 3])


def test_tile_pixels_round_up_to_whole_strides():
    from plugin.core.shared_trunk import tile_pixels
    assert tile_pixels(1, 30, 96, 32) == 96
    assert tile_pixels(2, 30, 96, 32) == 128       # 126 px needed
    assert tile_pixels(64, 30, 96, 32) == 2016     # 1986 px needed


def test_a_one_window_tile_is_the_window_classified_alone(card, session):
    """Uniform pooling of a window's own 3 x 3 features is its global average pool: the tile
    path and the window path agree for every view."""
    from plugin.core.shared_trunk import classify_tile, classify_windows
    p = card.patch
    x = np.random.default_rng(1).normal(0, 1, (3, 96, 96)).astype(np.float32)

    def run(feed):
        return session.run([card.output.name], feed)[0]
    tile = classify_tile(run, p, x, 1, 1, p.views)
    alone = classify_windows(run, p, x[None], p.views)
    assert tile.shape == (8, 1, 1)
    assert np.abs(tile[:, 0, 0] - alone[0]).max() < 1e-5


def test_tile_views_match_an_independent_torch_reference(card, session):
    """Each view of a tile (with an unused margin right and below, as the engine reads it) is
    the network's feature map of the flipped / transposed tile, pooled at the window each cell
    has in that view, mapped back to the cell. The reference locates windows cell by cell."""
    torch = pytest.importorskip("torch", reason="torch (training extra) gives the reference")
    from plugin.core.shared_trunk import classify_tile
    from plugin.learning.vhr_export import torch_net_from_onnx
    p = card.patch
    net = torch_net_from_onnx(MODEL, card.raw["architecture"]["config"])
    nr, nc = 2, 3                                         # 126 x 156 px used, 128 x 160 read
    x = np.random.default_rng(2).normal(0, 1, (3, 128, 160)).astype(np.float32)

    def run(feed):
        return session.run([card.output.name], feed)[0]

    def reference(view):
        xv = {"identity": x, "flip_x": x[:, :, ::-1], "flip_y": x[:, ::-1],
              "transpose": x.transpose(0, 2, 1)}[view]
        with torch.no_grad():
            f = net.layers(net.stem(torch.from_numpy(xv.copy())[None]))[0].numpy()
        out = np.zeros((8, nr, nc), np.float32)
        for r in range(nr):
            for c in range(nc):
                y0, x0 = 30 * r, 30 * c                   # the cell's window in the tile
                if view == "flip_x":
                    x0 = 160 - x0 - 96
                if view == "flip_y":
                    y0 = 128 - y0 - 96
                if view == "transpose":
                    y0, x0 = x0, y0

                def weights(start, n):
                    w = np.zeros(n)
                    for k in range(3):
                        t = start / 32 + k
                        i = int(t)
                        w[min(i, n - 1)] += (1 - (t - i)) / 3
                        w[min(i + 1, n - 1)] += (t - i) / 3
                    return w
                pooled = np.einsum("y,cyx,x->c", weights(y0, f.shape[1]), f,
                                   weights(x0, f.shape[2]))
                with torch.no_grad():
                    z = net.feature(torch.from_numpy(pooled[None].astype(np.float32)))
                    out[:, r, c] = torch.softmax(net.classifier(z), 1)[0].numpy()
        return out
    for view in p.views:
        got = classify_tile(run, p, x, nr, nc, (view,))
        assert got.shape == (8, nr, nc)
        assert np.abs(got - reference(view)).max() < 1e-4, view
    both = classify_tile(run, p, x, nr, nc, p.views)
    assert np.allclose(both, np.mean([reference(v) for v in p.views], axis=0), atol=1e-4)


def _classify(inputs, tmp_path, name, mode, **kw):
    from plugin.core.engine import ClassifyRequest, run_classification
    res = run_classification(ClassifyRequest(inputs, MODEL, str(tmp_path / f"{name}.tif"),
                                             probabilities=True, inference_mode=mode, **kw))
    ds = gdal.Open(res.extra_outputs["probabilities"])
    probs = ds.ReadAsArray()
    ds = None
    with open(res.manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    return res, probs, manifest


def test_the_three_modes_on_the_sample_city(sample_city, tmp_path, card, session):
    """Windows mode is the per-patch network exactly; fast and accurate run the trunk once per
    tile (a tenth of the pixels or less). Their maps differ from the windows map where the
    shared features see real neighbours instead of a window's zero padding: on the sample city
    (layouts painted with small scene crops) they share about 60 % of cells; on real scene
    mosaics 75-85 %, with higher accuracy (the card's map-level modes, test_vhr_model)."""
    from plugin.core.inference_modes import MODE_LABELS
    inputs = {"vhr": sample_city.inputs["vhr"]}
    ds = gdal.Open(inputs["vhr"])
    x0, _, _, y0, _, _ = ds.GetGeoTransform()
    extent = (x0, y0 - 1350, x0 + 1500, y0, ds.GetProjection())   # 50 x 45 cells of 30 m
    ds = None
    runs = {m: _classify(inputs, tmp_path, m, m, extent=extent)
            for m in ("windows", "accurate", "fast")}
    default, _, manifest = _classify(inputs, tmp_path, "default", None, extent=extent)
    assert default.inference_mode == "accurate" and manifest["tiling"]["inference_mode"] == "accurate"
    for mode, (res, probs, manifest) in runs.items():
        assert res.inference_mode == mode and manifest["tiling"]["inference_mode"] == mode
        said = [m for m in res.messages if m.startswith("Inference mode:")]
        # the scene model's shared trunk: four views in the accurate and per-window modes
        assert said == [f"Inference mode: {MODE_LABELS[mode]}."
                        + ("" if mode == "fast" else
                           " Views: identity, flip_x, flip_y, transpose.")]
    win, acc, fast = (runs[m][1] for m in ("windows", "accurate", "fast"))
    cells = runs["windows"][0].timings["patches"]
    assert cells == runs["fast"][0].timings["patches"] == win.shape[1] * win.shape[2]
    # the work: every window 4 times vs. each tile 4 times / once
    pixels = {m: runs[m][0].timings["network_pixels"] for m in runs}
    assert pixels["windows"] == cells * 96 * 96 * 4
    assert pixels["windows"] >= 5 * pixels["accurate"] and pixels["accurate"] == 4 * pixels["fast"]
    # windows mode = the per-patch network: check cells against the graph run on their windows
    from plugin.core.grid import plan_grid
    from plugin.core.patches import PatchReader
    from plugin.core.shared_trunk import classify_windows
    grid = plan_grid(card, inputs, extent)
    with PatchReader(card, inputs, grid, mode="windows") as reader:
        windows, _ = reader.read(7, 11, 5, 4)
    x, _ = windows["vhr"]
    view = np.lib.stride_tricks.sliding_window_view(x, (96, 96), axis=(1, 2))[:, ::30, ::30]
    batch = np.ascontiguousarray(view.transpose(1, 2, 0, 3, 4).reshape(20, 3, 96, 96))
    ref = classify_windows(lambda feed: session.run([card.output.name], feed)[0], card.patch,
                           batch, card.patch.views)
    assert np.abs(win[:, 11:15, 7:12].transpose(1, 2, 0).reshape(20, 8) - ref).max() < 1e-5
    # the shared-trunk maps: mostly the windows map's classes (a pooling at the wrong place
    # would leave chance agreement), accurate closer than fast
    same = {name: float((other.argmax(0) == win.argmax(0)).mean())
            for name, other in (("accurate", acc), ("fast", fast))}
    print(f"\nsame class as the windows map: {same}")
    assert same["accurate"] > 0.55 and same["fast"] > 0.5


def test_progress_and_cancel_act_between_views(sample_city, tmp_path):
    """Cancel is checked after every view of a tile: a cancelled run writes nothing."""
    from plugin.core.engine import ClassifyRequest, run_classification
    from plugin.core.errors import Cancelled
    calls = []

    def progress(fraction, message):
        calls.append(message)

    out = tmp_path / "cancelled.tif"
    with pytest.raises(Cancelled):
        run_classification(ClassifyRequest({"vhr": sample_city.inputs["vhr"]}, MODEL, str(out),
                                           inference_mode="accurate"),
                           progress=progress, is_cancelled=lambda: any(
                               "cells" in m for m in calls))
    assert any("cells" in m for m in calls), "progress inside the first tile"
    assert not list(tmp_path.iterdir())


def test_unknown_mode_is_a_clear_error(sample_city, tmp_path):
    from plugin.core.engine import ClassifyRequest, run_classification
    from plugin.core.errors import InputError
    with pytest.raises(InputError, match="fast, accurate, windows"):
        run_classification(ClassifyRequest({"vhr": sample_city.inputs["vhr"]}, MODEL,
                                           str(tmp_path / "x.tif"), inference_mode="quick"))
    assert not list(tmp_path.iterdir())


def test_a_model_without_shared_trunk_runs_window_by_window(tmp_path):
    """Imported patch models (e.g. So2Sat) have a per-patch graph: asking for fast says so
    and classifies window by window."""
    from plugin.core.engine import ClassifyRequest, run_classification
    model = tmp_path / "tiny.onnx"
    write_tiny_patch_model(str(model))
    img = np.random.default_rng(0).integers(1, 255, (3, 40, 48)).astype(np.uint8)
    src = write_raster(tmp_path / "img.tif", img, 32633, (X0, 2, 0, Y0, 0, -2), gdal.GDT_Byte, 0)
    res = run_classification(ClassifyRequest({"vhr": src}, str(model), str(tmp_path / "o.tif"),
                                             inference_mode="fast"))
    assert res.inference_mode == "windows"
    assert any("no shared-trunk graph" in m for m in res.messages)
