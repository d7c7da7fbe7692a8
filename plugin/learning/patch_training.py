"""Fine-tune a patch classifier (the VHR scene model, or the So2Sat network as a classifier of
functions, :mod:`.so2sat_patch`) on the user's labels.

A patch classifier classifies each output cell from the window of pixels around it. To adapt it
to a city's own imagery, every labelled cell's window is cut from the pixels that the engine's
:class:`~plugin.core.patches.PatchReader` reads for classify (same grid, resampling,
normalisation and edge padding): :class:`PatchStore` reads them once and a cell's patch is a
view into that array, exactly the patch classify feeds (a test holds it to that).

Training: the scene ResNet starts from the base model's weights; class-balanced batches of
labelled cells, random flips and 90 degree rotations (the views the exported graph averages);
AdamW, the classifier layer at a higher learning rate than the trunk; cross-entropy with label
smoothing plus a distillation term towards the frozen base model's own predictions on the same
batch (learning without forgetting), so that classes the user labelled little are not lost (not
for the So2Sat network, whose start is a rule-of-thumb table: :data:`SO2SAT_DISTILL_WEIGHT`);
batch norm adapts to the user's imagery. The first epoch runs at the base learning
rate and is timed; the number of epochs is then fixed from the time limit and the cosine
schedule runs over the others, so a rerun with the recorded ``EPOCHS`` and ``SEED``
reproduces the run (the same schedule either way). The last epoch is
exported (no choosing of epochs on the held-out cells). A RandomForest on per-cell pixel
statistics and the untrained base model are scored on the same held-out cells, all through the
engine's classify for the trained model (:func:`.user_training.finish`).
"""
import os
import tempfile
import time

import numpy as np

from ..core.errors import Cancelled, InputError
from ..core.patches import PatchReader
from .labels import UNLABELLED
from .time_budget import TimeBudget

BATCH = 32
STEPS_PER_EPOCH = 40
MAX_EPOCHS = 40
LR = 3e-4
HEAD_LR_MULT = 10.0             # the classifier layer moves faster than the trunk
LABEL_SMOOTHING = 0.1
# learning without forgetting (Li & Hoiem 2016): the base model's own predictions on each batch
# stay a target beside the labels, so a class the user labelled little or not at all is not
# forgotten (without it, UC Merced water went from F1 0.48 to 0.0 after adaptation)
DISTILL_WEIGHT = 1.0
DISTILL_T = 2.0
# ... but not for the So2Sat network: its start is the rule-of-thumb LCZ -> functions table,
# not a classifier of functions, and keeping it as a target keeps its mistakes. Measured on the
# Havelland clip (make evidence-osm, row f): with the term, held-out OA 0.732 and green space
# F1 0.23 (winter forest stays "low plants"); without it, 0.784 and 0.60
SO2SAT_DISTILL_WEIGHT = 0.0
EVAL_CELLS = 2000               # held-out cells scored after each epoch (seeded sample)
MAX_STORE_BYTES = 3 * 2 ** 30   # the labels' area, read once; beyond this: a smaller extent
STRIP_CELLS = 32


