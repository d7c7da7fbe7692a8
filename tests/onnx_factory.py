"""A tiny ONNX model with a valid card, built with onnx.helper, for engine tests.

It averages VHR to the output grid, upsamples NTL, concatenates everything with the mask and
applies a fixed random 1x1 convolution + softmax: cheap, deterministic, and it uses every input.
"""
import json

import numpy as np

from plugin.core.classes import class_table

S2_BANDS = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
SEASONS = ("s2_spring", "s2_summer", "s2_autumn", "s2_winter")


def tiny_card(name="tiny-test-model"):
    inputs = [
        {"name": "vhr", "modality": "vhr", "bands": ["red", "green", "blue"], "dtype": "uint8",
         "gsd_m": 2.0, "resampling": "average", "scale": 1 / 255, "mean": [0.4] * 3, "std": [0.2] * 3},
        {"name": "ntl", "modality": "ntl", "bands": ["radiance"], "dtype": "float32", "gsd_m": 40.0,
         "resampling": "bilinear", "transform": "log1p", "mean": [1.0], "std": [1.0]},
    ] + [{"name": s, "modality": s, "bands": S2_BANDS, "dtype": "uint16", "gsd_m": 10.0,
          "resampling": "bilinear", "scale": 1e-4, "mean": [0.1] * 10, "std": [0.05] * 10}
         for s in SEASONS]
    return {"schema": "urban-functions-model-card/1", "name": name, "version": "0.0.1",
            "title": "Tiny test model", "summary": "Random 1x1 convolution, for tests only.",
            "task": "segmentation", "classes": class_table(), "inputs": inputs,
            "mask_input": "valid", "min_inputs": 1,
            "output": {"name": "probs", "gsd_m": 10.0, "size_multiple": 4, "context_cells": 0,
                       "default_tile": 32, "default_overlap": 8},
            "licence": "GPL-2.0-or-later", "training": {"note": "not trained"}}


GRAPH_OUTPUTS = [
    {"name": "built_up", "kind": "graph_output", "output": "built_up", "label": "Built-up",
     "bands": ["built-up fraction"], "style": "fraction",
     "description": "here: the summed probability of classes 1-3"},
    {"name": "gates", "kind": "graph_output", "output": "gates", "label": "Input weights",
     "bands": ["VHR", "NTL", "Sentinel-2", "Temporal"], "style": "weights", "optional": True,
     "description": "here: a softmax over four random 1x1 convolutions"},
]


def tiny_card_with_graph_outputs(name="tiny-graph-outputs"):
    card = tiny_card(name)
    card["derived_outputs"] = [dict(d) for d in GRAPH_OUTPUTS]
    return card


def write_tiny_model(path, card=None, seed=0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    card = card or tiny_card()
    rng = np.random.default_rng(seed)
    n_in = 3 + 1 + 10 * 4 + 6
    weight = rng.normal(0, 1, (8, n_in, 1, 1)).astype(np.float32)
    dyn = ["N", "H", "W"]
    inputs = [helper.make_tensor_value_info("vhr", TensorProto.FLOAT, ["N", 3, "H5", "W5"]),
              helper.make_tensor_value_info("ntl", TensorProto.FLOAT, ["N", 1, "Hq", "Wq"])]
    inputs += [helper.make_tensor_value_info(s, TensorProto.FLOAT, ["N", 10] + dyn[1:]) for s in SEASONS]
    inputs += [helper.make_tensor_value_info("valid", TensorProto.FLOAT, ["N", 6] + dyn[1:])]
    nodes = [
        helper.make_node("AveragePool", ["vhr"], ["vhr10"], kernel_shape=[5, 5], strides=[5, 5]),
        helper.make_node("Resize", ["ntl", "", "scales"], ["ntl10"], mode="nearest"),
        helper.make_node("Concat", ["vhr10", "ntl10", *SEASONS, "valid"], ["x"], axis=1),
        helper.make_node("Conv", ["x", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits = [numpy_helper.from_array(weight, "w"),
             numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "scales")]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 8, "H", "W"])]
    if any(d.get("kind") == "graph_output" for d in card.get("derived_outputs", ())):
        # built_up = P(class 1) + P(2) + P(3); gates = softmax of four random 1x1 convolutions
        nodes += [
            helper.make_node("Slice", ["probs", "s0", "s3", "s_axis"], ["p123"]),
            helper.make_node("ReduceSum", ["p123", "s_axis"], ["built_up"], keepdims=1),
            helper.make_node("Conv", ["x", "wg"], ["gate_logits"]),
            helper.make_node("Softmax", ["gate_logits"], ["gates"], axis=1),
        ]
        inits += [numpy_helper.from_array(np.array([0], np.int64), "s0"),
                  numpy_helper.from_array(np.array([3], np.int64), "s3"),
                  numpy_helper.from_array(np.array([1], np.int64), "s_axis"),
                  numpy_helper.from_array(rng.normal(0, 1, (4, n_in, 1, 1)).astype(np.float32),
                                          "wg")]
        outputs += [helper.make_tensor_value_info("built_up", TensorProto.FLOAT, ["N", 1, "H", "W"]),
                    helper.make_tensor_value_info("gates", TensorProto.FLOAT, ["N", 4, "H", "W"])]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"model_card": json.dumps(card)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def tiny_patch_card(name="tiny-patch-model"):
    """A patch classifier card: 8x8 RGB patches every 4 px of 2 m (8 m cells), window -2..5."""
    spec = {"name": "vhr", "modality": "vhr", "bands": ["red", "green", "blue"], "dtype": "uint8",
            "gsd_m": 2.0, "resampling": "average", "scale": 1 / 255, "mean": [0.5] * 3,
            "std": [0.25] * 3}
    card = tiny_card(name)
    card.update({"task": "patch_classification", "inputs": [spec], "mask_input": None,
                 "output": {"name": "probs", "gsd_m": 8.0, "default_tile": 16,
                            "default_overlap": 0},
                 "patch": {"input": "vhr", "patch_px": 8, "stride_px": 4, "gsd_m": 2.0,
                           "window_px": [-2, 5], "padding": "symmetric"},
                 "fusion": {"method": "mean_probs"}})
    return card


def tiny_patch_weights(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 3, (8, 3 * 64)).astype(np.float32)


def write_tiny_patch_model(path, seed=0):
    """probs = softmax(W @ flatten(patch)): every pixel of the patch matters (tests padding)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = tiny_patch_weights(seed)
    nodes = [helper.make_node("Flatten", ["vhr"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny_patch", [helper.make_tensor_value_info("vhr", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"model_card": json.dumps(tiny_patch_card())})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def reference_patch_classes(image_uint8, seed=0):
    """What the patch model must give on a whole image (the original-pipeline recipe)."""
    x = (image_uint8.astype(np.float32) / 255 - 0.5) / 0.25
    _, h, w = x.shape
    rows, cols = -(-h // 4), -(-w // 4)
    padded = np.pad(x, ((0, 0), (2, 8), (2, 8)), mode="symmetric")
    out = np.zeros((rows, cols), np.uint8)
    wt = tiny_patch_weights(seed)
    for r in range(rows):
        for c in range(cols):
            patch = padded[:, 4 * r:4 * r + 8, 4 * c:4 * c + 8].reshape(-1)
            out[r, c] = int(np.argmax(wt @ patch)) + 1
    return out
