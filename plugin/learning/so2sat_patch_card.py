"""The card of a So2Sat patch classifier of functions (:mod:`.so2sat_patch`), from the imported
So2Sat card. No torch: the training job plans its grid from this card before loading torch.

What changes from the imported card: the classes are our eight functions (the LCZ table and the
LCZ-derived outputs go), the output is ``[N, 8]`` probabilities on 40 m cells (So2Sat's own grid
is 100 m), and each cell is classified from the 32 x 32 window *centred on the cell* (the
imported model keeps the original pipeline's window centred on the cell's upper-left corner; a
label belongs to its cell). Inputs (Sentinel-2
L1C seasons, DN / 10000 rounded as the original) and the season fusion (mean of probabilities)
stay as they are.
"""
import json

from ..core.classes import class_table

KIND = "so2sat_patch"           # architecture.config.kind (also in .so2sat_patch)
SO2SAT_NAME = "so2sat-lcz42-s2-resnet20"
PATCH_PX = 32
# 40 m cells: four times the labelled cells of So2Sat's 100 m where labels must hold whole
# cells (polygons of a few hectares), and one cell per position of the trunk's feature map
STRIDE_PX = 4
GSD_M = 10.0
# centred: the cell's own pixels 0..3 sit in the middle of the 32 px window
WINDOW_PX = (-(PATCH_PX - STRIDE_PX) // 2, STRIDE_PX - 1 + (PATCH_PX - STRIDE_PX) // 2)


def is_so2sat_model(card):
    """The imported So2Sat LCZ42 network, or a So2Sat patch classifier trained from it."""
    if card.task != "patch_classification":
        return False
    config = (card.raw.get("architecture") or {}).get("config") or {}
    return card.name == SO2SAT_NAME or config.get("kind") == KIND


def function_card(raw):
    """``raw`` (the imported So2Sat card, or a trained So2Sat patch model's, with the inputs
    to keep) made a card of the function classifier; a new dict."""
    raw = json.loads(json.dumps(raw))
    raw["classes"] = class_table()
    raw["output"] = {
        "name": "probs", "gsd_m": GSD_M * STRIDE_PX, "size_multiple": 1, "context_cells": 2,
        "default_tile": 64, "default_overlap": 0,
        "content": "function probabilities [N, 8] (softmax in the graph), one row per patch"}
    lo, hi = WINDOW_PX
    raw["patch"] = {
        "input": raw.get("patch", {}).get("input", "s2"), "layout": "NCHW",
        "patch_px": PATCH_PX, "stride_px": STRIDE_PX, "gsd_m": GSD_M,
        "cell_m": GSD_M * STRIDE_PX, "window_px": [lo, hi], "padding": "symmetric",
        "description": (f"Each {GSD_M * STRIDE_PX:g} m cell is classified from the {PATCH_PX} x {PATCH_PX} pixel "
                        f"window (320 m at 10 m) centred on it: pixels {lo} .. {hi} of the "
                        "cell's upper-left pixel; pixels outside the image repeat the edge.")}
    raw["derived_outputs"] = []
    raw.pop("function_mapping", None)
    raw["fusion"] = {"method": "mean_probs", "over": [i["modality"] for i in raw["inputs"]],
                     "description": ("Each given season is classified separately; the 8 "
                                     "function probabilities are averaged without weights.")}
    arch = {k: v for k, v in (raw.get("architecture") or {}).items()
            if k not in ("parameters", "onnx")}
    arch.update({
        "description": (
            "The So2Sat LCZ42 Sentinel-2 ResNet20 (MIT, So2Sat project team) as a classifier "
            "of functions: its convolutions and dense layer give 17 LCZ probabilities, summed "
            "per function with the LCZ -> function table, as log-probabilities plus a learnt "
            "residual layer (256 -> 8, zero at the start: the untrained network is the "
            "imported model's LCZ -> functions). plugin/learning/so2sat_patch.py."),
        "config": {"n_classes": len(raw["classes"]), "kind": KIND},
        "graph": "windows", "input_px": PATCH_PX})
    raw["architecture"] = arch
    return raw
