"""The VHR functional-zone scene classifier: a narrow ResNet in plain torch (no torchvision).

It is the image encoder of the image / temporal-signature fusion network for urban region
function classification (a ResNet whose 1000-way ImageNet layer is replaced by a 256-d feature
layer), followed by fully connected layers to our 8 function classes:

    RGB patch [N, 3, P, P] (normalised)
    -> stem: 3x3 conv stride 2 (w/2), 3x3 conv (w), each BN + ReLU,
       then (stem_stride 4) a 3x3 stride-2 max pool                       (P/4)
    -> 4 stages of basic residual blocks (two 3x3 convs, BN, identity or 1x1-conv shortcut);
       widths w, 2w, 4w, 8w, stages 2..4 halve the resolution            (P/4 .. P/32)
    -> global average pool -> FC 8w -> 256 (the "feature layer"), BN, ReLU
    -> dropout -> FC 256 -> n_classes logits

ResNet-18 has a 7x7 stride-2 stem, a max pool and widths 64..512 for 224 px ImageNet images; for
small scene patches (96 px) the stem is two 3x3 convolutions and the widths are narrowed (32..256)
so that the ONNX file stays a few megabytes and training fits on a laptop CPU.
:class:`ProbabilityNet` adds the softmax that the exported graph ends with.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs + BN (optionally dilated), identity or 1x1 shortcut."""

    def __init__(self, cin, cout, stride=1, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class SceneResNet(nn.Module):
    """Returns class logits [N, n_classes]."""

    def __init__(self, n_classes=8, width=24, blocks=(2, 2, 2, 2), feature_dim=256,
                 dropout=0.2, in_bands=3, stem_stride=2):
        super().__init__()
        self.config = dict(n_classes=n_classes, width=width, blocks=tuple(blocks),
                           feature_dim=feature_dim, dropout=dropout, in_bands=in_bands,
                           stem_stride=stem_stride)
        half = max(8, width // 2)
        stem = [nn.Conv2d(in_bands, half, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if stem_stride == 4:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        elif stem_stride != 2:
            raise ValueError("stem_stride must be 2 or 4")
        self.stem = nn.Sequential(*stem)
        layers = []
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            for j in range(n):
                layers.append(BasicBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.feature = nn.Sequential(nn.Linear(cin, feature_dim, bias=False),
                                     nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each residual branch
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def features(self, x):
        x = self.layers(self.stem(x))
        # global average pool as an AveragePool over the whole map (ONNX opset 17, no ReduceMean)
        return self.feature(torch.flatten(F.avg_pool2d(x, tuple(x.shape[-2:])), 1))

    def forward(self, x):
        return self.classifier(self.drop(self.features(x)))


# Test-time views: identity, mirror left-right, mirror up-down, transpose (square patches).
# A scene has no "up" in nadir imagery, so averaging the class probabilities over these views
# removes orientation noise; measured +0.7 points validation OA at 4x the inference cost.
TTA_VIEWS = ("identity", "flip_x", "flip_y", "transpose")


def _view(x, name):
    if name == "flip_x":
        return torch.flip(x, dims=(3,))
    if name == "flip_y":
        return torch.flip(x, dims=(2,))
    if name == "transpose":
        return x.transpose(2, 3)
    return x


class ProbabilityNet(nn.Module):
    """What is exported: softmax probabilities [N, n_classes], averaged over ``views``
    (:data:`TTA_VIEWS`; one batch through the network, so the cost is len(views) x)."""

    def __init__(self, net, views=("identity",)):
        super().__init__()
        self.net = net
        self.views = tuple(views)

    def forward(self, x):
        if len(self.views) == 1:
            return torch.softmax(self.net(_view(x, self.views[0])), dim=1)
        n = x.shape[0]
        stacked = torch.cat([_view(x, v) for v in self.views], dim=0)
        probs = torch.softmax(self.net(stacked), dim=1)
        # a sum, not a mean: ReduceSum takes its axes as an input already in opset 13, so the
        # exporter can down-convert the graph to opset 17
        return probs.reshape(len(self.views), n, -1).sum(dim=0) * (1.0 / len(self.views))


def count_parameters(module):
    return int(sum(p.numel() for p in module.parameters()))


class SharedTrunkNet(nn.Module):
    """What is exported: the trunk run once over a tile of windows instead of once per window.

    Inputs: a tile ``x [N, bands, H, W]`` (H, W multiples of the trunk's stride) and two pooling
    matrices, ``pool_rows [h, H/stride]`` and ``pool_cols [w, W/stride]``, built by the engine
    (:mod:`plugin.core.shared_trunk`). Each output cell's window is pooled from the shared
    feature map (``pool_rows @ F @ pool_cols.T``, a separable weighted mean over the feature
    positions its window covers, interpolated where the window falls between them), then the
    feature layer and the classifier give probabilities ``[N, n_classes, h, w]``.

    A tile of exactly one window with uniform matrices computes what :class:`ProbabilityNet`
    computes for that window (the global average pool), so the same graph also classifies
    windows one by one."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, pool_rows, pool_cols):
        f = self.net.layers(self.net.stem(x))                               # [N, C, Hf, Wf]
        pooled = torch.matmul(torch.matmul(pool_rows, f), pool_cols.transpose(0, 1))
        z = pooled.permute(0, 2, 3, 1)                                      # [N, h, w, C]
        lin, bn = self.net.feature[0], self.net.feature[1]
        # the feature layer's batch norm (eval statistics) written out: BatchNorm1d wants
        # channels second, here they are last
        z = F.linear(z, lin.weight)
        z = (z - bn.running_mean) * torch.rsqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        logits = self.net.classifier(F.relu(z))
        return torch.softmax(logits, dim=-1).permute(0, 3, 1, 2)


def trunk_stride(net):
    """Pixels per feature position at the end of the trunk (stem and stride-2 stages)."""
    stages = sum(1 for b in net.layers if b.conv1.stride[0] == 2)
    return net.config["stem_stride"] * 2 ** stages
