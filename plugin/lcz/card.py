"""The model card of the imported So2Sat LCZ42 Sentinel-2 ResNet20 (task ``patch_classification``).

The card follows ``urban-functions-model-card/1`` (:mod:`plugin.core.model_card`) with one new
task and the keys it needs.  Except for ``task`` it passes today's :func:`parse_card` (the
tests check that), so the engine reads classes, inputs and output as usual; what it must add for
``patch_classification`` is the ``patch`` and ``fusion`` sections:

``patch``   the network sees one ``patch_px`` x ``patch_px`` window of ``gsd_m`` pixels and
            returns one class vector; patches are cut every ``stride_px`` pixels, giving output
            cells of ``stride_px * gsd_m`` (100 m); a cell's patch is centred on the cell's
            **upper-left corner** (``anchor``), the pixel stack is padded by ``pad_px`` with
            ``padding`` (numpy ``'symmetric'``: the edge pixel is repeated), the output grid has
            ceil(size / stride) cells per axis with the input's origin.
``fusion``  every present season is run through the *same* ONNX input (``inputs[*].onnx_input``)
            and the probabilities are averaged (``mean_probs``: mean of softmax, unweighted).
``derived_outputs``  rasters the engine computes from the averaged probabilities: the
            settlement extent (sum of P(LCZ 1-10), 0-1; derived, not a trained regression) and
            the urban-function map (argmax of the LCZ probabilities summed per function with the
            table of :mod:`.classes`, in our function codes and colours).

Per input the engine feeds ``round_float16(round_float16(raw) * scale)`` (``rounding``), as
float32, NCHW ``[N, 10, 32, 32]``; ``mean`` 0 / ``std`` 1, no transform.
"""
from ..core.model_card import SCHEMA
from .classes import BUILT_CODES, function_groups, lcz_class_table
from . import so2sat_h5 as h5

IMPORTER_VERSION = "1.1.0"   # 1.1: derived outputs settlement_extent, urban_functions
NAME = "so2sat-lcz42-s2-resnet20"
FILE_STEM = "so2sat_lcz42_s2_resnet20"
TASK = "patch_classification"
INPUT_NAME = "s2"
OUTPUTS = ("probs", "logits", "features")
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
SEASONS = ("s2_spring", "s2_summer", "s2_autumn", "s2_winter")
PATCH_PX = 32
STRIDE_PX = 10
GSD_M = 10.0
PAD_PX = 16
LICENCE = "MIT"
COPYRIGHT = "Copyright (c) 2021 ERC starting grant So2Sat project team"
CITATIONS = (
    "X. X. Zhu et al., \"So2Sat LCZ42: A Benchmark Data Set for the Classification of Global "
    "Local Climate Zones\", IEEE Geoscience and Remote Sensing Magazine 8(3), 76-89, 2020.",
    "C. Qiu, L. Mou, M. Schmitt, X. X. Zhu, \"Local climate zone-based urban land cover "
    "classification from multi-seasonal Sentinel-2 images with a recurrent residual network\", "
    "ISPRS Journal of Photogrammetry and Remote Sensing 154, 151-162, 2019.",
    "X. X. Zhu et al., \"The urban morphology on our planet - Global perspectives from space\", "
    "Remote Sensing of Environment, 2022 (So2Sat GUL).",
)


def licence_filename(stem=FILE_STEM):
    return f"{stem}.LICENSE.txt"


def derived_outputs():
    """Rasters the engine computes from the (season-averaged) LCZ probabilities."""
    return [
        {"name": "settlement_extent", "kind": "class_sum", "codes": list(BUILT_CODES),
         "label": "Settlement extent (built LCZ 1-10 probability; derived from LCZ "
                  "probabilities, not a trained regression)",
         "description": ("Per 100 m cell the summed probability of the ten built types LCZ 1-10 "
                         "(0-1). It is derived from the LCZ classifier's probabilities, not "
                         "a regression trained on settlement or built-up fractions, and it is "
                         "not calibrated as a built-up area fraction.")},
        {"name": "urban_functions", "kind": "class_groups",
         "label": "Urban functions derived from LCZ (rule-of-thumb mapping)",
         "description": ("Per cell the function whose summed LCZ probability is largest, with "
                         "the documented LCZ -> function table of plugin/lcz/classes.py. LCZs "
                         "describe urban form, not land use; public services never appear."),
         "groups": function_groups()},
    ]


