"""Train the urban-function fusion network on generated scenes (``make train-fusion``).

    python -m plugin.learning.fusion.train --out models/urban_fusion.onnx [--scenes N]
        [--val-scenes M] [--epochs E] [--cells C] [--config tiny|default]
        [--ablation concat|no_align|no_aux|feature_s2] [--threads 2] [--device auto]

1. generate N training scenes (seeds 0..N-1, split ``train``) and M validation scenes (seeds
   10000.., split ``val``: layouts and real scene images never seen in training) with
   :func:`.scenes.make_scene`, cached as ``.npz`` under ``build/fusion_scenes/`` keyed by a hash
   of the generator code, the split file and the image manifest (VHR stored as uint8 and
   Sentinel-2 as uint16, the raw types the card declares);
2. per-band normalisation statistics of the training scenes (after the card's scale and
   transform) -> the card's inputs; every batch is normalised with them exactly as the engine
   normalises a user's rasters;
3. train :class:`.net.UrbanFusionNet` on random square crops (rotations by 90 degrees and flips
   applied to every modality alike, light VHR colour jitter), with modality dropout (each of the
   groups VHR / NTL / Sentinel-2 / temporal dropped with ``--p-drop`` per sample, never all) and
   season dropout, absent inputs fed as zeros with mask 0; loss :func:`.losses.fusion_loss`
   (weighted CE + Dice + Focal + 0.1 feature consistency + 1.0 triplet + built-up MSE + the
   Sentinel-2 decision term); AdamW with warm-up and cosine decay; seeded; CPU or CUDA;
4. save the checkpoint and export it in a separate process (:mod:`.export`, parity with torch for
   every input subset);
5. measure the receptive field, then score the EXPORTED model in onnxruntime on the validation
   scenes (engine tiling and blending) for the input subsets of :data:`.card.SUBSET_LABELS`:
   OA, mIoU, macro F1, kappa, per-class F1 and the built-up fraction's MAE;
6. write the card (metrics, training record, data provenance) into the ONNX file and the
   Markdown card beside it (:func:`..onnx_io.publish_model`).

``--ablation`` changes the network or loss (see :data:`ABLATIONS`) and refuses to overwrite the
bundled model's path.
"""
import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np

from ...core.tiling import blend_weights, tile_starts
from ..data import BUILD_DIR, REPO_ROOT, _hash_files
from ..onnx_io import export_in_subprocess
from ..metrics import confusion_matrix, scores
from . import card as cardlib
from .export import OUTPUT_NAMES as OUTPUTS

BUNDLED_OUT = os.path.join(REPO_ROOT, "models", "urban_fusion.onnx")
SCENE_DIR = os.path.join(BUILD_DIR, "fusion_scenes")
MODALITIES = ("vhr", "ntl", "s2_spring", "s2_summer", "s2_autumn", "s2_winter", "temporal")
S2 = MODALITIES[2:6]
GROUPS = {"vhr": ("vhr",), "ntl": ("ntl",), "s2": S2, "temporal": ("temporal",)}
VAL_SEED0 = 10000
VHR_FACTOR, NTL_FACTOR = 5, 4
# input subsets scored on the validation scenes: key -> groups present
SUBSETS = {
    "all": ("vhr", "ntl", "s2", "temporal"),
    "vhr_only": ("vhr",),
    "ntl_only": ("ntl",),
    "s2_only": ("s2",),
    "temporal_only": ("temporal",),
    "all_but_vhr": ("ntl", "s2", "temporal"),
    "all_but_ntl": ("vhr", "s2", "temporal"),
    "all_but_s2": ("vhr", "ntl", "temporal"),
    "all_but_temporal": ("vhr", "ntl", "s2"),
    "vhr_ntl": ("vhr", "ntl"),
}
# NTL mis-registration test: the validation scenes again with the NTL shifted by exactly this
# many 40 m pixels (east, south alternating by scene) instead of the random 0-2 pixel shift
MISREGISTRATION_PX = (0, 2)
MISREGISTRATION_SUBSETS = ("all", "vhr_ntl")
CONFIGS = {
    # the unit tests' tiny network (tests/test_fusion_net.py)
    "tiny": dict(width=16, vhr_texture=8, vhr_low=8, vhr_blocks=1, ntl_hidden=8, s2_hidden=8,
                 temporal_channels=(8, 8, 8, 8, 8), aspp_branch=8, low_proj=8, builtup_hidden=8),
    # the VHR stream is the stem and first two stages of the real-data VHR scene classifier
    "default": {"vhr_encoder": "scene_resnet"},
}
VHR_INIT = os.path.join(REPO_ROOT, "models", "vhr_scenes_resnet.onnx")
# the pretrained VHR trunk learns at this fraction of the learning rate (it already knows
# real scene textures; the rest of the network starts from scratch)
VHR_LR_MULT = 0.1
# ablation -> (network config changes, loss weight changes)
ABLATIONS = {
    "concat": ({"fusion": "concat"}, {}),
    "no_align": ({"align": False}, {}),
    "no_aux": ({}, {"w_fc": 0.0, "w_tri": 0.0}),
    "feature_s2": ({"s2_fusion": "feature"}, {"w_s2": 0.0}),
    "no_vhr_init": ({}, {}),     # the same network, VHR trunk trained from scratch
}
LOSS_WEIGHTS = dict(w_fc=0.1, w_tri=1.0, w_builtup=1.0, w_s2=0.5)
# the bundled model's settings: about 23 min on 2 idle CPU cores (measured 0.45 s per step)
DEFAULTS = dict(scenes=192, val_scenes=16, epochs=14, cells=128, config="default", crop=64,
                batch=4, lr=2e-3, weight_decay=1e-4, p_drop=0.3, p_season=0.3, seed=0,
                threads=2, device="auto")


def log(msg):
    print(msg, flush=True)


