"""Train the bundled sample-city model end to end (``make train-sample``).

    python -m plugin.learning.train_sample [--out models/sample_city_fusion.onnx]

1. generate the sample cities (training seeds 100.., validation seeds 200, 201; cached in build/),
2. read them through the engine's co-registration with a stand-in card (mean 0, std 1) and
   compute the per-band normalisation statistics of the training cities,
3. read them again with the final card, exactly as the engine will feed them,
4. train :class:`~.model.SampleCityFusionNet` with modality dropout (CPU or CUDA, deterministic),
5. export to ONNX in a separate process and check onnxruntime against torch at other tile sizes,
6. score the ONNX model on the validation cities with the engine's tiling and blending for
   several input subsets, then store the card (with the metrics) in the ONNX metadata and write
   the Markdown card beside it.
"""
import argparse
import math
import os
import platform
import sys
import time

import numpy as np

from ..core.tiling import blend_weights, tile_starts
from . import card as cardlib
from .data import (BUILD_DIR, IGNORE, REPO_ROOT, band_statistics, city_arrays,
                   generator_fingerprint)
from .onnx_io import export_in_subprocess
from .metrics import confusion_matrix, scores

INPUT_NAMES = ("vhr", "ntl", "s2_spring", "s2_summer", "s2_autumn", "s2_winter")
SEASON_IDX = (2, 3, 4, 5)
VHR, NTL = 0, 1
# input subsets scored on the validation cities: key -> (label, inputs present)
SUBSETS = {
    "all": ("All inputs", INPUT_NAMES),
    "without_vhr": ("Without VHR (NTL + S2)", INPUT_NAMES[1:]),
    "vhr_only": ("VHR only", ("vhr",)),
    "s2_only": ("S2 only (4 seasons)", INPUT_NAMES[2:]),
    "s2_summer_only": ("S2 summer only", ("s2_summer",)),
    "ntl_only": ("NTL only", ("ntl",)),
    "vhr_ntl": ("VHR + NTL", ("vhr", "ntl")),
}
# tilings compared with one whole-image pass (the first is the card's default)
TILINGS = ((cardlib.DEFAULT_TILE, cardlib.DEFAULT_OVERLAP), (64, 16), (64, 32))
DEFAULTS = dict(train_seeds=list(range(100, 110)), val_seeds=[200, 201], size_m=2400.0,
                steps=1500, batch=8, patch=48, lr=3e-3, weight_decay=1e-4, seed=0)


def log(msg):
    print(msg, flush=True)


# --- batches ---------------------------------------------------------------------------------
def keep_vector(rng):
    """Which of the 6 modalities a training sample keeps (modality dropout, at least one).

    A fifth of the samples keep everything; the others keep a random non-empty subset of the
    groups VHR / NTL / Sentinel-2 (each of the 7 subsets equally likely) and, for Sentinel-2,
    all four seasons or a random non-empty subset of them.
    """
    keep = np.ones(6, bool)
    if rng.random() < 0.2:
        return keep
    groups = np.zeros(3, bool)
    while not groups.any():
        groups = rng.random(3) < 0.5
    keep[VHR], keep[NTL] = groups[0], groups[1]
    if groups[2]:
        seasons = np.ones(4, bool)
        if rng.random() < 0.5:
            seasons = rng.random(4) < 0.5
            if not seasons.any():
                seasons[rng.integers(4)] = True
        keep[2:] = seasons
    else:
        keep[2:] = False
    return keep


def _augment(a, k, flip):
    # a: [..., h, w]; same rotation/flip for every modality (all crops are square)
    a = np.rot90(a, k, axes=(-2, -1))
    return a[..., ::-1] if flip else a


