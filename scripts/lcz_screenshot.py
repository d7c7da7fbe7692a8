"""The LCZ map of Ketzin for the documentation: ``make screenshots`` (``scripts/lcz_screenshot.py
docs``) writes ``<out>/lcz_ketzin.png``.

Needs the third-party data next to the checkout (``../shared/data``: the So2Sat LCZ42 weights and
the Ketzin Sentinel-2 L1C stack); without it the script says so and exits 0. It starts QGIS
headless, imports the weights with the toolbox algorithm ``urbanfunctions:importso2sat`` into
``--work`` (never into the repository: the weights are not ours to ship), classifies the stack
with ``urbanfunctions:classify`` and renders a print layout: the LCZ map (the .qml style the
algorithm wrote: the card's 17 LCZ colours and names) with its legend, the true-colour image
below it, a scale bar and the run's numbers. It prints the class shares and the timings.

Usage: python scripts/lcz_screenshot.py [OUT_DIR] [--work DIR] [--shared DIR]
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qgis_docs import add_class_legend, add_label, add_map, add_scale_bar, export_png  # noqa: E402

SHARED = os.path.join(ROOT, "..", "shared", "data")
STACK = os.path.join("s2", "ketzin_20170216_s2l1c_10band.tif")
WEIGHTS = os.path.join("so2sat", "S2_RESNET20_BS16_LR2e-4_IN32-32-10_PRO-52-0R12_2019-06-27.h5")


def true_colour_layer(path):
    """A red, green, blue raster with a 2-98 % stretch per band."""
    import numpy as np
    from osgeo import gdal
    from qgis.core import (QgsContrastEnhancement, QgsMultiBandColorRenderer, QgsRasterLayer)
    layer = QgsRasterLayer(path, "Sentinel-2 L1C true colour", "gdal")
    renderer = QgsMultiBandColorRenderer(layer.dataProvider(), 1, 2, 3)
    ds = gdal.Open(path)
    for band, setter in ((1, renderer.setRedContrastEnhancement),
                         (2, renderer.setGreenContrastEnhancement),
                         (3, renderer.setBlueContrastEnhancement)):
        values = ds.GetRasterBand(band).ReadAsArray(buf_xsize=384, buf_ysize=192)
        lo, hi = (float(v) for v in np.percentile(values, [2, 98]))
        ce = QgsContrastEnhancement(layer.dataProvider().dataType(band))
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        ce.setMinimumValue(lo)
        ce.setMaximumValue(hi)
        setter(ce)
    ds = None
    layer.setRenderer(renderer)
    return layer


def export_lcz_layout(project, lcz, image, path, title, subtitle, footer):
    from qgis.core import QgsLayoutSize, QgsPrintLayout, QgsRectangle, QgsUnitTypes
    mm = QgsUnitTypes.LayoutMillimeters
    extent = QgsRectangle(lcz.extent())
    map_w = 180.0
    map_h = map_w * extent.height() / extent.width()
    top = 24.0
    layout = QgsPrintLayout(project)
    layout.initializeDefaults()
    page_h = top + 2 * map_h + 36
    layout.pageCollection().page(0).setPageSize(QgsLayoutSize(262, page_h, mm))
    add_label(layout, title, 15, 8, 4, 250, bold=True)
    add_label(layout, subtitle, 9.5, 8, 13, 250)
    lcz_map = add_map(layout, [lcz], extent, lcz.crs(), 8, top, map_w, map_h)
    y2 = top + map_h + 7
    add_label(layout, "Sentinel-2 L1C true colour (B4 B3 B2), 10 m", 9, 8, y2 - 5.5, map_w)
    add_map(layout, [image], extent, lcz.crs(), 8, y2, map_w, map_h)
    add_scale_bar(layout, lcz_map, extent, 8, y2 + map_h + 3)
    add_label(layout, footer, 7.5, 8, y2 + map_h + 19, 246, lines=2)

    add_class_legend(layout, lcz_map, lcz, "Local Climate Zone", map_w + 12, top, title_pt=11,
                     label_pt=8.5, symbol_height=3.6)
    return export_png(layout, path, dpi=120)


def class_shares(path, card):
    """[(label, share)] of the classified cells, largest first."""
    import numpy as np
    from osgeo import gdal
    ds = gdal.Open(path)
    values = ds.GetRasterBand(1).ReadAsArray()
    ds = None
    valid = values > 0
    counts = np.bincount(values[valid].ravel(), minlength=256)
    rows = [(c.label, counts[c.code] / valid.sum()) for c in card.classes if counts[c.code]]
    return sorted(rows, key=lambda r: -r[1]), int(valid.sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=os.path.join(ROOT, "docs"))
    parser.add_argument("--work", default=os.path.join(ROOT, "build", "lcz_screenshot"),
                        help="models, profile and run outputs (default: build/lcz_screenshot)")
    parser.add_argument("--shared", default=SHARED, help="the shared data folder")
    args = parser.parse_args(argv)
    stack, weights = (os.path.join(args.shared, p) for p in (STACK, WEIGHTS))
    missing = [p for p in (stack, weights) if not os.path.isfile(p)]
    if missing:
        print(f"lcz_screenshot: skipped, third-party data not found: {', '.join(missing)} "
              "(the So2Sat weights and the Ketzin Sentinel-2 stack live in ../shared/data).")
        return 0
    os.makedirs(args.out, exist_ok=True)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)

    from plugin.core.environment import add_venv_site_packages
    add_venv_site_packages()
    sys.path.append("/usr/share/qgis/python/plugins")
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    app = QgsApplication([], True, os.path.join(work, "profile"))
    app.initQgis()
    try:
        import processing
        from processing.core.Processing import Processing
        Processing.initialize()
        from plugin.core.model_card import read_card
        from plugin.qgis_common.summary import format_seconds, provider_label
        from plugin.processing_provider.provider import UrbanFunctionsProvider
        registry = QgsApplication.processingRegistry()
        registry.addProvider(UrbanFunctionsProvider())

        t = time.perf_counter()
        imported = processing.run("urbanfunctions:importso2sat",
                                  {"H5": weights, "MODELS_DIR": os.path.join(work, "models")})
        import_s = time.perf_counter() - t
        print(f"Imported {imported['MODEL']} in {import_s:.2f} s")
        out = os.path.join(work, "ketzin_lcz.tif")
        res = processing.run("urbanfunctions:classify", {
            "S2_WINTER": stack, "MODEL": imported["MODEL"], "OUTPUT": out})
        card = read_card(imported["MODEL"])
        with open(res["MANIFEST"], encoding="utf-8") as f:
            manifest = json.load(f)
        timings = manifest["timings_s"]
        print(f"Classified in {res['SECONDS']:.1f} s on {res['PROVIDER']} ({timings})")
        # the main output holds the functions derived from the LCZ; the LCZ map is beside it
        lcz_path = json.loads(res["EXTRA_OUTPUTS"])["lcz"]
        shares, cells = class_shares(lcz_path, card)
        print(f"Class shares of {cells} cells of 100 m:")
        for label, share in shares:
            print(f"  {label:<34} {100 * share:5.1f} %")

        project = QgsProject.instance()
        lcz = QgsRasterLayer(lcz_path, "LCZ", "gdal")  # styled by the .qml the algorithm wrote
        # a copy of the true-colour bands in the work folder: the statistics QGIS computes for
        # a layer go into an .aux.xml beside its file (a VRT passes them on to its source),
        # never beside the read-only shared data
        from osgeo import gdal
        rgb = os.path.join(work, "s2_true_colour.tif")
        gdal.Translate(rgb, stack, bandList=[3, 2, 1])   # B4, B3, B2
        image = true_colour_layer(rgb)
        project.addMapLayers([lcz, image])
        png = export_lcz_layout(
            project, lcz, image, os.path.join(args.out, "lcz_ketzin.png"),
            "Local Climate Zones, Havelland west of Ketzin",
            f"So2Sat LCZ42 Sentinel-2 ResNet20 on one L1C scene (16 Feb 2017), 100 m cells. "
            f"Ran on {provider_label(res['PROVIDER'])} in {format_seconds(res['SECONDS'])}.",
            "Contains modified Copernicus Sentinel data 2017 (scene clip from eo-box, MIT). "
            "Network: So2Sat LCZ42 (Zhu et al. 2020; Qiu et al. 2019), MIT, "
            "(c) 2021 ERC starting grant So2Sat project team.")
        print(f"Wrote {png}")
        del lcz, image
        project.clear()
    finally:
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
