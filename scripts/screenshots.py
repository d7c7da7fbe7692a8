"""Screenshots for the documentation: ``make screenshots`` (``scripts/screenshots.py docs``).

Starts QGIS headless, generates the sample city (seed 0), loads it, runs the "Classify urban
functions" dialog on it (the real background task) and saves

* ``<out>/dialog.png``: the dialog after the run (inputs, model, area, output, advanced, result),
* ``<out>/dialog_1366x768.png``: the same dialog as it opens on a 1366x768 laptop screen (the
  settings scroll; Run, Cancel and Close stay visible),
* ``<out>/installer.png``: "Install dependencies" after a real install into the screenshot
  profile's venv,
* ``<out>/result.png``: the styled result with its legend, scale bar and title (a print layout).

The model is the one the dialog picks for the sample city (as in ``make demo``), unless --model
is given.

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
DEMO_MODEL = "sample-city-fusion"   # what make demo uses on the sample city
LAPTOP = (1366, 768)
TASKBAR, TITLE_BAR = 40, 30


def _settle():
    from qgis.PyQt.QtCore import QCoreApplication
    for _ in range(10):
        QCoreApplication.processEvents()


def grab_dialog(dialog, path):
    """The whole dialog, tall enough that nothing scrolls."""
    dialog.show()
    content = dialog.scroll.widget().sizeHint().height()
    extra = dialog.sizeHint().height() - dialog.scroll.sizeHint().height()
    dialog.resize(max(dialog.width(), 720), content + extra + 8)
    _settle()
    if not dialog.grab().save(path):
        raise SystemExit(f"Could not save {path}")
    return path


def grab_on_laptop_screen(dialog, path):
    """The dialog as it opens on a 1366x768 screen (taskbar and title bar drawn), to scale."""
    from qgis.PyQt.QtCore import QRect, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QPainter, QPixmap
    width, height = LAPTOP
    dialog.fit_to_screen(QRect(0, 0, width, height - TASKBAR))
    _settle()
    shot = dialog.grab()
    screen = QPixmap(width, height)
    screen.fill(QColor("#3a4a5a"))
    painter = QPainter(screen)
    x = (width - shot.width()) // 2
    y = max(0, (height - TASKBAR - shot.height() - TITLE_BAR) // 2)
    painter.fillRect(x, y, shot.width(), TITLE_BAR, QColor("#dcdcdc"))
    painter.setPen(QColor("#222"))
    painter.setFont(QFont("Sans", 10))
    painter.drawText(x + 10, y, shot.width() - 20, TITLE_BAR, Qt.AlignVCenter,
                     dialog.windowTitle())
    painter.drawPixmap(x, y + TITLE_BAR, shot)
    painter.fillRect(0, height - TASKBAR, width, TASKBAR, QColor("#1e1e1e"))
    painter.setPen(QColor("#eee"))
    painter.drawText(12, height - TASKBAR, 400, TASKBAR, Qt.AlignVCenter,
                     f"Screen {width} x {height}")
    painter.end()
    if y + TITLE_BAR + shot.height() > height - TASKBAR:
        raise SystemExit(f"The dialog ({shot.height()} px) does not fit a {width}x{height} screen")
    if not screen.save(path):
        raise SystemExit(f"Could not save {path}")
    return path


def grab_installer(parent, path):
    """Install dependencies, after a real install into this profile's plugin venv."""
    import shutil

    from plugin.gui.install_dialog import InstallDialog
    from plugin.qgis_common.plugin_venv import plugin_venv_dir
    shutil.rmtree(plugin_venv_dir(), ignore_errors=True)
    dialog = InstallDialog(parent)
    dialog.resize(760, 560)
    dialog.show()
    print(f"Installing the dependencies into {plugin_venv_dir()} for the screenshot …")
    dialog.start()
    if not wait_for(lambda: dialog.task is None, 900):
        raise SystemExit("The install did not finish within 15 minutes.")
    _settle()
    if not dialog.grab().save(path):
        raise SystemExit(f"Could not save {path}")
    dialog.close()
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
    parser.add_argument("--model", default=None,
                        help="model .onnx or name (default: the dialog's own choice)")
    parser.add_argument("--work", default=os.path.join(ROOT, "build", "screenshots"),
                        help="folder for the sample city and the run (default: build/screenshots)")
    args = parser.parse_args(argv)
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
        if args.model and not dialog.select_model(args.model):
            raise SystemExit(f"Model not found: {args.model}")
        _path, card = dialog.selected_model()
        if not args.model and (card is None or card.name != DEMO_MODEL):
            raise SystemExit(f"The dialog picked {card.name if card else 'no model'} for the "
                             f"sample city, not {DEMO_MODEL} as make demo does")
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
        laptop_png = grab_on_laptop_screen(dialog, os.path.join(args.out, "dialog_1366x768.png"))
        print(f"Wrote {laptop_png}")
        installer_png = grab_installer(iface.mainWindow(), os.path.join(args.out, "installer.png"))
        print(f"Wrote {installer_png}")

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