def lcz_card(sha256=h5.SHA256, size=h5.FILE_BYTES, keras_version="2.1.5",
             importer_version=IMPORTER_VERSION, stem=FILE_STEM):
    """The card dict (JSON-ready) for the ONNX converted from the h5 file with ``sha256``."""
    inputs = []
    for season in SEASONS:
        label = "Sentinel-2 " + season.split("_")[1]
        inputs.append({
            "name": season, "modality": season, "onnx_input": INPUT_NAME,
            "label": label + " (L1C TOA, cloud-free seasonal composite)",
            "bands": list(S2_BANDS), "dtype": "uint16", "gsd_m": GSD_M,
            "resampling": "nearest", "scale": 1e-4, "offset": 0.0, "transform": "none",
            "rounding": "float16",
            "mean": [0.0] * len(S2_BANDS), "std": [1.0] * len(S2_BANDS), "nodata_fill": 0.0,
            "notes": ("Level-1C DN = TOA reflectance x 10000 without offset: products of "
                      "processing baseline 04.00 and later (from 25 Jan 2022) carry +1000 that "
                      "must be removed first. The original reads the 13-band composite's bands "
                      "2,3,4,5,6,7,8,9,12,13 (1-based), i.e. these ten, and computes "
                      "float16(float16(DN) / 10000)."),
        })
    card = {
        "schema": SCHEMA,
        "name": NAME,
        "version": "2019-06-27",
        "title": "So2Sat LCZ42 Sentinel-2 ResNet20 (17 Local Climate Zones, 100 m)",
        "summary": ("Pretrained So2Sat network (TUM / DLR, MIT licence): Local Climate Zones "
                    "from Sentinel-2 L1C seasons on a 100 m grid; imported from the original "
                    "Keras weights."),
        "task": TASK,
        "classes": lcz_class_table(),
        "inputs": inputs,
        "mask_input": None,
        "min_inputs": 1,
        "output": {
            "name": "probs", "gsd_m": GSD_M * STRIDE_PX, "size_multiple": 1,
            "context_cells": 2, "default_tile": 64, "default_overlap": 0,
            "content": "class probabilities [N, 17] (softmax in the graph), one row per patch",
            "extra": {"logits": "[N, 17] pre-softmax values",
                      "features": "[N, 256] global-average-pooled final BN-ReLU map "
                                  "(the Dense layer's input)"},
        },
        "patch": {
            "input": INPUT_NAME, "layout": "NCHW", "patch_px": PATCH_PX, "stride_px": STRIDE_PX,
            "gsd_m": GSD_M, "cell_m": GSD_M * STRIDE_PX,
            "anchor": "cell_upper_left",
            "window_px": [-PAD_PX, PAD_PX - 1],
            "padding": "symmetric", "pad_px": PAD_PX,
            "grid": "ceil(size_px / stride_px) cells per axis, same origin and CRS as the input",
            "batch": "dynamic (N >= 1); the original predicts 256 at a time",
            "description": ("Cell (r, c) of the 100 m grid is classified from the 32 x 32 pixel "
                            "window rows 10r-16 .. 10r+15, columns 10c-16 .. 10c+15 of the "
                            "input, i.e. centred on the cell's upper-left corner as in the "
                            "original pipeline; pixels outside the image come from numpy "
                            "'symmetric' padding (edge pixel repeated)."),
        },
        "fusion": {"method": "mean_probs", "over": list(SEASONS),
                   "description": ("Each available season is classified separately; the 17 "
                                   "probabilities are averaged without weights (mean of "
                                   "softmax, not of logits); label = argmax + 1.")},
        "function_mapping": {"source": "plugin/lcz/classes.py (LCZ_TO_FUNCTION)",
                             "method": "sum the LCZ probabilities per mapped function"},
        "derived_outputs": derived_outputs(),
        "intended_use": ("Local Climate Zone maps of cities worldwide from Sentinel-2 L1C "
                         "imagery at 100 m; a coarse urban-form prior for function mapping."),
        "limitations": ("Trained on So2Sat LCZ42 (42 cities plus 10 test regions, 2017 "
                        "seasonal composites). Expects top-of-atmosphere L1C reflectance, not "
                        "L2A. LCZ describe urban form, not land use; the function mapping is a "
                        "rule of thumb, and its maps miss most small water bodies."),
        # measured by scripts/osm_evidence.py (make evidence-osm), docs/osm_evidence.json "e"
        "real_data_validation": {
            "status": "validated",
            "summary": ("the network by its authors on So2Sat LCZ42 (real Sentinel-2 of 42 "
                        "cities); its LCZ -> functions map by Urban Functions against real "
                        "OpenStreetMap land use on one winter scene (Havelland): OA 0.65 on "
                        "133,936 labelled 10 m cells, residential F1 0.71, water F1 0.19"),
            "data": "So2Sat LCZ42; OpenStreetMap land use over ../shared/data/s2 (west part)",
            "figures": {"osm_overall_accuracy": 0.6452, "osm_residential_f1": 0.7071,
                        "osm_water_f1": 0.1856, "osm_cells": 133936}},
        "architecture": {
            "description": ("ResNet v2 (pre-activation, bottleneck), depth 20: 3 stages of 2 "
                            "units, widths 16/64/128 -> 64/128/256 channels, BatchNorm eps "
                            "1e-3, global average pool, Dense(17) + softmax."),
            "parameters": h5.N_PARAMS,
            "onnx": "built node by node from the h5 tensors by name (plugin/lcz/so2sat_onnx.py)",
        },
        "training": {"dataset": "So2Sat LCZ42", "by": "So2Sat project, TUM / DLR",
                     "weights_file": h5.FILENAME},
        "metrics": {},
        "licence": LICENCE,
        "licence_file": licence_filename(stem),
        "copyright": COPYRIGHT,
        "citation": list(CITATIONS),
        "authors": "So2Sat project team (Technical University of Munich, DLR)",
        "provenance": {
            "source": h5.SOURCE_REPO, "commit": h5.SOURCE_COMMIT, "path": h5.SOURCE_PATH,
            "url": h5.SOURCE_URL, "weights_sha256": sha256, "weights_bytes": int(size),
            "keras_version": keras_version,
            "converted_by": f"Urban Functions So2Sat importer {importer_version}",
        },
    }
    return card
