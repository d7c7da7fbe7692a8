"""Human-readable summaries of a classification result (message bar, Processing log, tests).

Pure Python (no Qt): formats what the engine's ``ClassifyResult`` reports.
"""

PROVIDER_NAMES = {
    "CPUExecutionProvider": "CPU",
    "CUDAExecutionProvider": "GPU (CUDA)",
    "TensorrtExecutionProvider": "GPU (TensorRT)",
    "DmlExecutionProvider": "GPU (DirectML)",
    "CoreMLExecutionProvider": "Apple Core ML",
}


def provider_label(provider):
    """'CPU (CPUExecutionProvider)' for onnxruntime's provider name."""
    if not provider:
        return "unknown device"
    nice = PROVIDER_NAMES.get(provider)
    return f"{nice} ({provider})" if nice else str(provider)


def format_seconds(seconds):
    seconds = float(seconds or 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def area_unit(total_m2):
    """'km²' for large results (10 km² or more), 'ha' otherwise: one unit per summary."""
    return "km²" if total_m2 >= 10e6 else "ha"


def format_area(area_m2, unit=None):
    """'12.3 ha' / '4.56 km²'."""
    area_m2 = float(area_m2)
    unit = unit or area_unit(area_m2)
    if unit == "km²":
        return f"{area_m2 / 1e6:,.2f} km²"
    return f"{area_m2 / 1e4:,.1f} ha"


def _label(entry):
    return getattr(entry, "label", "") or getattr(entry, "name", "") or str(entry.code)


def class_area_rows(class_areas):
    """[(label, '12.3 ha', percent, color)] for classes with area, largest first."""
    entries = [e for e in class_areas if float(e.area_m2) > 0]
    total = sum(float(e.area_m2) for e in entries)
    unit = area_unit(total)
    entries.sort(key=lambda e: -float(e.area_m2))
    return [(_label(e), format_area(e.area_m2, unit),
             100.0 * float(e.area_m2) / total if total else 0.0, getattr(e, "color", ""))
            for e in entries]


def total_area(class_areas):
    return sum(float(e.area_m2) for e in class_areas)


def short_summary(result):
    """One line for the message bar."""
    rows = class_area_rows(result.class_areas)
    parts = ", ".join(f"{label} {area}" for label, area, _pct, _c in rows)
    return (f"Done in {format_seconds(result.seconds)} on {provider_label(result.provider)}. "
            f"{parts or 'No classified cells.'}")


def text_summary(result):
    """Several lines (Processing log, message log)."""
    lines = [f"Output: {result.output_path}",
             f"Ran on: {provider_label(result.provider)}",
             f"Time: {format_seconds(result.seconds)}"]
    manifest = getattr(result, "manifest_path", None)
    if manifest:
        lines.append(f"Run manifest: {manifest}")
    for name, path in (getattr(result, "extra_outputs", None) or {}).items():
        lines.append(f"Also written ({name}): {path}")
    rows = class_area_rows(result.class_areas)
    if rows:
        lines.append("Area per class:")
        width = max(len(r[0]) for r in rows)
        for label, area, pct, _c in rows:
            lines.append(f"  {label:<{width}}  {area:>12}  {pct:5.1f} %")
        lines.append(f"  {'Total':<{width}}  {format_area(total_area(result.class_areas)):>12}")
    else:
        lines.append("No cell was classified (all nodata).")
    return "\n".join(lines)


def html_summary(result):
    """An HTML table (details dialog)."""
    from html import escape
    card = getattr(result, "card", None)
    title = escape(getattr(card, "title", "") or "Urban functions")
    rows = class_area_rows(result.class_areas)
    body = "".join(
        f"<tr><td><span style='background:{escape(color)}'>&nbsp;&nbsp;&nbsp;&nbsp;</span></td>"
        f"<td>{escape(label)}</td><td align='right'>{escape(area)}</td>"
        f"<td align='right'>{pct:.1f} %</td></tr>"
        for label, area, pct, color in rows)
    return (f"<h3>{title}</h3>"
            f"<p>Ran on <b>{escape(provider_label(result.provider))}</b> in "
            f"<b>{escape(format_seconds(result.seconds))}</b>.<br>"
            f"Output: {escape(str(result.output_path))}</p>"
            f"<table cellspacing='4'><tr><th></th><th align='left'>Function</th>"
            f"<th align='right'>Area</th><th align='right'>Share</th></tr>{body}"
            f"<tr><td></td><td><b>Total</b></td><td align='right'><b>"
            f"{escape(format_area(total_area(result.class_areas)))}</b></td><td></td></tr></table>")
