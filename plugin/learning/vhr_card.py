"""The VHR scene model's card: the JSON stored in the ONNX file and its Markdown twin."""
from ..core.classes import class_table
from ..core.model_card import SCHEMA, parse_card
from .card import _fmt, _value, markdown_architecture_and_data, markdown_head

NAME = "vhr-scenes-resnet"
VERSION = "1.0.0"
TITLE = "VHR functional zones (scene ResNet; {names})"
SUMMARY = ("RGB aerial/satellite imagery only: the {side:g} m window ({px} px at {gsd:g} m) "
           "around each {cell:g} m cell is classified into the 8 urban functions; trained from "
           "scratch on {images} real scene images ({names}).")
LICENCE = "GPL-2.0-or-later"
INPUT_NAME = "vhr"
OUTPUT_NAME = "probs"
DEFAULT_TILE = 64

SOURCES = [
    {"dataset": "AID",
     "citation": ("Xia, G.-S., Hu, J., Hu, F., Shi, B., Bai, X., Zhong, Y., Zhang, L., Lu, X. "
                  "AID: A Benchmark Data Set for Performance Evaluation of Aerial Scene "
                  "Classification. IEEE Transactions on Geoscience and Remote Sensing 55(7): "
                  "3965-3981, 2017. doi:10.1109/TGRS.2017.2685945"),
     "imagery": "Google Earth",
     "copy_used": "150x150 px downscaled version (GitHub zlima/testtensor, AID/)",
     "gsd_m": "about 2-32 m at 150 px (originals 600 px at about 0.5-8 m)",
     "licence": ("distributed by the authors for research use, no licence file; Google Earth "
                 "providers' terms apply to the imagery")},
    {"dataset": "UCM",
     "citation": ("Yang, Y., Newsam, S. Bag-of-Visual-Words and Spatial Extensions for Land-Use "
                  "Classification. ACM SIGSPATIAL GIS 2010. doi:10.1145/1869790.1869829"),
     "imagery": "USGS National Map Urban Area Imagery",
     "copy_used": ("GitHub 527760681/Keras-Remote-sensing-image-retrieval, commit a1b8f0c2, "
                   "UCMerced_LandUse/Images"),
     "gsd_m": "0.3 m (1 ft), 256 px",
     "licence": "USGS public-domain imagery; dataset published for research purposes"},
    {"dataset": "RSSCN7",
     "citation": ("Zou, Q., Ni, L., Zhang, T., Wang, Q. Deep Learning Based Feature Selection for "
                  "Remote Sensing Scene Classification. IEEE Geoscience and Remote Sensing "
                  "Letters 12(11): 2321-2325, 2015. https://ieeexplore.ieee.org/document/7272047"),
     "imagery": "Google Earth, several scales",
     "copy_used": "GitHub palewithout/RSSCN7 (resized from 400 to 256 px)",
     "gsd_m": "unknown",
     "licence": ("distributed by the authors for research use, no licence file; Google Earth "
                 "providers' terms apply to the imagery")},
]


def input_spec(mean, std, gsd_m):
    return {"name": INPUT_NAME, "modality": "vhr", "label": "VHR imagery",
            "bands": ["red", "green", "blue"], "dtype": "uint8", "gsd_m": float(gsd_m),
            "resampling": "average", "scale": 1.0 / 255.0, "offset": 0.0, "transform": "none",
            "mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std],
            "onnx_input": INPUT_NAME}


