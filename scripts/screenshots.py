"""Screenshots for the documentation: ``make screenshots`` (``scripts/screenshots.py docs``).

Starts QGIS headless, generates the sample city (seed 0), loads it, runs the "Classify urban
functions" dialog on it (the real background task) and saves

* ``<out>/dialog.png``: the dialog after the run (inputs, model, area, output, advanced, result),
* ``<out>/result.png``: the styled result with its legend, scale bar and title (a print layout).

Usage: python scripts/screenshots.py [OUT_DIR] [--model PATH] [--work DIR]
(the sample city in --work is reused when it is already there).
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qgis_docs import (WidgetIface, add_class_legend, add_label, add_map,  # noqa: E402
                       add_scale_bar, export_png, wait_for)
DEFAULT_MODEL = os.path.join(ROOT, "models", "sample_city_fusion.onnx")


def grab_dialog(dialog, path):
    from qgis.PyQt.QtCore import QCoreApplication
    dialog.show()
    dialog.adjustSize()
    dialog.resize(max(dialog.width(), 720), dialog.sizeHint().height())
    for _ in range(10):
        QCoreApplication.processEvents()
    pixmap = dialog.grab()
    if not pixmap.save(path):
        raise SystemExit(f"Could not save {path}")
    return path


def export_result_layout(project, layer, background, path, title, subtitle=""):
    """A print layout: map (result over a faded input), legend, scale bar, title -> PNG."""
    from qgis.core import QgsLayoutSize, QgsPrintLayout, QgsRectangle, QgsUnitTypes

    mm = QgsUnitTypes.LayoutMillimeters
    extent = QgsRectangle(layer.extent())
    map_w = 150.0
    map_h = min(150.0, map_w * extent.height() / extent.width())
    layout = QgsPrintLayout(project)
    layout.initializeDefaults()
    top = 24.0
    layout.pageCollection().page(0).setPageSize(QgsLayoutSize(250, map_h + top + 8, mm))

    add_label(layout, title, 15, 8, 4, 234, bold=True)
    if subtitle:
        add_label(layout, subtitle, 10, 8, 13, 234)
    map_item = add_map(layout, [layer] + ([background] if background is not None else []),
                       extent, layer.crs(), 8, top, map_w, map_h)
    add_class_legend(layout, map_item, layer, "Urban function", map_w + 14, top)

    add_scale_bar(layout, map_item, extent, map_w + 14, top + map_h - 14)
    return export_png(layout, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=os.path.join(ROOT, "docs"))
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model .onnx (default: bundled)")
    parser.add_argument("--work", default=os.path.join(ROOT, "build", "screenshots"),
                        help="folder for the sample city and the run (default: build/screenshots)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.model):
        raise SystemExit(f"Model not found: {args.model}. Train it with `make train-sample` or "
                         "pass --model PATH.")
    os.makedirs(args.out, exist_ok=True)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)

    from plugin.core.environment import add_venv_site_packages
    add_venv_site_packages()
    from qgis.core import QgsApplication, QgsProject, QgsSettings
    app = QgsApplication([], True, os.path.join(work, "profile"))
    app.initQgis()
    try:
        from plugin.gui.dialog import ClassifyDialog
        from plugin.qgis_common.summary import format_seconds, provider_label
        from plugin.qgis_plugin import add_sample_city_layers
        from plugin.samplecity import generate_sample_city

        print(f"Generating the sample city in {work}/city …")
        city = generate_sample_city(os.path.join(work, "city"), seed=0)
        project = QgsProject.instance()
        iface = WidgetIface()
        layers = add_sample_city_layers(city, project, iface.mapCanvas())

        QgsSettings().remove("UrbanFunctions")
        dialog = ClassifyDialog(iface)
        dialog.autofill_inputs()
        dialog.select_model(args.model)
        _path, card = dialog.selected_model()
        for modality, combo in dialog.input_combos.items():  # only what the model accepts
            if card is not None and modality not in card.modalities:
                combo.setLayer(None)
        output = os.path.join(work, "urban_functions.tif")
        dialog.output_file.setFilePath(output)
        dialog.overwrite.setChecked(True)
        dialog.confidence.setChecked(True)
        dialog.advanced.setCollapsed(False)
        problems = dialog.problems()
        if problems:
            raise SystemExit("The dialog refuses to run: " + " ".join(problems))
        done = []
        dialog.resultReady.connect(lambda result, layer: done.append((result, layer)))
        dialog.runFailed.connect(lambda message, cancelled: done.append((None, message)))
        dialog.show()
        print("Running the classification from the dialog …")
        dialog.run()
        if not wait_for(lambda: done, 900):
            raise SystemExit("The classification did not finish within 15 minutes.")
        result, layer = done[0]
        if result is None:
            raise SystemExit(f"The classification failed: {layer}")
        dialog_png = grab_dialog(dialog, os.path.join(args.out, "dialog.png"))
        print(f"Wrote {dialog_png}")

        background = next((lyr for lyr in layers
                           if lyr.customProperty("urban_functions/modality") == "vhr"), None)
        if background is not None:
            background.setOpacity(0.35)
        layer.setOpacity(0.85 if background is not None else 1.0)
        result_png = export_result_layout(
            project, layer, background, os.path.join(args.out, "result.png"),
            "Urban functions of the sample city",
            f"Model: {result.card.title}. Ran on {provider_label(result.provider)} in "
            f"{format_seconds(result.seconds)}.")
        print(f"Wrote {result_png}")
        dialog.close()
        del dialog, layer, layers, background
        project.clear()
    finally:
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
