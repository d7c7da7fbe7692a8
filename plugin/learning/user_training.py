"""Train a model on the user's own labels: the job behind ``urbanfunctions:train``.

1. The inputs are read once through the engine's feeds on the grid classify would use
   (:mod:`.grid_feeds`), over the labels' area.
2. The labels (polygons or points, any CRS, OpenStreetMap land use or the user's own classes)
   are mapped to the eight functions (:mod:`.class_map`) and rasterised onto that grid
   (:mod:`.labels`).
3. Whole blocks of ground are held out, with a buffer of the network's receptive field
   (:mod:`.blocks`).
4. The fusion network is fine-tuned from the bundled weights (or trained from scratch) on the
   training blocks: weighted CE + Dice + Focal, with the cross-modal consistency and triplet
   losses and modality dropout when two or more inputs are given; class-balanced crops,
   flips and 90 degree rotations.
5. It is exported (only the given inputs), checked against torch in onnxruntime, run through
   the engine's own classify on the held-out blocks, and compared there with a RandomForest
   baseline and with the untrained base model. The card records all of it.

Nothing is written until the end: the model, its Markdown card, the metrics JSON and the HTML
report appear together, or not at all (cancel, failure).
"""
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from ..core.classes import FUNCTION_CLASSES
from ..core.errors import Cancelled, InputError, ModelError, OutputError
from ..core.grid import plan_grid, transform_bounds
from ..core.inference_modes import VIEWS
from ..core.model_card import SCHEMA, USER_LABELS, modality_group, parse_card
from ..core.models import BUNDLED_DIR
from .blocks import cells_in_rectangles, split_blocks, split_held
from .class_map import load_class_map
from .labels import UNLABELLED, file_sha256, is_empty_label, rasterise
from .map_scores import classify_on_grid, score
from .so2sat_patch_card import KIND as SO2SAT_KIND, function_card, is_so2sat_model
from .time_budget import TimeBudget

BASE_DEFAULT = os.path.join(BUNDLED_DIR, "urban_fusion.onnx")
VHR_SCENES = os.path.join(BUNDLED_DIR, "vhr_scenes_resnet.onnx")
SCRATCH = "scratch"
MIN_CELLS_PER_CLASS = 200      # fewer labelled cells than this: a warning
CROP = 64                      # training crops, output cells (a multiple of 8)
BATCH = 8
STEPS_PER_EPOCH = 60
MAX_EPOCHS = 40
LR = {"fine-tune": 1e-3, SCRATCH: 2e-3}
VHR_LR_MULT = 0.1              # pretrained trunks (real-data VHR scene model, So2Sat) move less
EVAL_TILE = 128
# what follows the epochs: a guess until the first epoch's scoring is timed (time_budget)
AFTER_GUESS = 240.0
AFTER_FIXED = 20.0             # export, parity, sessions, reading (seconds)
AFTER_SAFETY = 1.5             # the estimate of the passes over the grid, with room to spare
KEYS = tuple(c.key for c in FUNCTION_CLASSES)


@dataclass
class TrainRequest:
    inputs: Dict[str, str]             # modality -> raster path (classify's names)
    labels: object                     # a .labels.LabelSet
    output_path: str                   # the .onnx to write
    class_map_path: Optional[str] = None
    base_model: Optional[str] = None   # .onnx path; None = the bundled fusion model; "scratch"
    s2_trunk: Optional[str] = None     # the imported So2Sat ONNX: the S2 stream starts from it
    extent: Optional[tuple] = None     # (xmin, ymin, xmax, ymax, crs_wkt)
    aoi: Optional[tuple] = None        # (polygon_wkt, crs_wkt)
    validation_share: float = 0.2
    block_m: float = 1000.0
    # ground rectangles (xmin, ymin, xmax, ymax) in ``held_out_crs`` held out instead of drawn
    # blocks: models on other grids scored on the same held-out ground (scripts/osm_evidence.py)
    held_out: Optional[list] = None
    held_out_crs: Optional[str] = None
    max_minutes: float = 10.0
    epochs: int = 0                    # 0 = as many as max_minutes allows (up to MAX_EPOCHS)
    device: str = "auto"
    seed: int = 0
    name: Optional[str] = None
    overwrite: bool = False
    baseline: bool = True


@dataclass
class TrainResult:
    model_path: str
    name: str
    metrics: dict
    report_path: str
    metrics_path: str
    markdown_path: str
    card: dict
    messages: list = field(default_factory=list)


def outputs_for(model_path):
    stem = os.path.splitext(model_path)[0]
    return {"model": model_path, "markdown": stem + ".md", "metrics": stem + "_metrics.json",
            "report": stem + "_report.html"}


def slug(text):
    out = "".join(ch.lower() if ch.isalnum() else "-" for ch in str(text)).strip("-")
    while "--" in out:
        out = out.replace("--", "-")
    return out or "my-model"


