"""The fusion model's card: the JSON stored in the ONNX file and its Markdown twin.

``build_card(stats, training, metrics, architecture, data)`` gives the card of
:class:`~.net.UrbanFusionNet` as exported by :mod:`.export` (inputs in ``net.MODALITY_ORDER`` plus
the mask ``valid``; outputs ``probs``, ``built_up`` and ``gates``). The raw units of the inputs
are the ones :mod:`.scenes` produces, so the engine feeds a user's rasters exactly as the network
saw its training scenes: ``((transform(raw * scale + offset)) - mean) / std``.
"""
from ...core.classes import class_table
from ...core.model_card import SCHEMA, parse_card
from ..card import (_fmt, _value, markdown_architecture_and_data, markdown_head, markdown_inputs,
                    markdown_output)
from ..vhr_card import SOURCES

NAME = "urban-fusion"
VERSION = "0.2.0"
TITLE = ("Urban fusion network (VHR + night-time light + Sentinel-2 seasons + temporal "
         "signature), trained on generated scenes")
SUMMARY = ("Trained only on generated scenes: real VHR scene images (AID, UC Merced, RSSCN7) "
           "painted onto synthetic city layouts, with simulated night-time light, Sentinel-2 and "
           "monthly temporal signature; any subset of the inputs. Not validated on real "
           "multi-sensor data.")
LICENCE = "GPL-2.0-or-later"
MASK_INPUT = "valid"
OUTPUT_NAME = "probs"
OUTPUT_GSD = 10.0
SIZE_MULTIPLE = 8   # the VHR trunk's 16 m grid is whole in a tile of 8 cells (4: patchify)
DEFAULT_TILE = 128
MIN_OVERLAP = 32
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
S2_SEASONS = ("s2_spring", "s2_summer", "s2_autumn", "s2_winter")
MONTHS = tuple(f"m{m:02d}" for m in range(1, 13))
GATE_BANDS = ("VHR", "Night-time light", "Sentinel-2", "Temporal signature")
DOC = "docs/fusion_training_data.md"
# the input subsets the pipeline scores (key -> (label, present modality groups))
SUBSET_LABELS = {
    "all": "All inputs",
    "vhr_only": "VHR only",
    "ntl_only": "NTL only",
    "s2_only": "S2 only (4 seasons)",
    "temporal_only": "Temporal only",
    "all_but_vhr": "All but VHR",
    "all_but_ntl": "All but NTL",
    "all_but_s2": "All but S2",
    "all_but_temporal": "All but temporal",
    "vhr_ntl": "VHR + NTL",
}
ABLATION_TITLES = {
    "concat": "ablation: concatenation instead of gated fusion",
    "no_align": "ablation: no cross-modal NTL alignment",
    "no_aux": "ablation: no feature-consistency / triplet losses",
    "feature_s2": "ablation: feature-level instead of decision-level Sentinel-2 seasons",
    "no_vhr_init": "ablation: VHR trunk trained from scratch",
}


def input_specs(stats=None, months=MONTHS):
    """The card's ``inputs`` in ``net.MODALITY_ORDER``; ``stats`` = {name: (means, stds)} after
    scale and transform (else 0 / 1, a stand-in)."""
    specs = [
        {"name": "vhr", "modality": "vhr", "label": "VHR imagery (RGB)",
         "bands": ["red", "green", "blue"], "dtype": "uint8", "gsd_m": 2.0,
         "resampling": "average", "scale": 1.0 / 255.0, "offset": 0.0, "transform": "none"},
        {"name": "ntl", "modality": "ntl", "label": "Night-time light (radiance, nW/cm2/sr)",
         "bands": ["radiance"], "dtype": "float32", "gsd_m": 40.0, "resampling": "bilinear",
         "scale": 1.0, "offset": 0.0, "transform": "log1p"},
    ]
    for season in S2_SEASONS:
        specs.append({"name": season, "modality": season,
                      "label": f"Sentinel-2 {season.split('_')[1]} (surface reflectance x 10000)",
                      "bands": list(S2_BANDS), "dtype": "uint16", "gsd_m": 10.0,
                      "resampling": "bilinear", "scale": 1e-4, "offset": 0.0,
                      "transform": "none"})
    specs.append({"name": "temporal", "modality": "temporal",
                  "label": ("Temporal signature: monthly night-time light, Jan..Dec "
                            "(nW/cm2/sr, one band per month)"),
                  "bands": list(months), "dtype": "float32", "gsd_m": 40.0,
                  "resampling": "bilinear", "scale": 1.0, "offset": 0.0, "transform": "log1p"})
    for spec in specs:
        n = len(spec["bands"])
        mean, std = (stats or {}).get(spec["name"], ([0.0] * n, [1.0] * n))
        spec["mean"] = [round(float(v), 6) for v in mean]
        spec["std"] = [round(float(v), 6) for v in std]
        spec["nodata_fill"] = 0.0  # value fed where the input has no data (after normalisation)
    return specs


