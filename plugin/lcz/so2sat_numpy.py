"""A plain NumPy forward pass of the So2Sat ResNet20, straight from the h5 tensors (by name).

It works channels-last in float64 on the untransposed Keras tensors, so it shares nothing with
the ONNX graph but the layer table: the importer uses it as an independent self-check of the
graph it built (layout transposes, padding, BN epsilon, pooling, the head).  It is slow-ish
(about 10 ms a patch) and only meant for a handful of patches.
"""
import numpy as np

from .so2sat_h5 import BN_EPSILON, LAYERS


def _conv_same(x, kernel, bias, stride):
    """Keras Conv2D, padding 'same', on NHWC; kernel (kh, kw, c_in, c_out)."""
    kh, kw, c_in, c_out = kernel.shape
    if kh == 1 and kw == 1:
        # 'same' adds no padding for a 1x1 kernel: keeps pixels 0, s, 2s, ...
        return x[:, ::stride, ::stride, :] @ kernel[0, 0] + bias
    if stride != 1 or kh != kw or kh % 2 != 1:
        raise NotImplementedError("only odd square kernels with stride 1 and 1x1 kernels")
    p = kh // 2
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((n, h, w, c_out), x.dtype)
    for i in range(kh):            # cross-correlation, as Keras (no kernel flip)
        for j in range(kw):
            out += xp[:, i:i + h, j:j + w, :] @ kernel[i, j]
    return out + bias


def forward(weights, x_nhwc, dtype=np.float64):
    """Run the network on ``x_nhwc`` (N, 32, 32, 10), already scaled. ``weights``: a
    :class:`~.so2sat_h5.So2SatWeights` or {layer: {var: array}}.  Returns a dict with
    ``probs`` (N, 17), ``logits`` (N, 17) and ``features`` (N, 256) in ``dtype``."""
    w = getattr(weights, "weights", weights)
    x = np.asarray(x_nhwc, dtype)
    if x.ndim != 4 or x.shape[1:] != (32, 32, 10):
        raise ValueError(f"expected (N, 32, 32, 10) channels-last patches, got {x.shape}")
    t = {}
    for layer in LAYERS:
        ins = [t[i] for i in layer.inputs]
        if layer.op == "input":
            y = x
        elif layer.op == "conv":
            p = w[layer.name]
            y = _conv_same(ins[0], p["kernel"].astype(dtype), p["bias"].astype(dtype), layer.stride)
        elif layer.op == "bn":
            p = {k: v.astype(dtype) for k, v in w[layer.name].items()}
            inv = p["gamma"] / np.sqrt(p["moving_variance"] + BN_EPSILON)
            y = (ins[0] - p["moving_mean"]) * inv + p["beta"]
        elif layer.op == "relu":
            y = np.maximum(ins[0], 0)
        elif layer.op == "add":
            y = ins[0] + ins[1]
        elif layer.op == "avgpool":
            n, h, wd, c = ins[0].shape
            k = layer.kernel
            y = ins[0].reshape(n, h // k, k, wd // k, k, c).mean(axis=(2, 4))
        elif layer.op == "flatten":
            y = ins[0].reshape(ins[0].shape[0], -1)
        elif layer.op == "dense":
            p = w[layer.name]
            t["logits"] = ins[0] @ p["kernel"].astype(dtype) + p["bias"].astype(dtype)
            t["features"] = ins[0]
            z = t["logits"] - t["logits"].max(axis=1, keepdims=True)
            e = np.exp(z)
            y = e / e.sum(axis=1, keepdims=True)
        else:
            raise ValueError(f"unknown op {layer.op}")
        t[layer.name] = y
    return {"probs": t[LAYERS[-1].name], "logits": t["logits"], "features": t["features"]}
