"""Validation screenshots for the README: ``scripts/validation_screenshots.py docs``.

Runs the whole validation loop on the sample city (seed 0), headless, with real QGIS:

1. classifies the sample city with the bundled model (``plugin.core.engine.run_classification``;
   the result in --work is reused when it was made from the same model and inputs),
2. draws validation points with ``urbanfunctions:createvalidationpoints`` (stratified random,
   proportional allocation, 300 points, at least 20 per class, seed 1) through ``processing.run``,
3. ``<out>/validation_points.png``: the classified map with the points on top (a print layout),
4. ``<out>/labelling_dock.png``: the real labelling dock beside a map canvas zoomed to the current
   point over the VHR image, after a few points were labelled with the dock's class buttons,
5. labels every point from the sample city's ground truth (``label_points_file``), runs
   ``urbanfunctions:assessaccuracy`` (HTML, CSV, JSON) and saves the top of the HTML report as
   ``<out>/accuracy_report.png`` (rendered with QtWebKit).

Prints the overall accuracy with its 95 % confidence interval and the time of each step.

Usage: python scripts/validation_screenshots.py [OUT_DIR] [--model PATH] [--work DIR]
"""
import argparse
import hashlib
import importlib
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qgis_docs import WidgetIface, add_scale_bar, export_png, wait_for  # noqa: E402
QGIS_PYTHON_PLUGINS = "/usr/share/qgis/python/plugins"
if QGIS_PYTHON_PLUGINS not in sys.path:
    sys.path.append(QGIS_PYTHON_PLUGINS)
DEFAULT_MODEL = os.path.join(ROOT, "models", "sample_city_fusion.onnx")

CITY_SEED = 0
POINTS_SEED = 1
N_POINTS = 300
MIN_PER_CLASS = 20
TARGET_SE = 0.02          # only printed: the sample size eq. 13 would give for it
EXPECTED_UA = 0.8
LABELLED_IN_DOCK = 5      # points labelled with the dock's buttons before its screenshot
DOCK_SCALE = 1500         # the dock's "Zoom scale" for the screenshot (its default)
REPORT_WIDTH = 1000       # px
REPORT_MAX_BYTES = 600_000


# -- small helpers ------------------------------------------------------------------------------