def window(patch_px, stride_px):
    """Patch window (first, last pixel) relative to the cell's upper-left pixel, centred."""
    lo = -((patch_px - stride_px) // 2)
    return [lo, lo + patch_px - 1]


DATASET_NAMES = {"AID": "AID", "UCM": "UC Merced", "RSSCN7": "RSSCN7"}


def trained_sources(data):
    """(datasets, "AID, UC Merced, ..." , images as text) of the sources in ``data`` (the card's
    data section; all three when it does not list them: a model trained with --sources names
    only its own)."""
    listed = (data or {}).get("sources") or []
    datasets = [s["dataset"] for s in listed] or [s["dataset"] for s in SOURCES]
    images = sum(int(s.get("images") or 0) for s in listed)
    names = ", ".join(DATASET_NAMES.get(d, d) for d in datasets)
    return datasets, names, (f"{images:,}" if images else "the")


DEFAULT_MODE = "accurate"


def shared_trunk_spec(config, views, default_mode=DEFAULT_MODE):
    """The card's ``patch.shared_trunk``: the exported graph runs the trunk once per tile
    (:mod:`plugin.core.shared_trunk`); its stride is the stem's times 2 per later stage."""
    stride = int(config["stem_stride"]) * 2 ** (len(config["blocks"]) - 1)
    return {"stride_px": stride, "pool_rows": "pool_rows", "pool_cols": "pool_cols",
            "views": list(views), "default_mode": default_mode,
            "note": ("The trunk runs once over each tile of windows; each cell's window is "
                     "pooled from the shared feature map. Modes: fast (one view), accurate "
                     "(the test-time views of the whole tile), windows (each window alone, as "
                     "on the scene benchmark; slowest). Map-level accuracy of each mode: "
                     "metrics.map_level.modes.")}


def build_card(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), patch_px=64, stride_px=16, gsd_m=2.0,
               training=None, metrics=None, architecture=None, data=None, shared_trunk=None):
    """The full card dict (validated with ``parse_card``). ``shared_trunk`` (see
    :func:`shared_trunk_spec`) defaults to the one ``architecture`` implies."""
    if shared_trunk is None and architecture and architecture.get("graph") == "shared_trunk":
        shared_trunk = shared_trunk_spec(architecture["config"],
                                         architecture.get("test_time_views") or ["identity"])
    cell = stride_px * gsd_m
    side = patch_px * gsd_m
    datasets, names, images = trained_sources(data)
    sources = [s for s in SOURCES if s["dataset"] in datasets]
    card = {
        "schema": SCHEMA,
        "name": NAME,
        "version": VERSION,
        "title": TITLE.format(names=names),
        "summary": SUMMARY.format(side=side, px=patch_px, gsd=gsd_m, cell=cell, names=names,
                                  images=images),
        "task": "patch_classification",
        "classes": class_table(),
        "inputs": [input_spec(mean, std, gsd_m)],
        "mask_input": None,
        "min_inputs": 1,
        "patch": {"input": INPUT_NAME, "patch_px": int(patch_px), "stride_px": int(stride_px),
                  "gsd_m": float(gsd_m), "window_px": window(patch_px, stride_px),
                  "padding": "symmetric",
                  "window_ground_m": side,
                  "note": (f"Each {cell:g} m output cell is classified from the {patch_px} x "
                           f"{patch_px} px window ({side:g} m x {side:g} m at {gsd_m:g} m) "
                           "centred on it; the engine first averages the VHR raster onto the "
                           f"{gsd_m:g} m grid, whatever its own resolution."),
                  **({"shared_trunk": shared_trunk} if shared_trunk else {})},
        "fusion": {"method": "mean_probs"},
        "output": {"name": OUTPUT_NAME, "gsd_m": cell, "default_tile": DEFAULT_TILE,
                   "default_overlap": 0, "context_cells": 0,
                   "content": ("class probabilities [N, n_classes, h, w] for a tile of h x w "
                               "windows (softmax in the graph)" if shared_trunk else
                               "class probabilities [N, n_classes] per patch (softmax in the "
                               "graph)")},
        "intended_use": (
            f"Mapping the dominant urban function of neighbourhoods of {side:g} m and more from "
            "true-colour "
            "VHR imagery (aerial orthophotos or satellite, about 0.3-2 m) when no other input is "
            "available. A first draft for interpretation and validation, not a cadastre."),
        "limitations": (
            f"Scene classifier: one class per {cell:g} m cell from a {side:g} m window, so "
            "boundaries are blurred by about half a window and mixed neighbourhoods get their "
            f"dominant look. Trained on scene-classification benchmarks ({names}: "
            "mostly North American, European and Chinese cities, Google Earth and USGS imagery); "
            "the function of a building is inferred from appearance only (a school or a church "
            "looks like its surroundings), so commercial and public services are the least "
            "reliable classes. Validation figures are for held-out images of the same "
            + {1: "dataset", 2: "two datasets"}.get(len(datasets), "three datasets")
            + "; the cross-source runs show how much accuracy drops on imagery from "
            "another source. RGB only (no NIR); 8-bit input expected."),
        "architecture": architecture or {},
        "training": training or {},
        "data": data or {},
        "metrics": metrics or {},
        "licence": LICENCE,
        "provenance": (
            "Network, training and export code in plugin/learning (train_vhr.py, vhr_model.py, "
            "vhr_data.py); trained from scratch (random initialisation, no ImageNet or other "
            "pretrained weights) on the scene images listed under data.sources, relabelled to "
            "the 8 function classes (mapping in the data folder's README). The images "
            "themselves are not distributed with the plugin; the train/validation split is "
            "(plugin/learning/vhr_split.csv)."),
        "data_licences": {s["dataset"]: s["licence"] for s in sources},
        "authors": "Urban Functions contributors",
        "citation": ("Urban Functions QGIS plugin, VHR scene ResNet model. Training data: "
                     + " ".join(f"[{s['dataset']}] {s['citation']}." for s in sources)),
    }
    card["real_data_validation"] = real_data_validation(metrics or {}, names)
    parse_card(card)
    return card


