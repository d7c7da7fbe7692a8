"""The sample-city baseline: a small multi-modal fusion network in plain torch.

Inputs (the model card's order; H x W = output cells of 10 m)::

    vhr        [N, 3, 5H, 5W]    2 m RGB
    ntl        [N, 1, H/4, W/4]  40 m night-time light
    s2_spring  [N, 10, H, W]     10 m Sentinel-2 (same for summer, autumn, winter)
    valid      [N, 6, H, W]      1 where that modality has data in the output cell

Each modality has its own stream that ends in ``width`` features per 10 m cell (the four
Sentinel-2 seasons share one stream, told apart by a learned season embedding). The streams are
fused per cell by a masked mean, ``sum(valid_i * f_i) / max(sum valid_i, 1e-6)``, so any subset
of inputs works; the mask itself is appended so the head knows which inputs it saw. A few
dilated residual blocks add context and a 1x1 convolution gives the class logits.

Every layer is a convolution (zero padding), batch norm (a per-channel affine map at inference),
ReLU or a fixed-factor upsampling, so the network is translation equivariant in steps of one
40 m pixel: tiled inference with enough overlap matches whole-image inference.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

MODALITY_ORDER = ("vhr", "ntl", "s2_spring", "s2_summer", "s2_autumn", "s2_winter")
S2_SEASONS = ("s2_spring", "s2_summer", "s2_autumn", "s2_winter")
VHR_FACTOR = 5   # 2 m pixels per 10 m cell
NTL_FACTOR = 4   # 10 m cells per 40 m pixel


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, k=3, dilation=1, stride=1):
        pad = dilation * (k // 2) if stride == 1 else 0
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    """Two 3x3 convolutions (optionally dilated) with an identity shortcut."""

    def __init__(self, width, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(x + y)


class SampleCityFusionNet(nn.Module):
    """Returns class logits [N, n_classes, H, W]; :class:`ProbabilityModel` adds the softmax."""

    def __init__(self, vhr_bands=3, ntl_bands=1, s2_bands=10, n_classes=8, width=48,
                 texture=16, s2_hidden=32, ntl_hidden=16, vhr_blocks=2,
                 context_dilations=(1, 2, 4)):
        super().__init__()
        self.config = dict(vhr_bands=vhr_bands, ntl_bands=ntl_bands, s2_bands=s2_bands,
                           n_classes=n_classes, width=width, texture=texture,
                           s2_hidden=s2_hidden, ntl_hidden=ntl_hidden, vhr_blocks=vhr_blocks,
                           context_dilations=tuple(context_dilations))
        n_mod = len(MODALITY_ORDER)
        # VHR: texture filters at 2 m, a stride-5 "patchify" convolution to 10 m cells (it sees
        # the raw colours and the rectified texture responses of its 5 x 5 pixels), then
        # residual blocks at 10 m for the arrangement of buildings, roads and trees.
        self.vhr_texture = ConvBNReLU(vhr_bands, texture, 3)
        self.vhr_patch = ConvBNReLU(vhr_bands + texture, width, VHR_FACTOR, stride=VHR_FACTOR)
        self.vhr_blocks = nn.Sequential(*[ResBlock(width) for _ in range(vhr_blocks)])
        # NTL: convolutions at 40 m, bilinear upsampling x4 to 10 m, projection.
        self.ntl_convs = nn.Sequential(ConvBNReLU(ntl_bands, ntl_hidden, 3),
                                       ConvBNReLU(ntl_hidden, ntl_hidden, 1))
        self.ntl_proj = ConvBNReLU(ntl_hidden, width, 1)
        # Sentinel-2: one stream shared by the four seasons plus a learned season embedding.
        self.s2_conv = nn.Conv2d(s2_bands, s2_hidden, 3, padding=1, bias=False)
        self.s2_bn = nn.BatchNorm2d(s2_hidden)
        self.season_embedding = nn.Parameter(torch.zeros(len(S2_SEASONS), s2_hidden))
        self.s2_proj = ConvBNReLU(s2_hidden, width, 1)
        # fusion + context + head
        self.fuse = ConvBNReLU(width + n_mod, width, 1)
        self.context = nn.Sequential(*[ResBlock(width, d) for d in context_dilations])
        self.head = nn.Conv2d(width, n_classes, 1)

    def stream_features(self, vhr, ntl, s2_list):
        f_vhr = self.vhr_texture(vhr)
        f_vhr = self.vhr_patch(torch.cat([vhr, f_vhr], 1))
        f_vhr = self.vhr_blocks(f_vhr)
        f_ntl = self.ntl_convs(ntl)
        f_ntl = F.interpolate(f_ntl, scale_factor=float(NTL_FACTOR), mode="bilinear",
                              align_corners=False)
        f_ntl = self.ntl_proj(f_ntl)
        feats = [f_vhr, f_ntl]
        for i, s2 in enumerate(s2_list):
            h = self.s2_bn(self.s2_conv(s2)) + self.season_embedding[i].view(1, -1, 1, 1)
            feats.append(self.s2_proj(F.relu(h)))
        return feats

    def forward(self, vhr, ntl, s2_spring, s2_summer, s2_autumn, s2_winter, valid):
        feats = self.stream_features(vhr, ntl, [s2_spring, s2_summer, s2_autumn, s2_winter])
        num = feats[0] * valid[:, 0:1]
        for i in range(1, len(feats)):
            num = num + feats[i] * valid[:, i:i + 1]
        den = torch.clamp(valid.sum(dim=1, keepdim=True), min=1e-6)
        fused = self.fuse(torch.cat([num / den, valid], 1))
        return self.head(self.context(fused))


class ProbabilityModel(nn.Module):
    """What is exported: softmax over the classes inside the graph."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, vhr, ntl, s2_spring, s2_summer, s2_autumn, s2_winter, valid):
        return torch.softmax(self.net(vhr, ntl, s2_spring, s2_summer, s2_autumn, s2_winter,
                                      valid), dim=1)


