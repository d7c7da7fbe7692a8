"""Build the So2Sat ResNet20 as an ONNX graph, node by node, from the h5 tensors (no torch).

Graph (opset 17, IR 8 so that onnxruntime >= 1.13 runs it, as our own exported model):

    s2 [N, 10, 32, 32] float32, NCHW, already scaled (see :mod:`.preprocess` for the float16 step)
      -> Conv / BatchNormalization(epsilon 1e-3) / Relu / Add ... exactly :data:`so2sat_h5.LAYERS`
      -> GlobalAveragePool (= Keras AveragePooling2D 8x8 on the 8x8 map) -> Flatten
      -> features [N, 256]
      -> Gemm(dense kernel (256, 17), bias) -> logits [N, 17] -> Softmax(axis 1) -> probs [N, 17]

Conv kernels are the Keras ``(kh, kw, c_in, c_out)`` tensors transposed with axes (3, 2, 0, 1)
to ONNX's ``(c_out, c_in, kh, kw)`` (no flip: both are cross-correlations); 'same' padding is
``pads=[1, 1, 1, 1]`` for the 3x3 stride-1 convs and none for the 1x1 ones (stride 2 keeps
pixels 0, 2, 4 ...).  BatchNorm stays a BatchNormalization node with the Keras epsilon (exact
semantics; onnxruntime fuses conv + BN itself when it loads the model).  Every tensor is looked
up by its Keras layer name and becomes an initializer ``<layer>.<var>``, so the ONNX file can be
traced back to the h5 tensor by tensor.
"""
import json

import numpy as np

from ..core.model_card import METADATA_KEY
from . import so2sat_h5 as h5
from .card import INPUT_NAME, IMPORTER_VERSION, lcz_card

__all__ = ["build_model", "model_bytes", "save_model", "lcz_card", "OPSET", "IR_VERSION"]

OPSET = 17
IR_VERSION = 8
PRODUCER = "urban-functions-so2sat-importer"


def import_onnx():
    try:
        import onnx
    except ImportError as exc:
        from ..core.errors import MissingDependencyError
        raise MissingDependencyError("Importing the So2Sat model needs the Python package 'onnx' "
                                     "('pip install onnx' in QGIS's Python).") from exc
    return onnx


def build_model(weights, card=None, input_name=INPUT_NAME):
    """The ONNX ``ModelProto`` of the network with ``weights`` (a :class:`So2SatWeights` or
    {layer: {var: array}}), and ``card`` (dict) in ``metadata_props['model_card']``."""
    onnx = import_onnx()
    from onnx import TensorProto, helper, numpy_helper
    w = getattr(weights, "weights", weights)
    nodes, inits = [], []
    out = {}   # Keras layer name -> ONNX tensor name

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    for layer in h5.LAYERS:
        ins = [out[i] for i in layer.inputs]
        name = layer.name
        if layer.op == "input":
            out[name] = input_name
            continue
        if layer.op == "conv":
            p = w[name]
            # Keras (kh, kw, c_in, c_out) -> ONNX (c_out, c_in, kh, kw); no flip
            kernel = np.transpose(p["kernel"], (3, 2, 0, 1))
            pad = layer.kernel // 2
            nodes.append(helper.make_node(
                "Conv", [ins[0], init(f"{name}.weight", kernel), init(f"{name}.bias", p["bias"])],
                [name], name=name, kernel_shape=[layer.kernel, layer.kernel],
                strides=[layer.stride, layer.stride], pads=[pad] * 4, dilations=[1, 1], group=1))
        elif layer.op == "bn":
            p = w[name]
            nodes.append(helper.make_node(
                "BatchNormalization",
                [ins[0], init(f"{name}.gamma", p["gamma"]), init(f"{name}.beta", p["beta"]),
                 init(f"{name}.moving_mean", p["moving_mean"]),
                 init(f"{name}.moving_variance", p["moving_variance"])],
                [name], name=name, epsilon=h5.BN_EPSILON))
        elif layer.op == "relu":
            nodes.append(helper.make_node("Relu", ins, [name], name=name))
        elif layer.op == "add":
            nodes.append(helper.make_node("Add", ins, [name], name=name))
        elif layer.op == "avgpool":
            # 8x8 'valid' pooling of the 8x8 map (the input is fixed at 32x32) = global average
            nodes.append(helper.make_node("GlobalAveragePool", ins, [name], name=name))
        elif layer.op == "flatten":
            nodes.append(helper.make_node("Flatten", ins, ["features"], name=name, axis=1))
            out[name] = "features"
            continue
        elif layer.op == "dense":
            p = w[name]
            nodes.append(helper.make_node(
                "Gemm",
                [ins[0], init(f"{name}.kernel", p["kernel"]), init(f"{name}.bias", p["bias"])],
                ["logits"], name=name, alpha=1.0, beta=1.0, transA=0, transB=0))
            nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name=f"{name}_softmax",
                                          axis=1))
            out[name] = "probs"
            continue
        else:
            raise ValueError(f"unknown op {layer.op}")
        out[name] = name

    batch = "batch"
    graph = helper.make_graph(
        nodes, "so2sat_lcz42_s2_resnet20",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                       [batch, h5.BANDS, h5.PATCH, h5.PATCH])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, h5.N_CLASSES]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, h5.N_CLASSES]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, h5.N_FEATURES])],
        initializer=inits)
    model = helper.make_model(graph, producer_name=PRODUCER, producer_version=IMPORTER_VERSION,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    if card is not None:
        model.doc_string = card.get("summary", "")
        helper.set_model_props(model, {METADATA_KEY: json.dumps(card, ensure_ascii=False,
                                                                separators=(",", ":"))})
    onnx.checker.check_model(model, full_check=True)
    return model


def model_bytes(model):
    """The serialised model, all tensors inline (no external data: one self-contained file)."""
    return model.SerializeToString()


def save_model(model, path):
    """Write ``model`` to ``path`` as one file with every weight inside (external data off)."""
    import_onnx().save_model(model, path, save_as_external_data=False)
