"""Per-cell temporal-signature encoders (the temporal branch of :class:`~.net.UrbanFusionNet`).

Input ``x`` [N, T, h, w]: T time steps stored as bands on the 40 m grid (e.g. 12 monthly NTL
values). Each 40 m cell's series is encoded on its own: ``[N, T, h, w] -> [N*h*w, 1, T]``
(a reshape with the runtime N, h, w, so they stay dynamic in ONNX), encoded, and reshaped back
to ``[N, out_dim, h, w]``. T is fixed by the config.

``SPP1dEncoder``: the 1-d SPP-Net of the image / temporal-signature fusion paper, five conv1d
layers (kernels 24/24/7/7/3, strides 1/24/1/7/1) and a spatial pyramid pooling over time (bins
1/2/3, max). Those sizes assume long hourly series (T = 24*7*24 = 4032); :func:`spp_layer_plan`
adapts them to short T so e.g. T = 12 or 24 still works.

``BiLSTMEncoder``: 3-layer bidirectional LSTM over time, forward and backward outputs averaged
over time.
"""
import torch
import torch.nn as nn

SPP_KERNELS = (24, 24, 7, 7, 3)
SPP_STRIDES = (1, 24, 1, 7, 1)
SPP_BINS = (1, 2, 3)


def spp_layer_plan(t, kernels=SPP_KERNELS, strides=SPP_STRIDES, min_len=max(SPP_BINS)):
    """[(kernel, stride, padding, keep)] per layer for a series of length ``t``, and the final
    length (``keep``: the layer's output is cut to that many steps, or None).

    * Stride-1 layers use "same" padding (length kept); their kernel is clamped to the length.
      The padding is the conv's own symmetric ``k // 2``; for even kernels the one extra output
      step is cut off (an explicit asymmetric F.pad would export as an opset-18 Pad node that
      the exporter cannot down-convert to opset 17).
      (The paper's valid convolutions shorten a 4032-step series by 23 steps; "same" makes no
      practical difference there and keeps short series from vanishing.)
    * Strided layers keep the configured stride and kernel while the output has at least
      ``min_len`` steps (the finest pyramid level); for shorter series the stride is reduced to
      ``L // min_len`` and the kernel to what fits, so the pyramid still sees ``min_len`` steps
      when the series has that many.
    """
    plan, length = [], int(t)
    for k, s in zip(kernels, strides):
        if s == 1:
            k = max(1, min(k, length))
            plan.append((k, 1, k // 2, length if k % 2 == 0 else None))
            continue
        s = max(1, min(s, length // min_len))
        k = max(s, min(k, length - (min_len - 1) * s))
        k = min(k, length)
        plan.append((k, s, 0, None))
        length = (length - k) // s + 1
    return plan, length


def _pyramid_bounds(length, bins):
    """Static (start, end) slices of adaptive max pooling (torch's rule) for each bin."""
    out = []
    for b in bins:
        for i in range(b):
            out.append(((i * length) // b, -(-((i + 1) * length) // b)))
    return out


def _to_sequences(x):
    """[N, T, h, w] -> ([N*h*w, 1, T], (N, h, w))."""
    n, t, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(-1, 1, t), (n, h, w)


def _to_map(y, nhw):
    """[N*h*w, F] -> [N, F, h, w]."""
    n, h, w = nhw
    return y.reshape(n, h, w, y.shape[-1]).permute(0, 3, 1, 2)


class SPP1dEncoder(nn.Module):
    """1-d SPP-Net over each cell's series: [N, T, h, w] -> [N, out_dim, h, w] with
    ``out_dim = channels[-1] * sum(bins)``."""

    def __init__(self, t, channels=(16, 32, 32, 32, 32), kernels=SPP_KERNELS,
                 strides=SPP_STRIDES, bins=SPP_BINS):
        super().__init__()
        if not len(channels) == len(kernels) == len(strides):
            raise ValueError("channels, kernels and strides need one entry per layer")
        self.plan, self.length = spp_layer_plan(t, kernels, strides, max(bins))
        self.t = int(t)
        layers, cin = [], 1
        for (k, s, pad, _), c in zip(self.plan, channels):
            layers.append(nn.Sequential(nn.Conv1d(cin, c, k, stride=s, padding=pad, bias=False),
                                        nn.BatchNorm1d(c), nn.ReLU(inplace=True)))
            cin = c
        self.layers = nn.ModuleList(layers)
        # the series length after the convs is fixed by T, so the pyramid's bins are static
        # slices (the exporter has no adaptive_max_pool1d for ONNX)
        self.bounds = _pyramid_bounds(self.length, bins)
        self.out_dim = cin * len(self.bounds)

    def forward(self, x):
        seq, nhw = _to_sequences(x)
        for (_, _, _, keep), layer in zip(self.plan, self.layers):
            seq = layer(seq)
            if keep is not None:
                seq = seq[:, :, :keep]
        pooled = torch.cat([seq[:, :, a:b].amax(dim=2) for a, b in self.bounds], dim=1)
        return _to_map(pooled, nhw)


class BiLSTMEncoder(nn.Module):
    """3-layer bidirectional LSTM over each cell's series: [N, T, h, w] -> [N, 2*hidden, h, w]
    (outputs averaged over time, as a sum / T so the graph stays opset 17)."""

    def __init__(self, t, hidden=16, layers=3):
        super().__init__()
        self.t = int(t)
        self.lstm = nn.LSTM(1, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.out_dim = 2 * hidden

    def forward(self, x):
        seq, nhw = _to_sequences(x)
        y, _ = self.lstm(seq.transpose(1, 2))          # [M, T, 2*hidden]
        return _to_map(y.sum(dim=1) * (1.0 / self.t), nhw)


def make_temporal_encoder(kind, t, **kwargs):
    if kind == "spp":
        return SPP1dEncoder(t, **kwargs)
    if kind == "bilstm":
        return BiLSTMEncoder(t, **kwargs)
    raise ValueError(f"temporal_encoder must be 'spp' or 'bilstm', not {kind!r}")