def default_overlap(context_cells):
    """Overlap of the default tiling: at least the receptive radius, a multiple of 4."""
    need = max(MIN_OVERLAP, int(context_cells))
    return -(-need // SIZE_MULTIPLE) * SIZE_MULTIPLE


def derived_outputs():
    return [
        {"name": "built_up", "kind": "graph_output", "output": "built_up",
         "label": "Built-up fraction (estimated)", "bands": ["Built-up fraction"],
         "style": "fraction", "optional": False,
         "description": ("Estimated share of each 10 m cell covered by roofs or sealed surfaces "
                         "(0-1), from the network's built-up head. Trained on the generated "
                         "layouts' materials, not on a real built-up product.")},
        {"name": "gates", "kind": "graph_output", "output": "gates",
         "label": "Input weights (why this class)", "bands": list(GATE_BANDS),
         "style": "weights", "optional": True,
         "description": ("Gate weight of each input group in the fused feature of each cell "
                         "(sum 1 over the inputs present, 0 for an absent input): how much each "
                         "input drove the cell's class. Weights of the fusion, not a causal "
                         "attribution.")},
    ]


def build_card(stats=None, training=None, metrics=None, architecture=None, data=None,
               context_cells=32, ablation=None, months=MONTHS, size_multiple=SIZE_MULTIPLE):
    """The full card dict (validated with ``parse_card``). ``ablation``: a key of
    :data:`ABLATION_TITLES` for the ablation runs (another name and title)."""
    name, title = NAME, TITLE
    if ablation:
        name = f"{NAME}-{ablation.replace('_', '-')}"
        title = f"{TITLE} ({ABLATION_TITLES[ablation]})"
    card = {
        "schema": SCHEMA,
        "name": name,
        "version": VERSION,
        "title": title,
        "summary": SUMMARY,
        "task": "segmentation",
        "classes": class_table(),
        "inputs": input_specs(stats, months),
        "mask_input": MASK_INPUT,
        "min_inputs": 1,
        "output": {"name": OUTPUT_NAME, "gsd_m": OUTPUT_GSD, "size_multiple": int(size_multiple),
                   "context_cells": int(context_cells), "default_tile": DEFAULT_TILE,
                   "default_overlap": default_overlap(context_cells),
                   "content": "class probabilities [N, n_classes, H, W] (softmax in the graph)"},
        "derived_outputs": derived_outputs(),
        "intended_use": (
            "Experiments and demonstrations of multi-sensor urban-function mapping with any "
            "subset of VHR RGB imagery (2 m), night-time light (40 m), Sentinel-2 seasonal "
            "composites (10 m) and a 12-month night-light signature (40 m), and of the "
            "built-up-fraction and input-weight outputs. A starting point for fine-tuning on "
            "real labelled data, not a map product."),
        "limitations": (
            "Trained and validated on generated scenes only (see " + DOC + "): the city "
            "layouts come from our synthetic generator; only the VHR pixels inside zones are "
            "real imagery (one scene image per zone, mirror-tiled, scaled to 100-150 m, with "
            "seams between zones); streets and roads are rendered; night-time light, "
            "Sentinel-2 and the temporal signature are simulated from the layout (class "
            "radiance table, material spectra, invented monthly patterns), co-registered by "
            "construction apart from a simulated NTL shift of up to 80 m, cloud-free. The "
            "validation figures are within-simulation scores (unseen layouts and unseen scene "
            "images, same simulator); they say nothing about accuracy on real NTL, "
            "Sentinel-2 or temporal data, and real sensors will differ in calibration "
            "(e.g. NTL radiance scale), noise and misregistration. The built-up fraction is "
            "learnt from the layouts' materials, which the real VHR texture inside a zone "
            "does not follow. Gate weights show what the fusion used, not why. 10 m output "
            "cells."),
        "real_data_validation": {
            "status": "simulation_only",
            "summary": ("trained and validated on generated scenes (simulated night light, "
                        "Sentinel-2 and temporal signature); never picked by default for real "
                        "layers. Fine-tune it on your labels (Train a model on your labels).")},
        "architecture": architecture or {},
        "training": training or {},
        "data": data or {},
        "metrics": metrics or {},
        "licence": LICENCE,
        "provenance": (
            "Network, losses, training and export code in plugin/learning/fusion (net.py, "
            "losses.py, train.py, export.py). " + (
                "The VHR trunk starts from our VHR scene classifier "
                f"({(architecture or {})['vhr_init']['file']}, trained by make train-vhr on "
                "the train split of the same scene images); everything else starts from a "
                "random initialisation. "
                if (architecture or {}).get("vhr_init") else
                "Trained from scratch (random initialisation, no pretrained weights). ") +
            "Training and validation scenes are made by "
            "plugin/learning/fusion/scenes.py: sample-city layouts (plugin/samplecity, our own "
            "code), real VHR scene images of the AID, UC Merced and RSSCN7 datasets "
            "(relabelled to the 8 classes; train / validation images as in "
            "plugin/learning/vhr_split.csv), simulated night-time light, Sentinel-2 and "
            "temporal signature. The scene images are not distributed with the plugin."),
        "data_licences": {s["dataset"]: s["licence"] for s in SOURCES},
        "authors": "Urban Functions contributors",
        "citation": ("Urban Functions QGIS plugin, urban fusion network (generated-scene "
                     "training). Scene images: "
                     + " ".join(f"[{s['dataset']}] {s['citation']}." for s in SOURCES)),
    }
    parse_card(card)
    return card


def _metrics_table(subsets, names):
    lines = ["| Inputs | OA | mIoU | Macro F1 | Kappa | Built-up MAE | " + " | ".join(names)
             + " |", "|---|---:|---:|---:|---:|---:|" + "---:|" * len(names)]
    for key, m in subsets.items():
        f1 = m["per_class_f1"]
        lines.append(f"| {m.get('label', key)} | {_fmt(m['overall_accuracy'])} | "
                     f"{_fmt(m['miou'])} | {_fmt(m['macro_f1'])} | {_fmt(m['kappa'])} | "
                     f"{_fmt(m.get('built_up_mae'))} | "
                     + " | ".join(_fmt(f1.get(n)) for n in names) + " |")
    return lines


def card_markdown(card):
    """Human-readable model card (``models/urban_fusion.md``) from the same dict."""
    names = [c["name"] for c in card["classes"]]
    tr = card.get("training") or {}
    onnx_file = tr.get("onnx_file", "urban_fusion.onnx")
    lines = markdown_head(card, "fusion.train", "train-fusion", onnx_file)
    lines += markdown_inputs(card, "training scenes")
    lines += ["", "## Outputs", "", markdown_output(card), ""]
    for d in card.get("derived_outputs") or []:
        opt = " (optional)" if d.get("optional") else ""
        lines.append(f"- `{d['name']}`{opt}: {d['label']}; ONNX output `{d['output']}`, bands "
                     f"{', '.join(d['bands'])}, style {d['style']}. {d.get('description', '')}")
    lines.append("")
    lines += markdown_architecture_and_data(card, images_word="images used")
    if tr:
        lines += ["## Training", ""]
        for k, v in tr.items():
            if k not in ("history", "onnx_file"):
                lines.append(f"- {k.replace('_', ' ')}: {_value(v)}")
        lines.append("")
    metrics = card.get("metrics") or {}
    subsets = metrics.get("subsets") or {}
    if subsets:
        lines += ["## Validation metrics", "", metrics.get("description", ""), ""]
        lines += _metrics_table(subsets, names) + [""]
        mis = metrics.get("ntl_misregistration") or {}
        if mis:
            lines += ["NTL mis-registration test: the same validation scenes with the night-time "
                      "light shifted by exactly 0 or 2 pixels of 40 m (instead of the random "
                      "0-2 pixel shift of training):", "",
                      "| NTL shift | Inputs | OA | mIoU | Macro F1 |", "|---|---|---:|---:|---:|"]
            for shift, res in mis.items():
                for m in res.values():
                    lines.append(f"| {shift} | {m.get('label')} | {_fmt(m['overall_accuracy'])}"
                                 f" | {_fmt(m['miou'])} | {_fmt(m['macro_f1'])} |")
            lines.append("")
        for k, v in metrics.items():
            if k not in ("subsets", "description", "ntl_misregistration"):
                lines.append(f"- {k.replace('_', ' ')}: {_value(v)}")
        lines.append("")
    lines += ["## Provenance", "", card["provenance"], "", "## Data licences", ""]
    for k, v in card["data_licences"].items():
        lines.append(f"- {k}: {v}")
    lines += ["", "## Citation", "", card["citation"], ""]
    return "\n".join(lines)