def check_outputs(request):
    """Fail before any work when the outputs cannot be written, or would overwrite an input."""
    path = request.output_path
    if not path or not path.lower().endswith(".onnx"):
        raise OutputError(f"{path!r}: the output model must be an .onnx file.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"The output folder {folder!r} does not exist.")
    from ..core.publication import check_pam, check_writable_folder
    check_writable_folder(folder)
    check_pam()   # the checks through classify write maps
    protected = {os.path.realpath(p) for p in request.inputs.values() if p}
    for p in (request.labels.source, request.base_model, request.class_map_path):
        if p and os.path.exists(p):
            protected.add(os.path.realpath(p))
    for kind, p in outputs_for(path).items():
        if os.path.realpath(p) in protected:
            raise OutputError(f"{p!r} is one of the inputs; it is never overwritten.")
        if os.path.exists(p) and not request.overwrite:
            raise OutputError(f"{p!r} already exists; choose another name or allow overwriting "
                              "(OVERWRITE=true; in Train on my area, tick Overwrite).")


def _python_for_torch():
    """A Python that imports this torch: the venv's own when torch comes from one (QGIS embeds
    Python, so sys.executable may be QGIS itself)."""
    import torch
    site = os.path.dirname(os.path.dirname(torch.__file__))
    venv = os.path.dirname(os.path.dirname(os.path.dirname(site)))
    for cand in (os.path.join(venv, "bin", "python"), os.path.join(venv, "Scripts", "python.exe")):
        if os.path.isfile(cand):
            return cand, site
    exe = sys.executable
    if os.path.basename(exe).lower().startswith("python"):
        return exe, site
    return shutil.which("python3") or "python3", site


def export_checkpoint(ckpt_path, out_path, module="plugin.learning.user_export"):
    """Run an export module (:mod:`.user_export`, :mod:`.vhr_export`) in its own process;
    returns its JSON summary."""
    from ..core.environment import PLUGIN_ROOT
    python, site = _python_for_torch()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PLUGIN_ROOT, site] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    res = subprocess.run([python, "-m", module, ckpt_path, out_path],
                         cwd=PLUGIN_ROOT, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise ModelError("The ONNX export of the trained model failed:\n"
                         + (res.stderr or res.stdout)[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------- the base
def is_scene_model(card):
    """A patch classifier with our scene ResNet inside (the VHR scene model and models
    fine-tuned from it): these can be fine-tuned patch by patch."""
    config = (card.raw.get("architecture") or {}).get("config") or {}
    return card.task == "patch_classification" and "in_bands" in config and "blocks" in config


def load_base(base_model):
    """(base card, path or None for scratch, architecture config)."""
    from ..core.model_card import read_card
    path = BASE_DEFAULT if base_model in (None, "", SCRATCH) else base_model
    if not os.path.isfile(path):
        raise ModelError(f"Base model not found: {path!r}.")
    card = read_card(path)
    config = (card.raw.get("architecture") or {}).get("config")
    if is_scene_model(card):
        return card, path, dict(config)
    if is_so2sat_model(card):
        return card, path, {"n_classes": len(KEYS), "kind": SO2SAT_KIND}
    if card.task != "segmentation" or not config or "s2_fusion" not in config:
        raise ModelError(
            f"{card.name} cannot be trained here: training on your labels supports the fusion "
            "network (urban-fusion and models trained from it), the VHR scene model and the "
            "imported So2Sat LCZ42 network (and models fine-tuned from them).")
    return card, (None if base_model == SCRATCH else path), dict(config)


def training_card(base, modalities, s2_trunk=False):
    """The base card restricted to the user's inputs (the card the trained model gets). With
    the So2Sat trunk, Sentinel-2 is fed as the So2Sat network was trained: DN / 10000."""
    raw = json.loads(json.dumps(base.raw))
    raw["inputs"] = [i for i in raw["inputs"] if i["modality"] in modalities]
    if is_so2sat_model(base):     # the LCZ network becomes a classifier of our functions
        raw = function_card(raw)
    if s2_trunk:
        for spec in raw["inputs"]:
            if spec["modality"].startswith("s2_"):
                spec["mean"] = [0.0] * len(spec["bands"])
                spec["std"] = [1.0] * len(spec["bands"])
    missing = sorted(set(modalities) - {i["modality"] for i in raw["inputs"]})
    if missing:
        raise InputError(f"The base model {base.name} has no input for {', '.join(missing)}.")
    raw["derived_outputs"] = [d for d in raw.get("derived_outputs") or []
                              if d.get("name") != "gates" or len(modalities) > 1]
    if raw.get("task", "segmentation") == "segmentation":
        # trained with flips and 90 degree rotations: the averaged views are scored on the
        # held-out blocks beside one view, and the better becomes classify's default
        # (finish, card metrics.by_inference_mode)
        raw["output"]["default_mode"] = "accurate"
        raw["output"]["test_time_views"] = list(VIEWS)
    return raw


# ------------------------------------------------------------------------------- training
class _Batches:
    """Class-balanced training crops with flips and 90 degree rotations."""

    def __init__(self, feeds, train_labels, present, seed):
        self.feeds = feeds
        self.labels = train_labels
        self.present = present
        self.rng = np.random.default_rng(seed)
        self.by_class = {}
        ys, xs = np.nonzero(train_labels != UNLABELLED)
        cls = train_labels[ys, xs]
        for k in np.unique(cls):
            sel = cls == k
            self.by_class[int(k)] = (ys[sel], xs[sel])
        self.classes = sorted(self.by_class)

    def sample(self, batch, crop):
        import torch
        g = self.feeds.grid
        ch, cw = min(crop, g.height), min(crop, g.width)
        xs = {n: [] for n in self.present}
        masks, targets = [], []
        for _ in range(batch):
            k = self.classes[self.rng.integers(len(self.classes))]
            ys, xs_ = self.by_class[k]
            i = self.rng.integers(len(ys))
            # a crop holding the cell, at a random offset, on the 8-cell lattice of the tiles
            r0 = int(np.clip(ys[i] - self.rng.integers(ch), 0, g.height - ch)) // 8 * 8
            c0 = int(np.clip(xs_[i] - self.rng.integers(cw), 0, g.width - cw)) // 8 * 8
            win, mask = self.feeds.window(c0, r0, cw, ch)
            lab = self.labels[r0:r0 + ch, c0:c0 + cw]
            rot, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))

            def aug(a):
                a = np.rot90(a, rot, axes=(-2, -1))
                return np.ascontiguousarray(a[..., ::-1] if flip else a)
            for n in self.present:
                xs[n].append(aug(win[n]))
            masks.append(aug(mask))
            targets.append(aug(lab))
        t = [torch.from_numpy(np.stack(xs[n])) for n in self.present]
        valid = torch.from_numpy(np.stack(masks))
        target = torch.from_numpy(np.stack(targets).astype(np.int64))
        return t, valid, target


def predict(model, feeds, present, device, where=None, tile=EVAL_TILE, margin=None):
    """Class indices [H, W] from the torch model over the tiles holding ``where`` cells
    (all cells when None); each tile is read with ``margin`` cells of context around it."""
    import torch
    g = feeds.grid
    margin = margin if margin is not None else 32
    margin = int(math.ceil(margin / 8.0)) * 8
    out = np.full((g.height, g.width), UNLABELLED, np.int16)
    model.eval()
    for r, c, th, tw, r0, c0, r1, c1 in tile_windows(g.height, g.width, where, tile, margin):
        win, mask = feeds.window(c0, r0, c1 - c0, r1 - r0)
        with torch.no_grad():
            xs = [torch.from_numpy(np.ascontiguousarray(win[n]))[None].to(device)
                  for n in present]
            probs = model(*xs, torch.from_numpy(np.ascontiguousarray(mask))[None]
                          .to(device))[0][0]
        pred = probs.argmax(0).cpu().numpy().astype(np.int16)
        valid = mask.max(axis=0) > 0
        pred[~valid] = UNLABELLED
        out[r:r + th, c:c + tw] = pred[r - r0:r - r0 + th, c - c0:c - c0 + tw]
    return out


def tile_windows(height, width, where, tile, margin):
    """The tiles of :func:`predict` holding a ``where`` cell (all when None): (row, col, tile
    height, tile width) and the window read around it, (r0, c0, r1, c1), ``margin`` cells
    wider where the grid allows."""
    for r in range(0, height, tile):
        for c in range(0, width, tile):
            th, tw = min(tile, height - r), min(tile, width - c)
            if where is not None and not where[r:r + th, c:c + tw].any():
                continue
            yield (r, c, th, tw, max(0, r - margin), max(0, c - margin),
                   min(height, r + th + margin), min(width, c + tw + margin))


def window_cells(height, width, where, tile, margin):
    """Cells a pass of :func:`predict` reads: its work, for scaling a timed pass to another
    area."""
    return sum((r1 - r0) * (c1 - c0) for *_, r0, c0, r1, c1
               in tile_windows(height, width, where, tile, margin))


def _param_groups(model, lr):
    trunk, rest = [], []
    frozen = {id(p) for m in model.absent_modules() for p in m.parameters()}
    for name, p in model.net.named_parameters():
        if id(p) in frozen:
            p.requires_grad_(False)
            continue
        # pretrained trunks (the VHR scene model's, So2Sat's) move less
        (trunk if name.startswith(("vhr_trunk.", "s2_trunk.")) else rest).append(p)
    groups = [{"params": rest, "lr": lr}]
    if trunk:
        groups.append({"params": trunk, "lr": lr * VHR_LR_MULT})
    return groups


def train_network(model, batches, val_labels, feeds, present, mode, epochs_cap, budget,
                  device, seed, class_weights, progress, is_cancelled, log, margin=32,
                  after_estimate=None):
    """Train in epochs of STEPS_PER_EPOCH steps; the number of epochs is ``epochs_cap`` or, when
    0, what ``budget`` (a TimeBudget) allows after the first epoch is timed; the cosine schedule
    is then fixed, so a rerun with that epoch count reproduces the run. ``after_estimate``: the
    seconds of what follows the epochs, from the first epoch's held-out scoring time. Returns
    the history."""
    import torch
    from .fusion.losses import IGNORE_INDEX, fusion_loss, modality_dropout, zero_absent
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    lr = LR[SCRATCH if mode == SCRATCH else "fine-tune"]
    opt = torch.optim.AdamW(_param_groups(model, lr), weight_decay=1e-4)
    base_lrs = [g["lr"] for g in opt.param_groups]
    weights = torch.tensor(class_weights, dtype=torch.float32, device=device)
    groups_given = len({modality_group(m) for m in present})
    history = []
    t0 = time.perf_counter()
    epochs = epochs_cap or MAX_EPOCHS
    epoch = 0
    while epoch < epochs:
        model.train()
        # batch norm adapts to the user's data in the streams that see it; the streams of
        # absent inputs keep the base model's statistics
        for module in model.absent_modules():
            module.eval()
        losses = []
        for step in range(STEPS_PER_EPOCH):
            if is_cancelled():
                raise Cancelled("Cancelled by the user; no model was written.")
            set_learning_rate(opt, base_lrs, epoch, step, epochs)
            xs, valid, target = batches.sample(BATCH, CROP)
            if groups_given >= 2:
                valid = modality_dropout(valid, 0.25, gen)
                xs = list(zero_absent(tuple(xs), valid))
            # labelled cells where no input has data teach nothing
            target = torch.where(valid.amax(dim=1) > 0, target, torch.full_like(target, -1))
            target = torch.where(target < 0, torch.full_like(target, IGNORE_INDEX), target)
            xs = [x.to(device) for x in xs]
            out = model(*xs, valid.to(device), return_aux=True)
            loss, _ = fusion_loss(out, target.to(device), class_weights=weights,
                                  generator=gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            done = (epoch + (step + 1) / STEPS_PER_EPOCH) / epochs
            progress(done, epoch_words(epoch, epochs, epochs_cap))
        epoch += 1
        t_score = time.perf_counter()
        pred = predict(model, feeds, present, device, where=val_labels != UNLABELLED,
                       margin=margin)
        if epoch == 1 and after_estimate is not None:
            budget = budget.with_after(after_estimate(time.perf_counter() - t_score))
        epochs = end_of_epoch(history, epoch, epochs, epochs_cap, budget, losses,
                              score(val_labels, pred), t0, MAX_EPOCHS, log, progress)
    return history


def epoch_words(epoch, epochs, epochs_cap):
    """Progress text of 0-based ``epoch``: before the first is timed, the count is not known."""
    return (f"Epoch {epoch + 1} of {epochs}" if epochs_cap or epoch else
            "Epoch 1 (timed: the epochs that fit the time limit follow)")


def _after_estimate(grid, val_cells, receptive, groups):
    """Seconds of what follows the epochs, from the first epoch's held-out scoring time: the
    checks through classify (the test-time views, then one view: five passes over the grid),
    the input check (each group alone and all together over the held-out tiles, with two or
    more groups), and the export with its parity check."""
    margin = int(math.ceil(receptive / 8.0)) * 8
    val = window_cells(grid.height, grid.width, val_cells, EVAL_TILE, margin)
    whole = window_cells(grid.height, grid.width, None, EVAL_TILE, margin)
    checks = groups + 1 if groups >= 2 else 0

    def estimate(score_seconds):
        per_cell = score_seconds / max(1, val)
        return AFTER_FIXED + AFTER_SAFETY * ((len(VIEWS) + 1) * whole * per_cell +
                                             checks * score_seconds)
    return estimate


def input_groups(card):
    """{group: [card input names]}: VHR, night light, Sentinel-2 (its seasons together) and the
    temporal signature, the inputs a user gives or leaves out."""
    groups = {}
    for spec in card.inputs:
        groups.setdefault(modality_group(spec.modality), []).append(spec)
    return groups


def check_inputs(model, feeds, validation, device, margin, say):
    """Fused inputs must never score below the best single input: with two or more input
    groups, score the trained network on the held-out blocks with all of them and with each
    group alone. When a single group beats them all, the others are left out at classify
    (card ``ignored_inputs``). Returns ({"all" or group: held-out OA}, ignored modalities).

    The choice is made on the blocks the card reports, so the reported figure for the chosen
    inputs is slightly optimistic; the choice is among at most five options.
    """
    groups = input_groups(feeds.card)
    if len(groups) < 2:
        return {}, []
    where = validation != UNLABELLED
    present = feeds.present
    scores = {"all": score(validation, predict(model, feeds, present, device, where=where,
                                               margin=margin))["overall_accuracy"]}
    for group, specs in groups.items():
        others = [s.name for g, ss in groups.items() if g != group for s in ss]
        pred = predict(model, feeds.without(others), present, device, where=where,
                       margin=margin)
        scores[group] = score(validation, pred)["overall_accuracy"]
    best = max(scores, key=lambda k: (scores[k], k == "all"))
    say("Held-out OA by input: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) + ".")
    if best == "all":
        return scores, []
    ignored = sorted(s.modality for g, ss in groups.items() if g != best for s in ss)
    say(f"Warning: {best} alone scores better on the held-out blocks than all inputs "
        f"together ({scores[best]:.3f} against {scores['all']:.3f}): classify will leave out "
        f"{', '.join(ignored)} with this model.")
    return scores, ignored


def set_learning_rate(opt, base_lrs, epoch, step, epochs, steps=STEPS_PER_EPOCH):
    """Epoch 1 (``epoch`` 0) at the base rate, as it is timed; then a cosine to 0 over the other
    epochs. The schedule is the same whether the epoch count comes from EPOCHS or from the time
    limit, so EPOCHS=N reproduces a run that chose N itself."""
    frac = 0.0 if epoch == 0 or epochs == 1 else \
        ((epoch - 1) * steps + step) / float((epochs - 1) * steps)
    for g, b in zip(opt.param_groups, base_lrs):
        g["lr"] = b * 0.5 * (1 + math.cos(math.pi * frac))


def end_of_epoch(history, epoch, epochs, epochs_cap, budget, losses, s, t0, max_epochs,
                 log, progress):
    """Record epoch ``epoch`` (held-out scores ``s``), say it, and return the number of epochs:
    after the first, when no count was given, what ``budget`` (a TimeBudget) allows (kept in
    the card), with a warning when that is too few."""
    elapsed = time.perf_counter() - t0
    history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4),
                    "validation_overall_accuracy": s["overall_accuracy"],
                    "validation_macro_f1": s["macro_f1"], "seconds": round(elapsed, 1)})
    per_epoch = elapsed / epoch
    if epoch == 1 and not epochs_cap:
        epochs = budget.epochs(per_epoch, max_epochs)
        advice = budget.advice(epochs, per_epoch)
        if advice:
            log(advice)
    left = per_epoch * (epochs - epoch) + budget.after   # the checks after training too
    log(f"Epoch {epoch}/{epochs}: loss {np.mean(losses):.3f}, held-out blocks OA "
        f"{s['overall_accuracy']:.3f}, macro F1 {s['macro_f1']:.3f}; about {left / 60:.1f} "
        "min left")
    progress(epoch / epochs, f"Epoch {epoch} of {epochs}: held-out OA "
             f"{s['overall_accuracy']:.3f}, about {left / 60:.1f} min left")
    return epochs


