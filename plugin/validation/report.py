"""Accuracy report: one self-contained HTML file (inline CSS and SVG, nothing fetched), plus CSV
and JSON holding every number of the assessment.

CSV layout (long format, one number per row)::

    section,map_code,map_label,reference_code,reference_label,quantity,value

sections: ``overall``, ``strata``, ``error_matrix_counts``, ``area_proportions``, ``users``,
``producers``, ``areas``, ``not_design_based``.
"""
import csv
import datetime
import html
import io
import json
import math
import os

from .accuracy import NOT_DESIGN_BASED


def _f(v, digits=3, pct=False):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "&ndash;"
    if pct:
        return f"{100 * v:.{max(0, digits - 2)}f}&nbsp;%"
    return f"{v:,.{digits}f}"


def _pm(est, digits=3, pct=False, scale=1.0):
    if est is None or not _finite(est.value):
        return "&ndash;"
    v = est.value * scale
    hw = est.half_width * scale
    if pct:
        return f"{100 * v:.1f}&nbsp;&plusmn;&nbsp;{100 * hw:.1f}&nbsp;%" if _finite(hw) \
            else f"{100 * v:.1f}&nbsp;%"
    return f"{v:,.{digits}f}&nbsp;&plusmn;&nbsp;{hw:,.{digits}f}" if _finite(hw) \
        else f"{v:,.{digits}f}"


def _finite(v):
    return v is not None and math.isfinite(v)


def _e(s):
    return html.escape(str(s), quote=True)


def _text_color(hex_color):
    h = hex_color.lstrip("#")
    try:
        r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    except ValueError:
        return "#000"
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff"


def _heat(v, vmax):
    """White to dark blue; square-root scale so small cells stay visible."""
    t = 0.0 if vmax <= 0 else math.sqrt(max(v, 0.0) / vmax)
    r = int(round(255 + t * (8 - 255)))
    g = int(round(255 + t * (48 - 255)))
    b = int(round(255 + t * (107 - 255)))
    return f"#{r:02x}{g:02x}{b:02x}"


def matrix_svg(a):
    """Heat map of the estimated area proportions; each cell shows n_ij and p^_ij."""
    k = len(a.codes)
    longest = max([len(a.label(c)) for c in a.codes] + [6])
    text_w = 6.3 * longest  # rough width of the longest label at font size 11
    cell = 64
    left = int(40 + text_w)
    top = int(40 + 0.71 * text_w)
    w = int(left + cell * (k + 1) + 0.71 * text_w)
    h = top + cell * (k + 1) + 10
    vmax = float(a.proportions.max()) if a.proportions.size else 0.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11" role="img" '
           'aria-label="Error matrix heat map">']
    out.append(f'<text x="{left + cell * k / 2}" y="16" text-anchor="middle" font-weight="bold">'
               'Reference class</text>')
    out.append(f'<text x="14" y="{top + cell * k / 2}" text-anchor="middle" font-weight="bold" '
               f'transform="rotate(-90 14 {top + cell * k / 2})">Map class</text>')
    for j, c in enumerate(a.codes):
        x = left + j * cell + cell / 2
        out.append(f'<text x="{x}" y="{top - 8}" transform="rotate(-45 {x} {top - 8})">'
                   f'{_e(a.label(c))}</text>')
    out.append(f'<text x="{left + k * cell + cell / 2}" y="{top - 8}" text-anchor="middle" '
               'font-style="italic">total</text>')
    for i, ci in enumerate(a.codes):
        y = top + i * cell
        out.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end">'
                   f'{_e(a.label(ci))}</text>')
        for j, cj in enumerate(a.codes):
            x = left + j * cell
            p = float(a.proportions[i, j])
            fill = _heat(p, vmax)
            tc = "#fff" if vmax > 0 and math.sqrt(p / vmax) > 0.55 else "#000"
            stroke = "#333" if i == j else "#ccc"
            out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                       f'stroke="{stroke}"><title>map {_e(a.label(ci))}, reference '
                       f'{_e(a.label(cj))}: n = {int(a.counts[i, j])}, p = {p:.5f}</title></rect>')
            out.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 - 2}" text-anchor="middle" '
                       f'fill="{tc}" font-weight="bold">{int(a.counts[i, j])}</text>')
            out.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 13}" text-anchor="middle" '
                       f'fill="{tc}" font-size="9">{100 * p:.2f}%</text>')
        out.append(f'<text x="{left + k * cell + cell / 2}" y="{y + cell / 2 + 4}" '
                   f'text-anchor="middle" font-style="italic">{int(a.counts[i].sum())}</text>')
    yb = top + k * cell
    for j in range(k):
        out.append(f'<text x="{left + j * cell + cell / 2}" y="{yb + cell / 2 - 2}" '
                   f'text-anchor="middle" font-style="italic">{int(a.counts[:, j].sum())}</text>')
        out.append(f'<text x="{left + j * cell + cell / 2}" y="{yb + cell / 2 + 13}" '
                   f'text-anchor="middle" font-size="9" font-style="italic">'
                   f'{100 * float(a.proportions[:, j].sum()):.2f}%</text>')
    out.append(f'<text x="{left + k * cell + cell / 2}" y="{yb + cell / 2 + 4}" '
               f'text-anchor="middle" font-weight="bold">{int(a.counts.sum())}</text>')
    out.append("</svg>")
    return "\n".join(out)