def _cm_table(cm, names):
    lines = ["| truth \\ predicted | " + " | ".join(names) + " | total |",
             "|---|" + "---:|" * (len(names) + 1)]
    for name, row in zip(names, cm):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + f" | {sum(row)} |")
    return lines


def _scores_row(label, m, names):
    f1 = m["per_class_f1"]
    return (f"| {label} | {m.get('images', m.get('cells', ''))} | {_fmt(m['overall_accuracy'])} | "
            f"{_fmt(m['kappa'])} | {_fmt(m['macro_f1'])} | "
            + " | ".join(_fmt(f1.get(n)) for n in names) + " |")


def card_markdown(card):
    """Human-readable model card (``models/vhr_scenes_resnet.md``) from the same dict."""
    names = [c["name"] for c in card["classes"]]
    inp = card["inputs"][0]
    patch = card["patch"]
    out = card["output"]
    lines = markdown_head(card, "train_vhr", "train-vhr", "vhr_scenes_resnet.onnx",
                          licence_label="Licence (model)")
    lines += ["", "## Input and output", "",
              f"- Input `{inp['name']}`: {inp['label']}, bands {', '.join(inp['bands'])}, "
              f"{inp['dtype']}, averaged by the engine onto a {inp['gsd_m']:g} m grid; fed as "
              f"`(raw * {inp['scale']:.6g} - mean) / std` with mean "
              f"{', '.join(f'{v:.4f}' for v in inp['mean'])} and std "
              f"{', '.join(f'{v:.4f}' for v in inp['std'])}.",
              f"- Patches: {patch['patch_px']} x {patch['patch_px']} px at {patch['gsd_m']:g} m "
              f"({patch['window_ground_m']:g} m on the ground), window pixels "
              f"{patch['window_px'][0]}..{patch['window_px'][1]} around each cell (centred), "
              f"every {patch['stride_px']} px; edges padded symmetrically."]
    shared = patch.get("shared_trunk")
    if shared:
        lines += [f"- Shared trunk: the graph takes a tile of windows (`{inp['name']}` "
                  f"`[N, 3, H, W]`, H and W multiples of {shared['stride_px']} px) and the "
                  f"pooling matrices `{shared['pool_rows']}` and `{shared['pool_cols']}`; the "
                  "trunk runs once per tile and each cell's window is pooled from the shared "
                  f"features. Test-time views ({', '.join(shared['views'])}) are applied by the "
                  f"engine in the accurate and windows modes; default mode: "
                  f"**{shared['default_mode']}**.",
                  f"- Output `{out['name']}`: class probabilities `[N, {len(names)}, h, w]`, "
                  f"one class per {out['gsd_m']:g} m cell.", ""]
    else:
        lines += [f"- Output `{out['name']}`: class probabilities `[N, {len(names)}]` per "
                  f"patch, i.e. one class per {out['gsd_m']:g} m cell.", ""]
    lines += markdown_architecture_and_data(card)
    tr = card.get("training") or {}
    if tr:
        lines += ["## Training", ""]
        for k, v in tr.items():
            if k != "history":
                lines.append(f"- {k.replace('_', ' ')}: {_value(v)}")
        lines.append("")
    metrics = card.get("metrics") or {}
    val = metrics.get("validation")
    if val:
        lines += ["## Validation metrics", "", metrics.get("description", ""), "",
                  "| Images | n | OA | Kappa | Macro F1 | " + " | ".join(names) + " |",
                  "|---|---:|---:|---:|---:|" + "---:|" * len(names),
                  _scores_row("all validation", val, names)]
        for ds, m in (metrics.get("validation_by_dataset") or {}).items():
            lines.append(_scores_row(ds, m, names))
        ctx = metrics.get("validation_in_context")
        if ctx:
            lines += [_scores_row("all validation, in context", ctx, names), "",
                      f"In context: {ctx['description']}"]
        lines += ["", f"mIoU {_fmt(val.get('miou'))}; per class precision / recall:", "",
                  "| Class | Precision | Recall | F1 |", "|---|---:|---:|---:|"]
        for n in names:
            lines.append(f"| {n} | {_fmt(val['per_class_precision'].get(n))} | "
                         f"{_fmt(val['per_class_recall'].get(n))} | "
                         f"{_fmt(val['per_class_f1'].get(n))} |")
        lines += ["", "Confusion matrix (validation images; rows = truth, columns = prediction):",
                  ""] + _cm_table(val["confusion_matrix"], names) + [""]
    cross = metrics.get("cross_source")
    if cross:
        lines += ["## Cross-source generalisation", "", cross.get("description", ""), "",
                  "| Trained on | Tested on | n | OA | Kappa | Macro F1 | " + " | ".join(names)
                  + " |", "|---|---|---:|---:|---:|---:|" + "---:|" * len(names)]
        for key, m in cross["runs"].items():
            f1 = m["per_class_f1"]
            lines.append(f"| {' + '.join(m['trained_on'])} | {m['tested_on']} | {m['images']} | "
                         f"{_fmt(m['overall_accuracy'])} | {_fmt(m['kappa'])} | "
                         f"{_fmt(m['macro_f1'])} | " + " | ".join(_fmt(f1.get(n)) for n in names)
                         + " |")
        lines.append("")
    level = metrics.get("map_level")
    if level:
        lines += ["## Map-level accuracy and scale", "", level.get("description", ""), "",
                  "| Engine pixel | Window | Cells | OA | Kappa | Macro F1 | "
                  + " | ".join(names) + " |", "|---|---|---:|---:|---:|---:|" + "---:|" * len(names)]
        for key, m in level["runs"].items():
            f1 = m["per_class_f1"]
            mark = " (this card)" if abs(m["gsd_m"] - level["chosen_gsd_m"]) < 1e-9 else ""
            lines.append(f"| {key}{mark} | {m['gsd_m'] * (card.get('patch') or {}).get('patch_px', 0):g} m | "
                         f"{m['cells']} | {_fmt(m['overall_accuracy'])} | {_fmt(m['kappa'])} | "
                         f"{_fmt(m['macro_f1'])} | " + " | ".join(_fmt(f1.get(n)) for n in names)
                         + " |")
        lines.append("")
        modes = level.get("modes")
        if modes:
            default = ((card.get("patch") or {}).get("shared_trunk") or {}).get("default_mode")
            lines += ["### Patch modes", "", modes["description"], "",
                      "| Mode | OA | Macro F1 | Same class as windows (labelled / all cells) | "
                      "Classify time | Cells/s |", "|---|---:|---:|---:|---:|---:|"]
            for mode, m in modes["runs"].items():
                mark = " (default)" if mode == default else ""
                lines.append(f"| {mode}{mark} | {_fmt(m['overall_accuracy'])} | "
                             f"{_fmt(m['macro_f1'])} | {m['same_as_windows_labelled']:.1%} / "
                             f"{m['same_as_windows_all']:.1%} | {m['seconds']:.1f} s | "
                             f"{m['cells_per_s']:,.0f} |")
            lines.append("")
    for k, v in metrics.items():
        if k not in ("validation", "validation_by_dataset", "validation_in_context",
                     "cross_source", "description", "map_level"):
            lines.append(f"- {k.replace('_', ' ')}: {_value(v)}")
    lines += ["", "## Provenance", "", card["provenance"], "",
              "## Data licences", ""]
    for k, v in card["data_licences"].items():
        lines.append(f"- {k}: {v}")
    lines += ["", "## Citation", "", card["citation"], ""]
    return "\n".join(lines)


