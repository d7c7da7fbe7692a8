"""The report and the Markdown card of a model trained on the user's labels (no torch, no qgis).

The HTML follows the accuracy report's style (:mod:`plugin.validation.report`): one file,
inline CSS and SVG, nothing fetched.
"""
import datetime
import json

from ..core.classes import FUNCTION_CLASSES
from ..validation.report import CSS, _e, _heat
from .card import real_data_line

LABELS = [c.label for c in FUNCTION_CLASSES]
COLORS = [c.color for c in FUNCTION_CLASSES]
KEYS = [c.key for c in FUNCTION_CLASSES]
RUNS = (("validation", "Trained model"), ("random_forest", "RandomForest baseline"),
        ("untrained_base", "Untrained base model"))


def _runs(metrics):
    out = [("Trained model", metrics["validation"])]
    for key, label in RUNS[1:]:
        if key in metrics.get("comparisons", {}):
            run = metrics["comparisons"][key]
            # which model was the untrained start: the base, or So2Sat as imported
            out.append((f"{label}: {run['model']}" if run.get("model") else label, run))
    return out


def _better_than_trained(metrics):
    """The comparisons that score higher than the trained model on the held-out cells."""
    trained = metrics["validation"]["overall_accuracy"]
    return [label for label, s in _runs(metrics)[1:] if s["overall_accuracy"] > trained]


def _area_words(card):
    """The training area: bounds and CRS (its EPSG code when it has one)."""
    from osgeo import osr
    ext = card["extent"]
    srs = osr.SpatialReference()
    crs = "the card's CRS"
    if srs.ImportFromWkt(ext["crs_wkt"]) == 0:
        code = srs.GetAuthorityCode(None)
        crs = (f"{srs.GetAuthorityName(None)}:{code}" if code else srs.GetName()) or crs
    b = ext["bounds"]
    return (f"{b[0]:.1f}, {b[1]:.1f} to {b[2]:.1f}, {b[3]:.1f} ({crs}); "
            f"{ext['cells'][0]} x {ext['cells'][1]} cells of {ext['cell_m']:g} m")


def _epochs_words(n):
    return f"{n} epoch{'' if n == 1 else 's'}"


def confusion_svg(cm, title="Held-out cells"):
    """Heat map of a confusion matrix (rows: label, columns: prediction), counts in cells."""
    keep = [i for i in range(len(cm)) if sum(cm[i]) or sum(r[i] for r in cm)]
    k, cell, left, top = len(keep), 56, 190, 150
    w, h = left + cell * k + 20, top + cell * k + 20
    vmax = max([cm[i][j] for i in keep for j in keep] + [1])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="11" role="img" aria-label="{_e(title)}">',
           f'<text x="{left + cell * k / 2}" y="14" text-anchor="middle" '
           'font-weight="bold">Predicted class</text>',
           f'<text x="12" y="{top + cell * k / 2}" text-anchor="middle" font-weight="bold" '
           f'transform="rotate(-90 12 {top + cell * k / 2})">Label</text>']
    for j, c in enumerate(keep):
        x = left + j * cell + cell / 2
        out.append(f'<text x="{x}" y="{top - 8}" transform="rotate(-45 {x} {top - 8})">'
                   f'{_e(LABELS[c])}</text>')
    for i, r in enumerate(keep):
        y = top + i * cell
        out.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end">'
                   f'{_e(LABELS[r])}</text>')
        for j, c in enumerate(keep):
            v = cm[r][c]
            fill = _heat(v, vmax)
            tc = "#fff" if (v / vmax) ** 0.5 > 0.55 else "#000"
            out.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell}" height="{cell}" '
                       f'fill="{fill}" stroke="{"#333" if r == c else "#ccc"}"/>')
            out.append(f'<text x="{left + j * cell + cell / 2}" y="{y + cell / 2 + 4}" '
                       f'text-anchor="middle" fill="{tc}">{v}</text>')
    out.append("</svg>")
    return "\n".join(out)