def process_events(n=10):
    from qgis.PyQt.QtCore import QCoreApplication
    for _ in range(n):
        QCoreApplication.processEvents()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rel(path):
    """``path`` relative to the repository when inside it (reports then show short paths)."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.steps = []

    def step(self, name):
        now = time.perf_counter()
        self.steps.append((name, now - self.last))
        print(f"  ({name}: {now - self.last:.1f} s)")
        self.last = now

    def total(self):
        return time.perf_counter() - self.t0


# -- 1. classification ---------------------------------------------------------------------------

def reusable(output, model, inputs):
    """True when ``output`` and its manifest come from this model and these input files."""
    from plugin.core.engine import manifest_path_for
    manifest = manifest_path_for(output)
    if not (os.path.isfile(output) and os.path.isfile(manifest)):
        return False
    try:
        with open(manifest, encoding="utf-8") as f:
            m = json.load(f)
        if m["model"]["hash"]["sha256"] != sha256(model):
            return False
        if set(m["inputs"]) != set(inputs):
            return False
        for modality, path in inputs.items():
            h = m["inputs"][modality]["hash"]
            if h.get("scope") != "full file" or h["sha256"] != sha256(path):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def classify(city, model, output):
    from plugin.core.engine import ClassifyRequest, run_classification
    from plugin.core.model_card import read_card
    card = read_card(model)
    inputs = {m: p for m, p in city.inputs.items() if m in card.modalities}
    if reusable(output, model, inputs):
        print(f"Reusing the classification {rel(output)}")
        return card
    print("Classifying the sample city with the bundled model …")
    result = run_classification(ClassifyRequest(inputs=inputs, model_path=model,
                                                output_path=output, overwrite=True))
    print(f"  {result.provider}, {result.seconds:.1f} s -> {rel(output)}")
    return card


# -- 3. points over the map (print layout) -------------------------------------------------------

def points_symbol(size_mm, outline_mm):
    from qgis.core import QgsMarkerSymbol
    return QgsMarkerSymbol.createSimple({
        "name": "circle", "color": "255,255,255,255", "outline_color": "0,0,0,255",
        "size": str(size_mm), "size_unit": "MM", "outline_width": str(outline_mm),
        "outline_width_unit": "MM"})


def export_points_layout(project, classes_layer, points_layer, per_class, path, title, subtitle):
    from qgis.core import (QgsLayoutItemLabel, QgsLayoutItemLegend,
                           QgsLayoutItemMap, QgsLayoutPoint,
                           QgsLayoutSize, QgsLegendRenderer, QgsLegendStyle,
                           QgsMapLayerLegendUtils, QgsPrintLayout, QgsRectangle, QgsUnitTypes)
    from qgis.PyQt.QtGui import QFont

    mm = QgsUnitTypes.LayoutMillimeters
    extent = QgsRectangle(classes_layer.extent())
    map_w = 150.0
    map_h = min(150.0, map_w * extent.height() / extent.width())
    top = 24.0
    layout = QgsPrintLayout(project)
    layout.initializeDefaults()
    layout.pageCollection().page(0).setPageSize(QgsLayoutSize(255, map_h + top + 8, mm))

    for text, size, bold, y in ((title, 15, True, 4), (subtitle, 10, False, 13)):
        label = QgsLayoutItemLabel(layout)
        label.setText(text)
        label.setFont(QFont("Sans", size, QFont.Bold if bold else QFont.Normal))
        layout.addLayoutItem(label)
        label.attemptMove(QgsLayoutPoint(8, y, mm))
        label.attemptResize(QgsLayoutSize(240, 9, mm))

    map_item = QgsLayoutItemMap(layout)
    layout.addLayoutItem(map_item)
    map_item.attemptMove(QgsLayoutPoint(8, top, mm))
    map_item.attemptResize(QgsLayoutSize(map_w, map_h, mm))
    map_item.setLayers([points_layer, classes_layer])
    map_item.setCrs(classes_layer.crs())
    map_item.setExtent(extent)
    map_item.attemptResize(QgsLayoutSize(map_w, map_h, mm))
    map_item.zoomToExtent(extent)
    map_item.setFrameEnabled(True)

    legend = QgsLayoutItemLegend(layout)
    layout.addLayoutItem(legend)
    legend.setTitle("Map class (points)")
    legend.setLinkedMap(map_item)
    legend.setAutoUpdateModel(False)
    root = legend.model().rootGroup()
    root.removeAllChildren()
    pnode = root.addLayer(points_layer)
    pnode.setUseLayerName(False)  # a legend label only; the layer keeps its name
    pnode.setName(f"Validation point ({sum(per_class.values())})")
    node = root.addLayer(classes_layer)
    QgsLegendRenderer.setNodeLegendStyle(node, QgsLegendStyle.Hidden)
    # drop QGIS's "Band 1: ..." line (node 0); label each class with its number of points
    count = len(legend.model().layerLegendNodes(node, True))
    QgsMapLayerLegendUtils.setLegendNodeOrder(node, list(range(1, count)))
    for i, cls in enumerate(classes_layer.renderer().classes(), start=1):
        n = per_class.get(int(cls.value), 0)
        QgsMapLayerLegendUtils.setLegendNodeUserLabel(node, i, f"{cls.label} ({n})")
    legend.model().refreshLayerLegend(node)
    legend.setStyleFont(QgsLegendStyle.Title, QFont("Sans", 13, QFont.Bold))
    legend.setStyleFont(QgsLegendStyle.Group, QFont("Sans", 10))
    legend.setStyleFont(QgsLegendStyle.Subgroup, QFont("Sans", 10))
    legend.setStyleFont(QgsLegendStyle.SymbolLabel, QFont("Sans", 10))
    legend.attemptMove(QgsLayoutPoint(map_w + 14, top, mm))
    legend.adjustBoxSize()

    add_scale_bar(layout, map_item, extent, map_w + 14, top + map_h - 14)
    return export_png(layout, path)


# -- 4. the labelling dock -----------------------------------------------------------------------

def grab_labelling_dock(points_layer, vhr_layer, ground_truth, path):
    """The dock docked beside a canvas (a main window), after labelling a few points with it."""
    from qgis.PyQt.QtCore import Qt

    from plugin.gui.labelling_dock import LabellingDock
    from plugin.validation.labelling import label_from_reference

    iface = WidgetIface()
    main = iface.mainWindow()
    canvas = iface.mapCanvas()
    canvas.setCanvasColor(Qt.white)
    canvas.setDestinationCrs(points_layer.crs())
    canvas.setLayers([points_layer, vhr_layer])
    canvas.setExtent(points_layer.extent())
    dock = LabellingDock(iface, main)
    iface.addDockWidget(Qt.RightDockWidgetArea, dock)
    main.resize(1280, 800)
    main.resizeDocks([dock], [390], Qt.Horizontal)
    main.show()
    process_events()

    dock.scale_spin.setValue(DOCK_SCALE)
    dock.set_layer(points_layer)
    if dock.field_name != "ref_class":
        dock.set_field("ref_class")
    # what a person would click: the class seen on the image (here: the ground truth)
    for _ in range(LABELLED_IN_DOCK):
        f = points_layer.getFeature(dock.current_fid)
        p = f.geometry().asPoint()
        truth = label_from_reference([(p.x(), p.y())], ground_truth,
                                     points_layer.crs().toWkt())[0]
        codes = [c for c, _label in dock.choices]
        if truth not in codes:
            raise SystemExit(f"Ground truth class {truth} is not among the dock's classes {codes}")
        dock.class_buttons[codes.index(truth)].click()
        process_events(3)
    labelled, total = dock.progress()
    if labelled != LABELLED_IN_DOCK:
        raise SystemExit(f"The dock counts {labelled} labelled points, expected {LABELLED_IN_DOCK}")
    process_events()
    canvas.refresh()
    process_events()
    canvas.waitWhileRendering()
    process_events(20)
    if not main.grab().save(path, "PNG", 0):  # quality 0 = strongest PNG compression
        raise SystemExit(f"Could not save {path}")
    print(f"  dock: point {dock.index + 1} of {total}, {labelled} labelled; "
          f"scale 1:{DOCK_SCALE}")
    dock.cleanup()
    main.removeDockWidget(dock)
    dock.deleteLater()
    main.close()
    main.deleteLater()
    process_events()
    return path


# -- 5. the report -------------------------------------------------------------------------------

def grab_report(html_path, png_path):
    """The report as a browser shows it, down to the not-design-based scores (QtWebKit)."""
    from PyQt5.QtCore import QRect, QSize, Qt, QUrl
    from PyQt5.QtGui import QImage, QPainter, QRegion
    from PyQt5.QtWebKitWidgets import QWebView

    view = QWebView()
    done = []
    view.loadFinished.connect(done.append)
    view.page().setViewportSize(QSize(REPORT_WIDTH, 800))
    for orientation in (Qt.Horizontal, Qt.Vertical):  # lay the page out on the full width
        view.page().mainFrame().setScrollBarPolicy(orientation, Qt.ScrollBarAlwaysOff)
    view.load(QUrl.fromLocalFile(os.path.abspath(html_path)))
    if not wait_for(lambda: done, 60) or not done[0]:
        raise SystemExit(f"QtWebKit could not load {html_path}")
    frame = view.page().mainFrame()
    size = frame.contentsSize()
    # the top of the report: overview, error matrix, accuracy per class, area estimates and chart
    cut = size.height()
    for h2 in frame.findAllElements("h2"):
        if h2.toPlainText().startswith("Scores on the sample counts"):
            cut = h2.geometry().top() - 8
    view.page().setViewportSize(QSize(REPORT_WIDTH, size.height()))
    image = QImage(REPORT_WIDTH, cut, QImage.Format_RGB32)
    image.fill(0xFFFFFFFF)
    painter = QPainter(image)
    frame.render(painter, QRegion(QRect(0, 0, REPORT_WIDTH, cut)))
    painter.end()
    if not image.save(png_path, "PNG", 0):
        raise SystemExit(f"Could not save {png_path}")
    size_bytes = os.path.getsize(png_path)
    if size_bytes > REPORT_MAX_BYTES:  # keep the README light: a shorter, indexed-colour image
        image = image.convertToFormat(QImage.Format_Indexed8)
        image.save(png_path, "PNG", 0)
        size_bytes = os.path.getsize(png_path)
    print(f"  report page {size.width()} x {size.height()} px, saved the top "
          f"{REPORT_WIDTH} x {cut} px ({size_bytes / 1e3:.0f} kB)")
    view.deleteLater()
    return png_path


# -- main ----------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=os.path.join(ROOT, "docs"))
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model .onnx (default: bundled)")
    parser.add_argument("--work", default=os.path.join(ROOT, "build", "validation_screenshots"),
                        help="working folder (default: build/validation_screenshots)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.model):
        raise SystemExit(f"Model not found: {args.model}. Train it with `make train-sample` or "
                         "pass --model PATH.")
    out = os.path.abspath(args.out)
    work = os.path.abspath(args.work)
    model = os.path.abspath(args.model)
    os.makedirs(out, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    os.chdir(ROOT)  # paths inside the repository are given relative to it (shorter in the report)
    profile = os.path.join(work, "profile")
    os.makedirs(profile, exist_ok=True)
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = os.path.join(work, "runtime")
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        os.chmod(runtime, 0o700)
        os.environ["XDG_RUNTIME_DIR"] = runtime
    timer = Timer()
    try:  # the report is rendered with QtWebKit (Debian: python3-pyqt5.qtwebkit, a dependency of
        importlib.import_module("PyQt5.QtWebKitWidgets")  # python3-qgis): fail before the rest
    except ImportError as exc:
        raise SystemExit(f"PyQt5.QtWebKitWidgets is missing ({exc}): install "
                         "python3-pyqt5.qtwebkit and run this with the system Python or .venv.")

    from plugin.core.environment import add_venv_site_packages
    add_venv_site_packages()
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
    app = QgsApplication([], True, profile)
    app.initQgis()
    try:
        from processing.core.Processing import Processing
        Processing.initialize()
        import processing

        from plugin.qgis_common.styling import apply_class_style
        from plugin.processing_provider.provider import UrbanFunctionsProvider
        from plugin.samplecity import generate_sample_city
        from plugin.validation.labelling import label_points_file
        from plugin.validation.raster_access import count_classes
        from plugin.validation.sample_size import plan

        registry = QgsApplication.processingRegistry()
        old = registry.providerById("urbanfunctions")
        if old is not None:
            registry.removeProvider(old)
        provider = UrbanFunctionsProvider()
        registry.addProvider(provider)

        # 1. classify ------------------------------------------------------------------------
        print(f"Sample city (seed {CITY_SEED}) in {rel(work)}/city …")
        city = generate_sample_city(os.path.join(work, "city"), seed=CITY_SEED)
        output = os.path.join(work, "urban_functions.tif")
        card = classify(city, model, output)
        timer.step("sample city and classification")

        # 2. validation points ---------------------------------------------------------------
        counts = count_classes(output)
        p = plan(counts.totals, target_se=TARGET_SE, method="proportional",
                 min_per_stratum=MIN_PER_CLASS, expected_ua=EXPECTED_UA)
        print(f"Sample size for a target SE of overall accuracy of {TARGET_SE} (expected user's "
              f"accuracy {EXPECTED_UA}, Olofsson et al. 2014 eq. 13): {p['requested_n']} points")
        points = os.path.join(work, "validation_points.gpkg")
        if os.path.exists(points):
            os.remove(points)
        created = processing.run("urbanfunctions:createvalidationpoints", {
            "INPUT": rel(output), "DESIGN": 0, "ALLOCATION": 0, "SAMPLE_SIZE": N_POINTS,
            "MIN_PER_STRATUM": MIN_PER_CLASS, "SEED": POINTS_SEED, "OUTPUT": rel(points)})
        n_points = int(created["N_POINTS"])
        print(f"Created {n_points} stratified random points (proportional allocation, at least "
              f"{MIN_PER_CLASS} per class, seed {int(created['SEED_USED'])}), expected SE of "
              f"overall accuracy {float(created['EXPECTED_SE_OA']):.4f}: {rel(points)}")
        timer.step("validation points")

        # 3. points over the map -------------------------------------------------------------
        project = QgsProject.instance()
        classes_layer = QgsRasterLayer(rel(output), "Urban functions", "gdal")
        if not classes_layer.isValid():
            raise SystemExit(f"Cannot open {output}")
        apply_class_style(classes_layer, card.classes)
        points_layer = QgsVectorLayer(rel(points), "Validation points", "ogr")
        if not points_layer.isValid():
            raise SystemExit(f"Cannot open {points}")
        project.addMapLayer(classes_layer)
        project.addMapLayer(points_layer)
        per_class = {}
        for f in points_layer.getFeatures():
            per_class[int(f["map_class"])] = per_class.get(int(f["map_class"]), 0) + 1
        points_layer.renderer().setSymbol(points_symbol(2.0, 0.35))
        png = export_points_layout(
            project, classes_layer, points_layer, per_class,
            os.path.join(out, "validation_points.png"),
            "Validation points on the classified sample city",
            f"{n_points} stratified random points: proportional to the mapped area, at least "
            f"{MIN_PER_CLASS} per class, seed {POINTS_SEED}. In brackets: points per map class.")
        print(f"Wrote {rel(png)}")
        timer.step("validation_points.png")

        # 4. labelling dock ------------------------------------------------------------------
        vhr = QgsRasterLayer(city.inputs["vhr"], "VHR imagery (sample city)", "gdal")
        if not vhr.isValid():
            raise SystemExit(f"Cannot open {city.inputs['vhr']}")
        project.addMapLayer(vhr)
        points_layer.renderer().setSymbol(points_symbol(3.0, 0.5))
        png = grab_labelling_dock(points_layer, vhr, city.ground_truth,
                                  os.path.join(out, "labelling_dock.png"))
        print(f"Wrote {rel(png)}")
        project.removeMapLayers([points_layer.id(), vhr.id(), classes_layer.id()])
        del points_layer, vhr, classes_layer
        process_events()
        timer.step("labelling_dock.png")

        # 5. label everything from the ground truth, assess, render the report -------------
        labels = label_points_file(points, city.ground_truth)
        print(f"Labelled {sum(v is not None for v in labels)} of {len(labels)} points from the "
              "sample city's ground truth")
        report = os.path.join(work, "accuracy_report.html")
        assessed = processing.run("urbanfunctions:assessaccuracy", {
            "POINTS": rel(points), "REFERENCE_FIELD": "ref_class", "RASTER": rel(output),
            "OUTPUT_HTML": rel(report), "OUTPUT_CSV": rel(os.path.join(work, "accuracy.csv")),
            "OUTPUT_JSON": rel(os.path.join(work, "accuracy.json")), "OVERWRITE": True})
        oa = float(assessed["OVERALL_ACCURACY"])
        lo, hi = float(assessed["OA_CI_LOW"]), float(assessed["OA_CI_HIGH"])
        print(f"Overall accuracy {100 * oa:.1f} % ± {100 * (hi - oa):.1f} % (95 % CI "
              f"{100 * lo:.1f}-{100 * hi:.1f} %, SE {100 * float(assessed['OA_SE']):.1f} %), "
              f"{int(assessed['N_POINTS'])} points; report {rel(report)}")
        with open(os.path.join(work, "accuracy.json"), encoding="utf-8") as f:
            d = json.load(f)
        print_summary(d)
        timer.step("assessment")
        png = grab_report(report, os.path.join(out, "accuracy_report.png"))
        print(f"Wrote {rel(png)}")
        timer.step("accuracy_report.png")

        registry.removeProvider(provider)
        project.clear()
    finally:
        app.exitQgis()
    print(f"Done in {timer.total():.1f} s.")
    return 0


def print_summary(d):
    """User's / producer's accuracy and estimated area per class, from the assessment's JSON."""
    def pm(e, scale=100.0, digits=1):
        return f"{scale * e['estimate']:.{digits}f} ± {scale * e['ci_half_width']:.{digits}f}"

    print(f"  {'class':<27} {'points':>6} {'user acc. %':>13} {'producer acc. %':>15} "
          f"{'mapped ha':>9} {'estimated ha':>14}")
    points = {s["code"]: s["points"] for s in d["strata"]}
    for c in d["classes"]:
        k = str(c["code"])
        area = d["areas"][k]
        print(f"  {c['label']:<27} {points.get(c['code'], 0):>6} {pm(d['users_accuracy'][k]):>13} "
              f"{pm(d['producers_accuracy'][k]):>15} {area['mapped_area_ha']:>9.1f} "
              f"{pm(area['estimated_area_ha'], 1.0):>14}")
    print(f"  kappa (not design-based) {d['not_design_based']['kappa']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