class PatchStore:
    """Normalised pixels over ``grid`` as classify reads them, per input (the So2Sat model takes
    each Sentinel-2 season through the same network); ``patches(rows, cols, modality)`` gives
    the windows of those cells, ``valid[modality]`` which cells have data in that input and
    ``cells`` which have data in any (the cells classify classifies)."""

    def __init__(self, card, inputs, grid, aoi=None, progress=None, is_cancelled=None):
        p = card.patch
        s = p.stride_px
        self.patch_px, self.stride = p.patch_px, s
        self.block_offset = -p.window_lo          # the cell's own pixels inside its patch
        h_px, w_px = (grid.height - 1) * s + p.patch_px, (grid.width - 1) * s + p.patch_px
        # window geometry (no trunk-stride margins): the windows classify's windows mode feeds
        with PatchReader(card, inputs, grid, aoi, mode="windows") as reader:
            self.modalities = list(reader.sources)
            bands = {m: len(src.bands) for m, src in reader.sources.items()}
            need = sum(bands.values()) * h_px * w_px * 4
            if need > MAX_STORE_BYTES:
                raise InputError(
                    f"The labels' area needs {need / 2 ** 30:.1f} GiB of {p.gsd_m:g} m pixels "
                    f"to train {card.name}; set an extent or AOI around part of the "
                    "labels, or split them.")
            self.x = {m: np.zeros((b, h_px, w_px), np.float32) for m, b in bands.items()}
            self.valid = {m: np.zeros((grid.height, grid.width), bool) for m in bands}
            self.cells = np.zeros((grid.height, grid.width), bool)
            for r0 in range(0, grid.height, STRIP_CELLS):
                if is_cancelled and is_cancelled():
                    raise Cancelled("Cancelled by the user; no model was written.")
                n = min(STRIP_CELLS, grid.height - r0)
                windows, valid = reader.read(0, r0, grid.width, n)
                for m, (x, cells) in windows.items():
                    self.x[m][:, r0 * s:r0 * s + x.shape[1]] = x
                    self.valid[m][r0:r0 + n] = cells
                self.cells[r0:r0 + n] = valid
                if progress:
                    progress((r0 + n) / grid.height, "Reading the imagery")

    def patches(self, rows, cols, modality=None):
        """[N, B, P, P] float32: the windows classify feeds for cells (rows, cols) from
        ``modality`` (default: the first input)."""
        x = self.x[modality or self.modalities[0]]
        s, P = self.stride, self.patch_px
        out = np.empty((len(rows), x.shape[0], P, P), np.float32)
        for i, (r, c) in enumerate(zip(rows, cols)):
            out[i] = x[:, r * s:r * s + P, c * s:c * s + P]
        return out

    def cell_features(self):
        """[H, W, F] per-cell features for the RandomForest, per input in turn: per band the
        mean and standard deviation of the cell's own pixels, and the mean over the 3 x 3 cells
        around it."""
        return np.concatenate([self._features(self.x[m]) for m in self.modalities], axis=-1)

    def _features(self, x):
        from .baseline import _box
        s, o = self.stride, self.block_offset
        h, w = self.cells.shape
        b = x.shape[0]
        mean = np.empty((b, h, w), np.float32)
        std = np.empty((b, h, w), np.float32)
        for r0 in range(0, h, STRIP_CELLS):   # strips: no copy of the whole store
            n = min(STRIP_CELLS, h - r0)
            own = x[:, o + r0 * s:o + (r0 + n) * s, o:o + w * s].reshape(b, n, s, w, s)
            mean[:, r0:r0 + n] = own.mean(axis=(2, 4))
            std[:, r0:r0 + n] = own.std(axis=(2, 4))
        feats = np.concatenate([mean, std, _box(mean), _box(std)], axis=0)
        return feats.transpose(1, 2, 0)


def _augment(x, gen):
    """Random 90 degree rotation and flip per batch (the exported graph's views)."""
    k = int(gen.integers(4))
    x = np.rot90(x, k, axes=(-2, -1))
    if gen.integers(2):
        x = x[..., ::-1]
    return np.ascontiguousarray(x)


def predict_cells(net, store, rows, cols, device, batch=256):
    """Class indices of cells (rows, cols): the probabilities averaged over the inputs with data
    in each cell, as classify does."""
    import torch
    net.eval()
    total = np.zeros((len(rows), net.config["n_classes"]), np.float32)
    count = np.zeros(len(rows), np.float32)
    with torch.no_grad():
        for m in store.modalities:
            has = store.valid[m][rows, cols]
            for k in range(0, len(rows), batch):
                sel = np.flatnonzero(has[k:k + batch]) + k
                if sel.size == 0:
                    continue
                x = torch.from_numpy(store.patches(rows[sel], cols[sel], m))
                total[sel] += torch.softmax(net(x.to(device)), dim=1).cpu().numpy()
                count[sel] += 1
    return (total / np.maximum(count, 1)[:, None]).argmax(1).astype(np.int16)


