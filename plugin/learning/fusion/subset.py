"""UrbanFusionNet restricted to the inputs a user trains on.

A model trained on, say, Sentinel-2 winter alone must not pretend to accept VHR or night light,
and should not pay for running the 2 m VHR trunk on zeros. :class:`SubsetFusionModel` takes only
the given inputs plus their mask (in that order, as the card lists them); the network is told
which inputs are structurally absent and skips their streams (their features would be zeroed by
their masks anyway): the result equals the full network fed zeros with mask 0 (checked in the
tests), at a fraction of the cost.
"""
import torch
import torch.nn as nn

from .net import MODALITY_ORDER, NTL_FACTOR

ABSENT_VHR_PX = 16


# added to the logits of switched-off classes: their softmax probability is exactly 0 in float32
OFF_LOGIT = -1.0e4


class SubsetFusionModel(nn.Module):
    """forward(*present inputs, valid [N, len(present), H, W]) -> (logits or probs, built_up,
    gates[, aux]). ``present``: names from MODALITY_ORDER, in that order. ``off_classes``:
    class indices whose probability is 0 (classes the user's labels never showed in training:
    what the network says of them was never taught nor checked in this area)."""

    def __init__(self, net, present, softmax=True, off_classes=()):
        super().__init__()
        unknown = [p for p in present if p not in MODALITY_ORDER]
        if unknown or not present:
            raise ValueError(f"present inputs must be a non-empty subset of {MODALITY_ORDER}")
        self.net = net
        self.present = tuple(m for m in MODALITY_ORDER if m in present)
        self.softmax = softmax
        self.off_classes = tuple(sorted(int(c) for c in off_classes))
        if len(self.off_classes) >= net.n_classes:
            raise ValueError("at least one class must stay on")
        if self.off_classes:
            bias = torch.zeros(net.n_classes)
            bias[list(self.off_classes)] = OFF_LOGIT
            self.register_buffer("class_off_bias", bias.view(1, -1, 1, 1))

    def full_inputs(self, xs, valid):
        """The network's eight inputs from the present ones (absent = zeros, mask 0)."""
        cfg = self.net.config
        n, h, w = valid.shape[0], valid.shape[-2], valid.shape[-1]
        given = dict(zip(self.present, xs))
        full, masks = [], []
        for k, name in enumerate(MODALITY_ORDER):
            if name in given:
                full.append(given[name])
                masks.append(valid[:, self.present.index(name):self.present.index(name) + 1])
                continue
            if name == "vhr":
                x = valid.new_zeros((n, cfg["vhr_bands"], ABSENT_VHR_PX, ABSENT_VHR_PX))
            elif name in ("ntl", "temporal"):
                bands = cfg["ntl_bands"] if name == "ntl" else cfg["temporal_steps"]
                x = valid.new_zeros((n, bands, h // NTL_FACTOR, w // NTL_FACTOR))
            else:
                x = valid.new_zeros((n, cfg["s2_bands"], h, w))
            full.append(x)
            masks.append(valid.new_zeros((n, 1, h, w)))
        return full, torch.cat(masks, dim=1)

    def forward(self, *args, return_aux=False):
        xs, valid = args[:-1], args[-1]
        full, valid7 = self.full_inputs(xs, valid)
        absent = frozenset(m for m in MODALITY_ORDER if m not in self.present)
        out = self.net(*full, valid7, return_aux=return_aux, absent=absent)
        if self.softmax and not return_aux:
            logits = out[0] + self.class_off_bias if self.off_classes else out[0]
            return (torch.softmax(logits, dim=1),) + tuple(out[1:])
        return out

    def absent_modules(self):
        """Sub-modules that only see absent inputs: kept frozen when training."""
        net = self.net
        groups = {"vhr": [getattr(net, n) for n in ("vhr_trunk", "vhr_texture", "vhr_patch")
                          if hasattr(net, n)] + [net.vhr_blocks, net.low_proj],
                  "ntl": [net.ntl_convs],
                  "temporal": [net.temporal_encoder, net.temporal_proj]}
        out = []
        for name, modules in groups.items():
            if name not in self.present:
                out += modules
        if not any(m.startswith("s2_") for m in self.present):
            out += [getattr(net, n) for n in ("s2_conv", "s2_bn", "s2_trunk", "s2_proj",
                                              "s2_from_probs") if hasattr(net, n)]
        if not any(m in self.present for m in ("vhr", "ntl")):
            out += [net.extract, net.align]   # only VHR and night light pass through these
        return out