def class_weights_for(train_labels, n_classes):
    counts = np.bincount(train_labels[train_labels != UNLABELLED].astype(np.int64),
                         minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
    present = counts > 0
    w[present] /= w[present].mean()
    return w


def receptive_radius(base, card):
    """Cells a prediction can see around it: the architecture's bound when the card has it
    (the buffer between training and held-out cells), else the card's context."""
    if card.patch is not None:   # the window around the cell, in whole cells
        p = card.patch
        reach = max(-p.window_lo, p.window_hi - (p.stride_px - 1))
        return int(math.ceil(reach / p.stride_px))
    rf = (base.raw.get("architecture") or {}).get("receptive_field_radius_cells")
    if isinstance(rf, dict):
        rf = rf.get("bound") or rf.get("measured")
    return int(rf or card.output.context_cells)


def _held_out_words(split, request):
    if split.given:
        return (f"{split.blocks_validation} of the {split.blocks_total} given rectangles "
                "(holding labels)")
    return (f"{split.blocks_validation} of {split.blocks_total} blocks of {request.block_m:g} m "
            "holding labels")


def _on_grid_lines(rects, grid, tol=1e-6):
    """Whether every rectangle edge lies on a cell boundary of ``grid``."""
    def on(v, origin):
        k = (v - origin) / grid.cell
        return abs(k - round(k)) < tol
    return all(on(x, grid.left) for r in rects for x in (r[0], r[2])) and \
        all(on(y, grid.top) for r in rects for y in (r[1], r[3]))


def no_labelled_cell_words(labelset, ras, class_map, grid):
    """Why no cell is labelled, in the order a user would check it."""
    if ras.empty_features == labelset.count:
        return (f"No grid cell is labelled: every feature of {labelset.name!r} has an empty "
                f"{labelset.field!r} value. Is it the field that holds the classes?")
    if ras.ignored_features == labelset.count - ras.empty_features:
        return (f"No grid cell is labelled: the class map ({class_map.path}) maps every value "
                f"of {labelset.field!r} to ignore.")
    if ras.outside_features == labelset.count - ras.empty_features - ras.ignored_features:
        return ("No grid cell is labelled: no label feature lies over the training grid (the "
                "inputs, the extent or the area of interest).")
    return ("No grid cell is labelled: polygons must hold whole "
            f"{grid.cell:g} m cells and lie over the input rasters.")


def check_split_classes(split, ras, say):
    """Training needs two classes with training cells; a class whose labels all lie in the
    held-out ground cannot be learnt, and every held-out cell of it counts as wrong: say so."""
    untrained = set(split.untrained_classes(len(KEYS)))
    trained = [KEYS[i] for i in range(len(KEYS)) if i not in untrained]
    held = np.unique(split.validation[split.validation != UNLABELLED])
    lost = [KEYS[i] for i in held if i in untrained]
    where = "the given held-out rectangles" if split.given else "the held-out blocks"
    move = ("give other held-out rectangles" if split.given else
            "move the held-out ground (another SEED, another BLOCK_SIZE)")
    if len(trained) < 2:
        have = trained[0] if trained else "none"
        raise InputError(
            f"Only one class has training cells ({have}): a model needs at least two. "
            + (f"The labels of {', '.join(lost)} all lie in {where} or their buffer: label "
               "them in more places, or " if lost else "Label at least two classes, or ")
            + move + ".")
    if lost and len(lost) == len(held):
        raise InputError(
            f"{where[0].upper() + where[1:]} hold only {', '.join(lost)}, which training never "
            "sees (all their labels lie there or in the buffer): the held-out figures would "
            f"measure nothing the model learnt. Label these classes in more places, or {move}.")
    if lost:
        say(f"Warning: every label of {', '.join(lost)} lies in {where} or their buffer: "
            "training sees no cell of these classes, so the held-out figures score them "
            f"untrained. Label them in more places, or {move}.")


def check_label_data(has_data, split, say):
    """Labelled cells where no input has data (nodata, outside the rasters) teach nothing and
    cannot be mapped: refuse when none is left on either side, say how many otherwise."""
    for name, labels in (("training", split.train), ("held-out", split.validation)):
        labelled = labels != UNLABELLED
        n = int(labelled.sum())
        bare = int((labelled & ~has_data).sum())
        if n and bare == n:
            raise InputError(
                f"None of the {n} labelled {name} cells has data in any input raster (nodata "
                "or outside them): check that the rasters cover the labels and that their "
                "nodata value is right.")
        if bare:
            say(f"Warning: {bare} of the {n} labelled {name} cells have no data in any input "
                "raster (nodata or outside them)" + (
                    ": they are not trained on." if name == "training" else
                    ": the held-out figures count them as wrong."))


# ------------------------------------------------------------------------------- the job
@dataclass
class Prepared:
    raw: dict           # the trained model's card so far (base card, user's inputs only)
    card: object
    grid: object
    ras: object         # .labels.Rasterised
    split: object       # .blocks.BlockSplit
    receptive: int
    class_map: object


def prepare(request, base, inputs, say=print, outer_progress=lambda f, m="": None):
    """The grid, the rasterised labels and the spatial-block split of a training request
    (deterministic: the same request gives the same held-out cells, so other models can be
    scored on them)."""
    raw = training_card(base, set(inputs), s2_trunk=bool(request.s2_trunk))
    card = parse_card(raw)
    class_map = load_class_map(request.class_map_path)
    labelset = request.labels
    if labelset.count == 0:
        raise InputError(f"Labels: the layer {labelset.name!r} has no feature.")

    # the grid: the labels' area (plus the receptive field) inside the inputs
    receptive = receptive_radius(base, card)
    if request.s2_trunk:
        from .fusion.so2sat_trunk import RECEPTIVE_RADIUS, STRIDE
        receptive += RECEPTIVE_RADIUS + STRIDE   # the trunk replaces a 2-conv stream
    probe = plan_grid(card, inputs)
    extent = request.extent
    if extent is None and request.aoi is None:
        b = labelset.bounds(probe.crs_wkt)
        pad = receptive * card.output.gsd_m
        extent = (b[0] - pad, b[1] - pad, b[2] + pad, b[3] + pad, probe.crs_wkt)
    try:
        grid = plan_grid(card, inputs, extent, request.aoi)
    except InputError as exc:
        what = ("The labels, the extent or the area of interest do not" if
                request.extent is not None or request.aoi is not None else "The labels do not")
        raise InputError(f"{what} overlap the input rasters ({exc})") from exc
    say(f"Training grid: {grid.width} x {grid.height} cells of {grid.cell:g} m.")
    outer_progress(0.01, "Rasterising the labels")
    ras = rasterise(labelset, class_map, grid, KEYS)
    if ras.empty_features:
        say(f"{ras.empty_features} label features with an empty {labelset.field!r} value are "
            "not used.")
    if ras.repaired_features:
        say(f"{ras.repaired_features} invalid label polygons (self-intersecting or similar) "
            "were made valid before use; check them (Vector > Geometry Tools > Check "
            "Validity).")
    total_labelled = sum(ras.counts.values())
    if total_labelled == 0:
        raise InputError(no_labelled_cell_words(labelset, ras, class_map, grid))
    none = [k for k in KEYS if ras.counts[k] == 0]
    few = [k for k in KEYS if 0 < ras.counts[k] < MIN_CELLS_PER_CLASS]
    say("Labelled cells per class: " + ", ".join(f"{k} {ras.counts[k]}" for k in KEYS
                                                 if ras.counts[k]))
    if none:
        say(f"Warning: no labels for {', '.join(none)}: the model cannot learn these classes "
            "from your area, and the held-out figures do not check them. Label some where "
            "they occur.")
    if few:
        say(f"Warning: few labels (under {MIN_CELLS_PER_CLASS} cells) for {', '.join(few)}: "
            "their figures are unreliable; label more where you can.")
    if ras.conflict_cells:
        say(f"{ras.conflict_cells} cells claimed by two classes are left unlabelled.")

    block_cells = max(8, int(round(request.block_m / grid.cell)))
    if request.held_out:
        rects = [transform_bounds(r[:4], request.held_out_crs or grid.crs_wkt, grid.crs_wkt)
                 for r in request.held_out]
        held = cells_in_rectangles(rects, grid.left, grid.top, grid.cell, grid.height,
                                   grid.width)
        # a cell straddling a rectangle's edge is held out or not by its centre: one more
        # cell of buffer keeps every training window clear of the rectangle itself
        buffer = receptive + (0 if _on_grid_lines(rects, grid) else 1)
        labelled = ras.labels != UNLABELLED
        holding = sum(1 for r in rects if (labelled & cells_in_rectangles(
            [r], grid.left, grid.top, grid.cell, grid.height, grid.width)).any())
        split = split_held(ras.labels, held, block_cells, buffer, len(rects), holding,
                           given=True)
    else:
        split = split_blocks(ras.labels, block_cells, receptive, request.validation_share,
                             request.seed, len(KEYS))
    n_val = int((split.validation != UNLABELLED).sum())
    n_train = int((split.train != UNLABELLED).sum())
    if split.given and n_val == 0:
        raise InputError(f"None of the {len(rects)} held-out rectangles given holds a labelled "
                         f"{grid.cell:g} m cell on this grid.")
    if split.given and n_train == 0:
        raise InputError(f"No labelled {grid.cell:g} m cell is left for training outside the "
                         f"held-out rectangles and their buffer of {buffer} cells.")
    if n_val == 0 or n_train == 0:
        raise InputError(
            f"The labels lie in {split.blocks_total} block(s) of {request.block_m:g} m: a "
            "spatial hold-out needs labels in at least two blocks with training labels left "
            "outside the buffer. Use smaller blocks or label a larger area.")
    say(f"Spatial hold-out: {_held_out_words(split, request)} for validation ({n_val} cells), "
        f"{n_train} training cells; {split.buffer_dropped} cells within {split.buffer_cells} "
        "cells of held-out ground are not used.")
    check_split_classes(split, ras, say)
    if split.buffer_dropped > 2 * n_train:
        say(f"Warning: the buffer around the held-out ground takes {split.buffer_dropped} "
            f"labelled cells out of training, leaving {n_train}: "
            + ("fewer, larger held-out rectangles keep more." if split.given else
               f"blocks of {request.block_m:g} m are small beside the buffer of "
               f"{split.buffer_cells} cells; larger blocks (BLOCK_SIZE) keep more."))

    return Prepared(raw, card, grid, ras, split, receptive, class_map)


def run_training(request: TrainRequest, progress=None, is_cancelled=None, log=None):
    """Train, validate, export and write the model with its card and report; returns a
    :class:`TrainResult`. Raises UrbanFunctionsError subclasses with user-facing messages."""
    messages = []

    def say(msg):
        messages.append(msg)
        if log:
            log(msg)

    outer_progress = progress or (lambda f, m="": None)
    is_cancelled = is_cancelled or (lambda: False)

    def stage(lo, hi):
        return lambda f, m="": outer_progress(lo + (hi - lo) * max(0.0, min(1.0, f)), m)

    t_start = time.perf_counter()
    check_outputs(request)
    if request.epochs:
        say(f"{request.epochs} epoch(s), as EPOCHS asks: the time limit (MAX_MINUTES) is not "
            "applied.")
    from ..core.publication import remove_stale_partials
    for path in outputs_for(os.path.abspath(request.output_path)).values():
        remove_stale_partials(path, say)
    inputs = {m: p for m, p in request.inputs.items() if p}
    if not inputs:
        raise InputError("Give at least one input raster to train on.")
    try:
        import torch
    except ImportError as exc:
        raise ModelError("Training needs PyTorch, which is not installed beside QGIS. In QGIS: "
                         "Plugins > Urban Functions > Install dependencies…, tick 'Also PyTorch "
                         "and scikit-learn' and press Install (no restart needed); in a source "
                         "checkout: make setup. Classify works without it.") from exc
    _device(request.device, torch)   # a GPU asked for and absent: say so before any work
    same = {}
    for m, p in sorted(inputs.items()):
        same.setdefault(os.path.realpath(p), []).append(m)
    for p, ms in same.items():
        if len(ms) > 1:
            say(f"Warning: {' and '.join(ms)} are the same file ({os.path.basename(p)}): the "
                "model learns nothing from a repeated input; give each season its own scene.")
    base, base_path, config = load_base(request.base_model)
    if is_scene_model(base) or is_so2sat_model(base):
        if request.s2_trunk:
            raise InputError(f"{base.name} is fine-tuned from its own weights as a patch "
                             "classifier (no So2Sat start beside it): BASE_MODEL=so2sat starts "
                             "the Sentinel-2 stream of the fusion network from So2Sat.")
        from .patch_training import check_patch_inputs, train_patch_model
        check_patch_inputs(base, inputs)
        prep = prepare(request, base, inputs, say, outer_progress)
        return train_patch_model(request, base, base_path, config, prep, inputs, t_start, say,
                                 outer_progress, stage, is_cancelled, messages)
    mode = SCRATCH if request.base_model == SCRATCH else "fine-tune"
    if request.s2_trunk:
        if not any(m.startswith("s2_") for m in inputs):
            raise InputError("Starting the Sentinel-2 stream from So2Sat needs a Sentinel-2 "
                             "input.")
        mode = "so2sat"
        config["s2_encoder"] = "so2sat"
    prep = prepare(request, base, inputs, say, outer_progress)
    raw, card, grid, ras, split, receptive, class_map = (
        prep.raw, prep.card, prep.grid, prep.ras, prep.split, prep.receptive, prep.class_map)
    labelset = request.labels

    from .grid_feeds import read_grid_feeds
    feeds = read_grid_feeds(card, inputs, grid, request.aoi, progress=stage(0.02, 0.08),
                            is_cancelled=is_cancelled)
    present = feeds.present
    if card.mask_input:   # the fusion network's per-cell input mask
        check_label_data(feeds.mask.max(axis=0) > 0, split, say)
    val_cells = split.validation != UNLABELLED

    comparisons = {}
    if request.baseline:
        outer_progress(0.08, "RandomForest baseline")
        try:
            from .baseline import cell_features, fit_predict
            feats, _ = cell_features(feeds)
            pred, info = fit_predict(feats, split.train, val_cells, request.seed)
            full = np.full(grid.height * grid.width, UNLABELLED, np.int16).reshape(
                grid.height, grid.width)
            full[val_cells] = pred
            comparisons["random_forest"] = dict(score(split.validation, full), **info)
            say(f"RandomForest baseline on the held-out blocks: OA "
                f"{comparisons['random_forest']['overall_accuracy']:.3f}, macro F1 "
                f"{comparisons['random_forest']['macro_f1']:.3f}.")
            del feats
        except ImportError:
            say("Warning: scikit-learn is not installed: the RandomForest baseline is skipped.")
    if is_cancelled():
        raise Cancelled("Cancelled by the user; no model was written.")

    device = _device(request.device, torch)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from .fusion.subset import SubsetFusionModel
    from .fusion.net import UrbanFusionNet
    modalities = [i.modality for i in card.inputs]
    if mode == SCRATCH:
        torch.manual_seed(request.seed)
        net = UrbanFusionNet(**config)
    else:
        net = _net_from(base_path, config, request.seed, say if mode != "so2sat" else
                        (lambda m: None))
    if mode == "so2sat":
        n = net.s2_trunk.load_onnx(request.s2_trunk)
        say(f"Sentinel-2 stream from the So2Sat LCZ42 network ({n:,} parameters); the rest "
            f"from {base.name}.")
        # the untrained start of this stream is the imported model itself: its own map (LCZ
        # summed per function), as classify makes it from the Sentinel-2 inputs
        outer_progress(0.09, "Scoring the imported So2Sat model")
        with tempfile.TemporaryDirectory(prefix="urban_functions_base_") as tmp:
            comparisons["untrained_base"] = dict(
                _engine_scores(request.s2_trunk, {m: p for m, p in inputs.items()
                                                  if m.startswith("s2_")},
                               grid, split.validation, tmp, request.aoi),
                model="So2Sat LCZ42 as imported (LCZ -> functions)")
        say("So2Sat LCZ42 as imported (LCZ -> functions) on the held-out blocks (through "
            f"classify): OA {comparisons['untrained_base']['overall_accuracy']:.3f}.")
    elif mode != SCRATCH:
        # scoring leaves the weights as they are: the same network is then trained
        pred = predict(SubsetFusionModel(net, modalities).to(device), feeds, present, device,
                       where=val_cells, margin=receptive)
        comparisons["untrained_base"] = dict(score(split.validation, pred), model=base.name)
        say(f"Untrained {base.name} on the held-out blocks: OA "
            f"{comparisons['untrained_base']['overall_accuracy']:.3f}.")
    weights = class_weights_for(split.train, len(KEYS))
    # classes without a training cell are switched off in the exported model: what the base
    # (simulated scenes, or So2Sat's new head) says of them was neither taught nor checked here.
    # The held-out scores during training see the same (the loss sees the raw logits).
    off = split.untrained_classes(len(KEYS))
    model = SubsetFusionModel(net, modalities, off_classes=off).to(device)
    if off:
        say(f"Not predicted by the trained model: {', '.join(KEYS[i] for i in off)} (no "
            "training cells; switched off in the exported model, so its maps never show a "
            "class that nobody taught or checked here).")
    batches = _Batches(feeds, split.train, present, request.seed)
    budget = TimeBudget.left(request.max_minutes, t_start, after=AFTER_GUESS)
    t_train = time.perf_counter()
    history = train_network(model, batches, split.validation, feeds, present, mode,
                            request.epochs, budget, device, request.seed, weights,
                            stage(0.12, 0.85), is_cancelled, say, margin=receptive,
                            after_estimate=_after_estimate(grid, val_cells, receptive,
                                                           len(input_groups(card))))
    train_seconds = time.perf_counter() - t_train
    outer_progress(0.85, "Checking each input on the held-out blocks")
    input_check, ignored = check_inputs(model, feeds, split.validation, device, receptive, say)
    model = model.cpu().eval()

    tmp = tempfile.mkdtemp(prefix="urban_functions_train_")
    try:
        outer_progress(0.86, "Exporting to ONNX")
        ckpt = os.path.join(tmp, "model.pt")
        torch.save({"config": model.net.config, "present": list(model.present),
                    "state_dict": model.net.state_dict(), "off_classes": off}, ckpt)
        bare = os.path.join(tmp, "bare.onnx")
        summary = export_checkpoint(ckpt, bare)
        if is_cancelled():
            raise Cancelled("Cancelled by the user; no model was written.")
        name = request.name or slug(os.path.splitext(os.path.basename(request.output_path))[0])
        card_dict = _user_card(raw, base, base_path, mode, name, request, labelset, class_map,
                               ras, split, grid, inputs, history, train_seconds, device,
                               config, receptive)
        if off:
            card_dict["training"]["classes_not_predicted"] = [KEYS[i] for i in off]
            card_dict["limitations"] += (
                f" It never predicts {', '.join(KEYS[i] for i in off)}: no training labels.")
        if input_check:
            card_dict["input_check"] = input_check
        if ignored:
            card_dict["ignored_inputs"] = ignored
        return finish(tmp, bare, card_dict, summary, request, inputs, prep, comparisons,
                      history, t_start, say, outer_progress, is_cancelled, messages)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def finish(tmp, bare, card_dict, summary, request, inputs, prep, comparisons, history, t_start,
           say, outer_progress, is_cancelled, messages):
    """What every kind of trained model goes through: the exported model run by the engine's
    own classify on the held-out blocks, the metrics and the real-data verdict in its card,
    then the model, its card, metrics and report published together."""
    from .onnx_io import set_card
    split, grid, labelset = prep.split, prep.grid, request.labels
    n_val = int((split.validation != UNLABELLED).sum())
    staged = os.path.join(tmp, "staged.onnx")
    set_card(bare, card_dict, staged)
    outer_progress(0.9, "Validating through classify")
    segmentation = card_dict.get("task", "segmentation") == "segmentation"
    trained = _engine_scores(staged, inputs, grid, split.validation, tmp, request.aoi,
                             inference_mode="accurate" if segmentation else "windows")
    by_mode = {}
    if segmentation:
        # the test-time views (accurate) and one view (fast) are both scored, and classify's
        # default is the better of the two on the held-out blocks (a tie: fast, four times
        # quicker). Like the input check, the choice is made on the blocks the card reports
        # (and holds_up is judged on the chosen mode), so its figure is slightly optimistic;
        # the choice is between two.
        fast = _engine_scores(staged, inputs, grid, split.validation, tmp, request.aoi,
                              inference_mode="fast")
        by_mode = {m: {"overall_accuracy": s_["overall_accuracy"], "macro_f1": s_["macro_f1"]}
                   for m, s_ in (("accurate", trained), ("fast", fast))}
        best = "accurate" if trained["overall_accuracy"] > fast["overall_accuracy"] else "fast"
        card_dict["output"]["default_mode"] = best
        trained = trained if best == "accurate" else fast
        say("Held-out OA by inference mode: " + ", ".join(
            f"{m} {v['overall_accuracy']:.3f}" for m, v in by_mode.items())
            + f"; classify uses {best} by default with this model.")
    card_dict["metrics"] = {
        "description": (
            f"Held-out ground: {_held_out_words(split, request)}; {n_val} labelled cells, "
            f"never trained on, with a buffer of {split.buffer_cells} cells; the exported model "
            "run through the engine's classify." + _comparison_words(comparisons)),
        "validation": trained, "comparisons": comparisons,
        "split": split.summary(), "history": history,
        "onnx_torch_parity_max_abs_diff": summary.get("parity_max_abs_diff")}
    if by_mode:
        card_dict["metrics"]["by_inference_mode"] = by_mode
    card_dict["real_data_validation"] = {
        "status": "validated",
        "summary": (f"{n_val} labelled cells of {labelset.name!r} in "
                    f"{_held_out_words(split, request)} held out: OA "
                    f"{trained['overall_accuracy']:.3f}, macro F1 {trained['macro_f1']:.3f}"
                    + (f" (RandomForest {comparisons['random_forest']['overall_accuracy']:.3f})"
                       if "random_forest" in comparisons else "")),
        "data": f"user labels {labelset.name!r} (sha256 {labelset.sha256[:12]}...)",
        "figures": {"overall_accuracy": trained["overall_accuracy"],
                    "macro_f1": trained["macro_f1"]},
        # below the baseline or the untrained base: never classify's default
        "holds_up": holds_up(trained, comparisons)}
    card_dict["metrics"]["holds_up"] = card_dict["real_data_validation"]["holds_up"]
    card_dict["training"]["time_s"] = round(time.perf_counter() - t_start, 1)
    say(f"Trained model on the held-out blocks (through classify): OA "
        f"{trained['overall_accuracy']:.3f}, macro F1 {trained['macro_f1']:.3f}.")
    _warn_if_worse(trained, comparisons, say)
    # the run's warnings travel with the model: its card and report show them
    card_dict["warnings"] = [m for m in messages if m.startswith("Warning")]
    parse_card(card_dict)
    set_card(bare, card_dict, staged)
    outer_progress(0.97, "Writing the model and its report")
    paths = outputs_for(os.path.abspath(request.output_path))
    from .user_report import card_markdown, report_html
    files = {"markdown": card_markdown(card_dict), "metrics": json.dumps(
        card_dict["metrics"], indent=1), "report": report_html(card_dict)}
    for kind, text in files.items():
        with open(os.path.join(tmp, kind), "w", encoding="utf-8") as f:
            f.write(text)
    if is_cancelled():
        raise Cancelled("Cancelled by the user; no model was written.")
    _publish(tmp, staged, paths, request.overwrite)
    say(f"Wrote {paths['model']} in {time.perf_counter() - t_start:.0f} s.")
    return TrainResult(paths["model"], card_dict["name"], card_dict["metrics"], paths["report"],
                       paths["metrics"], paths["markdown"], card_dict, messages)


def _comparison_words(comparisons):
    """What the held-out cells also scored, as a sentence (only what was run)."""
    words = [w for k, w in (
        ("random_forest", "a RandomForest on per-cell values and simple texture trained on "
                          "the same training cells"),
        ("untrained_base", "the untrained base model")) if k in comparisons]
    return (" Comparisons on the same cells: " + " and ".join(words) + ".") if words else ""


def _net_from(path, config, seed, say):
    """The fusion network with the weights of the ONNX file at ``path``. A model trained on
    some inputs keeps only the weights its graph uses: the streams of other inputs then start
    from random weights (seeded), and the log says so."""
    import torch
    from .fusion.net import UrbanFusionNet
    from .onnx_io import load_matching_weights
    torch.manual_seed(seed)
    net = UrbanFusionNet(**config)
    _, skipped = load_matching_weights(net, path)
    if skipped:
        say(f"{len(skipped)} weight tensors of streams the base model did not use start from "
            "random values.")
    return net


def _device(choice, torch):
    if choice == "cpu":
        return "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ModelError("GPU (CUDA) was requested but PyTorch sees no CUDA device.")
    return "cuda" if torch.cuda.is_available() else "cpu"


def holds_up(trained, comparisons):
    """Whether the trained model scores at least as well as every comparison on the held-out
    cells (overall agreement); a model compared with nothing has not shown that it does."""
    done = [c for c in comparisons.values() if c]
    return bool(done) and trained["overall_accuracy"] > 0 and all(
        trained["overall_accuracy"] >= c["overall_accuracy"] for c in done)


def _warn_if_worse(trained, comparisons, say):
    if not any(comparisons.values()):
        say("Warning: the trained model was compared with nothing on the held-out blocks (no "
            "RandomForest baseline, no untrained model), so it has not shown that it holds up: "
            "classify will not pick it by default (name it to use it anyway). Train with the "
            "RandomForest baseline on (BASELINE, with scikit-learn installed) to compare it.")
    for key, label in (("random_forest", "the RandomForest baseline"),
                       ("untrained_base", "the untrained base model")):
        other = comparisons.get(key)
        if other and other["overall_accuracy"] > trained["overall_accuracy"]:
            # macro F1 weighs the small classes as much as the large: say when it disagrees
            f1 = (f" Its macro F1 is higher ({trained['macro_f1']:.3f} vs "
                  f"{other['macro_f1']:.3f}): it does better on the smaller classes, but the "
                  "verdict is on overall agreement."
                  if trained["macro_f1"] > other["macro_f1"] else "")
            say(f"Warning: the trained model scores below {label} on the held-out blocks "
                f"(OA {trained['overall_accuracy']:.3f} vs {other['overall_accuracy']:.3f}). "
                f"It does not hold up here, so classify will not pick it by default (name it "
                f"to use it anyway).{f1} Train longer (MAX_MINUTES or EPOCHS) or add labels "
                "of the classes it confuses (the report's confusion matrix).")


def _engine_scores(model_path, inputs, grid, validation, folder, aoi, inference_mode="windows"):
    """Scores of ``model_path``'s map run by the engine's classify over ``grid``, in
    ``inference_mode``. Patch classifiers are scored
    window by window: a held-out cell then sees exactly its window, which the buffer keeps
    clear of training cells (the shared trunk's features reach beyond the window)."""
    return score(validation, classify_on_grid(model_path, inputs, grid, folder, aoi,
                                              inference_mode=inference_mode))


def _publish(tmp, staged, paths, overwrite):
    """Copy the four files beside their targets under hidden partial names (a full disk fails
    here, before anything is published), then rename them into place, the model last, so its
    appearing means the run is done. Without ``overwrite`` a file that appeared meanwhile (a
    second run with the same output) is kept and this run refused; a failure removes all."""
    from ..core.publication import partial_file, publish
    kinds = ("markdown", "metrics", "report", "model")
    parts, moved = [], []
    try:
        for kind in kinds:
            src = staged if kind == "model" else os.path.join(tmp, kind)
            try:
                parts.append(partial_file(paths[kind], os.path.splitext(paths[kind])[1]))
                shutil.copyfile(src, parts[-1])
            except OSError as exc:
                raise OutputError(f"Cannot write {paths[kind]!r}: {exc.strerror}. Nothing was "
                                  "written; free some space or choose another folder.") from None
        for kind, part in zip(kinds, parts):
            publish(part, paths[kind], overwrite)
            moved.append(paths[kind])
    except BaseException:
        for p in parts + moved:
            if os.path.exists(p):
                os.remove(p)
        raise


def _user_card(raw, base, base_path, mode, name, request, labelset, class_map, ras, split,
               grid, inputs, history, train_seconds, device, config, receptive):
    import torch
    card = json.loads(json.dumps(raw))
    inputs_used = [i["modality"] for i in card["inputs"]]
    card.update({
        "schema": SCHEMA, "name": name, "version": "1.0.0",
        "title": f"{name} (trained on {labelset.name})",
        "summary": (f"Trained on your labels {labelset.name!r} ({', '.join(inputs_used)}), "
                    + ("Sentinel-2 stream from So2Sat LCZ42, the rest from " + base.name
                       if mode == "so2sat" else
                       "fine-tuned from " + base.name if base_path else "from scratch") + "."),
        "purpose": "general",
        "trained_on": USER_LABELS,
        "coverage": {"bounds": list(grid.bounds), "crs_wkt": grid.crs_wkt},
        "intended_use": ("Mapping urban functions in and around the area of the labels it was "
                         "trained on, with the same kind of input rasters."),
        "limitations": (
            "Learnt from the user's labels only where they are; classes without labels "
            f"({', '.join(k for k in KEYS if ras.counts[k] == 0) or 'none'}) were not learnt "
            "from this area. Validated on held-out blocks of the same area: expect lower "
            "accuracy elsewhere. Check every map with a new probability sample (Create "
            "validation points), never with the training labels."),
        "licence": "As your labels and imagery; the base network GPL-2.0-or-later",
        "provenance": (f"urbanfunctions:train (plugin/learning/user_training.py), "
                       f"{mode} from {base.name} {base.version}" if base_path else
                       "urbanfunctions:train (plugin/learning/user_training.py), from scratch"),
        "authors": "the user (labels), Urban Functions (network and training code)",
        "citation": "Urban Functions QGIS plugin, a model trained on the user's labels.",
    })
    arch = dict(card.get("architecture") or {})
    arch.update({"config": json.loads(json.dumps(config)),
                 "present_inputs": inputs_used,
                 "description": ("UrbanFusionNet restricted to the given inputs (absent inputs "
                                 "are zeros inside the graph); see the base model's card."),
                 "receptive_field_radius_cells": receptive})
    card["architecture"] = arch
    # tiles overlap by at least the receptive field, so tiled maps equal whole-area ones
    out = card["output"]
    out["context_cells"] = int(receptive)
    multiple = max(1, int(out.get("size_multiple", 1)))
    out["default_overlap"] = max(int(out.get("default_overlap", 0)),
                                 -(-int(receptive) // multiple) * multiple)
    card["base_model"] = {
        "name": base.name, "version": base.version, "mode": mode,
        "file": os.path.basename(base_path) if base_path else None,
        "sha256": file_sha256(base_path) if base_path else None}
    if request.s2_trunk:
        card["base_model"]["s2_trunk"] = {
            "model": "so2sat-lcz42-s2-resnet20", "file": os.path.basename(request.s2_trunk),
            "sha256": file_sha256(request.s2_trunk),
            "note": "Sentinel-2 stream: the So2Sat LCZ42 ResNet20 convolutions (MIT, So2Sat "
                    "project team), fine-tuned; the rest of the network from the base model"}
    card["labels"] = {
        "layer": labelset.name, "source": os.path.basename(labelset.source or ""),
        "field": labelset.field, "features": labelset.count, "kind": labelset.kind,
        "sha256": labelset.sha256, "features_by_class": ras.features_by_class,
        "ignored_features": ras.ignored_features, "empty_features": ras.empty_features,
        "cells_by_class": ras.counts,
        "conflict_cells": ras.conflict_cells,
        "rule": "polygon: cells fully inside; point: the cell under it"}
    used = {v for _, v in labelset.features if not is_empty_label(v)}
    card["class_map"] = {"file": class_map.path, "used": {
        str(v): class_map.lookup(v) for v in sorted(used, key=str)}}
    card["inputs_used"] = {m: os.path.basename(p) for m, p in inputs.items()}
    for spec in card["inputs"]:
        # the base's label names its own training data (the bundled network: simulated
        # surface reflectance); this model learnt from the user's rasters, whatever their level
        if spec["modality"].startswith("s2_") and spec["modality"] in inputs:
            spec["label"] = (f"Sentinel-2 {spec['modality'].split('_')[1]} (reflectance x "
                             f"10000 as in {os.path.basename(inputs[spec['modality']])}: give "
                             "the same processing level, L1C or L2A)")
    card["extent"] = {"bounds": list(grid.bounds), "crs_wkt": grid.crs_wkt,
                      "cells": [grid.width, grid.height], "cell_m": grid.cell}
    card["training"] = {
        "seed": request.seed, "mode": mode, "epochs": len(history),
        "steps_per_epoch": STEPS_PER_EPOCH, "batch": BATCH, "crop_cells": CROP,
        "optimizer": f"AdamW, lr {LR[SCRATCH if mode == SCRATCH else 'fine-tune']}: epoch 1 "
                     "at that rate, cosine to 0 over the others"
                     + (f", pretrained trunks x{VHR_LR_MULT}" if "vhr" in inputs_used or
                        mode == "so2sat" else ""),
        "loss": ("weighted CE + Dice + Focal (class weights 1/sqrt(count)); with two or more "
                 "inputs: feature consistency 0.1 + triplet 1.0 (margin 0.1), modality "
                 "dropout 0.25; Sentinel-2 decision loss 0.5"),
        "sampling": "class-balanced crops; flips and 90 degree rotations",
        "batch_norm": "trained (statistics of the user's data) in the streams of the given "
                      "inputs; the base model's in the others",
        "validation_share": request.validation_share, "block_m": request.block_m,
        "max_minutes": request.max_minutes, "train_seconds": round(train_seconds, 1),
        "device": device, "hardware": f"{platform.processor() or platform.machine()}, "
                                      f"{os.cpu_count()} CPU threads",
        "torch_version": torch.__version__,
        "command": _command(request, labelset, inputs, mode, base, base_path, len(history))}
    return card


def _command(request, labelset, inputs, mode, base, base_path, epochs):
    """The qgis_process call that repeats this run (files by name: paths are the user's)."""
    base_word = SCRATCH if not base_path else "so2sat" if mode == "so2sat" else base.name
    parts = [f"{m.upper()}={os.path.basename(p)}" for m, p in inputs.items()]
    parts += [f"LABELS={os.path.basename(labelset.source or '') or labelset.name}",
              f"LABEL_FIELD={labelset.field}"]
    if request.class_map_path:
        parts.append(f"CLASS_MAP={os.path.basename(request.class_map_path)}")
    if request.extent:
        parts.append("EXTENT=<the extent in 'extent'>")
    if request.aoi:
        parts.append("AOI=<the area-of-interest layer>")
    parts += [f"BASE_MODEL={base_word}", f"VALIDATION_SHARE={request.validation_share:g}",
              f"BLOCK_SIZE={request.block_m:g}", f"SEED={request.seed}", f"EPOCHS={epochs}"]
    return "qgis_process.bin run urbanfunctions:train -- " + " ".join(parts)