# --- 1. scenes -------------------------------------------------------------------------------
def _sha(paths):
    return _hash_files(paths)


def scenes_fingerprint(vhr_root=None):
    """sha256 (12 hex digits) of everything a scene depends on: the scene and sample-city code,
    the train / val split of the scene images and the images' manifest."""
    from ..vhr_data import SPLIT_CSV, data_dir
    here = os.path.dirname(os.path.abspath(__file__))
    files = [os.path.join(here, "scenes.py"), os.path.join(here, "..", "vhr_data.py"),
             SPLIT_CSV, os.path.join(data_dir(vhr_root), "manifest.csv")]
    files += glob.glob(os.path.join(REPO_ROOT, "plugin", "samplecity", "**", "*.py"),
                       recursive=True)
    return _sha([os.path.abspath(f) for f in files])


def _to_cache(scene):
    """Raw arrays in the card's raw types (VHR uint8, S2 uint16), meta as JSON."""
    out = {"vhr": np.clip(np.rint(scene["vhr"]), 0, 255).astype(np.uint8),
           "ntl": scene["ntl"].astype(np.float32),
           "temporal": scene["temporal"].astype(np.float32),
           "labels": scene["labels"].astype(np.uint8),
           "built_up": scene["built_up"].astype(np.float32),
           "meta": np.array(json.dumps(scene["meta"]))}
    for s in S2:
        out[s] = np.clip(np.rint(scene[s]), 0, 65535).astype(np.uint16)
    return out


def _make_cached(job):
    """Worker: make one scene and write it to ``path`` (atomically)."""
    seed, split, cells, path, shift = job
    from .scenes import make_scene
    arrays = _to_cache(make_scene(seed, split=split, cells=cells, ntl_shift_px=shift))
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def _load(path):
    with np.load(path) as z:
        scene = {k: z[k] for k in z.files if k != "meta"}
        scene["meta"] = json.loads(str(z["meta"]))
    return scene


def scene_path(seed, split, cells, key, cache_dir=SCENE_DIR):
    return os.path.join(cache_dir, f"{split}_{seed:05d}_{cells}c_{key}.npz")


def _fixed_shift(seed, px):
    """(east, south) NTL shift of ``px`` pixels, east for even seeds, south for odd ones."""
    return (float(px), 0.0) if seed % 2 == 0 else (0.0, float(px))


def get_scenes(seeds, split, cells, workers=1, cache_dir=SCENE_DIR, key=None, ntl_shift_px=None):
    """The scenes of ``seeds`` (dicts of raw arrays + meta), generated once and cached.
    ``ntl_shift_px``: the NTL mis-registration of every scene fixed to that many 40 m pixels
    (:func:`_fixed_shift`) instead of the random draw (cached under their own names)."""
    key = key or scenes_fingerprint()
    os.makedirs(cache_dir, exist_ok=True)
    name = split if ntl_shift_px is None else f"{split}-ntlshift{ntl_shift_px:g}"
    paths = [scene_path(s, name, cells, key, cache_dir) for s in seeds]
    todo = [(s, split, cells, p, None if ntl_shift_px is None else _fixed_shift(s, ntl_shift_px))
            for s, p in zip(seeds, paths) if not os.path.exists(p)]
    for s, _, _, p, _ in todo:   # stale entries of the same scene made by other code
        for old in glob.glob(os.path.join(glob.escape(cache_dir), f"{name}_{s:05d}_{cells}c_*")):
            if old != p:
                os.remove(old)
    if todo:
        t = time.perf_counter()
        workers = workers if len(todo) >= 4 else 1
        if workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
                list(ex.map(_make_cached, todo))
        else:
            for job in todo:
                _make_cached(job)
        log(f"    made {len(todo)} {name} scenes of {cells} cells in "
            f"{time.perf_counter() - t:.1f} s ({workers} process(es)); "
            f"{len(seeds) - len(todo)} from the cache")
    else:
        log(f"    {len(seeds)} {name} scenes from the cache")
    return [_load(p) for p in paths]


# --- 2. normalisation ------------------------------------------------------------------------
def _spec_by_name(card_inputs):
    return {s["name"]: s for s in card_inputs}


def to_model_units(x, spec):
    """raw -> transform(raw * scale + offset) (float32), as the engine does before the
    mean / std normalisation."""
    y = x.astype(np.float32) * np.float32(spec["scale"]) + np.float32(spec["offset"])
    return np.log1p(np.maximum(y, 0.0)) if spec["transform"] == "log1p" else y


def band_statistics(scenes, card_inputs):
    """{input name: (means, stds)} per band over all pixels of the training scenes, after scale
    and transform."""
    stats = {}
    for spec in card_inputs:
        n = len(spec["bands"])
        s1, s2, cnt = np.zeros(n), np.zeros(n), 0
        for sc in scenes:
            y = to_model_units(sc[spec["name"]], spec).reshape(n, -1).astype(np.float64)
            s1 += y.sum(axis=1)
            s2 += (y * y).sum(axis=1)
            cnt += y.shape[1]
        mean = s1 / cnt
        std = np.sqrt(np.maximum(s2 / cnt - mean * mean, 0.0))
        stats[spec["name"]] = (mean.tolist(), np.maximum(std, 1e-6).tolist())
    return stats


def normalise(x, spec):
    mean = np.asarray(spec["mean"], np.float32).reshape(-1, *([1] * (x.ndim - 1)))
    std = np.asarray(spec["std"], np.float32).reshape(-1, *([1] * (x.ndim - 1)))
    return (to_model_units(x, spec) - mean) / std


# --- 3. training -----------------------------------------------------------------------------
def _augment(a, k, flip):
    a = np.rot90(a, k, axes=(-2, -1))
    return a[..., ::-1] if flip else a