def count_parameters(module):
    return int(sum(p.numel() for p in module.parameters()))


def example_inputs(n=1, cells=64, seed=0, s2_bands=10):
    """Random inputs of the right shapes (``cells`` must be a multiple of 4)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, cells * VHR_FACTOR, cells * VHR_FACTOR, generator=g),
            torch.randn(n, 1, cells // NTL_FACTOR, cells // NTL_FACTOR, generator=g),
            *[torch.randn(n, s2_bands, cells, cells, generator=g) for _ in S2_SEASONS],
            (torch.rand(n, len(MODALITY_ORDER), cells, cells, generator=g) > 0.3).float())


@torch.no_grad()
def receptive_radius(net, cells=96, seed=0):
    """Largest distance (in output cells) from which an input can change an output cell.

    Measured on the graph itself: perturb every input near the centre of a ``cells`` tile, one
    modality at a time, and find how far the output changes.
    """
    net = net.eval()
    base = example_inputs(1, cells, seed)
    ref = net(*base)
    c = cells // 2
    radius = 0
    for k in range(len(base)):
        x = [t.clone() for t in base]
        factor = {0: VHR_FACTOR, 1: 1.0 / NTL_FACTOR}.get(k, 1)
        p = int(c * factor)
        x[k][:, :, p, p] += 10.0
        diff = (net(*x) - ref).abs().amax(dim=(0, 1)) > 1e-6
        ys, xs = torch.nonzero(diff, as_tuple=True)
        if len(ys):
            # distance from the perturbed input pixel's footprint (in output cells)
            lo, hi = p / factor, (p + 1) / factor
            d = max(max(lo - float(ys.min()), float(ys.max()) + 1 - hi),
                    max(lo - float(xs.min()), float(xs.max()) + 1 - hi))
            radius = max(radius, int(round(d)))
    return radius
