"""Map-level accuracy of a model on a labelled area: classify with the engine, compare the cells
fully inside the label polygons (or under the points) with the map.

What the user gets is a map, so that is what is scored: the engine's own classify (the same
windows, resampling and tiling as in QGIS), not a scene benchmark. Used by the evidence scripts
and by the scale study of the VHR model (:func:`with_patch_gsd`).
"""
import json
import os
import tempfile

import numpy as np

from ..core.classes import FUNCTION_CLASSES
from .class_map import load_class_map
from .labels import UNLABELLED, rasterise
from .metrics import confusion_matrix, scores

KEYS = tuple(c.key for c in FUNCTION_CLASSES)


def score(truth, pred):
    """Scores of class indices ``pred`` on the labelled cells of ``truth`` (both [H, W], card
    order, UNLABELLED elsewhere). A labelled cell the map leaves empty counts as wrong, never
    as the first class."""
    sel = truth != UNLABELLED
    t = truth[sel].astype(np.int64)
    p = pred[sel].astype(np.int64)
    empty = p < 0
    p[empty] = (t[empty] + 1) % len(KEYS)
    cm = confusion_matrix(t, p, len(KEYS))
    s = scores(cm, list(KEYS))
    s["confusion_matrix"] = cm.tolist()
    return s


def classify_on_grid(model_path, inputs, grid, folder, aoi=None, inference_mode=None):
    """Class indices [H, W] (UNLABELLED where the map is empty) of ``model_path`` run by the
    engine's classify over ``grid``. The map holds our functions. Where classify plans
    another grid, the map is read onto ``grid`` (each cell takes the value under its centre;
    outside the map, UNLABELLED, which scores as wrong on a labelled cell): So2Sat's functions
    on its own coarser grid, or a model whose card leaves out an input (``ignored_inputs``),
    whose map covers only the other inputs' area."""
    from ..core.engine import ClassifyRequest, run_classification
    out = os.path.join(folder, "map.tif")
    res = run_classification(ClassifyRequest(inputs=inputs, model_path=model_path,
                                             output_path=out,
                                             extent=grid.bounds + (grid.crs_wkt,), aoi=aoi,
                                             inference_mode=inference_mode))
    made = [res.output_path, res.manifest_path, *res.extra_outputs.values()]
    pred = read_onto(out, grid)
    _remove(made)
    return pred


def _indices(codes):
    return np.where(codes > 0, codes.astype(np.int16) - 1, UNLABELLED).astype(np.int16)


def read_onto(path, grid):
    """Class indices [H, W] of the class map at ``path`` read onto ``grid`` (another grid or
    cell size), each cell taking the value under its centre."""
    from osgeo import gdal
    xmin, ymin, xmax, ymax = grid.bounds
    ds = gdal.Warp("", path, format="MEM", outputBounds=(xmin, ymin, xmax, ymax),
                   width=grid.width, height=grid.height, dstSRS=grid.crs_wkt,
                   resampleAlg="near")
    return _indices(ds.GetRasterBand(1).ReadAsArray())


def _remove(paths):
    """The maps of a scoring run and their sidecars (all in a working folder)."""
    for path in paths:
        for p in (path, path + ".aux.xml", path + ".ovr"):
            if os.path.exists(p):
                os.remove(p)


def map_predictions(model_path, inputs, labelset, class_map_path=None, work=None,
                    inference_mode=None):
    """(labels [H, W], predicted class indices [H, W], grid, seconds of the classify run) of
    the map that ``model_path`` makes of ``inputs`` over the labels' area."""
    import time
    from ..core.grid import plan_grid
    from ..core.model_card import read_card
    card = read_card(model_path)
    probe = plan_grid(card, inputs)
    b = labelset.bounds(probe.crs_wkt)
    grid = plan_grid(card, inputs, (b[0], b[1], b[2], b[3], probe.crs_wkt))
    ras = rasterise(labelset, load_class_map(class_map_path), grid, KEYS)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        t = time.perf_counter()
        pred = classify_on_grid(model_path, inputs, grid, tmp, inference_mode=inference_mode)
        seconds = time.perf_counter() - t
    return ras.labels, pred, grid, seconds


def map_scores(model_path, inputs, labelset, class_map_path=None, work=None, inference_mode=None):
    """Scores (OA, kappa, macro F1, per-class F1, confusion matrix, cells) of the map that
    ``model_path`` makes of ``inputs`` over the labels' area."""
    labels, pred, grid, _ = map_predictions(model_path, inputs, labelset, class_map_path, work,
                                            inference_mode)
    s = score(labels, pred)
    s["cells"] = int((labels != UNLABELLED).sum())
    s["cell_m"] = grid.cell
    return s


def with_patch_gsd(model_path, out_path, gsd_m, stride_px):
    """A copy of a patch classifier whose card asks the engine for another pixel size (same
    weights, same patch in pixels, so another window on the ground)."""
    from ..core.model_card import read_card
    from .onnx_io import set_card
    from .vhr_card import window
    raw = json.loads(json.dumps(read_card(model_path).raw))
    p = raw["patch"]
    p.update(gsd_m=float(gsd_m), stride_px=int(stride_px),
             window_px=window(p["patch_px"], stride_px),
             window_ground_m=p["patch_px"] * gsd_m)
    for spec in raw["inputs"]:
        spec["gsd_m"] = float(gsd_m)
    raw["output"]["gsd_m"] = stride_px * gsd_m
    set_card(model_path, raw, out_path)
    return out_path
