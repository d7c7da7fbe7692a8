"""The sample-city model's card: the JSON stored in the ONNX file and its Markdown twin."""
import json

from ..core.classes import class_table
from ..core.model_card import SCHEMA, parse_card

NAME = "sample-city-fusion"
VERSION = "1.0.0"
TITLE = "Sample-city fusion baseline (VHR + NTL + Sentinel-2 seasons)"
SUMMARY = ("Demo/test model trained only on synthetic sample cities: shows the workflow with any "
           "subset of VHR, night lights and Sentinel-2 seasons; not for real maps.")
LICENCE = "GPL-2.0-or-later"
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
S2_SEASONS = ("s2_spring", "s2_summer", "s2_autumn", "s2_winter")
MASK_INPUT = "valid"
OUTPUT_NAME = "probabilities"
OUTPUT_GSD = 10.0
SIZE_MULTIPLE = 4
DEFAULT_TILE = 128
DEFAULT_OVERLAP = 32


def input_specs(stats=None):
    """The card's ``inputs``; ``stats`` = {name: (means, stds)}, else 0 / 1 (the stand-in)."""
    specs = [
        {"name": "vhr", "modality": "vhr", "label": "VHR imagery",
         "bands": ["red", "green", "blue"], "dtype": "uint8", "gsd_m": 2.0,
         "resampling": "average", "scale": 1.0 / 255.0, "offset": 0.0, "transform": "none"},
        {"name": "ntl", "modality": "ntl", "label": "Night-time light", "bands": ["radiance"],
         "dtype": "float32", "gsd_m": 40.0, "resampling": "bilinear", "scale": 1.0,
         "offset": 0.0, "transform": "log1p"},
    ]
    for season in S2_SEASONS:
        specs.append({"name": season, "modality": season,
                      "label": "Sentinel-2 " + season.split("_")[1],
                      "bands": list(S2_BANDS), "dtype": "uint16", "gsd_m": 10.0,
                      "resampling": "bilinear", "scale": 1e-4, "offset": 0.0, "transform": "none"})
    for spec in specs:
        n = len(spec["bands"])
        mean, std = (stats or {}).get(spec["name"], ([0.0] * n, [1.0] * n))
        spec["mean"] = [float(v) for v in mean]
        spec["std"] = [float(v) for v in std]
        spec["nodata_fill"] = 0.0  # value fed where the input has no data (after normalisation)
    return specs


def build_card(stats=None, context_cells=24, training=None, metrics=None, architecture=None):
    """The full card dict (validated with ``parse_card``)."""
    card = {
        "schema": SCHEMA,
        "name": NAME,
        "version": VERSION,
        "title": TITLE,
        "summary": SUMMARY,
        "task": "segmentation",
        # a demo model is never picked by default when another model accepts the inputs
        "purpose": "demo",
        "real_data_validation": {
            "status": "simulation_only",
            "summary": "synthetic sample cities only: for demonstrations and tests."},
        "classes": class_table(),
        "inputs": input_specs(stats),
        "mask_input": MASK_INPUT,
        "min_inputs": 1,
        "output": {"name": OUTPUT_NAME, "gsd_m": OUTPUT_GSD, "size_multiple": SIZE_MULTIPLE,
                   "context_cells": int(context_cells), "default_tile": DEFAULT_TILE,
                   "default_overlap": DEFAULT_OVERLAP,
                   "content": "class probabilities [N, n_classes, H, W] (softmax in the graph)"},
        "intended_use": ("Demonstrations, tutorials and automated tests of the Urban Functions "
                         "plugin on the bundled synthetic sample cities. It has never seen real "
                         "imagery: its maps of real places are meaningless."),
        "limitations": ("Synthetic training data only; 10 m output cells; accuracy figures are "
                        "for held-out synthetic cities and say nothing about real data."),
        "architecture": architecture or {},
        "training": training or {},
        "metrics": metrics or {},
        "licence": LICENCE,
        "provenance": ("Synthetic data from plugin/samplecity (our own code); network, training "
                       "and export code in plugin/learning; no third-party data or weights."),
        "authors": "Urban Functions contributors",
        "citation": "Urban Functions QGIS plugin, sample-city fusion baseline model.",
    }
    parse_card(card)
    return card


def card_json(card):
    return json.dumps(card, ensure_ascii=False, separators=(",", ":"))


def _fmt(v):
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _value(v):
    return json.dumps(v) if isinstance(v, (dict, list, tuple)) else str(v)


def real_data_line(card):
    """What the card says about real data, as one Markdown paragraph."""
    info = card.get("real_data_validation") or {}
    status = info.get("status", "unknown")
    if status == "validated":
        return f"**Validated on real data:** {info.get('summary', '')}"
    if status == "simulation_only":
        return f"**Simulation only:** {info.get('summary', '')}"
    return "**Not stated:** the card says nothing about validation on real data."


