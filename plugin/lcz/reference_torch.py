"""Tests only: the So2Sat ResNet20 re-implemented in plain PyTorch (the only module here that
imports torch; QGIS users never need it).

It is written by hand from the prose of ``ARCHITECTURE.md`` (pre-activation bottleneck units,
projection shortcut on the raw unit input) rather than from :data:`so2sat_h5.LAYERS`, so it is an
independent check of the table the ONNX graph is built from.  Weights are loaded by Keras layer
name (``UNITS`` below), never by position.
"""
import numpy as np
import torch
from torch import nn

from .so2sat_h5 import BN_EPSILON

# Per residual unit, by Keras layer number (conv2d_<k>, batch_normalization_<k>): the
# pre-activation BN of the unit input (None for the very first unit, whose branch takes the stem's
# ReLU output directly), the branch's three convs (1x1, 3x3, 1x1) and the BNs after the first two,
# the projection-shortcut conv (None = identity), and the stride of the first conv and projection.
UNITS = (
    # pre-BN  branch convs   branch BNs  projection  stride
    (None,    (2, 3, 4),     (2, 3),     5,          1),
    (4,       (6, 7, 8),     (5, 6),     None,       1),
    (7,       (9, 10, 11),   (8, 9),     12,         2),
    (10,      (13, 14, 15),  (11, 12),   None,       1),
    (13,      (16, 17, 18),  (14, 15),   19,         2),
    (16,      (20, 21, 22),  (17, 18),   None,       1),
)
STEM_CONV, STEM_BN = "conv2d_1", "batch_normalization_1"
HEAD_BN, DENSE = "batch_normalization_19", "dense_1"


def _conv(p, stride=1):
    k = p["kernel"]                               # (kh, kw, c_in, c_out)
    conv = nn.Conv2d(k.shape[2], k.shape[3], k.shape[0], stride=stride, padding=k.shape[0] // 2,
                     bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))))
        conv.bias.copy_(torch.from_numpy(p["bias"]))
    return conv


def _bn(p):
    bn = nn.BatchNorm2d(p["gamma"].shape[0], eps=BN_EPSILON, momentum=0.01)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(p["gamma"]))
        bn.bias.copy_(torch.from_numpy(p["beta"]))
        bn.running_mean.copy_(torch.from_numpy(p["moving_mean"]))
        bn.running_var.copy_(torch.from_numpy(p["moving_variance"]))
    return bn


def _c(k):
    return f"conv2d_{k}"


def _b(k):
    return f"batch_normalization_{k}"


class Unit(nn.Module):
    def __init__(self, w, pre_bn, convs, bns, proj, stride):
        super().__init__()
        self.pre = nn.Sequential(_bn(w[_b(pre_bn)]), nn.ReLU()) if pre_bn else nn.Identity()
        self.branch = nn.Sequential(
            _conv(w[_c(convs[0])], stride), _bn(w[_b(bns[0])]), nn.ReLU(),
            _conv(w[_c(convs[1])]), _bn(w[_b(bns[1])]), nn.ReLU(),
            _conv(w[_c(convs[2])]))
        self.proj = _conv(w[_c(proj)], stride) if proj else nn.Identity()

    def forward(self, x):
        # the shortcut takes the raw unit input, the branch its BN-ReLU (pre-activation)
        return self.proj(x) + self.branch(self.pre(x))


class So2SatResNet20(nn.Module):
    """NCHW in, (probs, logits, features) out."""

    def __init__(self, weights):
        super().__init__()
        w = getattr(weights, "weights", weights)
        self.stem = nn.Sequential(_conv(w[STEM_CONV]), _bn(w[STEM_BN]), nn.ReLU())
        self.units = nn.Sequential(*(Unit(w, *u) for u in UNITS))
        self.head = nn.Sequential(_bn(w[HEAD_BN]), nn.ReLU())
        self.fc = nn.Linear(256, 17)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(w[DENSE]["kernel"].T)))
            self.fc.bias.copy_(torch.from_numpy(w[DENSE]["bias"]))
        self.eval()

    def forward(self, x):
        y = self.head(self.units(self.stem(x)))
        features = y.mean(dim=(2, 3))              # AveragePooling2D(8) on 8x8 + Flatten
        logits = self.fc(features)
        return torch.softmax(logits, dim=1), logits, features


def run(weights, x_nhwc):
    """Convenience: numpy channels-last patches in, dict of numpy outputs."""
    net = So2SatResNet20(weights)
    x = np.ascontiguousarray(np.asarray(x_nhwc, np.float32).transpose(0, 3, 1, 2))
    x = torch.from_numpy(x)
    with torch.no_grad():
        probs, logits, features = net(x)
    return {"probs": probs.numpy(), "logits": logits.numpy(), "features": features.numpy()}