def area_chart_svg(a):
    """Grouped bars: mapped vs estimated area (ha, or % of the map), with CI error bars."""
    k = len(a.codes)
    has_area = a.total_area_m2 is not None
    unit = "ha" if has_area else "% of map"
    scale = (a.total_area_m2 / 1e4) if has_area else 100.0
    mapped = [a.areas[c].mapped_proportion * scale for c in a.codes]
    est = [a.areas[c].proportion.value * scale for c in a.codes]
    hw = [a.areas[c].proportion.half_width * scale if _finite(a.areas[c].proportion.half_width)
          else 0.0 for c in a.codes]
    vmax = max([m for m in mapped] + [e + h for e, h in zip(est, hw)] + [1e-12])
    group, bar, left, top, height = 84, 28, 80, 30, 260
    w = left + group * k + 100
    x_end = left + group * k + 10
    h = top + height + 130
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11" role="img" '
           'aria-label="Mapped and estimated area per class">']
    ticks = _nice_ticks(vmax)
    vtop = ticks[-1]
    for t in ticks:
        y = top + height - height * t / vtop
        out.append(f'<line x1="{left}" x2="{x_end}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:,.6g}</text>')
    out.append(f'<text x="16" y="{top + height / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {top + height / 2})">Area ({unit})</text>')
    for i, c in enumerate(a.codes):
        x0 = left + i * group + (group - 2 * bar) / 2
        color = a.colors.get(c, "#999999")
        hm = height * mapped[i] / vtop
        he = height * max(est[i], 0.0) / vtop
        out.append(f'<rect x="{x0:.1f}" y="{top + height - hm:.1f}" width="{bar}" '
                   f'height="{hm:.1f}" fill="{color}" fill-opacity="0.45" stroke="{color}">'
                   f'<title>{_e(a.label(c))} mapped: {mapped[i]:,.2f} {unit}</title></rect>')
        out.append(f'<rect x="{x0 + bar:.1f}" y="{top + height - he:.1f}" width="{bar}" '
                   f'height="{he:.1f}" fill="{color}" stroke="#333">'
                   f'<title>{_e(a.label(c))} estimated: {est[i]:,.2f} &#177; {hw[i]:,.2f} '
                   f'{unit}</title></rect>')
        if hw[i] > 0:
            xc = x0 + 1.5 * bar
            y1 = top + height - height * max(est[i] - hw[i], 0.0) / vtop
            y2 = top + height - height * (est[i] + hw[i]) / vtop
            out.append(f'<line x1="{xc:.1f}" x2="{xc:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" '
                       'stroke="#000" stroke-width="1.5"/>')
            for yy in (y1, y2):
                out.append(f'<line x1="{xc - 6:.1f}" x2="{xc + 6:.1f}" y1="{yy:.1f}" '
                           f'y2="{yy:.1f}" stroke="#000" stroke-width="1.5"/>')
        xl = x0 + bar
        yl = top + height + 12
        out.append(f'<text x="{xl:.1f}" y="{yl}" transform="rotate(35 {xl:.1f} {yl})">'
                   f'{_e(a.label(c))}</text>')
    out.append(f'<line x1="{left}" x2="{x_end}" y1="{top + height}" y2="{top + height}" '
               'stroke="#333"/>')
    ly = 14
    out.append(f'<rect x="{left}" y="{ly - 9}" width="12" height="10" fill="#888" '
               'fill-opacity="0.45" stroke="#888"/>')
    out.append(f'<text x="{left + 16}" y="{ly}">mapped</text>')
    out.append(f'<rect x="{left + 80}" y="{ly - 9}" width="12" height="10" fill="#888" '
               'stroke="#333"/>')
    out.append(f'<text x="{left + 96}" y="{ly}">estimated (error bar: {100 * _conf(a):.0f}% '
               'confidence interval)</text>')
    out.append("</svg>")
    return "\n".join(out)