def markdown_head(card, module, make_target, onnx_file, licence_label="Licence"):
    """The first lines of a Markdown card: title, name, summary, where it comes from, intended
    use, limitations and the class table."""
    lines = [f"# {card['title']}", "",
             f"**Name:** `{card['name']}`  **Version:** {card['version']}  "
             f"**{licence_label}:** {card['licence']}", "",
             f"> {card['summary']}", "",
             f"This file is generated by `python -m plugin.learning.{module}` "
             f"(`make {make_target}`) from the card stored in `{onnx_file}` "
             "(ONNX `metadata_props`, key `model_card`); edit the code, not this file.", "",
             "## Real-data validation", "", real_data_line(card), "",
             "## Intended use", "", card["intended_use"], "",
             "## Limitations", "", card["limitations"], "",
             "## Classes", "", "| Code | Name | Label | Colour |", "|---:|---|---|---|"]
    for c in card["classes"]:
        lines.append(f"| {c['code']} | `{c['name']}` | {c['label']} | `{c['color']}` |")
    return lines


def markdown_inputs(card, statistics_from):
    """The ``## Inputs`` section of a segmentation card: the input table, the mask and the
    normalisation statistics (``statistics_from``: e.g. "training cities")."""
    lines = ["", "## Inputs", "",
             "Any subset works (at least one). The engine resamples each raster onto the grid "
             "of the input and feeds `((transform(raw*scale+offset)) - mean) / std`, 0 where "
             "there is no data.", "",
             "| ONNX input | Modality | Bands | Raw type | Cell (m) | Resampling | Scale | "
             "Transform |", "|---|---|---|---|---:|---|---:|---|"]
    for i in card["inputs"]:
        lines.append(f"| `{i['name']}` | {i['label']} | {', '.join(i['bands'])} | {i['dtype']} | "
                     f"{i['gsd_m']:g} | {i['resampling']} | {i['scale']:g} | {i['transform']} |")
    lines += ["", f"Mask input `{card['mask_input']}`: `[N, {len(card['inputs'])}, H, W]`, 1 where "
              "that modality (in the order above) has data in the output cell.", "",
              f"Normalisation statistics (from the {statistics_from}, after scale and transform):",
              "", "| Input | Mean | Std |", "|---|---|---|"]
    for i in card["inputs"]:
        lines.append(f"| `{i['name']}` | {', '.join(f'{v:.4g}' for v in i['mean'])} | "
                     f"{', '.join(f'{v:.4g}' for v in i['std'])} |")
    return lines


def markdown_output(card):
    """The paragraph on the class-probability output of a segmentation card's ``output``."""
    out = card["output"]
    return (f"`{out['name']}`: class probabilities `[N, {len(card['classes'])}, H, W]` "
            f"(softmax inside the graph) on {out['gsd_m']:g} m cells. Tiles must be multiples "
            f"of {out['size_multiple']} cells. Receptive field radius "
            f"{out['context_cells']} cells; default tile {out['default_tile']} cells with "
            f"{out['default_overlap']} cells overlap.")


def markdown_architecture_and_data(card, images_word="images"):
    """The ``## Architecture`` and ``## Data`` sections (data sources with citations, copies used
    and licences, then the other data keys)."""
    lines = []
    arch = card.get("architecture") or {}
    if arch:
        lines += ["## Architecture", "", arch.get("description", ""), ""]
        for k, v in arch.items():
            if k != "description":
                lines.append(f"- {k.replace('_', ' ')}: {_value(v)}")
        lines.append("")
    data = card.get("data") or {}
    if data:
        lines += ["## Data", ""]
        for s in data.get("sources", []):
            lines.append(f"- **{s['dataset']}** ({s.get('images', '?')} {images_word}; "
                         f"{s['gsd_m']}; {s['imagery']}): {s['citation']}. Copy used: "
                         f"{s['copy_used']}. Licence: {s['licence']}.")
        lines.append("")
        for k, v in data.items():
            if k != "sources":
                lines.append(f"- {k.replace('_', ' ')}: {_value(v)}")
        lines.append("")
    return lines


def card_markdown(card):
    """Human-readable model card (``models/sample_city_fusion.md``) from the same dict."""
    lines = markdown_head(card, "train_sample", "train-sample", "sample_city_fusion.onnx")
    lines += markdown_inputs(card, "training cities")
    lines += ["", "## Output", "", markdown_output(card), ""]
    lines += markdown_architecture_and_data(card)
    tr = card.get("training") or {}
    if tr:
        lines += ["## Training", ""]
        for k, v in tr.items():
            lines.append(f"- {k.replace('_', ' ')}: {_value(v)}")
        lines.append("")
    metrics = card.get("metrics") or {}
    subsets = metrics.get("subsets") or {}
    if subsets:
        names = [c["name"] for c in card["classes"]]
        lines += ["## Validation metrics", "", metrics.get("description", ""), "",
                  "| Inputs | OA | Kappa | Macro F1 | mIoU | " + " | ".join(names) + " |",
                  "|---|---:|---:|---:|---:|" + "---:|" * len(names)]
        for key, m in subsets.items():
            f1 = m["per_class_f1"]
            lines.append(f"| {m.get('label', key)} | {_fmt(m['overall_accuracy'])} | "
                         f"{_fmt(m['kappa'])} | {_fmt(m['macro_f1'])} | {_fmt(m['miou'])} | "
                         + " | ".join(_fmt(f1.get(n)) for n in names) + " |")
        lines.append("")
        for k, v in metrics.items():
            if k not in ("subsets", "description"):
                lines.append(f"- {k.replace('_', ' ')}: {_value(v)}")
        lines.append("")
    lines += ["## Provenance", "", card["provenance"], "",
              "## Citation", "", card["citation"], ""]
    return "\n".join(lines)
