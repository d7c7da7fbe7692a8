"""The So2Sat LCZ42 network as a patch classifier of our eight functions (torch).

The imported So2Sat network (:mod:`plugin.lcz`) classifies a 32 x 32 Sentinel-2 window into 17
Local Climate Zones; classify maps them to functions by summing the LCZ probabilities per
function (:func:`plugin.lcz.classes.function_probabilities`). :class:`So2SatPatchNet` is that
whole pipeline as one network that can be fine-tuned on the user's labels:

    window [N, 10, 32, 32] (L1C DN / 10000, as So2Sat was trained)
    -> the So2Sat convolutions (:class:`.fusion.so2sat_trunk.So2SatTrunk`) -> global average pool
    -> ``classifier.lcz``: the So2Sat dense layer, 17 LCZ logits -> softmax
    -> summed per function with the LCZ -> function table (a fixed 17 x 8 matrix)
    -> function logits = log(summed probability + EPS) + ``classifier.residual`` (256 -> 8)

The residual layer starts at zero, so before training the network gives exactly the So2Sat LCZ
-> functions probabilities (to EPS): fine-tuning starts from what the imported model already
does, and learns what LCZs cannot say (public services, which no LCZ maps to, comes from the
residual alone). Every layer is trained.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .fusion.so2sat_trunk import OUT_CHANNELS, So2SatTrunk

KIND = "so2sat_patch"
N_LCZ = 17
EPS = 1e-4          # a function no LCZ maps to starts at log(1e-4): about 1e-4 probability
PATCH_PX = 32
BANDS = 10


def group_matrix(n_classes=8):
    """[17, n_classes] float32: 1 where an LCZ (So2Sat order) maps to a function (code order)."""
    from ..lcz.classes import function_lut
    lut = function_lut()[1:]
    m = np.zeros((N_LCZ, n_classes), np.float32)
    m[np.arange(N_LCZ), lut.astype(np.int64) - 1] = 1.0
    return m


class FunctionHead(nn.Module):
    def __init__(self, n_classes):
        super().__init__()
        self.lcz = nn.Linear(OUT_CHANNELS, N_LCZ)
        self.residual = nn.Linear(OUT_CHANNELS, n_classes)
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)
        # fixed, rebuilt from the table: not a weight (not in the state dict or the ONNX names)
        self.register_buffer("groups", torch.from_numpy(group_matrix(n_classes)),
                             persistent=False)

    def forward(self, feats):
        summed = F.softmax(self.lcz(feats), dim=1) @ self.groups
        return torch.log(summed + EPS) + self.residual(feats)


class So2SatPatchNet(nn.Module):
    """[N, 10, 32, 32] reflectance -> function logits [N, n_classes]."""

    def __init__(self, n_classes=8, kind=KIND):
        super().__init__()
        self.config = dict(n_classes=n_classes, kind=kind)
        self.trunk = So2SatTrunk()
        self.classifier = FunctionHead(n_classes)

    def forward(self, x):
        return self.classifier(self.trunk(x).mean(dim=(2, 3)))

    def load_so2sat(self, onnx_path):
        """Every layer from the imported So2Sat ONNX file (Keras names); the residual stays 0.
        Returns the number of parameters copied."""
        import onnx
        from onnx import numpy_helper
        n = self.trunk.load_onnx(onnx_path)
        inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(onnx_path).graph.initializer}
        kernel, bias = inits.get("dense_1.kernel"), inits.get("dense_1.bias")
        if kernel is None or kernel.shape != (OUT_CHANNELS, N_LCZ):
            raise ValueError(f"{onnx_path} is not the So2Sat LCZ42 S2 ResNet20: dense_1 is "
                             "missing or has another shape")
        with torch.no_grad():
            self.classifier.lcz.weight.copy_(torch.from_numpy(np.array(kernel.T, copy=True)))
            self.classifier.lcz.bias.copy_(torch.from_numpy(np.array(bias, copy=True)))
        return n + int(kernel.size + bias.size)


class ProbabilityNet(nn.Module):
    """The exported graph: function probabilities (softmax in the graph)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return F.softmax(self.net(x), dim=1)


def net_from_base(onnx_path, config):
    """The network to fine-tune: from the imported So2Sat file, or from a So2Sat patch model
    trained before (its ``net.*`` initializers)."""
    import onnx
    names = {i.name for i in onnx.load(onnx_path).graph.initializer}
    if any(n.startswith("net.") for n in names):
        from .onnx_io import torch_net_from_onnx
        return torch_net_from_onnx(onnx_path, So2SatPatchNet, config)
    net = So2SatPatchNet(**config)
    net.load_so2sat(onnx_path)
    return net.eval()
