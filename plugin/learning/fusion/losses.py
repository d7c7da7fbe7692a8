"""Losses for :class:`~.net.UrbanFusionNet` and the modality-dropout augmentation.

Shapes: logits [N, K, H, W]; ``target`` [N, H, W] int64 class ids, ``ignore_index`` (255) where
unlabelled; features [N, D, H, W]; masks [N, 1, H, W] or [N, H, W] in {0, 1}.

Total (:func:`fusion_loss`)::

    L = seg + w_fc * L_fc + w_tri * L_tri + w_builtup * MSE(built-up) + w_s2 * L_s2
    seg = w_ce * weighted CE + w_dice * Dice + w_focal * Focal        (CSAGFNet)

with w_fc = 0.1, w_tri = 1.0 by default. ``L_s2`` (NLL of the decision-level Sentinel-2
probabilities, only in ``s2_fusion="decision"``) is what trains the per-season heads; set
``w_s2=0`` to drop it. Every term is 0 (not NaN) when it has no cells to act on.
"""
import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def _zero(x):
    """A 0 that keeps the graph (so .backward() works on an empty term)."""
    return x.sum() * 0.0


def _flat_mask(mask, like):
    """[N, 1, H, W] / [N, H, W] / None -> bool [N, H, W]."""
    if mask is None:
        return torch.ones(like.shape[0], *like.shape[-2:], dtype=torch.bool, device=like.device)
    if mask.dim() == 4:
        mask = mask[:, 0]
    return mask > 0.5


def weighted_ce(logits, target, class_weights=None, ignore_index=IGNORE_INDEX):
    if not (target != ignore_index).any():
        return _zero(logits)
    return F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore_index)


