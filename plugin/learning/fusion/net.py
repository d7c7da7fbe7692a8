"""UrbanFusionNet: per-cell urban-function segmentation from any subset of seven inputs.

Inputs (H x W = output cells of 10 m; H and W multiples of 4, fully dynamic)::

    vhr        [N, 3, 5H, 5W]    2 m RGB, normalised
    ntl        [N, 1, H/4, W/4]  40 m night-time light
    s2_spring  [N, 10, H, W]     10 m Sentinel-2 (same for s2_summer, s2_autumn, s2_winter)
    temporal   [N, T, H/4, W/4]  temporal signature at 40 m: T time steps as bands (config)
    valid      [N, 7, H, W]      1 where that modality (MODALITY_ORDER) has data in the cell

A missing modality is fed as zeros with mask 0.

Architecture (D = ``width``)::

    VHR  2 m, vhr_encoder="scene_resnet" (the bundled model): the stem and first two stages of
              the real-data VHR scene classifier (..vhr_model.SceneResNet, initialised from
              models/vhr_scenes_resnet.onnx by the trainer): 8 m stage-1 features resized to
              the 10 m grid (the decoder's low-level features), 16 m stage-2 features resized
              to 10 m -> residual blocks (10 m)                                -> proj -> D
              (H and W multiples of 8, so the 16 m grid is whole in every tile);
         vhr_encoder="patchify" (trained from scratch): 3x3 texture conv -> stride-5 patchify
              conv (10 m, low-level) -> residual blocks (10 m)
    NTL 40 m: convs -> bilinear x4 (10 m)                                     -> proj -> D
    CSAGFNet: spatial attention on both; offsets (2 ch, cells) from their concatenation;
              NTL warped onto VHR with grid_sample (skipped with align=False)
    specific / invariant extractors (invariant weights shared by VHR and NTL) -> merged, D each
    S2: one stream for the four seasons + season embedding; per-season class heads
        (s2_fusion="decision": S2 probabilities = masked mean of season softmaxes);
        S2 feature = the season-averaged probabilities embedded to D (s2_fusion="feature",
        ablation: masked mean of season features)
    temporal: per-cell 1-d SPP-Net (or BiLSTM) over T at 40 m -> 1x1 -> bilinear x4 -> D
    gated fusion of (VHR, aligned NTL, S2, temporal): sigmoid gate per modality per cell,
        times the modality's mask, normalised over the present modalities (fusion="concat":
        concat -> 1x1 conv, ablation)
    DeepLabV3+-style head: ASPP (1x1 + dilated 3x3, no image pooling) -> decoder with the VHR
        low-level features -> 1x1 -> class logits; built-up fraction head (sigmoid)

Outputs of ``forward``: class logits [N, 8, H, W], built-up fraction [N, 1, H, W] and gate
weights [N, 4, H, W] (GATE_ORDER); ``forward(..., return_aux=True)`` adds a dict of the
intermediate tensors the losses use (see :meth:`UrbanFusionNet.forward`).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model import NTL_FACTOR, S2_SEASONS, VHR_FACTOR
from ..vhr_model import SceneResNet
from .modules import (ASPP, BasicBlock, ConvBNReLU, OffsetAligner, SpecificInvariantExtractor)
from .temporal import make_temporal_encoder

MODALITY_ORDER = ("vhr", "ntl") + S2_SEASONS + ("temporal",)
INPUT_NAMES = MODALITY_ORDER + ("valid",)
GATE_ORDER = ("vhr", "ntl", "s2", "temporal")
S2_CHANNELS = (2, 3, 4, 5)   # the seasons' channels in ``valid``
EPS = 1e-6


def size_multiple(config):
    """Output cells per tile side must be a multiple of this: 8 with the SceneResNet trunk (its
    16 m grid whole in every tile), 4 with the patchify one (the 40 m grid)."""
    return 8 if config.get("vhr_encoder") == "scene_resnet" else NTL_FACTOR


def _up(x, factor):
    return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=False)


def _resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SceneResNetTrunk(nn.Module):
    """The stem and first two stages of :class:`..vhr_model.SceneResNet` (``stem_stride`` 4):
    2 m RGB [N, 3, P, P] -> (stage 1 [N, w, P/4, P/4] at 8 m, stage 2 [N, 2w, P/8, P/8] at
    16 m). Built from a SceneResNet so the module names match and its weights load as they are
    (:meth:`load_scene_resnet`); the deeper stages and the classifier are not used."""

    def __init__(self, width=32, in_bands=3):
        super().__init__()
        full = SceneResNet(width=width, in_bands=in_bands, stem_stride=4)
        self.stem = full.stem
        self.stage1 = full.layers[0:2]
        self.stage2 = full.layers[2:4]

    def load_scene_resnet(self, scene_net):
        """Copy the stem and stages 1-2 of a trained SceneResNet (same width and bands)."""
        self.stem.load_state_dict(scene_net.stem.state_dict())
        self.stage1.load_state_dict(scene_net.layers[0:2].state_dict())
        self.stage2.load_state_dict(scene_net.layers[2:4].state_dict())

    def forward(self, x):
        s1 = self.stage1(self.stem(x))
        return s1, self.stage2(s1)


def _masked_mean(items, masks):
    """sum_i m_i * x_i / max(sum_i m_i, EPS); 0 where no mask is set."""
    num = items[0] * masks[0]
    den = masks[0]
    for x, m in zip(items[1:], masks[1:]):
        num = num + x * m
        den = den + m
    return num / torch.clamp(den, min=EPS)


class UrbanFusionNet(nn.Module):
    """See the module docstring. All constructor arguments are stored in ``self.config`` (the
    checkpoint format is ``{"config": net.config, "state_dict": net.state_dict()}``)."""

    def __init__(self, n_classes=8, vhr_bands=3, ntl_bands=1, s2_bands=10, temporal_steps=12,
                 width=64, vhr_texture=16, vhr_low=32, vhr_blocks=2, ntl_hidden=32,
                 s2_hidden=32, temporal_encoder="spp", temporal_channels=(16, 32, 32, 32, 32),
                 temporal_kernels=(24, 24, 7, 7, 3), temporal_strides=(1, 24, 1, 7, 1),
                 lstm_hidden=16, align=True, max_offset=8.0, fusion="gated",
                 s2_fusion="decision", aspp_rates=(1, 2, 3), aspp_branch=32, low_proj=16,
                 builtup_hidden=32, vhr_encoder="patchify", vhr_scene_width=32,
                 s2_encoder="conv"):
        super().__init__()
        if vhr_encoder not in ("patchify", "scene_resnet"):
            raise ValueError(f"vhr_encoder must be 'patchify' or 'scene_resnet', not "
                             f"{vhr_encoder!r}")
        if vhr_encoder == "scene_resnet":
            vhr_low = vhr_scene_width          # the low-level features are stage 1's
        if fusion not in ("gated", "concat"):
            raise ValueError(f"fusion must be 'gated' or 'concat', not {fusion!r}")
        if s2_encoder not in ("conv", "so2sat"):
            raise ValueError(f"s2_encoder must be 'conv' or 'so2sat', not {s2_encoder!r}")
        if s2_fusion not in ("decision", "feature"):
            raise ValueError(f"s2_fusion must be 'decision' or 'feature', not {s2_fusion!r}")
        self.config = dict(
            n_classes=n_classes, vhr_bands=vhr_bands, ntl_bands=ntl_bands, s2_bands=s2_bands,
            temporal_steps=temporal_steps, width=width, vhr_texture=vhr_texture,
            vhr_low=vhr_low, vhr_blocks=vhr_blocks, ntl_hidden=ntl_hidden, s2_hidden=s2_hidden,
            temporal_encoder=temporal_encoder, temporal_channels=tuple(temporal_channels),
            temporal_kernels=tuple(temporal_kernels), temporal_strides=tuple(temporal_strides),
            lstm_hidden=lstm_hidden, align=bool(align), max_offset=float(max_offset),
            fusion=fusion, s2_fusion=s2_fusion, aspp_rates=tuple(aspp_rates),
            aspp_branch=aspp_branch, low_proj=low_proj, builtup_hidden=builtup_hidden,
            vhr_encoder=vhr_encoder, vhr_scene_width=vhr_scene_width)
        if s2_encoder != "conv":   # older checkpoints and cards have no such key
            self.config["s2_encoder"] = s2_encoder
        self.s2_encoder = s2_encoder
        d = width
        self.n_classes = n_classes
        self.fusion = fusion
        self.s2_fusion = s2_fusion

        # --- VHR encoder (2 m -> 10 m grid): low-level [N, vhr_low, H, W], deep [N, D, H, W]
        self.vhr_encoder = vhr_encoder
        self.size_multiple = size_multiple(self.config)
        if vhr_encoder == "scene_resnet":
            self.vhr_trunk = SceneResNetTrunk(vhr_scene_width, vhr_bands)
            cin = 2 * vhr_scene_width
        else:
            self.vhr_texture = ConvBNReLU(vhr_bands, vhr_texture, 3)
            # the stride-5 patchify conv sees the raw colours and the texture responses of its
            # 5x5 pixels (as in ..model.SampleCityFusionNet)
            self.vhr_patch = ConvBNReLU(vhr_bands + vhr_texture, vhr_low, VHR_FACTOR,
                                        stride=VHR_FACTOR)
            cin = vhr_low
        blocks = []
        for i in range(vhr_blocks):
            blocks.append(BasicBlock(cin, d, dilation=1 + i))   # dilation grows the context
            cin = d
        self.vhr_blocks = nn.Sequential(*blocks)

        # --- NTL stream (40 m convs, then x4 to 10 m)
        self.ntl_convs = nn.Sequential(ConvBNReLU(ntl_bands, ntl_hidden, 3),
                                       ConvBNReLU(ntl_hidden, ntl_hidden, 3))

        # --- specific / invariant extractors with per-modality input projections
        self.extract = SpecificInvariantExtractor({"vhr": d, "ntl": ntl_hidden}, d)
        # --- cross-modal alignment of NTL onto VHR (CSAGFNet)
        self.align = OffsetAligner(d, hidden=32, max_offset=max_offset, align=align)

        # --- Sentinel-2: one stream for the four seasons, told apart by a season embedding
        if s2_encoder == "so2sat":
            # the So2Sat LCZ42 ResNet's convolutions (40 m features, loaded by the trainer from
            # the imported model), projected to D and upsampled to 10 m
            from .so2sat_trunk import OUT_CHANNELS, So2SatTrunk
            self.s2_trunk = So2SatTrunk()
            self.season_embedding = nn.Parameter(torch.zeros(len(S2_SEASONS), d))
            self.s2_proj = ConvBNReLU(OUT_CHANNELS, d, 1)
        else:
            self.s2_conv = nn.Conv2d(s2_bands, s2_hidden, 3, padding=1, bias=False)
            self.s2_bn = nn.BatchNorm2d(s2_hidden)
            self.season_embedding = nn.Parameter(torch.zeros(len(S2_SEASONS), s2_hidden))
            self.s2_proj = ConvBNReLU(s2_hidden, d, 3)
        if s2_fusion == "decision":
            self.season_heads = nn.ModuleList([nn.Conv2d(d, n_classes, 1) for _ in S2_SEASONS])
            # decision-level fusion: what the S2 branch hands to the gated fusion is its
            # season-averaged class probabilities (embedded to D), not a feature average
            self.s2_from_probs = ConvBNReLU(n_classes, d, 1)

        # --- temporal signature (40 m, per cell) -> 10 m
        if temporal_encoder == "spp":
            enc_kwargs = dict(channels=temporal_channels, kernels=temporal_kernels,
                              strides=temporal_strides)
        else:
            enc_kwargs = dict(hidden=lstm_hidden)
        self.temporal_encoder = make_temporal_encoder(temporal_encoder, temporal_steps,
                                                      **enc_kwargs)
        self.temporal_proj = ConvBNReLU(self.temporal_encoder.out_dim, d, 1)

        # --- fusion: input = the four masked features plus the four group masks
        n_groups = len(GATE_ORDER)
        if fusion == "gated":
            self.gate = nn.Conv2d(n_groups * d + n_groups, n_groups, 1)
        else:
            self.concat_fuse = ConvBNReLU(n_groups * d + n_groups, d, 1)

        # --- DeepLabV3+-style head
        self.aspp = ASPP(d, aspp_branch, d, aspp_rates)
        self.low_proj = ConvBNReLU(vhr_low, low_proj, 1)
        self.decoder = nn.Sequential(ConvBNReLU(d + low_proj + 1, d, 3), ConvBNReLU(d, d, 3))
        self.classifier = nn.Conv2d(d, n_classes, 1)
        self.builtup_head = nn.Sequential(ConvBNReLU(d, builtup_hidden, 3),
                                          nn.Conv2d(builtup_hidden, 1, 1))

    # ------------------------------------------------------------------ streams
    def vhr_stream(self, vhr, size):
        """[N, 3, 5H, 5W], size (H, W) -> (low-level [N, vhr_low, H, W], deep [N, width, H, W])."""
        if self.vhr_encoder == "scene_resnet":
            s1, s2 = self.vhr_trunk(vhr)
            low = _resize(s1, size)            # 8 m -> 10 m
            return low, self.vhr_blocks(_resize(s2, size))   # 16 m -> 10 m
        low = self.vhr_patch(torch.cat([vhr, self.vhr_texture(vhr)], dim=1))
        return low, self.vhr_blocks(low)

    def ntl_stream(self, ntl):
        """[N, 1, H/4, W/4] -> [N, ntl_hidden, H, W]."""
        return _up(self.ntl_convs(ntl), NTL_FACTOR)

    def s2_stream(self, seasons, masks, indices=None):
        """Four [N, 10, H, W] + four masks [N, 1, H, W] -> (S2 feature [N, D, H, W],
        per-season logits list of [N, 8, H, W] or None, S2 probabilities [N, 8, H, W] or None).
        ``indices``: which seasons (0-3) ``seasons`` holds when some are structurally absent.
        """
        indices = range(len(seasons)) if indices is None else indices
        feats, logits = [], []
        for i, s2 in zip(indices, seasons):
            if self.s2_encoder == "so2sat":
                f = _up(self.s2_proj(self.s2_trunk(s2)), 4) + \
                    self.season_embedding[i].view(1, -1, 1, 1)
            else:
                h = self.s2_bn(self.s2_conv(s2)) + self.season_embedding[i].view(1, -1, 1, 1)
                f = self.s2_proj(F.relu(h))
            feats.append(f)
            if self.s2_fusion == "decision":
                logits.append(self.season_heads[i](f))
        if self.s2_fusion != "decision":
            return _masked_mean(feats, masks), None, None
        # decision-level fusion: average the present seasons' class probabilities
        probs = _masked_mean([torch.softmax(z, dim=1) for z in logits], masks)
        return self.s2_from_probs(probs), logits, probs

    def temporal_stream(self, temporal):
        """[N, T, H/4, W/4] -> [N, D, H, W]."""
        return _up(self.temporal_proj(self.temporal_encoder(temporal)), NTL_FACTOR)

    # ------------------------------------------------------------------ fusion
    def fuse(self, feats, masks):
        """``feats``: four [N, D, H, W] (GATE_ORDER), ``masks`` [N, 4, H, W] ->
        (fused [N, D, H, W], gates [N, 4, H, W]).

        Gated: gate_i = sigmoid(conv1x1(...))_i * mask_i / max(sum_j, EPS): the gates of the
        present modalities sum to 1, absent ones are exactly 0, and no NaN when all are absent.
        Concat (ablation): the returned gates are the masks normalised the same way.
        """
        feats = [f * masks[:, i:i + 1] for i, f in enumerate(feats)]   # absent -> exactly 0
        x = torch.cat(feats + [masks], dim=1)
        if self.fusion == "concat":
            gates = masks / torch.clamp(masks.sum(dim=1, keepdim=True), min=EPS)
            return self.concat_fuse(x), gates
        g = torch.sigmoid(self.gate(x)) * masks
        gates = g / torch.clamp(g.sum(dim=1, keepdim=True), min=EPS)
        fused = feats[0] * gates[:, 0:1]
        for i in range(1, len(feats)):
            fused = fused + feats[i] * gates[:, i:i + 1]
        return fused, gates

    # ------------------------------------------------------------------ forward
    def forward(self, vhr, ntl, s2_spring, s2_summer, s2_autumn, s2_winter, temporal, valid,
                return_aux=False, absent=frozenset()):
        """Returns (logits [N, 8, H, W], built_up [N, 1, H, W], gates [N, 4, H, W]), plus with
        ``return_aux`` a dict:

        * ``inv_vhr``, ``inv_ntl`` [N, D, H, W]: invariant features (NTL after alignment), for
          the feature-consistency and triplet losses;
        * ``feat_vhr``, ``feat_ntl``, ``feat_s2``, ``feat_temporal`` [N, D, H, W];
        * ``flow`` [N, 2, H, W]: the NTL -> VHR offset in cells (zeros with align=False);
        * ``season_logits``: list of the seasons' [N, 8, H, W] (decision mode; else None);
        * ``s2_probs`` [N, 8, H, W]: masked mean of the present seasons' softmaxes (decision
          mode; else None);
        * ``group_masks`` [N, 4, H, W]: the GATE_ORDER masks (S2 = any season present).

        ``absent``: modalities (MODALITY_ORDER names) that are structurally absent, i.e. fed as
        zeros with mask 0 everywhere (a model trained on a subset of the inputs). Their streams
        are skipped: their features are zero after the mask anyway, so the result is the same
        as feeding the zeros (the tests check it), at less cost. VHR and night light are
        skipped only when both are absent (they share the alignment).
        """
        m_vhr, m_ntl, m_t = valid[:, 0:1], valid[:, 1:2], valid[:, 6:7]
        season_masks = [valid[:, c:c + 1] for c in S2_CHANNELS]
        m_s2 = torch.clamp(valid[:, 2:6].sum(dim=1, keepdim=True), max=1.0)
        group_masks = torch.cat([m_vhr, m_ntl, m_s2, m_t], dim=1)
        n, height, width = valid.shape[0], valid.shape[-2], valid.shape[-1]
        d = self.config["width"]

        def zeros(channels):
            return valid.new_zeros((n, channels, height, width))

        if "vhr" in absent and "ntl" in absent:
            low = None
            f_vhr = f_ntl = inv_vhr = inv_ntl = zeros(d)
            flow = zeros(2)
        else:
            low, deep = self.vhr_stream(vhr, (height, width))
            p_vhr = self.extract.project("vhr", deep)
            p_ntl = self.extract.project("ntl", self.ntl_stream(ntl))
            e_vhr, a_ntl, flow = self.align(p_vhr, p_ntl, m_vhr * m_ntl)
            f_vhr, _, inv_vhr = self.extract("vhr", e_vhr)
            f_ntl, _, inv_ntl = self.extract("ntl", a_ntl)

        seasons = [s2_spring, s2_summer, s2_autumn, s2_winter]
        kept = [i for i, name in enumerate(S2_SEASONS) if name not in absent]
        if kept:
            f_s2, season_logits, s2_probs = self.s2_stream(
                [seasons[i] for i in kept], [season_masks[i] for i in kept], kept)
        else:
            f_s2, season_logits, s2_probs = zeros(d), None, None
        f_t = zeros(d) if "temporal" in absent else self.temporal_stream(temporal)

        fused, gates = self.fuse([f_vhr, f_ntl, f_s2, f_t], group_masks)
        x = self.aspp(fused)
        low_feat = (zeros(self.config["low_proj"]) if low is None
                    else self.low_proj(low) * m_vhr)
        x = self.decoder(torch.cat([x, low_feat, m_vhr], dim=1))
        logits = self.classifier(x)
        built_up = torch.sigmoid(self.builtup_head(x))
        if not return_aux:
            return logits, built_up, gates
        aux = dict(inv_vhr=inv_vhr, inv_ntl=inv_ntl, feat_vhr=f_vhr, feat_ntl=f_ntl,
                   feat_s2=f_s2, feat_temporal=f_t, flow=flow, season_logits=season_logits,
                   s2_probs=s2_probs, group_masks=group_masks)
        return logits, built_up, gates, aux


class FusionProbabilityModel(nn.Module):
    """What is exported: (probs [N, 8, H, W] softmax over classes, built_up [N, 1, H, W],
    gates [N, 4, H, W])."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, vhr, ntl, s2_spring, s2_summer, s2_autumn, s2_winter, temporal, valid):
        logits, built_up, gates = self.net(vhr, ntl, s2_spring, s2_summer, s2_autumn,
                                           s2_winter, temporal, valid)
        return torch.softmax(logits, dim=1), built_up, gates


