"""Building blocks of :class:`~.net.UrbanFusionNet` (plain torch, ONNX-exportable).

Shapes: ``N`` batch, ``C`` channels, ``H x W`` cells of the 10 m output grid (dynamic).

Export notes, measured with torch 2.13's dynamo exporter at opset 17: channel means are written
as ``sum / C`` and maxima as ``amax`` because ``mean`` and ``max(dim).values`` export as opset-18
``ReduceMean`` / ``ReduceMax`` nodes that the exporter then fails to down-convert to opset 17.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model import ConvBNReLU
from ..vhr_model import BasicBlock  # stride 1 here: the 10 m grid keeps tiling shift-equivariant

__all__ = ["ConvBNReLU", "BasicBlock", "SpatialAttention", "flow_warp", "OffsetAligner",
           "SpecificInvariantExtractor", "ASPP", "channel_mean"]


def channel_mean(x):
    """Mean over dim 1 (keepdim) as a ReduceSum, so the graph stays opset 17."""
    return x.sum(dim=1, keepdim=True) * (1.0 / x.shape[1])


class SpatialAttention(nn.Module):
    """CSAGFNet spatial attention: ``x * sigmoid(conv7x7([max_c x, mean_c x]))``.

    ``x`` [N, C, H, W] -> (enhanced [N, C, H, W], attention [N, 1, H, W])."""

    def __init__(self, kernel=7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x):
        pooled = torch.cat([x.amax(dim=1, keepdim=True), channel_mean(x)], dim=1)
        attn = torch.sigmoid(self.conv(pooled))
        return x * attn, attn


def flow_warp(feat, flow):
    """Resample ``feat`` [N, C, H, W] at ``(y + flow_y, x + flow_x)`` for every cell (y, x).

    ``flow`` [N, 2, H, W] is in cells (channel 0: x, channel 1: y); zero flow is the identity
    and an integer flow shifts by whole cells (bilinear, border padding, align_corners=False).
    The base grid comes from ``torch.arange`` over the runtime H and W (not ``linspace``), so H
    and W stay dynamic in the exported graph.
    """
    h, w = feat.shape[-2], feat.shape[-1]
    xs = torch.arange(w, dtype=feat.dtype, device=feat.device).view(1, 1, w)
    ys = torch.arange(h, dtype=feat.dtype, device=feat.device).view(1, h, 1)
    # with align_corners=False, pixel i's centre is at normalised (2i + 1) / size - 1
    gx = (2.0 * (xs + flow[:, 0]) + 1.0) / w - 1.0
    gy = (2.0 * (ys + flow[:, 1]) + 1.0) / h - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(feat, grid, mode="bilinear", padding_mode="border", align_corners=False)


class OffsetAligner(nn.Module):
    """Cross-modal spatial offset module (CSAGFNet): attention-enhance both modalities, predict a
    2-channel offset field (cells) from their concatenation, warp the moving modality onto the
    reference one.

    ``ref``, ``mov`` [N, D, H, W]; ``both`` [N, 1, H, W] is 1 where both modalities have data:
    the offset is zeroed elsewhere, since an offset estimated against a missing modality is
    noise. Returns (ref_enhanced, mov_aligned, flow [N, 2, H, W]). With ``align=False`` the
    attention is kept and the offset prediction and warp are skipped (ablation).
    """

    def __init__(self, dim, hidden=32, max_offset=8.0, align=True):
        super().__init__()
        self.align = bool(align)
        self.max_offset = float(max_offset)
        self.att_ref = SpatialAttention()
        self.att_mov = SpatialAttention()
        if self.align:
            self.offset = nn.Sequential(ConvBNReLU(2 * dim, hidden, 3),
                                        ConvBNReLU(hidden, hidden, 3),
                                        nn.Conv2d(hidden, 2, 3, padding=1))
            # start at the identity alignment; tanh bounds the offset to +-max_offset cells
            nn.init.zeros_(self.offset[-1].weight)
            nn.init.zeros_(self.offset[-1].bias)

    def forward(self, ref, mov, both):
        ref_e, _ = self.att_ref(ref)
        mov_e, _ = self.att_mov(mov)
        if not self.align:
            return ref_e, mov_e, torch.zeros_like(mov_e[:, :2])
        flow = torch.tanh(self.offset(torch.cat([ref_e, mov_e], dim=1))) * self.max_offset
        flow = flow * both
        return ref_e, flow_warp(mov_e, flow), flow


class SpecificInvariantExtractor(nn.Module):
    """Modality-specific and modality-invariant features for a set of modalities.

    Each modality has its own 1x1 input projection (C_m -> D, BN, ReLU) and its own specific
    3x3 branch; the invariant branch (3x3 conv, ReLU, 1x1 conv) has ONE set of weights applied to
    every modality, so the cross-modal consistency / triplet losses can pull the invariant
    features of co-located cells together. The two branches are merged by a per-modality 1x1
    conv. ``forward(name, x [N, C_m, H, W])`` -> (feature, specific, invariant), each
    [N, D, H, W]; :meth:`project` is the input projection alone.
    """

    def __init__(self, in_channels, dim):
        super().__init__()
        self.proj = nn.ModuleDict({k: ConvBNReLU(c, dim, 1) for k, c in in_channels.items()})
        self.specific = nn.ModuleDict({k: ConvBNReLU(dim, dim, 3) for k in in_channels})
        # no BN in the shared branch: one set of batch statistics over two modalities would mix
        # their distributions; the projections are already normalised
        self.invariant = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True),
                                       nn.Conv2d(dim, dim, 1))
        self.merge = nn.ModuleDict({k: ConvBNReLU(2 * dim, dim, 1) for k in in_channels})

    def project(self, name, x):
        return self.proj[name](x)

    def forward(self, name, projected):
        spec = self.specific[name](projected)
        inv = self.invariant(projected)
        return self.merge[name](torch.cat([spec, inv], dim=1)), spec, inv


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling on the 10 m grid: a 1x1 branch and dilated 3x3 branches,
    concatenated and projected. [N, C, H, W] -> [N, out, H, W].

    No image-pooling (global average) branch: the engine tiles large rasters, and a global
    pool would make every cell depend on the whole tile, so tiled and whole-image predictions
    would differ and tile seams would show. Without it the receptive field is bounded and
    tiling with enough overlap reproduces whole-image inference.
    """

    def __init__(self, cin, branch, out, rates=(1, 2, 3)):
        super().__init__()
        self.branches = nn.ModuleList([ConvBNReLU(cin, branch, 1)] +
                                      [ConvBNReLU(cin, branch, 3, dilation=r) for r in rates])
        self.project = ConvBNReLU(branch * (1 + len(rates)), out, 1)

    def forward(self, x):
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))