def focal_loss(logits, target, gamma=2.0, class_weights=None, ignore_index=IGNORE_INDEX):
    """Mean over labelled cells of ``alpha_t * (1 - p_t)^gamma * -log p_t``."""
    valid = target != ignore_index
    if not valid.any():
        return _zero(logits)
    t = torch.where(valid, target, torch.zeros_like(target))
    logp = F.log_softmax(logits, dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
    loss = (1.0 - logp.exp()).pow(gamma) * -logp
    if class_weights is not None:
        loss = loss * class_weights[t]
    return loss[valid].mean()


def dice_loss(logits, target, ignore_index=IGNORE_INDEX, smooth=1.0):
    """1 - mean over classes of the soft Dice coefficient, on labelled cells only."""
    valid = (target != ignore_index)
    if not valid.any():
        return _zero(logits)
    k = logits.shape[1]
    probs = torch.softmax(logits, dim=1) * valid.unsqueeze(1)
    t = torch.where(valid, target, torch.zeros_like(target))
    onehot = F.one_hot(t, k).permute(0, 3, 1, 2).to(probs.dtype) * valid.unsqueeze(1)
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    card = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1.0 - ((2.0 * inter + smooth) / (card + smooth)).mean()


def seg_loss(logits, target, class_weights=None, ignore_index=IGNORE_INDEX, w_ce=1.0,
             w_dice=1.0, w_focal=1.0, gamma=2.0):
    """Weighted cross-entropy + Dice + Focal (CSAGFNet's segmentation loss)."""
    return (w_ce * weighted_ce(logits, target, class_weights, ignore_index)
            + w_dice * dice_loss(logits, target, ignore_index)
            + w_focal * focal_loss(logits, target, gamma, class_weights, ignore_index))


def feature_consistency_loss(feat_a, feat_b, both=None):
    """Mean over cells where both modalities are present of ``1 - cos(feat_a, feat_b)``
    (cosine over the channel axis). feat_* [N, D, H, W]."""
    m = _flat_mask(both, feat_a).to(feat_a.dtype)
    if not (m > 0).any():
        return _zero(feat_a) + _zero(feat_b)
    cos = F.cosine_similarity(feat_a, feat_b, dim=1, eps=1e-8)
    return ((1.0 - cos) * m).sum() / m.sum()


def triplet_loss(feat_a, feat_b, target, both=None, margin=0.1, max_cells=256, generator=None,
                 ignore_index=IGNORE_INDEX):
    """Cross-modal triplet loss on L2-normalised cell features, both directions averaged.

    Anchor: modality A's feature at a cell; positive: modality B's feature at the same cell;
    negative: modality B's feature at a sampled cell of a different class (and symmetrically
    with B as anchor). At most ``max_cells`` labelled cells where both modalities are present
    are sampled (with ``generator``), so memory is O(max_cells^2) whatever the batch size.
    """
    sel = _flat_mask(both, feat_a) & (target != ignore_index)
    idx = torch.nonzero(sel.flatten()).squeeze(1)
    if idx.numel() < 2:
        return _zero(feat_a) + _zero(feat_b)
    if idx.numel() > max_cells:
        perm = torch.randperm(idx.numel(), generator=generator)[:max_cells].to(idx.device)
        idx = idx[perm]
    h, w = target.shape[-2:]
    n_i, rem = idx // (h * w), idx % (h * w)
    y_i, x_i = rem // w, rem % w
    fa = F.normalize(feat_a[n_i, :, y_i, x_i], dim=1)   # [K, D]
    fb = F.normalize(feat_b[n_i, :, y_i, x_i], dim=1)
    lab = target[n_i, y_i, x_i]
    differ = lab.unsqueeze(0) != lab.unsqueeze(1)     # [K, K]
    has_neg = differ.any(dim=1)
    if not has_neg.any():
        return _zero(feat_a) + _zero(feat_b)
    # one random negative per anchor among the cells of another class
    scores = torch.rand(differ.shape, generator=generator).to(fa.device)
    neg = torch.where(differ, scores, torch.full_like(scores, -1.0)).argmax(dim=1)

    def one_way(anchor, other):
        d_ap = (anchor - other).norm(dim=1)
        d_an = (anchor - other[neg]).norm(dim=1)
        return F.relu(d_ap - d_an + margin)

    loss = 0.5 * (one_way(fa, fb) + one_way(fb, fa))
    return loss[has_neg].mean()


def builtup_loss(pred, target, mask=None):
    """Masked MSE of the built-up fraction; pred/target [N, 1, H, W] in [0, 1]."""
    m = _flat_mask(mask, pred).to(pred.dtype).unsqueeze(1)
    if not (m > 0).any():
        return _zero(pred)
    return (((pred - target) ** 2) * m).sum() / m.sum()


def s2_decision_loss(s2_probs, target, s2_present, ignore_index=IGNORE_INDEX):
    """NLL of the decision-level Sentinel-2 probabilities (masked mean of season softmaxes) on
    labelled cells with at least one season; s2_probs [N, K, H, W], s2_present [N, 1, H, W]."""
    t = torch.where(_flat_mask(s2_present, target), target, torch.full_like(target,
                                                                            ignore_index))
    if not (t != ignore_index).any():
        return _zero(s2_probs)
    return F.nll_loss(torch.log(s2_probs.clamp(min=1e-8)), t, ignore_index=ignore_index)


def fusion_loss(outputs, target, builtup_target=None, builtup_mask=None, class_weights=None,
                ignore_index=IGNORE_INDEX, w_fc=0.1, w_tri=1.0, w_builtup=1.0, w_s2=0.5,
                margin=0.1, max_cells=256, generator=None, seg_weights=(1.0, 1.0, 1.0)):
    """Total loss from ``net(*inputs, return_aux=True)``; returns (total, dict of the terms as
    floats). ``builtup_target`` [N, 1, H, W] (skipped if None); ``builtup_mask`` defaults to the
    labelled cells."""
    logits, built_up, _, aux = outputs
    w_ce, w_dice, w_focal = seg_weights
    parts = {"seg": seg_loss(logits, target, class_weights, ignore_index, w_ce, w_dice,
                             w_focal)}
    both = aux["group_masks"][:, 0:1] * aux["group_masks"][:, 1:2]
    parts["fc"] = feature_consistency_loss(aux["inv_vhr"], aux["inv_ntl"], both)
    parts["tri"] = triplet_loss(aux["inv_vhr"], aux["inv_ntl"], target, both, margin,
                                max_cells, generator, ignore_index)
    total = parts["seg"] + w_fc * parts["fc"] + w_tri * parts["tri"]
    if builtup_target is not None:
        mask = (target != ignore_index).unsqueeze(1) if builtup_mask is None else builtup_mask
        parts["builtup"] = builtup_loss(built_up, builtup_target, mask)
        total = total + w_builtup * parts["builtup"]
    if aux.get("s2_probs") is not None and w_s2:
        parts["s2"] = s2_decision_loss(aux["s2_probs"], target, aux["group_masks"][:, 2:3],
                                       ignore_index)
        total = total + w_s2 * parts["s2"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


def modality_dropout(valid, p, generator=None):
    """Drop whole modalities per sample: every present modality (a channel of ``valid``
    [N, M, H, W] with any cell set) is zeroed with probability ``p``, but a sample never loses
    all of them (one present modality, chosen at random, is kept). Returns the new mask."""
    n, m = valid.shape[:2]
    present = valid.flatten(2).amax(dim=2) > 0                        # [N, M]
    drop = (torch.rand(n, m, generator=generator) < p).to(valid.device) & present
    lost_all = present.any(dim=1) & ~(present & ~drop).any(dim=1)
    if lost_all.any():
        scores = torch.rand(n, m, generator=generator).to(valid.device)
        keep = torch.where(present, scores, torch.full_like(scores, -1.0)).argmax(dim=1)
        rows = torch.nonzero(lost_all).squeeze(1)
        drop[rows, keep[rows]] = False
    return valid * (~drop).to(valid.dtype)[:, :, None, None]


def zero_absent(inputs, valid):
    """Zero each modality's input (``inputs`` in MODALITY_ORDER, one per channel of ``valid``)
    for the samples whose mask for it is all 0, as the engine feeds a missing modality."""
    present = (valid.flatten(2).amax(dim=2) > 0).to(valid.dtype)       # [N, M]
    return tuple(x * present[:, k].view(-1, 1, 1, 1) for k, x in enumerate(inputs))