def f1_bars_svg(runs):
    """Per-class F1 of each run, grouped bars (classes with held-out labels only)."""
    classes = [k for k in KEYS if runs[0][1]["per_class_f1"].get(k) is not None]
    palette = ("#08306b", "#fd8d3c", "#969696")
    bar, gap, left, top = 14, 18, 190, 30
    group = bar * len(runs) + gap
    w, h = left + 320 + 60, top + group * len(classes) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           'font-family="sans-serif" font-size="11" role="img" aria-label="F1 per class">']
    for n, (label, _) in enumerate(runs):
        out.append(f'<rect x="{left + 110 * n}" y="6" width="10" height="10" '
                   f'fill="{palette[n]}"/><text x="{left + 110 * n + 14}" y="15">{_e(label)}</text>')
    for i, k in enumerate(classes):
        y0 = top + i * group
        out.append(f'<text x="{left - 6}" y="{y0 + bar * len(runs) / 2 + 4}" '
                   f'text-anchor="end">{_e(LABELS[KEYS.index(k)])}</text>')
        for n, (_, m) in enumerate(runs):
            v = m["per_class_f1"].get(k) or 0.0
            out.append(f'<rect x="{left}" y="{y0 + n * bar}" width="{320 * v:.1f}" '
                       f'height="{bar - 2}" fill="{palette[n]}"/>')
            out.append(f'<text x="{left + 320 * v + 4:.1f}" y="{y0 + n * bar + bar - 4}">'
                       f'{v:.2f}</text>')
    for t in (0, 0.5, 1.0):
        x = left + 320 * t
        out.append(f'<line x1="{x}" y1="{h - 34}" x2="{x}" y2="{h - 30}" stroke="#333"/>'
                   f'<text x="{x}" y="{h - 18}" text-anchor="middle">{t:g}</text>')
    out.append(f'<text x="{left + 160}" y="{h - 4}" text-anchor="middle">F1</text></svg>')
    return "\n".join(out)