def train_patch_net(net, store, train_labels, val_labels, epochs_cap, budget, device, seed,
                    progress, is_cancelled, log, distill=DISTILL_WEIGHT):
    import copy

    import torch
    import torch.nn.functional as F
    from .user_training import end_of_epoch, epoch_words, score, set_learning_rate
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    usable = (train_labels != UNLABELLED) & store.cells
    if not usable.any():
        raise InputError("No training label lies on imagery: the labelled cells outside the "
                         "held-out blocks have no pixels (nodata, or outside the AOI).")
    rows, cols = np.nonzero(usable)
    y = train_labels[rows, cols].astype(np.int64)
    # per input: each class's cells with data in it (a batch comes from one input, drawn
    # uniformly: every season is a view of the same ground through the same network)
    by_class = {}
    for m in store.modalities:
        has = store.valid[m][rows, cols]
        by_class[m] = {int(k): np.flatnonzero((y == k) & has) for k in np.unique(y[has])}
    sources = [m for m in store.modalities if by_class[m]]
    vr, vc = np.nonzero((val_labels != UNLABELLED) & store.cells)
    if vr.size == 0:
        raise InputError("No held-out label lies on imagery: the labelled cells in the "
                         "held-out blocks have no pixels (nodata, or outside the AOI).")
    if vr.size > EVAL_CELLS:
        pick = np.sort(np.random.default_rng(seed + 1).choice(vr.size, EVAL_CELLS, replace=False))
        vr, vc = vr[pick], vc[pick]
    head = [p for n, p in net.named_parameters() if n.startswith("classifier.")]
    trunk = [p for n, p in net.named_parameters() if not n.startswith("classifier.")]
    opt = torch.optim.AdamW([{"params": trunk, "lr": LR},
                             {"params": head, "lr": LR * HEAD_LR_MULT}], weight_decay=1e-4)
    base_lrs = [g["lr"] for g in opt.param_groups]
    teacher = None
    if distill > 0:
        teacher = copy.deepcopy(net).eval()        # the base model, frozen
        for p in teacher.parameters():
            p.requires_grad_(False)
    history = []
    t0 = time.perf_counter()
    epochs = epochs_cap or MAX_EPOCHS
    epoch = 0
    while epoch < epochs:
        net.train()
        losses = []
        for step in range(STEPS_PER_EPOCH):
            if is_cancelled():
                raise Cancelled("Cancelled by the user; no model was written.")
            set_learning_rate(opt, base_lrs, epoch, step, epochs, STEPS_PER_EPOCH)
            # class-balanced: a class drawn uniformly, then one of its cells
            m = sources[int(gen.integers(len(sources)))] if len(sources) > 1 else sources[0]
            classes = np.array(sorted(by_class[m]))
            ks = classes[gen.integers(len(classes), size=BATCH)]
            idx = np.array([by_class[m][int(k)][gen.integers(by_class[m][int(k)].size)]
                            for k in ks])
            x = torch.from_numpy(_augment(store.patches(rows[idx], cols[idx], m),
                                          gen)).to(device)
            target = torch.from_numpy(y[idx])
            logits = net(x)
            loss = F.cross_entropy(logits, target.to(device), label_smoothing=LABEL_SMOOTHING)
            if teacher is not None:
                with torch.no_grad():
                    soft = F.softmax(teacher(x) / DISTILL_T, dim=1)
                loss = loss + distill * DISTILL_T ** 2 * F.kl_div(
                    F.log_softmax(logits / DISTILL_T, dim=1), soft, reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            progress((epoch + (step + 1) / STEPS_PER_EPOCH) / epochs,
                     epoch_words(epoch, epochs, epochs_cap))
        epoch += 1
        pred = np.full(val_labels.shape, UNLABELLED, np.int16)
        pred[vr, vc] = predict_cells(net, store, vr, vc, device)
        truth = np.full(val_labels.shape, UNLABELLED, np.int16)
        truth[vr, vc] = val_labels[vr, vc]
        epochs = end_of_epoch(history, epoch, epochs, epochs_cap, budget, losses,
                              score(truth, pred), t0, MAX_EPOCHS, log, progress)
    return history


def check_patch_inputs(base, inputs):
    """The scene model is fine-tuned on one VHR raster, the So2Sat network on Sentinel-2
    seasons (checked before any reading)."""
    from .so2sat_patch_card import is_so2sat_model
    if is_so2sat_model(base):
        other = sorted(m for m in inputs if not m.startswith("s2_"))
        if other:
            raise InputError(f"{base.name} takes Sentinel-2 seasons only (given also: "
                             f"{', '.join(other)}); train the fusion network (BASE_MODEL "
                             "so2sat or urban-fusion) to combine them.")
    elif len(inputs) != 1:
        raise InputError(f"{base.name} is fine-tuned on one input raster at a time (given: "
                         f"{', '.join(sorted(inputs))}); give one.")


def train_patch_model(request, base, base_path, config, prep, inputs, t_start, say,
                      outer_progress, stage, is_cancelled, messages):
    """The patch-classifier branch of :func:`.user_training.run_training` (same outputs)."""
    import shutil

    import torch
    from . import user_training as ut
    from .so2sat_patch_card import is_so2sat_model
    card, grid, split = prep.card, prep.grid, prep.split
    so2sat = is_so2sat_model(base)
    store = PatchStore(card, inputs, grid, request.aoi, stage(0.02, 0.08), is_cancelled)
    ut.check_label_data(store.cells, split, say)
    val_cells = (split.validation != UNLABELLED)
    untaught = [ut.KEYS[i] for i in split.untrained_classes(len(ut.KEYS))]
    if untaught:
        # unlike the fusion network's, this classifier's classes come from a real-data model
        say(f"{', '.join(untaught)}: no training cells. The patch classifier can still predict "
            f"them from what {base.name} learnt; the held-out figures do not check them.")
    comparisons = {}
    if request.baseline:
        outer_progress(0.08, "RandomForest baseline")
        try:
            from .baseline import fit_predict
            # the cells the network learns from: labelled and with imagery
            rf_train = np.where(store.cells, split.train, UNLABELLED).astype(split.train.dtype)
            pred, info = fit_predict(store.cell_features(), rf_train, val_cells, request.seed)
            full = np.full(val_cells.shape, UNLABELLED, np.int16)
            full[val_cells] = pred
            comparisons["random_forest"] = dict(ut.score(split.validation, full), **info)
            say(f"RandomForest baseline on the held-out blocks: OA "
                f"{comparisons['random_forest']['overall_accuracy']:.3f}, macro F1 "
                f"{comparisons['random_forest']['macro_f1']:.3f}.")
        except ImportError:
            say("Warning: scikit-learn is not installed: the RandomForest baseline is skipped.")
    if is_cancelled():
        raise Cancelled("Cancelled by the user; no model was written.")
    outer_progress(0.1, f"Scoring the untrained {base.name}")
    # the imported So2Sat LCZ model is scored on its LCZ -> functions map
    lcz = so2sat and base.classes[0].name != ut.KEYS[0]
    with tempfile.TemporaryDirectory(prefix="urban_functions_base_") as tmp:
        comparisons["untrained_base"] = dict(
            ut._engine_scores(base_path, inputs, grid, split.validation, tmp, request.aoi),
            model=base.name + (" (LCZ -> functions)" if lcz else ""))
    say(f"Untrained {base.name} on the held-out blocks (through classify): OA "
        f"{comparisons['untrained_base']['overall_accuracy']:.3f}.")

    device = ut._device(request.device, torch)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if so2sat:
        from .so2sat_patch import net_from_base
        net = net_from_base(base_path, config).to(device)
    else:
        from .vhr_export import torch_net_from_onnx
        net = torch_net_from_onnx(base_path, config).to(device)
    budget = TimeBudget.left(request.max_minutes, t_start, after=120.0)
    t_train = time.perf_counter()
    history = train_patch_net(net, store, split.train, split.validation, request.epochs, budget,
                              device, request.seed, stage(0.12, 0.85), is_cancelled, say,
                              distill=SO2SAT_DISTILL_WEIGHT if so2sat else DISTILL_WEIGHT)
    train_seconds = time.perf_counter() - t_train
    net = net.cpu().eval()
    del store

    tmp = tempfile.mkdtemp(prefix="urban_functions_train_")
    try:
        outer_progress(0.86, "Exporting to ONNX")
        views = (["identity"] if so2sat else
                 (base.raw.get("architecture") or {}).get("test_time_views") or ["identity"])
        ckpt = os.path.join(tmp, "model.pt")
        torch.save({"config": net.config, "state_dict": net.state_dict(),
                    "io": {"input": card.patch.input, "output": card.output.name,
                           "patch_px": card.patch.patch_px, "views": list(views)}}, ckpt)
        bare = os.path.join(tmp, "bare.onnx")
        summary = ut.export_checkpoint(ckpt, bare, module=(
            "plugin.learning.so2sat_patch_export" if so2sat else "plugin.learning.vhr_export"))
        if is_cancelled():
            raise Cancelled("Cancelled by the user; no model was written.")
        name = request.name or ut.slug(os.path.splitext(os.path.basename(
            request.output_path))[0])
        card_dict = ut._user_card(prep.raw, base, base_path, "fine-tune", name, request,
                                  request.labels, prep.class_map, prep.ras, split, grid, inputs,
                                  history, train_seconds, device, config, prep.receptive)
        _patch_card_fields(card_dict, prep.raw, base, config, views, prep.receptive, request,
                           history, train_seconds, device)
        if so2sat:
            _so2sat_card_fields(card_dict, base)
        return ut.finish(tmp, bare, card_dict, summary, request, inputs, prep, comparisons,
                         history, t_start, say, outer_progress, is_cancelled, messages)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _patch_card_fields(card, raw, base, config, views, receptive, request, history, seconds,
                       device):
    """What differs from a fine-tuned fusion network's card."""
    arch = dict(raw.get("architecture") or {})
    arch.update({"config": dict(config), "receptive_field_radius_cells": receptive,
                 "description": (f"{base.name}'s scene ResNet, fine-tuned on your labels; "
                                 "see the base model's card."),
                 "test_time_views": list(views)})
    card["architecture"] = arch
    card["output"] = dict(raw["output"])          # patches: no tile context needed
    shared = (card.get("patch") or {}).get("shared_trunk")
    if shared:
        # classify keeps the base model's default (the trunk once per tile): with the base
        # model's own predictions kept as a target, the adapted model is better so than window
        # by window on the independent UC Merced test mosaic (README, the VHR scene model
        # adapted); the held-out blocks, though, are scored window by window (the buffer)
        mode = shared.get("default_mode")
        runs = ("window by window" if mode == "windows" else
                f"the trunk once per tile ({mode})")
        card["patch"] = dict(card["patch"], shared_trunk=dict(
            shared, note=(f"classify runs {runs}, as the base model does; your held-out "
                          "blocks were scored window by window (inference mode windows), where "
                          "the buffer keeps each held-out cell's window clear of training "
                          "cells.")))
    card["training"].update({
        "steps_per_epoch": STEPS_PER_EPOCH, "batch": BATCH, "crop_cells": None,
        "optimizer": (f"AdamW, lr {LR:g} (classifier layer x{HEAD_LR_MULT:g}); epoch 1 at that "
                      "rate, cosine to 0 over the others"),
        "loss": (f"cross-entropy, label smoothing {LABEL_SMOOTHING:g}, plus "
                 f"{DISTILL_WEIGHT:g} x T^2 x KL to the base model's predictions at T = "
                 f"{DISTILL_T:g} (learning without forgetting)"),
        "sampling": ("class-balanced labelled cells (a class drawn uniformly, then a cell); "
                     "the patch classify feeds; flips and 90 degree rotations"),
        "batch_norm": "trained (statistics of your imagery)",
        "held_out_scoring": ("the held-out blocks are classified window by window (inference "
                             "mode windows: each cell sees only its window, which the buffer keeps "
                             "clear of training cells); classify's default mode runs the "
                             "trunk once per tile and sees beyond the window"),
        "validation_during_training": (f"after each epoch, a seeded sample of up to "
                                       f"{EVAL_CELLS} held-out cells (torch, one view); the last "
                                       "epoch is kept")})


def _so2sat_card_fields(card, base):
    """What a So2Sat patch classifier's card says beyond :func:`_patch_card_fields`."""
    from .so2sat_patch import EPS
    card["architecture"]["description"] = (
        f"{base.name}'s network fine-tuned on your labels as a classifier of functions: the "
        "So2Sat LCZ42 ResNet20 convolutions and LCZ layer, the LCZ probabilities summed per "
        f"function (log(sum + {EPS:g})) plus a residual layer 256 -> 8 that starts at zero; "
        "plugin/learning/so2sat_patch.py. One window per 40 m cell (no test-time views).")
    card["licence"] = ("As your labels and imagery; the network's initial weights MIT "
                       "(So2Sat LCZ42, So2Sat project team; the notice is the licence file "
                       "beside the imported model), our code GPL-2.0-or-later")
    card.pop("licence_file", None)        # not beside the trained model
    cited = base.raw.get("citation") or []
    card["citation"] = [card["citation"]] + list(cited if isinstance(cited, list) else [cited])
    card["training"]["loss"] = (
        f"cross-entropy, label smoothing {LABEL_SMOOTHING:g} (no distillation towards the "
        "untrained network: its LCZ -> functions table is a rule of thumb, and keeping it as a "
        "target kept its mistakes; README, row f)")
    card["training"]["held_out_scoring"] = (
        "the held-out blocks are classified window by window, each 40 m cell from the 32 x "
        "32 px window centred on it, which the buffer keeps clear of training cells")