def make_batch(rng, cities, batch, patch, mask_name):
    """A training batch as numpy arrays; crops start on 40 m pixels like the engine's tiles."""
    xs = {n: [] for n in INPUT_NAMES}
    masks, labels = [], []
    for _ in range(batch):
        arr = cities[rng.integers(len(cities))]
        h, w = arr["labels"].shape
        r = 4 * rng.integers(0, (h - patch) // 4 + 1)
        c = 4 * rng.integers(0, (w - patch) // 4 + 1)
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        crop = {
            "vhr": arr["vhr"][:, 5 * r:5 * (r + patch), 5 * c:5 * (c + patch)],
            "ntl": arr["ntl"][:, r // 4:(r + patch) // 4, c // 4:(c + patch) // 4],
        }
        for n in INPUT_NAMES[2:]:
            crop[n] = arr[n][:, r:r + patch, c:c + patch]
        mask = arr[mask_name][:, r:r + patch, c:c + patch].copy()
        lab = arr["labels"][r:r + patch, c:c + patch]
        # copies: the partial-coverage step below writes into the crops
        crop = {n: np.array(_augment(v, k, flip), np.float32) for n, v in crop.items()}
        mask = np.array(_augment(mask, k, flip), np.float32)
        lab = np.array(_augment(lab, k, flip), np.int64)
        # Modality dropout: only the mask changes. A modality with mask 0 everywhere adds
        # exactly nothing to the masked mean, so this equals feeding zeros (as the engine does)
        # while batch-norm statistics keep seeing real data.
        keep = keep_vector(rng)
        mask[~keep] = 0.0
        # Partial coverage: an input ending inside the tile is zero-filled with mask 0 there.
        if rng.random() < 0.2:
            present = np.flatnonzero(keep)
            m = int(present[rng.integers(len(present))])
            cut = 4 * int(rng.integers(1, patch // 4))
            side = int(rng.integers(4))
            name = INPUT_NAMES[m]
            f = {VHR: 5.0, NTL: 0.25}.get(m, 1.0)
            pc = int(cut * f)
            x = crop[name]
            sl = [(slice(None), slice(0, pc)), (slice(None), slice(pc, None)),
                  (slice(0, pc), slice(None)), (slice(pc, None), slice(None))][side]
            slc = [(slice(None), slice(0, cut)), (slice(None), slice(cut, None)),
                   (slice(0, cut), slice(None)), (slice(cut, None), slice(None))][side]
            x[(slice(None),) + sl] = 0.0
            mask[(m,) + slc] = 0.0
        lab[mask.max(axis=0) == 0] = IGNORE
        for n in INPUT_NAMES:
            xs[n].append(crop[n])
        masks.append(mask)
        labels.append(lab)
    return ([np.stack(xs[n]) for n in INPUT_NAMES] + [np.stack(masks)], np.stack(labels))


# --- training --------------------------------------------------------------------------------
def class_weights(cities, n_classes):
    counts = np.zeros(n_classes)
    for arr in cities:
        lab = arr["labels"]
        counts += np.bincount(lab[lab >= 0].ravel(), minlength=n_classes)[:n_classes]
    freq = counts / max(counts.sum(), 1)
    w = 1.0 / np.sqrt(np.maximum(freq, 1e-4))
    return (w / w.mean()).astype(np.float32), counts


def dice_loss(logits, target, n_classes):
    import torch
    valid = (target >= 0).unsqueeze(1).float()
    probs = torch.softmax(logits, 1) * valid
    onehot = torch.zeros_like(probs).scatter_(1, target.clamp(min=0).unsqueeze(1), 1.0) * valid
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    dice = 1 - (2 * inter + 1.0) / (denom + 1.0)
    return dice[present].mean() if bool(present.any()) else logits.sum() * 0


def train(cities, mask_name, n_classes, args, device):
    import torch
    import torch.nn.functional as F
    from .model import SampleCityFusionNet, count_parameters
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    net = SampleCityFusionNet(n_classes=n_classes).to(device)
    weights, counts = class_weights(cities, n_classes)
    log(f"Model: {count_parameters(net):,} parameters; class weights "
        f"{np.round(weights, 2).tolist()}")
    wt = torch.from_numpy(weights).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(1, args.steps // 30)

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    net.train()
    t0 = time.perf_counter()
    running = []
    for step in range(args.steps):
        xs, lab = make_batch(rng, cities, args.batch, args.patch, mask_name)
        xs = [torch.from_numpy(a).to(device) for a in xs]
        target = torch.from_numpy(lab).to(device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = net(*xs)
        loss = F.cross_entropy(logits, target, weight=wt, ignore_index=IGNORE) \
            + 0.5 * dice_loss(logits, target, n_classes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            el = time.perf_counter() - t0
            log(f"  step {step + 1}/{args.steps}  loss {np.mean(running[-100:]):.4f}  "
                f"lr {lr_at(step):.2e}  {el:.0f} s")
    # Re-estimate batch-norm statistics over many batches with the final weights (cumulative
    # average instead of the last few batches' exponential average).
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for _ in range(max(10, args.steps // 20)):
            xs, _ = make_batch(rng, cities, args.batch, args.patch, mask_name)
            net(*[torch.from_numpy(a).to(device) for a in xs])
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    net.eval()
    return net.cpu(), time.perf_counter() - t0, float(np.mean(running[-100:])), counts


# --- evaluation with onnxruntime -------------------------------------------------------------
def subset_feed(arr, present, mask_name, window=None):
    """Feed (batch dim 1) for the ``present`` inputs; absent ones zero with mask 0 (as the
    engine does). ``window`` = (col, row, ncols, nrows) in output cells."""
    feed = {}
    mask = arr[mask_name].copy()
    for k, name in enumerate(INPUT_NAMES):
        x = arr[name]
        if window is not None:
            c, r, nc, nr = window
            f = x.shape[1] / arr["labels"].shape[0]
            x = x[:, int(r * f):int((r + nr) * f), int(c * f):int((c + nc) * f)]
        feed[name] = (x if name in present else np.zeros_like(x))[None].astype(np.float32)
        if name not in present:
            mask[k] = 0.0
    if window is not None:
        c, r, nc, nr = window
        mask = mask[:, r:r + nr, c:c + nc]
    feed[mask_name] = np.ascontiguousarray(mask[None])
    return feed


def predict_tiled(sess, arr, present, mask_name, output_name, tile, overlap, batch=4):
    """Probabilities [C, H, W] with the engine's tiles, overlap and blending weights."""
    h, w = arr["labels"].shape
    th, tw = min(tile, h), min(tile, w)
    rows = tile_starts(h, th, th - overlap if th < h else th)
    cols = tile_starts(w, tw, tw - overlap if tw < w else tw)
    weights = blend_weights(th, tw, overlap)
    acc, wsum = None, np.zeros((h, w), np.float32)
    windows = [(c, r) for r in rows for c in cols]
    for i in range(0, len(windows), batch):
        chunk = windows[i:i + batch]
        feeds = [subset_feed(arr, present, mask_name, (c, r, tw, th)) for c, r in chunk]
        feed = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
        probs = sess.run([output_name], feed)[0]
        if acc is None:
            acc = np.zeros((probs.shape[1], h, w), np.float32)
        for (c, r), p in zip(chunk, probs):
            acc[:, r:r + th, c:c + tw] += p * weights
            wsum[r:r + th, c:c + tw] += weights
    return acc / wsum


def evaluate(onnx_path, val_cities, mask_name, output_name, class_names, tile, overlap):
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    subsets = {}
    for key, (label, present) in SUBSETS.items():
        cm = 0
        for arr in val_cities:
            probs = predict_tiled(sess, arr, present, mask_name, output_name, tile, overlap)
            cm = cm + confusion_matrix(arr["labels"], probs.argmax(0), len(class_names))
        s = scores(cm, class_names)
        s["label"] = label
        s["inputs"] = list(present)
        subsets[key] = s
        log(f"  {label:<24} OA {s['overall_accuracy']:.3f}  kappa {s['kappa']:.3f}  "
            f"macro F1 {s['macro_f1']:.3f}  mIoU {s['miou']:.3f}")
    return sess, subsets


def tiling_agreement(sess, net, arr, mask_name, output_name, tile, overlap):
    """Share of cells where tiled ONNX inference (engine blending) and one whole-image torch
    pass give the same class, plus the largest probability difference."""
    import torch
    whole_feed = subset_feed(arr, INPUT_NAMES, mask_name)
    with torch.no_grad():
        logits = net(*[torch.from_numpy(whole_feed[n]) for n in INPUT_NAMES + (mask_name,)])
        whole = torch.softmax(logits, 1)[0].numpy()
    tiled = predict_tiled(sess, arr, INPUT_NAMES, mask_name, output_name, tile, overlap)
    same = float((whole.argmax(0) == tiled.argmax(0)).mean())
    return round(same, 5), round(float(np.abs(whole - tiled).max()), 5)


def tile_timing(sess, mask_name, cells=64, repeats=20):
    from .model import example_inputs
    x = example_inputs(1, cells, seed=5)
    feed = {n: t.numpy() for n, t in zip(INPUT_NAMES + (mask_name,), x)}
    feed[mask_name][:] = 1.0
    for _ in range(3):
        sess.run(None, feed)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append(time.perf_counter() - t)
    return round(float(np.median(ts)), 4)


def _generator_version():
    from ..samplecity import GENERATOR_VERSION
    return GENERATOR_VERSION


def hardware():
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return name


# --- main ------------------------------------------------------------------------------------
def parse_args(argv):
    ap = argparse.ArgumentParser(description="Train the bundled sample-city fusion model.")
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "models", "sample_city_fusion.onnx"),
                    help="ONNX file to write; the Markdown card goes beside it (.md)")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=DEFAULTS["train_seeds"])
    ap.add_argument("--val-seeds", type=int, nargs="+", default=DEFAULTS["val_seeds"])
    ap.add_argument("--size-m", type=float, default=DEFAULTS["size_m"],
                    help="side of each sample city in metres")
    ap.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    ap.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    ap.add_argument("--patch", type=int, default=DEFAULTS["patch"],
                    help="training crop in output cells (multiple of 4)")
    ap.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    ap.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    ap.add_argument("--workdir", default=os.path.join(BUILD_DIR, "train_sample"))
    args = ap.parse_args(argv)
    if args.patch % 4:
        ap.error("--patch must be a multiple of 4")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch
    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if device == "cuda":
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    os.makedirs(args.workdir, exist_ok=True)
    mask_name = cardlib.MASK_INPUT
    class_names = [c["name"] for c in cardlib.build_card()["classes"]]

    log(f"1/6 Sample cities (train {args.train_seeds}, validation {args.val_seeds}, "
        f"{args.size_m:g} m) through the engine's co-registration, stand-in card")
    t = time.perf_counter()
    stand_in = cardlib.build_card()
    raw_train = [city_arrays(stand_in, s, args.size_m, log=log) for s in args.train_seeds]
    stats = band_statistics(raw_train, stand_in, mask_name)
    del raw_train
    log("2/6 Reading again with the final normalisation")
    final_inputs_card = cardlib.build_card(stats=stats)
    train_cities = [city_arrays(final_inputs_card, s, args.size_m, log=log)
                    for s in args.train_seeds]
    val_cities = [city_arrays(final_inputs_card, s, args.size_m, log=log) for s in args.val_seeds]
    data_s = time.perf_counter() - t
    log(f"    data ready in {data_s:.0f} s")

    log(f"3/6 Training on {device} ({threads} threads), {args.steps} steps of "
        f"{args.batch} x {args.patch}x{args.patch} cells")
    net, train_s, final_loss, counts = train(train_cities, mask_name, len(class_names), args,
                                             device)
    ckpt = os.path.join(args.workdir, "checkpoint.pt")
    torch.save({"config": net.config, "state_dict": net.state_dict(),
                "io": {"inputs": list(INPUT_NAMES), "mask": mask_name,
                       "output": cardlib.OUTPUT_NAME}}, ckpt)

    log("4/6 Export to ONNX (separate process) and parity check")
    bare = os.path.join(args.workdir, "model_nocard.onnx")
    export_info = export_in_subprocess("plugin.learning.export", ckpt, bare, cwd=REPO_ROOT)
    log(f"    parity max |onnxruntime - torch| = {export_info['parity_max_abs_diff']:.2e}")

    from .model import count_parameters, receptive_radius
    rf = receptive_radius(net)
    log(f"5/6 Validation (onnxruntime, tiles {cardlib.DEFAULT_TILE} overlap "
        f"{cardlib.DEFAULT_OVERLAP}, engine blending); receptive field radius {rf} cells")
    sess, subsets = evaluate(bare, val_cities, mask_name, cardlib.OUTPUT_NAME, class_names,
                             cardlib.DEFAULT_TILE, cardlib.DEFAULT_OVERLAP)
    tiling = {}
    for tile, overlap in TILINGS:
        agree, maxdiff = tiling_agreement(sess, net, val_cities[0], mask_name,
                                          cardlib.OUTPUT_NAME, tile, overlap)
        tiling[f"tile {tile} overlap {overlap}"] = {"same_class": agree,
                                                    "max_prob_diff": maxdiff}
        log(f"    tiles {tile} overlap {overlap} vs whole image: same class in "
            f"{100 * agree:.2f} % of cells (max prob. diff {maxdiff:.3f})")
    tile_s = tile_timing(sess, mask_name)
    log(f"    {tile_s * 1000:.0f} ms per 64x64-cell tile (onnxruntime CPU, batch 1)")

    log("6/6 Model card")
    params = count_parameters(net)
    architecture = {
        "description": (
            "Per-modality streams fused per 10 m cell by a masked mean of their features "
            "(any subset of inputs works), then dilated residual context blocks and a 1x1 "
            "head with softmax. VHR: 3x3 texture convolution at 2 m, stride-5 patchify "
            "convolution to 10 m, 2 residual blocks. NTL: convolutions at 40 m, bilinear "
            "upsampling x4. Sentinel-2: one stream shared by the four seasons plus a learned "
            "season embedding. The mask is appended to the fused features. Plain torch "
            "(plugin/learning/model.py); batch norm is a fixed per-channel affine map at "
            "inference, so tiles give the same result as the whole image up to the overlap."),
        "parameters": params,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in net.config.items()},
        "width": net.config["width"],
        "context_dilations": list(net.config["context_dilations"]),
        "receptive_field_radius_cells": rf,
        "onnx_opset": export_info["opset"],
        "onnx_ir_version": export_info["ir_version"],
    }
    training = {
        "generator": "plugin.samplecity.generate_sample_city",
        "generator_version": _generator_version(),
        "generator_code_sha256": generator_fingerprint(),
        "generator_seeds": {"train": args.train_seeds, "validation": args.val_seeds,
                            "demo": [0], "tests": list(range(1, 10))},
        "city_size_m": args.size_m,
        "split": "whole cities: training and validation cities are generated with different seeds",
        "training_cells": int(counts.sum()),
        "class_cell_counts": {n: int(c) for n, c in zip(class_names, counts)},
        "steps": args.steps, "batch": args.batch, "patch_cells": args.patch,
        "epochs": round(args.steps * args.batch * args.patch ** 2 / max(1, counts.sum()), 1),
        "optimizer": f"AdamW lr {args.lr:g} (warm-up, cosine), weight decay {args.weight_decay:g}",
        "loss": "class-weighted cross-entropy (1/sqrt frequency) + 0.5 soft Dice",
        "augmentation": ("modality dropout (single modalities, S2 season subsets, random "
                         "drops; at least one kept), partial coverage (half-planes with no "
                         "data), rotations by 90 degrees, flips"),
        "seed": args.seed,
        "deterministic": True,
        "device": device,
        "hardware": f"{hardware()}, {os.cpu_count()} cores" if device == "cpu"
                    else torch.cuda.get_device_name(0),
        "torch_threads": threads,
        "time_s": {"data": round(data_s, 1), "training": round(train_s, 1),
                   "total": None},
        "final_training_loss": round(final_loss, 4),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "command": "make train-sample  (python -m plugin.learning.train_sample "
                   "--out models/sample_city_fusion.onnx)",
    }
    import onnxruntime
    metrics = {
        "description": (
            f"Validation cities (seeds {', '.join(map(str, args.val_seeds))}, synthetic, not "
            "seen in training) classified by the exported ONNX model with the engine's tiling "
            f"(tile {cardlib.DEFAULT_TILE}, overlap {cardlib.DEFAULT_OVERLAP}, blended); labels "
            "are the ground truth on the 10 m grid (mode). Absent inputs are fed as zeros "
            "with mask 0, as the engine does."),
        "subsets": subsets,
        "tiled_vs_whole_image": tiling,
        "onnx_torch_parity_max_abs_diff": export_info["parity_max_abs_diff"],
        "seconds_per_64x64_tile_cpu": tile_s,
        "onnxruntime_version": onnxruntime.__version__,
    }
    training["time_s"]["total"] = round(time.perf_counter() - t_start, 1)
    card = cardlib.build_card(stats=stats, context_cells=rf, training=training, metrics=metrics,
                              architecture=architecture)
    from .onnx_io import publish_and_log
    return publish_and_log(bare, card, args.out, cardlib.card_markdown, log, t_start)


if __name__ == "__main__":
    sys.exit(main())