def report_html(card):
    m = card["metrics"]
    runs = _runs(m)
    lab = card["labels"]
    tr = card["training"]
    rows = [("Model", f"{card['name']} ({card['title']})"),
            ("Base", f"{card['base_model']['name']} {card['base_model']['version']} "
                     f"({card['base_model']['mode']})"),
            ("Inputs", ", ".join(f"{k}: {v}" for k, v in card["inputs_used"].items())),
            ("Labels", f"{lab['layer']} ({lab['features']} {lab['kind']}, field "
                       f"{lab['field']}, sha256 {lab['sha256'][:16]}...)"),
            ("Class map", card["class_map"]["file"]),
            ("Area", _area_words(card)),
            ("Training", f"{_epochs_words(tr['epochs'])}, seed {tr['seed']}, "
                         f"{tr['train_seconds']:.0f} s "
                         f"on {tr['device']} ({tr['hardware']})"),
            ("Created", datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))]
    parts = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>Training report: {_e(card['name'])}</title><style>{CSS}</style></head>"
             f"<body><h1>Training report: {_e(card['name'])}</h1>",
             "<table>" + "".join(f'<tr><th class="l">{_e(k)}</th><td class="l">{_e(v)}</td></tr>'
                                 for k, v in rows) + "</table>",
             f"<p>{_e(m['description'])}</p>",
             "<h2>Held-out blocks</h2><table><tr><th class=\"l\">Model</th><th>Overall "
             "accuracy</th><th>Macro F1</th><th>Kappa</th><th>Cells</th></tr>"]
    for label, s in runs:
        parts.append(f'<tr><td class="l">{_e(label)}</td><td>{s["overall_accuracy"]:.3f}</td>'
                     f'<td>{s["macro_f1"]:.3f}</td><td>{s["kappa"]:.3f}</td>'
                     f'<td>{s["cells"]}</td></tr>')
    parts.append("</table>")
    worse = _better_than_trained(m)
    if worse:
        parts.append('<div class="warn"><b>The trained model does not hold up</b>: '
                     f'{_e(", ".join(worse))} scores higher on the same held-out cells, so '
                     'classify does not pick it by default.</div>')
    parts += [f'<div class="warn">{_e(w)}</div>' for w in card.get("warnings") or ()]
    parts.append(inference_modes_html(card))
    parts.append(input_check_html(card))
    parts.append("<p class=\"muted\">These cells are labels, not a probability sample: check "
                 "the map with new sampling points (Create validation points, Assess map "
                 "accuracy) before trusting it.</p>")
    parts.append("<h2>Confusion matrix of the trained model</h2>")
    parts.append(confusion_svg(m["validation"]["confusion_matrix"]))
    parts.append("<h2>F1 per class</h2>")
    parts.append(f1_bars_svg(runs))
    parts.append("<h2>Labels used</h2><table><tr><th class=\"l\">Class</th><th>Features</th>"
                 "<th>Labelled cells</th></tr>")
    for i, k in enumerate(KEYS):
        parts.append(f'<tr><td class="l"><span class="sw" style="background:{COLORS[i]}">'
                     f'</span> {_e(LABELS[i])}</td><td>{lab["features_by_class"].get(k, 0)}</td>'
                     f'<td>{lab["cells_by_class"].get(k, 0)}</td></tr>')
    parts.append("</table>")
    sp = m["split"]
    held = (f"{sp['validation_blocks']} of the {sp['blocks_with_labels']} given rectangles"
            if sp.get("held_out") == "given rectangles" else
            f"{sp['validation_blocks']} of {sp['blocks_with_labels']} blocks")
    parts.append(f"<p>Spatial hold-out: {held}; {sp['training_cells']} training and "
                 f"{sp['validation_cells']} validation cells; {sp['cells_dropped_by_buffer']} cells in the "
                 f"{sp['buffer_cells']}-cell buffer not used.</p>")
    parts.append("<h2>Epochs</h2><table><tr><th>Epoch</th><th>Loss</th><th>Held-out OA</th>"
                 "<th>Held-out macro F1</th><th>Seconds</th></tr>")
    for e in m["history"]:
        parts.append(f"<tr><td>{e['epoch']}</td><td>{e['loss']:.3f}</td>"
                     f"<td>{e['validation_overall_accuracy']:.3f}</td>"
                     f"<td>{e['validation_macro_f1']:.3f}</td><td>{e['seconds']:.0f}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


MODE_WORDS = {"accurate": "Accurate: the four test-time views averaged", "fast": "Fast: one view"}


def _mode_label(card, mode):
    default = (card.get("output") or {}).get("default_mode")
    return MODE_WORDS.get(mode, mode) + (" (classify's default)" if mode == default else "")


def inference_modes_html(card):
    """The trained model's held-out scores in each inference mode (core.inference_modes)."""
    modes = card["metrics"].get("by_inference_mode")
    if not modes:
        return ""
    rows = "".join(f'<tr><td class="l">{_e(_mode_label(card, k))}</td>'
                   f'<td>{v["overall_accuracy"]:.3f}</td><td>{v["macro_f1"]:.3f}</td></tr>'
                   for k, v in modes.items())
    return ("<h2>Inference modes on the held-out blocks</h2><table><tr><th class=\"l\">Mode"
            f"</th><th>Overall accuracy</th><th>Macro F1</th></tr>{rows}</table>")


def input_check_html(card):
    """The held-out OA with all inputs and with each alone, and what classify leaves out."""
    check = card.get("input_check")
    if not check:
        return ""
    rows = "".join(f'<tr><td class="l">{_e("All inputs" if k == "all" else k + " alone")}</td>'
                   f"<td>{v:.3f}</td></tr>" for k, v in check.items())
    out = ("<h2>Each input on the held-out blocks</h2><table><tr><th class=\"l\">Inputs</th>"
           f"<th>Overall accuracy</th></tr>{rows}</table>")
    if card.get("ignored_inputs"):
        out += ('<div class="warn">classify leaves out '
                f'{_e(", ".join(card["ignored_inputs"]))} with this model: the held-out blocks '
                "scored better without it.</div>")
    return out


def card_markdown(card):
    m = card["metrics"]
    lines = [f"# {card['title']}", "", f"**Name:** `{card['name']}`  **Trained on:** "
             f"{card['trained_on']}", "", f"> {card['summary']}", "",
             "## Real-data validation", "", real_data_line(card), ""]
    worse = _better_than_trained(m)
    if worse:
        lines += [f"**Does not hold up:** {', '.join(worse)} scores higher on the same held-out "
                  "cells, so classify does not pick this model by default.", ""]
    if card.get("warnings"):
        lines += ["## Warnings of the training run", ""]
        lines += [f"- {w}" for w in card["warnings"]] + [""]
    lines += ["## Area", "", f"Trained over {_area_words(card)}.", "",
              "## Held-out blocks", "", m["description"], "",
              "| Model | OA | Macro F1 | Kappa | " + " | ".join(LABELS) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(LABELS)]
    for label, s in _runs(m):
        f1 = [s["per_class_f1"].get(k) for k in KEYS]
        lines.append(f"| {label} | {s['overall_accuracy']:.3f} | {s['macro_f1']:.3f} | "
                     f"{s['kappa']:.3f} | " + " | ".join("" if v is None else f"{v:.3f}"
                                                        for v in f1) + " |")
    if m.get("by_inference_mode"):
        lines += ["", "## Inference modes on the held-out blocks", "",
                  "| Mode | OA | Macro F1 |", "|---|---:|---:|"]
        lines += [f"| {_mode_label(card, k)} | {v['overall_accuracy']:.3f} | "
                  f"{v['macro_f1']:.3f} |" for k, v in m["by_inference_mode"].items()]
    if card.get("input_check"):
        lines += ["", "## Each input on the held-out blocks", "",
                  "| Inputs | OA |", "|---|---:|"]
        lines += [f"| {'All inputs' if k == 'all' else k + ' alone'} | {v:.3f} |"
                  for k, v in card["input_check"].items()]
        if card.get("ignored_inputs"):
            lines += ["", f"classify leaves out {', '.join(card['ignored_inputs'])}: the "
                      "held-out blocks scored better without it."]
    lines += ["", "## Limitations", "", card["limitations"], "",
              "## Base model", "", "```json", json.dumps(card["base_model"], indent=1), "```", "",
              "## Labels", "", "```json", json.dumps(card["labels"], indent=1), "```", "",
              "## Training", "", "```json", json.dumps(card["training"], indent=1), "```", ""]
    return "\n".join(lines)
