"""The So2Sat LCZ42 ResNet20 convolutions as a dense Sentinel-2 feature extractor.

The So2Sat network (real Sentinel-2 of 42 cities) classifies 32 x 32 patches; its convolutions
(stem and six pre-activation bottleneck units, two stride-2 stages) run on a whole tile as well,
giving 256 features every 4 pixels (40 m). :class:`So2SatTrunk` has the same layers (Keras
names and shapes, BN epsilon 1e-3) and loads them from the ONNX file the importer installs
(initializers ``conv2d_k.weight`` / ``.bias``, ``batch_normalization_k.gamma`` / ``.beta`` /
``.moving_mean`` / ``.moving_variance``), so the fusion network's Sentinel-2 stream can start
from it. Its input is reflectance (L1C DN / 10000), as the original feeds it.
"""
import numpy as np
import torch
import torch.nn as nn

BN_EPSILON = 1e-3
STRIDE = 4            # two stride-2 stages
OUT_CHANNELS = 256
# receptive radius in 10 m pixels: stem 1, units 1+1 (10 m), 2+2 (20 m), 4+4 (40 m)
RECEPTIVE_RADIUS = 15
# per unit: pre-activation BN (None: the first unit takes the stem's output), the branch convs
# (1x1, 3x3, 1x1) with their input/output channels, the BNs inside the branch, the projection
# conv (None = identity) and the stride of the first conv and the projection; Keras numbering
UNITS = (
    (None, ((2, 16, 16), (3, 16, 16), (4, 16, 64)), (2, 3), 5, 1),
    (4, ((6, 64, 16), (7, 16, 16), (8, 16, 64)), (5, 6), None, 1),
    (7, ((9, 64, 64), (10, 64, 64), (11, 64, 128)), (8, 9), 12, 2),
    (10, ((13, 128, 64), (14, 64, 64), (15, 64, 128)), (11, 12), None, 1),
    (13, ((16, 128, 128), (17, 128, 128), (18, 128, 256)), (14, 15), 19, 2),
    (16, ((20, 256, 128), (21, 128, 128), (22, 128, 256)), (17, 18), None, 1),
)
STEM = (1, 10, 16)    # conv2d_1: 10 bands -> 16, then batch_normalization_1
HEAD_BN = 19


def _conv(cin, cout, k, stride=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=True)


def _bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPSILON, momentum=0.01)


class _Unit(nn.Module):
    def __init__(self, pre, convs, bns, proj, stride):
        super().__init__()
        (c1, i1, o1), (c2, i2, o2), (c3, i3, o3) = convs
        self.keras = {"pre": pre, "convs": (c1, c2, c3), "bns": bns, "proj": proj}
        self.pre = nn.Sequential(_bn(i1), nn.ReLU()) if pre else nn.Identity()
        self.branch = nn.Sequential(_conv(i1, o1, 1, stride), _bn(o1), nn.ReLU(),
                                    _conv(i2, o2, 3), _bn(o2), nn.ReLU(), _conv(i3, o3, 1))
        self.proj = _conv(i1, o3, 1, stride) if proj else nn.Identity()

    def forward(self, x):
        # the shortcut takes the raw unit input, the branch its BN-ReLU (pre-activation)
        return self.proj(x) + self.branch(self.pre(x))


class So2SatTrunk(nn.Module):
    """[N, 10, H, W] reflectance -> [N, 256, H/4, W/4] (H, W multiples of 4)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(_conv(STEM[1], STEM[2], 3), _bn(STEM[2]), nn.ReLU())
        self.units = nn.Sequential(*(_Unit(*u) for u in UNITS))
        self.head = nn.Sequential(_bn(OUT_CHANNELS), nn.ReLU())

    def forward(self, x):
        return self.head(self.units(self.stem(x)))

    def keras_map(self):
        """{Keras layer name: torch module} for every layer with weights."""
        out = {f"conv2d_{STEM[0]}": self.stem[0], f"batch_normalization_{STEM[0]}": self.stem[1],
               f"batch_normalization_{HEAD_BN}": self.head[0]}
        for unit in self.units:
            k = unit.keras
            if k["pre"]:
                out[f"batch_normalization_{k['pre']}"] = unit.pre[0]
            for conv, idx in zip(k["convs"], (0, 3, 6)):
                out[f"conv2d_{conv}"] = unit.branch[idx]
            for bn, idx in zip(k["bns"], (1, 4)):
                out[f"batch_normalization_{bn}"] = unit.branch[idx]
            if k["proj"]:
                out[f"conv2d_{k['proj']}"] = unit.proj
        return out

    def load_onnx(self, onnx_path):
        """Copy every layer from an imported So2Sat ONNX file, by Keras name; returns the number
        of parameters copied."""
        import onnx
        from onnx import numpy_helper
        inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(onnx_path).graph.initializer}
        copied = 0
        with torch.no_grad():
            for name, module in self.keras_map().items():
                if isinstance(module, nn.Conv2d):
                    pairs = ((module.weight, "weight"), (module.bias, "bias"))
                else:
                    pairs = ((module.weight, "gamma"), (module.bias, "beta"),
                             (module.running_mean, "moving_mean"),
                             (module.running_var, "moving_variance"))
                for tensor, var in pairs:
                    arr = inits.get(f"{name}.{var}")
                    if arr is None or tuple(arr.shape) != tuple(tensor.shape):
                        raise ValueError(f"{onnx_path} is not the So2Sat LCZ42 S2 ResNet20: "
                                         f"{name}.{var} is missing or has another shape")
                    tensor.copy_(torch.from_numpy(np.array(arr, copy=True)))
                    copied += int(arr.size)
        return copied
