"""Screenshot of the "Train on my area" dialog after a real run: ``make screenshots``.

With ../shared/data present it trains on the real Sentinel-2 clip with the real OpenStreetMap
land use (one epoch, to keep it short); otherwise on the sample city with points from its
ground truth. Saves ``<out>/train_dialog.png``.

Usage: python scripts/train_screenshot.py [OUT_DIR] [--work DIR]
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qgis_docs import wait_for  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
S2 = os.path.join(SHARED, "s2", "ketzin_20170216_s2l1c_10band.tif")
OSM = os.path.join(SHARED, "osm", "havelland_osm_landuse_west.gpkg")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=os.path.join(ROOT, "docs"))
    parser.add_argument("--work", default=os.path.join(ROOT, "build", "screenshots"))
    args = parser.parse_args(argv)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    from plugin.core.environment import add_venv_site_packages
    add_venv_site_packages()
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
    app = QgsApplication([], True, os.path.join(work, "profile"))
    app.initQgis()
    try:
        sys.path.append("/usr/share/qgis/python/plugins")   # QGIS's own Processing plugin
        from processing.core.Processing import Processing
        Processing.initialize()
        from plugin.gui.train_dialog import TrainDialog
        from plugin.processing_provider.provider import UrbanFunctionsProvider
        provider = UrbanFunctionsProvider()
        QgsApplication.processingRegistry().addProvider(provider)
        project = QgsProject.instance()
        if os.path.isfile(S2) and os.path.isfile(OSM):
            # a copy in the work folder: the statistics QGIS computes for a layer go into an
            # .aux.xml beside its file (a VRT passes them on to its source), never beside the
            # read-only shared data
            import shutil
            copy = os.path.join(work, os.path.basename(S2))
            shutil.copy(S2, copy)
            raster = QgsRasterLayer(copy, "Sentinel-2 16 Feb 2017 (Havelland)", "gdal")
            labels = QgsVectorLayer(OSM, "OpenStreetMap land use (west)", "ogr")
            modality, field = "s2_winter", "fclass"
        else:
            from plugin.samplecity import generate_sample_city
            from test_train_algorithm import gt_points
            city = generate_sample_city(os.path.join(work, "city"), seed=0)
            raster = QgsRasterLayer(city.inputs["s2_summer"], "Sentinel-2 summer", "gdal")
            labels = QgsVectorLayer(gt_points(city.ground_truth, os.path.join(
                work, "points.gpkg")), "labelled points", "ogr")
            modality, field = "s2_summer", "function"
        project.addMapLayers([raster, labels])
        dialog = TrainDialog()
        dialog.input_combos[modality].setLayer(raster)
        dialog.labels_combo.setLayer(labels)
        dialog.field_combo.setField(field)
        dialog.epochs.setValue(1)
        out = os.path.join(work, "my_area.onnx")
        for suffix in (".onnx", ".md", "_metrics.json", "_report.html"):
            if os.path.exists(out[:-5] + suffix):
                os.remove(out[:-5] + suffix)
        dialog.output.setFilePath(out)
        done = []
        dialog.finished_training.connect(lambda ok, r: done.append(ok))
        dialog.resize(640, 900)
        dialog.show()
        print("Training from the dialog (one epoch) …")
        dialog.start()
        if not wait_for(lambda: done, 1800):
            raise SystemExit("The training did not finish within 30 minutes.")
        if not done[0]:
            raise SystemExit("The training failed:\n" + dialog.log.toPlainText())
        for _ in range(10):
            QgsApplication.processEvents()
        path = os.path.join(args.out, "train_dialog.png")
        if not dialog.grab().save(path):
            raise SystemExit(f"Could not save {path}")
        print(f"Wrote {path}")
        dialog.close()
        del dialog
        project.clear()
        QgsApplication.processingRegistry().removeProvider(provider)
    finally:
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