def real_data_validation(metrics, names="AID, UC Merced, RSSCN7"):
    """The card's statement on real data, from the measured validation metrics."""
    val = metrics.get("validation") or {}
    runs = (metrics.get("cross_source") or {}).get("runs") or {}
    cross = [r.get("overall_accuracy") for r in runs.values() if r.get("overall_accuracy")]
    summary = f"real scene images ({names})"
    if val:
        summary = (f"{val.get('images', '?')} held-out real scene images ({names}): "
                   f"OA {val['overall_accuracy']:.3f}, macro F1 {val['macro_f1']:.3f}")
    level = metrics.get("map_level") or {}
    chosen = (level.get("runs") or {}).get(f"{level.get('chosen_gsd_m', 0):g} m")
    if chosen:
        summary += (f"; as a map of {level['mosaic_scenes']} UC Merced validation scenes at "
                    f"their true 0.3 m: OA {chosen['overall_accuracy']:.3f}")
    if cross:
        summary += (f"; on an image source it never saw: OA {min(cross):.2f}-{max(cross):.2f} "
                    "(expect lower accuracy on your city; adapt it to your labels)")
    return {"status": "validated", "summary": summary,
            "data": f"held-out split of the {names} scene images"
                    + ("; cross-source runs" if cross else ""),
            "figures": {"validation_overall_accuracy": val.get("overall_accuracy"),
                        "map_overall_accuracy": chosen["overall_accuracy"] if chosen else None,
                        "validation_macro_f1": val.get("macro_f1"),
                        "cross_source_overall_accuracy": cross}}