def make_batch(rng, scenes, specs, batch, crop):
    """(inputs in MODALITY_ORDER as float32 numpy, labels int64 [B, crop, crop] with 255 =
    ignore, built-up [B, 1, crop, crop]); crops start on 40 m pixels, all modalities rotated /
    flipped alike; VHR colour jitter (gain 0.85-1.15 per band pair, offset +-12 DN) before
    normalisation. Masks are not made here (see :func:`dropout_masks`)."""
    xs = {m: [] for m in MODALITIES}
    labels, built = [], []
    for _ in range(batch):
        sc = scenes[int(rng.integers(len(scenes)))]
        h = sc["labels"].shape[0]
        r = NTL_FACTOR * int(rng.integers(0, (h - crop) // NTL_FACTOR + 1))
        c = NTL_FACTOR * int(rng.integers(0, (h - crop) // NTL_FACTOR + 1))
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        f = VHR_FACTOR
        q = NTL_FACTOR
        crops = {"vhr": sc["vhr"][:, f * r:f * (r + crop), f * c:f * (c + crop)],
                 "ntl": sc["ntl"][:, r // q:(r + crop) // q, c // q:(c + crop) // q],
                 "temporal": sc["temporal"][:, r // q:(r + crop) // q, c // q:(c + crop) // q]}
        for s in S2:
            crops[s] = sc[s][:, r:r + crop, c:c + crop]
        vhr = crops["vhr"].astype(np.float32)
        gain = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, (3, 1, 1))
        vhr = np.clip(vhr * gain.astype(np.float32) + np.float32(rng.uniform(-12, 12)), 0, 255)
        crops["vhr"] = vhr
        for m in MODALITIES:
            xs[m].append(np.ascontiguousarray(_augment(normalise(crops[m], specs[m]), k, flip)))
        labels.append(np.ascontiguousarray(_augment(sc["labels"][r:r + crop, c:c + crop], k,
                                                    flip)).astype(np.int64))
        built.append(np.ascontiguousarray(_augment(sc["built_up"][r:r + crop, c:c + crop], k,
                                                   flip))[None])
    return [np.stack(xs[m]) for m in MODALITIES], np.stack(labels), np.stack(built)


def dropout_masks(batch, size, p_drop, p_season, generator):
    """valid [B, 7, size, size]: modality dropout over the four groups (VHR, NTL, S2, temporal;
    each dropped with ``p_drop``, never all, :func:`.losses.modality_dropout`) and season
    dropout inside Sentinel-2 (each season dropped with ``p_season``, never all four)."""
    import torch
    from .losses import modality_dropout
    ones = torch.ones(batch, 4, 1, 1)
    groups = modality_dropout(ones, p_drop, generator)
    seasons = modality_dropout(ones, p_season, generator)
    valid = torch.cat([groups[:, 0:1], groups[:, 1:2], groups[:, 2:3] * seasons,
                       groups[:, 3:4]], dim=1)
    return valid.expand(batch, 7, size, size).contiguous()


def class_weights(scenes, n_classes):
    counts = np.zeros(n_classes)
    for sc in scenes:
        lab = sc["labels"]
        counts += np.bincount(lab[lab < n_classes].ravel(), minlength=n_classes)[:n_classes]
    freq = counts / max(counts.sum(), 1)
    w = 1.0 / np.sqrt(np.maximum(freq, 1e-4))
    return (w / w.mean()).astype(np.float32), counts


def train(scenes, specs, net_config, loss_weights, args, device, n_classes, vhr_init=None):
    """``vhr_init``: a trained ..vhr_model.SceneResNet whose stem and stages 1-2 start the VHR
    trunk (trained at VHR_LR_MULT x the learning rate), or None (trunk from scratch)."""
    import torch
    from . import losses as L
    from .net import UrbanFusionNet, count_parameters
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    net = UrbanFusionNet(n_classes=n_classes, **net_config)
    if vhr_init is not None:
        net.vhr_trunk.load_scene_resnet(vhr_init)
    net = net.to(device)
    weights, counts = class_weights(scenes, n_classes)
    log(f"    model: {count_parameters(net):,} parameters; class weights "
        f"{[round(float(v), 2) for v in weights]}")
    wt = torch.from_numpy(weights).to(device)
    trunk = [p for n, p in net.named_parameters() if n.startswith("vhr_trunk.")]
    rest = [p for n, p in net.named_parameters() if not n.startswith("vhr_trunk.")]
    mult = VHR_LR_MULT if vhr_init is not None else 1.0
    groups = [{"params": rest, "lr_mult": 1.0}] + ([{"params": trunk, "lr_mult": mult}]
                                                     if trunk else [])
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    steps = args.steps
    warmup = max(1, steps // 20)

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    def batch_tensors():
        xs, lab, bu = make_batch(rng, scenes, specs, args.batch, args.crop)
        valid = dropout_masks(args.batch, args.crop, args.p_drop, args.p_season, g)
        xs = L.zero_absent([torch.from_numpy(a) for a in xs], valid)
        xs = [t.to(device) for t in xs] + [valid.to(device)]
        return xs, torch.from_numpy(lab).to(device), torch.from_numpy(bu).to(device)

    net.train()
    t0 = time.perf_counter()
    history, step_times = [], []
    every = max(1, min(50, steps // 10))
    window = []
    for step in range(steps):
        ts = time.perf_counter()
        xs, target, bu = batch_tensors()
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step) * grp["lr_mult"]
        out = net(*xs, return_aux=True)
        total, parts = L.fusion_loss(out, target, bu, class_weights=wt, generator=g,
                                     **loss_weights)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        step_times.append(time.perf_counter() - ts)
        window.append(dict(parts, total=float(total.detach())))
        if (step + 1) % every == 0 or step + 1 == steps:
            mean = {k: round(float(np.mean([w[k] for w in window])), 4) for k in window[0]}
            history.append(dict(step=step + 1, **mean))
            window = []
            el = time.perf_counter() - t0
            eta = el / (step + 1) * (steps - step - 1)
            log(f"    step {step + 1}/{steps}  loss {mean['total']:.4f} "
                f"({', '.join(f'{k} {v:.3f}' for k, v in mean.items() if k != 'total')})  "
                f"lr {lr_at(step):.2e}  {el:.0f} s, ETA {eta:.0f} s")
    train_s = time.perf_counter() - t0
    # Re-estimate batch-norm statistics with the final weights over many batches (cumulative
    # average) with the same modality dropout as in training.
    t1 = time.perf_counter()
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.reset_running_stats()
            m.momentum = None
    n_bn = min(50, max(2, steps // 10))
    with torch.no_grad():
        for _ in range(n_bn):
            xs, _, _ = batch_tensors()
            net(*xs)
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.momentum = 0.1
    net.eval()
    log(f"    batch-norm statistics re-estimated on {n_bn} batches in "
        f"{time.perf_counter() - t1:.0f} s")
    timing = {"steps": steps, "training_s": round(train_s, 1),
              "s_per_step_mean": round(float(np.mean(step_times)), 4),
              "s_per_step_median": round(float(np.median(step_times)), 4),
              "s_per_step_first": round(float(step_times[0]), 4)}
    return net.cpu(), timing, history, counts


def load_vhr_init(path):
    """(SceneResNet with the weights of the VHR scene classifier at ``path``, record for the
    card: file, sha256, the classifier's VHR normalisation, parameters copied)."""
    import hashlib
    from ...core.model_card import read_card
    from ..onnx_io import torch_net_from_onnx
    from ..vhr_model import SceneResNet
    from .net import count_parameters
    if not os.path.isfile(path):
        raise SystemExit(f"--vhr-init {path}: no such file (make train-vhr makes it)")
    card = read_card(path).raw
    config = card["architecture"]["config"]
    if config.get("stem_stride") != 4 or config.get("in_bands") != 3:
        raise SystemExit(f"--vhr-init {path}: expected a SceneResNet with stem_stride 4 and "
                         f"3 bands, found {config}")
    net = torch_net_from_onnx(path, SceneResNet, config)
    spec = card["inputs"][0]
    if abs(float(spec["scale"]) - 1.0 / 255.0) > 1e-9:
        raise SystemExit(f"--vhr-init {path}: its VHR input scale {spec['scale']} is not 1/255")
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    copied = count_parameters(net.stem) + count_parameters(net.layers[0:4])
    rel = os.path.relpath(os.path.abspath(path), REPO_ROOT)
    from ..onnx_io import weights_sha256
    return net, {"file": rel, "sha256": sha, "weights_sha256": weights_sha256(path),
                 "model": card.get("name"),
                 "version": card.get("version"), "width": config["width"],
                 "copied": "stem, stages 1-2 (layers 0-3)",
                 "parameters_copied": copied,
                 "lr_mult": VHR_LR_MULT,
                 "mean": [float(v) for v in spec["mean"]],
                 "std": [float(v) for v in spec["std"]]}


# --- 5. receptive field ----------------------------------------------------------------------
def receptive_bound(config):
    """An upper bound (output cells) of how far an input can change an output, from the layer
    sizes (see net.py / modules.py): the longest path is NTL -> 40 m convs -> bilinear x4 ->
    attention -> offset-predicted warp (up to ``max_offset`` cells away, or the offset head's own
    reach) -> specific / invariant 3x3 -> ASPP -> decoder -> built-up head."""
    head = max(config["aspp_rates"]) + 2 + 1          # ASPP, two 3x3 decoder convs, built-up 3x3
    att = 3                                           # 7x7 spatial attention
    offset_reach = 3                                  # three 3x3 convs of the offset head
    warp = max(offset_reach, math.ceil(config["max_offset"]) + 1) if config["align"] else 0
    extract = 1                                       # specific / invariant 3x3
    if config.get("vhr_encoder") == "scene_resnet":
        # SceneResNet stem + stages 1-2 reach 49 px of 2 m (3x3 s2, 3x3, 3x3 max pool s2, four
        # 3x3 at 8 m, 3x3 s2, three 3x3 at 16 m), the resize to 10 m one 16 m pixel more
        trunk = math.ceil((49 + 8) * 2.0 / 10.0)
    else:
        trunk = 1                                     # the stride-5 patchify conv
    vhr_deep = trunk + sum(2 * (1 + i) for i in range(config["vhr_blocks"]))
    ntl = NTL_FACTOR * (2 + 1)                        # two 3x3 convs at 40 m + bilinear x4
    temporal = NTL_FACTOR * 1                         # per-cell encoder, bilinear x4
    s2 = 2                                            # 3x3 conv + 3x3 projection
    paths = [ntl + att + warp + extract + head,
             vhr_deep + att + (offset_reach if config["align"] else 0) + extract + head,
             temporal + head, s2 + head]
    return int(max(paths))


def receptive_radius(net, cells=96, seed=0):
    """Measured like ..model.receptive_radius: perturb each input near the centre of a
    ``cells`` tile (random inputs, all present) and find how far any output (probabilities,
    built-up, gates) changes. A measurement at one input, so it can be below the bound."""
    import torch
    from .net import FusionProbabilityModel, example_inputs
    model = FusionProbabilityModel(net.eval()).eval()
    base = example_inputs(1, cells, seed=seed, config=net.config)
    factor = {0: VHR_FACTOR, 1: 1.0 / NTL_FACTOR, 6: 1.0 / NTL_FACTOR}
    with torch.no_grad():
        ref = model(*base)
        c = cells // 2
        radius = 0
        for k in range(len(base) - 1):
            x = [t.clone() for t in base]
            f = factor.get(k, 1)
            p = int(c * f)
            x[k][:, :, p, p] += 10.0
            out = model(*x)
            diff = torch.zeros(cells, cells, dtype=torch.bool)
            for a, b in zip(out, ref):
                diff |= ((a - b).abs().amax(dim=(0, 1)) > 1e-6)
            ys, xs_ = torch.nonzero(diff, as_tuple=True)
            if len(ys):
                lo, hi = p / f, (p + 1) / f
                d = max(max(lo - float(ys.min()), float(ys.max()) + 1 - hi),
                        max(lo - float(xs_.min()), float(xs_.max()) + 1 - hi))
                radius = max(radius, int(math.ceil(d - 1e-9)))
    return radius


# --- 5. evaluation of the exported model -----------------------------------------------------
def scene_feed(sc, specs, present, window=None):
    """Feed (batch 1) for one scene: normalised present inputs, zeros + mask 0 for the others.
    ``window`` = (row, col, size) in output cells."""
    h = sc["labels"].shape[0]
    r, c, n = window or (0, 0, h)
    feed = {}
    valid = np.zeros((len(MODALITIES), n, n), np.float32)
    for k, m in enumerate(MODALITIES):
        f = {"vhr": VHR_FACTOR, "ntl": 1 / NTL_FACTOR, "temporal": 1 / NTL_FACTOR}.get(m, 1)
        x = sc[m][:, int(r * f):int((r + n) * f), int(c * f):int((c + n) * f)]
        if m in present:
            feed[m] = normalise(x, specs[m])[None]
            valid[k] = 1.0
        else:
            feed[m] = np.zeros((1,) + x.shape, np.float32)
    feed[cardlib.MASK_INPUT] = valid[None]
    return feed


def predict_scene(sess, sc, specs, present, tile, overlap):
    """(probs [C, H, W], built_up [H, W], gates [4, H, W]) with the engine's tiles and
    blending weights (one window when the scene fits in a tile)."""
    h = sc["labels"].shape[0]
    t = min(tile, h)
    starts = tile_starts(h, t, t - overlap if t < h else t)
    weights = blend_weights(t, t, overlap if t < h else 0)
    acc = {}
    wsum = np.zeros((h, h), np.float32)
    for r in starts:
        for c in starts:
            outs = sess.run(list(OUTPUTS), scene_feed(sc, specs, present, (r, c, t)))
            for name, o in zip(OUTPUTS, outs):
                a = acc.setdefault(name, np.zeros((o.shape[1], h, h), np.float32))
                a[:, r:r + t, c:c + t] += o[0] * weights
            wsum[r:r + t, c:c + t] += weights
    return tuple(acc[n] / wsum for n in OUTPUTS)


def open_session(onnx_path, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in sess.get_outputs()]
    if outputs != list(OUTPUTS):
        raise SystemExit(f"exported outputs {outputs} != {list(OUTPUTS)}")
    return sess


def evaluate(sess, val_scenes, specs, class_names, tile, overlap, keys=tuple(SUBSETS),
             indent="    "):
    """{subset key: scores} of the exported model (``sess``) on ``val_scenes``."""
    subsets = {}
    n = len(class_names)
    for key in keys:
        groups = SUBSETS[key]
        present = sum((GROUPS[g] for g in groups), ())
        cm = 0
        abs_err, cells = 0.0, 0
        gate_sum = np.zeros(4)
        for sc in val_scenes:
            probs, bu, gates = predict_scene(sess, sc, specs, present, tile, overlap)
            lab = sc["labels"]
            cm = cm + confusion_matrix(lab, probs.argmax(0), n)
            keep = lab < n
            abs_err += float(np.abs(bu[0] - sc["built_up"])[keep].sum())
            cells += int(keep.sum())
            gate_sum += gates.reshape(4, -1).mean(axis=1)
        s = scores(cm, class_names)
        s["label"] = cardlib.SUBSET_LABELS[key]
        s["inputs"] = list(present)
        s["built_up_mae"] = round(abs_err / max(cells, 1), 4)
        s["mean_gates"] = dict(zip(("vhr", "ntl", "s2", "temporal"),
                                   np.round(gate_sum / len(val_scenes), 4).tolist()))
        s["confusion_matrix"] = cm.tolist()
        subsets[key] = s
        log(f"{indent}{s['label']:<20} OA {s['overall_accuracy']:.3f}  mIoU {s['miou']:.3f}  "
            f"macro F1 {s['macro_f1']:.3f}  built-up MAE {s['built_up_mae']:.3f}")
    return subsets


def misregistration_test(sess, seeds, cells, workers, cache_dir, key, specs, class_names,
                         tile, overlap):
    """The validation scenes with the NTL shifted by exactly each of MISREGISTRATION_PX 40 m
    pixels: {"<px>px": {subset: scores without confusion matrix}}."""
    out = {}
    for px in MISREGISTRATION_PX:
        scenes = get_scenes(seeds, "val", cells, workers, cache_dir, key, ntl_shift_px=px)
        log(f"    NTL shifted by {px} x 40 m:")
        res = evaluate(sess, scenes, specs, class_names, tile, overlap,
                       MISREGISTRATION_SUBSETS, indent="      ")
        out[f"{px}px"] = {k: {m: v for m, v in r.items() if m != "confusion_matrix"}
                          for k, r in res.items()}
    return out


def tiling_agreement(sess, sc, specs, tile, overlap):
    """Tiled ONNX inference (engine blending) vs one whole-scene pass: share of cells with the
    same class and the largest probability difference."""
    whole = sess.run(["probs"], scene_feed(sc, specs, MODALITIES))[0][0]
    tiled = predict_scene(sess, sc, specs, MODALITIES, tile, overlap)[0]
    return {"tile": tile, "overlap": overlap,
            "same_class": round(float((whole.argmax(0) == tiled.argmax(0)).mean()), 5),
            "max_prob_diff": round(float(np.abs(whole - tiled).max()), 5)}


# --- provenance helpers ----------------------------------------------------------------------
def images_by_dataset(scenes):
    """{dataset: distinct scene images used} over the scenes' zones."""
    paths = {p for sc in scenes for p in sc["meta"]["vhr"]["paths"]}
    out = {}
    for p in paths:
        ds = p.split("/", 1)[0]
        out[ds] = out.get(ds, 0) + 1
    return out


def hardware(device):
    import torch
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    from ..train_sample import hardware as cpu_name
    return f"{cpu_name()}, {os.cpu_count()} cores"


# --- main ------------------------------------------------------------------------------------
def parse_args(argv):
    d = DEFAULTS
    ap = argparse.ArgumentParser(description="Train the urban-function fusion network on "
                                             "generated scenes.")
    ap.add_argument("--out", default=None,
                    help="ONNX file to write; the Markdown card goes beside it (.md). Default "
                         "models/urban_fusion.onnx, build/fusion_ablations/ for an ablation")
    ap.add_argument("--scenes", type=int, default=d["scenes"], help="training scenes")
    ap.add_argument("--val-scenes", type=int, default=d["val_scenes"], help="validation scenes")
    ap.add_argument("--epochs", type=float, default=d["epochs"],
                    help="passes over the training scenes' area in crops")
    ap.add_argument("--steps", type=int, default=0,
                    help="optimiser steps (overrides --epochs when > 0)")
    ap.add_argument("--cells", type=int, default=d["cells"],
                    help="scene side in 10 m cells (multiple of 4, >= 32)")
    ap.add_argument("--crop", type=int, default=d["crop"],
                    help="training crop side in cells (multiple of 4; at most --cells)")
    ap.add_argument("--batch", type=int, default=d["batch"])
    ap.add_argument("--config", choices=sorted(CONFIGS), default=d["config"])
    ap.add_argument("--ablation", choices=sorted(ABLATIONS), default=None)
    ap.add_argument("--lr", type=float, default=d["lr"])
    ap.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    ap.add_argument("--p-drop", type=float, default=d["p_drop"],
                    help="modality-group dropout probability per sample")
    ap.add_argument("--p-season", type=float, default=d["p_season"],
                    help="dropout probability of each Sentinel-2 season (never all four)")
    ap.add_argument("--seed", type=int, default=d["seed"])
    ap.add_argument("--threads", type=int, default=d["threads"],
                    help="torch / onnxruntime CPU threads and scene-making processes")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d["device"])
    ap.add_argument("--workdir", default=None,
                    help="checkpoint and bare ONNX (default build/fusion_train/<name>)")
    ap.add_argument("--scene-dir", default=SCENE_DIR, help="scene cache folder")
    ap.add_argument("--vhr-init", default=VHR_INIT,
                    help="the trained VHR scene classifier (ONNX) whose stem and first two "
                         "stages start the VHR trunk (default: the bundled one)")
    args = ap.parse_args(argv)
    if args.cells % 4 or args.cells < 32:
        ap.error("--cells must be a multiple of 4 and at least 32")
    args.crop = min(args.crop, args.cells)
    if args.crop % 4:
        ap.error("--crop must be a multiple of 4")
    if args.scenes < 1 or args.val_scenes < 1:
        ap.error("--scenes and --val-scenes must be at least 1")
    name = "urban_fusion" + (f"_{args.ablation}" if args.ablation else "")
    if args.out is None:
        args.out = BUNDLED_OUT if not args.ablation else os.path.join(
            BUILD_DIR, "fusion_ablations", name + ".onnx")
    if args.ablation and os.path.abspath(args.out) == os.path.abspath(BUNDLED_OUT):
        ap.error("an ablation run must not overwrite the bundled model; choose another --out")
    args.workdir = args.workdir or os.path.join(BUILD_DIR, "fusion_train", name)
    per_scene = (args.cells // args.crop) ** 2
    args.steps_per_epoch = max(1, math.ceil(args.scenes * per_scene / args.batch))
    if args.steps <= 0:
        args.steps = max(1, int(round(args.epochs * args.steps_per_epoch)))
    args.epochs = round(args.steps / args.steps_per_epoch, 2)
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    import torch
    t_start = time.perf_counter()
    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = args.device
        if device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
    torch.set_num_threads(max(1, args.threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    if device == "cuda":
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    os.makedirs(args.workdir, exist_ok=True)
    net_config = dict(CONFIGS[args.config])
    loss_weights = dict(LOSS_WEIGHTS)
    if args.ablation:
        cfg_change, loss_change = ABLATIONS[args.ablation]
        net_config.update(cfg_change)
        loss_weights.update(loss_change)
    class_names = [c["name"] for c in cardlib.build_card()["classes"]]
    times = {}
    vhr_init, vhr_init_record = None, None
    if net_config.get("vhr_encoder") == "scene_resnet" and args.ablation != "no_vhr_init":
        vhr_init, vhr_init_record = load_vhr_init(args.vhr_init)
        log(f"0/6 VHR trunk starts from {vhr_init_record['file']} (sha256 "
            f"{vhr_init_record['sha256'][:12]}): stem and stages 1-2, "
            f"{vhr_init_record['parameters_copied']:,} parameters")

    train_seeds = list(range(args.scenes))
    val_seeds = list(range(VAL_SEED0, VAL_SEED0 + args.val_scenes))
    log(f"1/6 Scenes: {args.scenes} train (seeds 0..{args.scenes - 1}), {args.val_scenes} "
        f"validation (seeds {VAL_SEED0}..{val_seeds[-1]}, split val), {args.cells} x "
        f"{args.cells} cells; cache {args.scene_dir}")
    t = time.perf_counter()
    key = scenes_fingerprint()
    log(f"    scene code / split / manifest fingerprint {key}")
    train_scenes = get_scenes(train_seeds, "train", args.cells, args.threads, args.scene_dir, key)
    val_scenes = get_scenes(val_seeds, "val", args.cells, args.threads, args.scene_dir, key)
    times["scenes"] = round(time.perf_counter() - t, 1)

    log("2/6 Normalisation statistics of the training scenes (after scale and transform)")
    t = time.perf_counter()
    stand_in = cardlib.input_specs()
    stats = band_statistics(train_scenes, stand_in)
    if vhr_init_record:   # feed the pretrained trunk exactly as the scene classifier was fed
        stats["vhr"] = (vhr_init_record["mean"], vhr_init_record["std"])
    specs = _spec_by_name(cardlib.input_specs(stats))
    for spec in specs.values():
        log(f"    {spec['name']:<10} mean {np.round(spec['mean'][:3], 3).tolist()}"
            f"{'...' if len(spec['mean']) > 3 else ''}  std "
            f"{np.round(spec['std'][:3], 3).tolist()}{'...' if len(spec['std']) > 3 else ''}")
    times["statistics"] = round(time.perf_counter() - t, 1)

    what = args.config + (f" config, ablation {args.ablation}" if args.ablation else " config")
    log(f"3/6 Training ({what}) on {device} ({args.threads} threads): {args.steps} steps of "
        f"{args.batch} x {args.crop}x{args.crop} cells ({args.epochs:g} epochs of "
        f"{args.steps_per_epoch} steps)")
    net, timing, history, counts = train(train_scenes, specs, net_config, loss_weights, args,
                                         device, len(class_names), vhr_init)
    log(f"    {timing['training_s']:.0f} s, {timing['s_per_step_median']:.3f} s per step "
        f"(median; mean {timing['s_per_step_mean']:.3f})")
    ckpt = os.path.join(args.workdir, "checkpoint.pt")
    torch.save({"config": net.config, "state_dict": net.state_dict(),
                "train_args": {k: v for k, v in vars(args).items()}}, ckpt)

    log("4/6 Export to ONNX (separate process) and parity check for every input subset")
    t = time.perf_counter()
    bare = os.path.join(args.workdir, "model_nocard.onnx")
    # one torch thread: the parity check runs many small graphs, where a second thread gains
    # little and, measured on the 2-core machine while another process kept a core busy, made
    # the export 4x slower (default network 94 s with 2 threads, 22 s with 1)
    export_info = export_in_subprocess("plugin.learning.fusion.export", ckpt, bare,
                                       "--threads", "1", cwd=REPO_ROOT)
    times["export"] = round(time.perf_counter() - t, 1)
    log(f"    parity max |onnxruntime - torch| = {export_info['parity_max_abs_diff']:.2e} over "
        f"{export_info['parity_cases']} cases, {times['export']:.0f} s")

    t = time.perf_counter()
    measured = receptive_radius(net)
    bound = receptive_bound(net.config)
    context = max(measured, bound)
    overlap = cardlib.default_overlap(context)
    tile = cardlib.DEFAULT_TILE
    log(f"5/6 Validation of the exported model (onnxruntime, tiles {tile} overlap {overlap}); "
        f"receptive radius measured {measured} cells, bound {bound} cells")
    sess = open_session(bare, args.threads)
    subsets = evaluate(sess, val_scenes, specs, class_names, tile, overlap)
    extra = {"ntl_misregistration": misregistration_test(
        sess, val_seeds, args.cells, args.threads, args.scene_dir, key, specs, class_names,
        tile, overlap)}
    if args.cells > 64:
        extra["tiled_vs_whole_scene"] = tiling_agreement(sess, val_scenes[0], specs, 64,
                                                         min(overlap, 32))
        log(f"    tiles 64 vs whole scene: {extra['tiled_vs_whole_scene']}")
    times["evaluation"] = round(time.perf_counter() - t, 1)

    log("6/6 Model card")
    from .net import count_parameters
    architecture = {
        "description": (
            "UrbanFusionNet (plugin/learning/fusion/net.py). VHR 2 m: " + (
                "the stem and first two stages of the real-data VHR scene classifier "
                "(SceneResNet, " + ("initialised from " + vhr_init_record["file"] +
                                    f", fine-tuned at {VHR_LR_MULT:g} x the learning rate"
                                    if vhr_init_record else "trained from scratch") +
                "); 8 m stage-1 features resized to 10 m are the decoder's low-level "
                "features, 16 m stage-2 features resized to 10 m go through residual blocks. "
                if net.config.get("vhr_encoder") == "scene_resnet" else
                "3x3 texture conv, stride-5 patchify conv to the 10 m grid, residual blocks. ") +
            "NTL 40 m: convs, bilinear x4. "
            "Cross-modal alignment (CSAGFNet-style): spatial attention on both, a predicted "
            "offset field warps NTL onto VHR (grid_sample, bounded by max_offset cells). "
            "Modality-specific and shared modality-invariant extractors. Sentinel-2: one stream "
            "for the four seasons plus a season embedding, per-season class heads and "
            "decision-level fusion (masked mean of the present seasons' probabilities). Temporal "
            "signature: per-cell 1-d SPP-Net over the 12 months at 40 m, bilinear x4. Gated "
            "fusion of the four groups (sigmoid gates x masks, normalised over the present "
            "inputs; exported as `gates`), DeepLabV3+-style ASPP (no image pooling) and decoder "
            "with the VHR low-level features, class head (softmax in the graph) and built-up "
            "fraction head (sigmoid). Absent inputs are zeros with mask 0."),
        "parameters": count_parameters(net),
        "config_name": args.config,
        "ablation": args.ablation,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in net.config.items()},
        "receptive_field_radius_cells": {"measured": measured, "bound": bound},
        "vhr_init": vhr_init_record and {k: v for k, v in vhr_init_record.items()
                                         if k not in ("mean", "std")},
        "onnx_outputs": list(OUTPUTS),
        "onnx_opset": export_info["opset"],
        "onnx_ir_version": export_info["ir_version"],
    }
    n_by = images_by_dataset(train_scenes)
    n_val = images_by_dataset(val_scenes)
    from .scenes import SCENES_VERSION
    data = {
        "sources": [dict(s, images=n_by.get(s["dataset"], 0)) for s in cardlib.SOURCES],
        "scene_images_used": {"train": n_by, "validation": n_val},
        "scene_images_split": ("plugin/learning/vhr_split.csv: training scenes draw only "
                               "'train' images, validation scenes only 'val' images"),
        "layouts": ("our synthetic city generator (plugin/samplecity.plan_city, painted at 2 m "
                    "by samplecity.scene.paint_scene); labels = mode class of each 10 m cell"),
        "real": "only the VHR pixels inside zones (one real scene image of the zone's class per "
                "zone, scaled to 100-150 m, mirror-tiled, feathered edges)",
        "simulated": ("streets / roads / railway VHR pixels (sample-city renderer); night-time "
                      "light (class x material radiance table, gain, Gaussian PSF of FWHM "
                      "40 / 130 / 500 m, 0-80 m mis-registration, noise); Sentinel-2 (material "
                      "spectra per season, shadows, blur, haze, noise; cloud-free); temporal "
                      "signature (invented class-typical monthly patterns x zone radiance, "
                      "noise); built-up fraction from the layout's materials"),
        "documentation": cardlib.DOC,
        "scenes_version": SCENES_VERSION,
        "scenes_fingerprint": key,
        "train_scenes": {"split": "train", "seeds": f"0..{args.scenes - 1}",
                         "count": args.scenes},
        "validation_scenes": {"split": "val", "seeds": f"{VAL_SEED0}..{val_seeds[-1]}",
                              "count": args.val_scenes},
        "scene_cells": args.cells,
        "scene_size_m": args.cells * 10,
    }
    cmd = "python -m plugin.learning.fusion.train " + " ".join(argv)
    training = {
        "onnx_file": os.path.basename(args.out),
        "seed": args.seed,
        "determinism": ("seeded (torch, numpy, the dropout / triplet generator); "
                        "torch.use_deterministic_algorithms(True, warn_only=True)"),
        "device": device,
        "hardware": hardware(device),
        "torch_threads": args.threads,
        "train_scenes": args.scenes,
        "validation_scenes": args.val_scenes,
        "scene_cells": args.cells,
        "training_cells": int(counts.sum()),
        "class_cell_counts": {n: int(c) for n, c in zip(class_names, counts)},
        "epochs": args.epochs,
        "steps": args.steps,
        "steps_per_epoch": args.steps_per_epoch,
        "batch": args.batch,
        "crop_cells": args.crop,
        "optimizer": (f"AdamW lr {args.lr:g} (linear warm-up over {max(1, args.steps // 20)} "
                      f"steps, cosine decay to 2 %), weight decay {args.weight_decay:g}"),
        "loss": ("weighted cross-entropy (1/sqrt class frequency) + Dice + Focal (gamma 2) "
                 f"+ {loss_weights['w_fc']:g} feature consistency (VHR / aligned NTL invariant "
                 f"features) + {loss_weights['w_tri']:g} cross-modal triplet (margin 0.1) + "
                 f"{loss_weights['w_builtup']:g} built-up MSE + {loss_weights['w_s2']:g} "
                 "Sentinel-2 decision NLL"),
        "loss_weights": loss_weights,
        "augmentation": (f"random {args.crop}-cell crops on 40 m pixels; rotations by 90 "
                         "degrees and flips applied to every modality alike; VHR colour jitter "
                         "(gain 0.85-1.15 x 0.95-1.05 per band, offset +-12 DN); modality "
                         f"dropout: VHR / NTL / Sentinel-2 / temporal each dropped with p "
                         f"{args.p_drop:g} per sample, never all; each Sentinel-2 season "
                         f"dropped with p {args.p_season:g}, never all four; absent inputs "
                         "zero with mask 0 (as the engine feeds them)"),
        "batch_norm": "statistics re-estimated after training over batches with dropout",
        "timing": timing,
        "time_s": dict(times, training=timing["training_s"], total=None),
        "final_losses": history[-1] if history else {},
        "history": history,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "command": cmd,
    }
    import onnxruntime
    metrics = {
        "description": (
            f"{args.val_scenes} validation scenes (split val: layouts and real scene images "
            "never seen in training; NTL, Sentinel-2 and temporal signature simulated as in "
            f"training, see {cardlib.DOC}) classified by the EXPORTED ONNX model in "
            f"onnxruntime with the engine's tiling (tile {tile}, overlap {overlap}, blended). "
            "Absent inputs are zeros with mask 0, as the engine feeds them. Labels: mode class "
            "of each 10 m cell. mIoU and macro F1 over the classes present. Built-up MAE: "
            "mean |estimated - layout built-up fraction| per cell. These are within-simulation "
            "scores, not accuracy on real multi-sensor data."),
        "subsets": subsets,
        **extra,
        "onnx_torch_parity_max_abs_diff": export_info["parity_max_abs_diff"],
        "onnx_torch_parity_cases": export_info["parity_cases"],
        "onnxruntime_version": onnxruntime.__version__,
    }
    training["time_s"]["total"] = round(time.perf_counter() - t_start, 1)
    card = cardlib.build_card(stats=stats, training=training, metrics=metrics,
                              architecture=architecture, data=data, context_cells=context,
                              ablation=args.ablation, size_multiple=net.size_multiple)
    from ..onnx_io import publish_and_log
    return publish_and_log(bare, card, args.out, cardlib.card_markdown, log, t_start)


if __name__ == "__main__":
    sys.exit(main())