def count_parameters(module):
    return int(sum(p.numel() for p in module.parameters()))


def example_inputs(n=1, height=32, width=None, seed=0, present=MODALITY_ORDER, config=None,
                   valid_prob=None):
    """Random inputs (a tuple in INPUT_NAMES order) for ``height`` x ``width`` output cells
    (multiples of 4). Modalities not in ``present`` are zeros with mask 0; with ``valid_prob``
    the present ones' masks are random per cell (that fraction set)."""
    config = config or {}
    width = height if width is None else width
    multiple = size_multiple(config)
    if height % multiple or width % multiple:
        raise ValueError(f"height and width must be multiples of {multiple}")
    g = torch.Generator().manual_seed(seed)
    h4, w4 = height // NTL_FACTOR, width // NTL_FACTOR
    shapes = {"vhr": (config.get("vhr_bands", 3), height * VHR_FACTOR, width * VHR_FACTOR),
              "ntl": (config.get("ntl_bands", 1), h4, w4),
              "temporal": (config.get("temporal_steps", 12), h4, w4)}
    xs = []
    for name in MODALITY_ORDER:
        c, hh, ww = shapes.get(name, (config.get("s2_bands", 10), height, width))
        x = torch.randn(n, c, hh, ww, generator=g)
        xs.append(x if name in present else torch.zeros_like(x))
    valid = torch.zeros(n, len(MODALITY_ORDER), height, width)
    for k, name in enumerate(MODALITY_ORDER):
        if name in present:
            valid[:, k] = 1.0 if valid_prob is None else (
                torch.rand(n, height, width, generator=g) < valid_prob).float()
    return tuple(xs) + (valid,)