def _conf(a):
    return math.erf(a.z / math.sqrt(2))


def _nice_ticks(vmax, n=5):
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    count = int(math.ceil(vmax / step - 1e-9))
    return [i * step for i in range(count + 1)] if count > 0 else [0, step]


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.big{font-size:1.5em;font-weight:bold}.muted{color:#666;font-size:.9em}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em}
.note{background:#f4f4f8;border-left:4px solid #99a;padding:.5em 1em}
.sw{display:inline-block;width:.9em;height:.9em;border:1px solid #555;vertical-align:middle;
margin-right:.4em}
"""


def build_html(a, title="Map accuracy assessment", exports=()):
    d = a.to_dict()
    conf = 100 * _conf(a)
    md = a.metadata or {}
    rows = []
    for key, label in (("map", "Map"), ("points", "Points"), ("reference_field", "Reference field"),
                       ("design", "Sampling design"), ("created", "Created")):
        if md.get(key):
            rows.append(f'<tr><th class="l">{label}</th><td class="l">{_e(md[key])}</td></tr>')
    if a.design and not md.get("design"):
        rows.append(f'<tr><th class="l">Sampling design</th><td class="l">{_e(a.design)}</td></tr>')
    rows.append(f'<tr><th class="l">Labelled points used</th><td class="l">{a.n}'
                + (f" ({a.n_unlabelled} unlabelled, not used)" if a.n_unlabelled else "")
                + "</td></tr>")
    if a.total_area_m2:
        rows.append(f'<tr><th class="l">Area assessed</th><td class="l">'
                    f'{a.total_area_m2 / 1e4:,.1f} ha ({a.total_area_m2 / 1e6:,.3f} km&sup2;), '
                    f'pixel {a.pixel_area_m2:g} m&sup2;</td></tr>')
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f'<table>{"".join(rows)}</table>',
             f'<p>Overall accuracy: <span class="big">{_pm(a.overall, pct=True)}</span> '
             f'<span class="muted">({conf:.0f}% confidence interval, SE '
             f'{_f(a.overall.se, 4)})</span></p>']
    if a.warnings:
        parts.append('<div class="warn"><b>Warnings</b><ul>'
                     + "".join(f"<li>{_e(w)}</li>" for w in a.warnings) + "</ul></div>")
    parts.append("<h2>Error matrix</h2>")
    parts.append("<p class=\"muted\">Rows: map class, columns: reference class. Bold: number of "
                 "sample points; below: estimated proportion of the map area "
                 "(<i>p&#770;</i><sub>ij</sub> = W<sub>i</sub> n<sub>ij</sub> / n<sub>i&middot;</sub> "
                 "when strata are the map classes); colour: <i>p&#770;</i><sub>ij</sub> on a "
                 "square-root scale. Last row and column: totals.</p>")
    parts.append(matrix_svg(a))
    parts.append("<h2>Accuracy per class</h2>")
    t = ['<table><tr><th class="l">Class</th><th>Stratum pixels</th><th>Points</th>'
         f"<th>User's accuracy &plusmn; {conf:.0f}% CI</th>"
         f"<th>Producer's accuracy &plusmn; {conf:.0f}% CI</th></tr>"]
    strata = {s["code"]: s for s in a.strata}
    for c in a.codes:
        s = strata.get(c, {})
        t.append(f'<tr><td class="l"><span class="sw" style="background:'
                 f'{_e(a.colors.get(c, "#999"))}"></span>{_e(a.label(c))} ({c})</td>'
                 f'<td>{s.get("pixels", 0):,}</td><td>{int(a.counts[a.codes.index(c)].sum())}</td>'
                 f'<td>{_pm(a.users[c], pct=True)}</td>'
                 f'<td>{_pm(a.producers[c], pct=True)}</td></tr>')
    t.append(f'<tr><th class="l">Overall</th><th>{sum(s["pixels"] for s in a.strata):,}</th>'
             f'<th>{a.n}</th><th colspan="2">{_pm(a.overall, pct=True)}</th></tr></table>')
    parts.append("".join(t))
    parts.append("<h2>Area estimates</h2>")
    if a.total_area_m2:
        head = ("<tr><th class=\"l\">Class</th><th>Mapped area (ha)</th>"
                f"<th>Estimated area (ha) &plusmn; {conf:.0f}% CI</th><th>SE (ha)</th>"
                "<th>Estimated area (km&sup2;)</th><th>Estimated share of map</th></tr>")
    else:
        head = ("<tr><th class=\"l\">Class</th><th>Mapped share</th>"
                f"<th>Estimated share &plusmn; {conf:.0f}% CI</th><th>SE</th></tr>")
    t = ["<table>", head]
    for c in a.codes:
        ar = a.areas[c]
        if a.total_area_m2:
            est = ar.area_m2()
            t.append(f'<tr><td class="l">{_e(a.label(c))}</td>'
                     f'<td>{ar.mapped_proportion * a.total_area_m2 / 1e4:,.1f}</td>'
                     f'<td>{_pm(est, 1, scale=1e-4)}</td><td>{_f(est.se * 1e-4, 1)}</td>'
                     f'<td>{_pm(est, 3, scale=1e-6)}</td>'
                     f'<td>{_pm(ar.proportion, pct=True)}</td></tr>')
        else:
            t.append(f'<tr><td class="l">{_e(a.label(c))}</td>'
                     f'<td>{_f(ar.mapped_proportion, pct=True, digits=4)}</td>'
                     f'<td>{_pm(ar.proportion, pct=True)}</td><td>{_f(ar.proportion.se, 4)}</td>'
                     "</tr>")
    t.append("</table>")
    parts.append("".join(t))
    parts.append(area_chart_svg(a))
    parts.append("<h2>Scores on the sample counts (not design-based)</h2>")
    parts.append(f'<div class="note">{_e(NOT_DESIGN_BASED)}</div>')
    t = [f"<p>Cohen's kappa: <b>{_f(a.kappa, 3)}</b></p>",
         '<table><tr><th class="l">Class</th><th>F1</th><th>IoU</th></tr>']
    for c in a.codes:
        t.append(f'<tr><td class="l">{_e(a.label(c))}</td><td>{_f(a.f1[c], 3)}</td>'
                 f'<td>{_f(a.iou[c], 3)}</td></tr>')
    t.append("</table>")
    parts.append("".join(t))
    parts.append("<h2>Method</h2>")
    parts.append(
        "<p>Estimators of Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E. "
        "&amp; Wulder, M. A. (2014): Good practices for estimating area and assessing accuracy of "
        "land change. <i>Remote Sensing of Environment</i> 148, 42&ndash;57 (eqs. 1&ndash;11), in "
        "the general stratified form of Stehman, S. V. (2014), <i>International Journal of Remote "
        "Sensing</i> 35, 4923&ndash;4939. "
        + ("The simple random / systematic sample is post-stratified by map class. "
           if a.post_stratified else "")
        + f"Confidence intervals: estimate &plusmn; {a.z:.2f} standard errors.</p>")
    also = ""
    if exports:
        files = ", ".join(_e(os.path.basename(p)) for p in exports)
        also = f" Every number of this report is also in {files}."
    parts.append(f'<p class="muted">{_e(d["method"])}.{also}</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def csv_rows(a):
    """Every number, one per row:
    (section, map_code, map_label, reference_code, reference_label, quantity, value)."""
    rows = []
    lab = a.label

    def add(section, mc, rc, qty, value):
        rows.append((section, "" if mc is None else mc, "" if mc is None else lab(mc),
                     "" if rc is None else rc, "" if rc is None else lab(rc), qty,
                     "" if value is None or (isinstance(value, float) and not math.isfinite(value))
                     else value))

    for key, v in a.overall.to_dict().items():
        add("overall", None, None, f"overall_accuracy_{key}" if key != "estimate"
            else "overall_accuracy", v)
    add("overall", None, None, "n_points", a.n)
    add("overall", None, None, "n_unlabelled", a.n_unlabelled)
    add("overall", None, None, "z", a.z)
    if a.total_area_m2:
        add("overall", None, None, "total_area_ha", a.total_area_m2 / 1e4)
        add("overall", None, None, "pixel_area_m2", a.pixel_area_m2)
    for s in a.strata:
        for q in ("pixels", "weight", "weight_used", "points"):
            add("strata", s["code"], None, q, s[q])
    for i, ci in enumerate(a.codes):
        for j, cj in enumerate(a.codes):
            add("error_matrix_counts", ci, cj, "n", int(a.counts[i, j]))
    for i, ci in enumerate(a.codes):
        for j, cj in enumerate(a.codes):
            add("area_proportions", ci, cj, "p", float(a.proportions[i, j]))
    for c in a.codes:
        for key, v in a.users[c].to_dict().items():
            add("users", c, None, f"users_accuracy_{key}", v)
        for key, v in a.producers[c].to_dict().items():
            add("producers", c, None, f"producers_accuracy_{key}", v)
        ad = a.areas[c].to_dict()
        add("areas", c, None, "mapped_pixels", ad["mapped_pixels"])
        add("areas", c, None, "mapped_proportion", ad["mapped_proportion"])
        for key, v in ad["estimated_proportion"].items():
            add("areas", c, None, f"estimated_proportion_{key}", v)
        if "estimated_area_ha" in ad:
            add("areas", c, None, "mapped_area_ha", ad["mapped_area_ha"])
            add("areas", c, None, "mapped_area_km2", ad["mapped_area_km2"])
            for unit in ("ha", "km2"):
                for key, v in ad[f"estimated_area_{unit}"].items():
                    add("areas", c, None, f"estimated_area_{unit}_{key}", v)
    add("not_design_based", None, None, "kappa", a.kappa)
    for c in a.codes:
        add("not_design_based", c, None, "f1", a.f1[c])
        add("not_design_based", c, None, "iou", a.iou[c])
    return rows


def build_csv(a):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("section", "map_code", "map_label", "reference_code", "reference_label",
                "quantity", "value"))
    w.writerows(csv_rows(a))
    return buf.getvalue()


def build_json(a):
    return json.dumps(a.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)


def write_report(a, html_path=None, csv_path=None, json_path=None,
                 title="Map accuracy assessment"):
    """Write whichever of the three files is given; returns {"html": path, ...}."""
    if "created" not in a.metadata:
        a.metadata["created"] = datetime.datetime.now().isoformat(timespec="seconds")
    out = {}
    exports = [p for p in (csv_path, json_path) if p]
    for kind, path, build in (("html", html_path, lambda: build_html(a, title, exports)),
                              ("csv", csv_path, lambda: build_csv(a)),
                              ("json", json_path, lambda: build_json(a))):
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(build())
        out[kind] = path
    return out
