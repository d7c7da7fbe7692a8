"""Validation in real QGIS: ``createvalidationpoints`` and ``assessaccuracy`` through
processing.run (end to end: create points -> label them from a truth raster -> assess), the
reference-class drop-down stored in the GeoPackage, and the labelling dock."""
import csv
import json
import os

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from rasters_factory import X0, Y0, write_raster

pytestmark = pytest.mark.qgis

PROVIDER_ID = "ufvalidationtest"
NAMES = ["no data", "Residential", "Commercial", "Industrial", "Transportation"]
_keep = []


@pytest.fixture(scope="module")
def provider(processing_app):
    """A provider holding just the validation algorithms (independent of provider.py)."""
    from qgis.core import QgsApplication, QgsProcessingProvider

    from plugin.processing_provider.validation_algorithms import validation_algorithms

    class ValidationTestProvider(QgsProcessingProvider):
        def id(self):
            return PROVIDER_ID

        def name(self):
            return "Urban Functions validation (tests)"

        def loadAlgorithms(self):
            for alg in validation_algorithms():
                self.addAlgorithm(alg)

    registry = QgsApplication.processingRegistry()
    old = registry.providerById(PROVIDER_ID)
    if old is not None:
        registry.removeProvider(old)
    prov = ValidationTestProvider()
    _keep.append(prov)
    assert registry.addProvider(prov)
    yield prov
    registry.removeProvider(prov)


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    """A classified map (10 m, categories + colours, nodata strip) and a 5 m truth raster."""
    folder = tmp_path_factory.mktemp("validation_qgis")
    rng = np.random.default_rng(0)
    blocks = rng.integers(1, 5, (15, 20)).astype(np.uint8)
    arr = np.kron(blocks, np.ones((10, 10), np.uint8))      # 150 x 200 cells
    arr[:, :20] = 0                                         # nodata strip
    path = write_raster(folder / "map.tif", arr, 32633, (X0, 10, 0, Y0, 0, -10),
                        gdal.GDT_Byte, 0)
    ds = gdal.Open(path, gdal.GA_Update)
    band = ds.GetRasterBand(1)
    table = gdal.ColorTable()
    for code, rgb in enumerate([(0, 0, 0), (232, 163, 61), (215, 48, 31), (123, 50, 148),
                                (82, 82, 82)]):
        table.SetColorEntry(code, rgb + ((0,) if code == 0 else (255,)))
    band.SetRasterColorTable(table)
    band.SetCategoryNames(NAMES)  # after the colour table (GTiff update mode keeps them in PAM)
    band = ds = None
    ds = gdal.Open(path)
    assert ds.GetRasterBand(1).GetMetadata() is not None
    assert ds.GetRasterBand(1).GetCategoryNames() == NAMES
    ds = None
    # truth at 5 m: the map, with a quarter of the blocks changed to another class
    truth = arr.copy()
    change = np.kron(rng.random((15, 20)) < 0.25, np.ones((10, 10), bool))
    truth[change & (arr > 0)] = (truth[change & (arr > 0)] % 4) + 1
    fine = np.kron(truth, np.ones((2, 2), np.uint8))
    tpath = write_raster(folder / "truth.tif", fine, 32633, (X0, 5, 0, Y0, 0, -5),
                         gdal.GDT_Byte, 0)
    return {"map": path, "truth": tpath, "arr": arr, "truth_arr": truth, "folder": folder}


class _Feedback:
    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class Capturing(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.lines = []

            def pushInfo(self, info):
                self.lines.append(info)
                super().pushInfo(info)

        return Capturing()


def _create(rasters, out, **extra):
    import processing
    params = {"INPUT": rasters["map"], "DESIGN": 0, "ALLOCATION": 1, "SAMPLE_SIZE": 80,
              "MIN_PER_STRATUM": 10, "MIN_DISTANCE": 0.0, "SEED": 5, "OUTPUT": str(out)}
    params.update(extra)
    return processing.run(f"{PROVIDER_ID}:createvalidationpoints", params)


def _hand_oa(gpkg, rasters):
    """Stratified OA by hand: sum_h W_h (correct_h / n_h) from the file and the raster."""
    arr = rasters["arr"]
    ds = ogr.Open(str(gpkg))
    lyr = ds.GetLayer(0)
    per = {}
    for f in lyr:
        if f.IsFieldNull("ref_class"):
            continue
        per.setdefault(f["stratum"], []).append(f["ref_class"] == f["map_class"])
    ds = None
    n_pix = {c: int((arr == c).sum()) for c in (1, 2, 3, 4)}
    total = sum(n_pix.values())
    return sum(n_pix[h] / total * np.mean(v) for h, v in per.items())


def test_algorithms_metadata(provider):
    from qgis.core import QgsApplication
    reg = QgsApplication.processingRegistry()
    for name, title in (("planvalidationsample", "Plan validation sample size"),
                        ("createvalidationpoints", "Create validation points"),
                        ("assessaccuracy", "Assess map accuracy")):
        alg = reg.algorithmById(f"{PROVIDER_ID}:{name}")
        assert alg is not None
        assert alg.displayName() == title
        assert alg.group() == "Validation"
        assert "Olofsson" in alg.shortHelpString()
        assert alg.createInstance().name() == name


def test_create_label_assess_end_to_end(provider, rasters, tmp_path):
    import processing
    from qgis.core import QgsVectorLayer

    gpkg = tmp_path / "points.gpkg"
    res = _create(rasters, gpkg)
    assert res["N_POINTS"] == 80 and res["SEED_USED"] == 5
    assert os.path.exists(gpkg)
    layer = QgsVectorLayer(str(gpkg), "pts", "ogr")
    assert layer.isValid() and layer.featureCount() == 80
    assert [f.name() for f in layer.fields()][-7:] == [
        "point_id", "map_class", "map_label", "stratum", "weight", "incl_prob", "ref_class"]
    arr = rasters["arr"]
    for f in layer.getFeatures():
        p = f.geometry().asPoint()
        col, row = int((p.x() - X0) / 10), int((Y0 - p.y()) / 10)
        assert arr[row, col] == f["map_class"] == f["stratum"]
        assert f["map_label"] == NAMES[f["map_class"]]
        assert f["ref_class"] is None or f["ref_class"] != f["ref_class"] or \
            str(f["ref_class"]) == "NULL"
        assert f["weight"] == pytest.approx((arr == f["stratum"]).sum() / 20)  # equal: 20 each
    # the reference-class drop-down comes back from the GeoPackage's default style
    setup = layer.editorWidgetSetup(layer.fields().indexFromName("ref_class"))
    assert setup.type() == "ValueMap"
    entries = [(label, value) for e in setup.config()["map"] for label, value in e.items()]
    assert entries == [(f"{NAMES[c]} ({c})", c) for c in (1, 2, 3, 4)]
    del layer

    # label every point from the truth raster (another resolution), automatically
    from plugin.validation.labelling import label_points_file
    labels = label_points_file(str(gpkg), rasters["truth"])
    assert all(v in (1, 2, 3, 4) for v in labels)

    fb = _Feedback()
    out = {k: str(tmp_path / f"report.{k}") for k in ("html", "csv", "json")}
    res = processing.run(f"{PROVIDER_ID}:assessaccuracy", {
        "POINTS": str(gpkg), "REFERENCE_FIELD": "ref_class", "RASTER": rasters["map"],
        "OUTPUT_HTML": out["html"], "OUTPUT_CSV": out["csv"], "OUTPUT_JSON": out["json"]},
        feedback=fb)
    for path in out.values():
        assert os.path.getsize(path) > 500
    oa = _hand_oa(gpkg, rasters)
    assert 0.5 < oa < 1.0
    assert res["OVERALL_ACCURACY"] == pytest.approx(oa)
    assert res["N_POINTS"] == 80
    assert res["OA_CI_LOW"] < oa < res["OA_CI_HIGH"]
    assert any(line.startswith("Overall accuracy:") and "±" in line for line in fb.lines)
    d = json.load(open(out["json"]))
    assert d["overall_accuracy"]["estimate"] == pytest.approx(oa)
    assert sum(map(sum, d["error_matrix_counts"]["matrix"])) == 80
    rows = list(csv.DictReader(open(out["csv"])))
    assert float(next(r for r in rows if r["quantity"] == "overall_accuracy")["value"]) == \
        pytest.approx(oa)
    html = open(out["html"], encoding="utf-8").read()
    assert "<svg" in html and "Residential" in html

    # the same without the map / stratum fields: read from the raster, post-stratified
    res2 = processing.run(f"{PROVIDER_ID}:assessaccuracy", {
        "POINTS": str(gpkg), "REFERENCE_FIELD": "ref_class", "RASTER": rasters["map"],
        "MAP_FIELD": "", "STRATUM_FIELD": "", "OUTPUT_HTML": str(tmp_path / "r2.html")})
    assert res2["OVERALL_ACCURACY"] == pytest.approx(oa)


def test_labelled_points_and_reports_are_never_replaced_unless_asked(provider, rasters,
                                                                     tmp_path):
    """A rerun of Create validation points onto the file being labelled would lose hours of
    labels: it is refused before any work unless OVERWRITE is given; the same for the report."""
    import processing
    from qgis.core import QgsProcessingException
    from plugin.validation.labelling import label_points_file
    gpkg = tmp_path / "points.gpkg"
    _create(rasters, gpkg)
    labels = label_points_file(str(gpkg), rasters["truth"])
    before = gpkg.read_bytes()
    with pytest.raises(QgsProcessingException, match="already exists.*OVERWRITE=true"):
        _create(rasters, gpkg, SEED=6)
    assert gpkg.read_bytes() == before
    again = _create(rasters, gpkg, SEED=6, OVERWRITE=True)
    assert again["N_POINTS"] == 80 and gpkg.read_bytes() != before

    html = tmp_path / "report.html"
    html.write_text("<p>last month's assessment</p>")
    label_points_file(str(gpkg), rasters["truth"])
    params = {"POINTS": str(gpkg), "REFERENCE_FIELD": "ref_class", "RASTER": rasters["map"],
              "OUTPUT_HTML": str(html)}
    with pytest.raises(QgsProcessingException, match="report.html.*already exists"):
        processing.run(f"{PROVIDER_ID}:assessaccuracy", params)
    assert html.read_text() == "<p>last month's assessment</p>"
    json_out = tmp_path / "numbers.json"
    json_out.write_text("{}")
    with pytest.raises(QgsProcessingException, match="numbers.json.*already exists"):
        processing.run(f"{PROVIDER_ID}:assessaccuracy",
                       dict(params, OUTPUT_HTML=str(tmp_path / "new.html"),
                            OUTPUT_JSON=str(json_out)))
    assert not (tmp_path / "new.html").exists()
    res = processing.run(f"{PROVIDER_ID}:assessaccuracy", dict(params, OVERWRITE=True))
    assert res["N_POINTS"] == len([v for v in labels if v is not None])
    assert "<svg" in html.read_text(encoding="utf-8")


def test_sample_size_from_target_se_and_other_designs(provider, rasters, tmp_path):
    from qgis.core import QgsVectorLayer
    res = _create(rasters, tmp_path / "se.gpkg", SAMPLE_SIZE=0, TARGET_SE=0.05,
                  EXPECTED_UA="0.8", ALLOCATION=0, MIN_PER_STRATUM=5)
    # Olofsson eq. 13 with one U = 0.8 for every class: n = (0.4 / 0.05)^2 = 64 (N large); the
    # proportional split with n_h - 1 in the variance needs a few more to meet the target
    from plugin.validation.sample_size import sample_size_for_oa
    assert sample_size_for_oa({1: 10**6, 2: 10**6}, 0.05, 0.8) == 64
    assert 64 <= res["N_POINTS"] <= 64 * 1.15
    assert res["EXPECTED_SE_OA"] <= 0.05
    res = _create(rasters, tmp_path / "sys.gpkg", DESIGN=2, SAMPLE_SIZE=100)
    assert 70 <= res["N_POINTS"] <= 130
    res = _create(rasters, tmp_path / "srs.gpkg", DESIGN=1, SAMPLE_SIZE=50, MIN_DISTANCE=50.0)
    layer = QgsVectorLayer(str(tmp_path / "srs.gpkg"), "srs", "ogr")
    pts = [f.geometry().asPoint() for f in layer.getFeatures()]
    assert len(pts) == 50
    d = min(a.distance(b) for i, a in enumerate(pts) for b in pts[i + 1:])
    assert d >= 50.0


def test_run_and_load_sets_the_drop_down(provider, rasters, tmp_path):
    import processing
    from qgis.core import QgsProject
    before = set(QgsProject.instance().mapLayers())
    processing.runAndLoadResults(f"{PROVIDER_ID}:createvalidationpoints", {
        "INPUT": rasters["map"], "SAMPLE_SIZE": 30, "MIN_PER_STRATUM": 0, "SEED": 1,
        "OUTPUT": "TEMPORARY_OUTPUT"})
    added = [lyr for lid, lyr in QgsProject.instance().mapLayers().items() if lid not in before]
    try:
        assert len(added) == 1
        layer = added[0]
        assert layer.featureCount() == 30
        setup = layer.editorWidgetSetup(layer.fields().indexFromName("ref_class"))
        assert setup.type() == "ValueMap"
    finally:
        QgsProject.instance().removeMapLayers([lyr.id() for lyr in added])


def test_labelling_dock_saves_each_label(provider, rasters, tmp_path, iface):
    from qgis.core import QgsProject, QgsVectorLayer

    from plugin.gui.labelling_dock import LabellingDock

    gpkg = tmp_path / "dock.gpkg"
    _create(rasters, gpkg, SAMPLE_SIZE=12, MIN_PER_STRATUM=0, ALLOCATION=1)
    layer = QgsVectorLayer(str(gpkg), "points", "ogr")
    QgsProject.instance().addMapLayer(layer)
    dock = LabellingDock(iface, iface.mainWindow())
    try:
        dock.set_layer(layer)
        assert dock.field_name == "ref_class"
        assert dock.choices == [(c, f"{NAMES[c]} ({c})") for c in (1, 2, 3, 4)]
        assert len(dock.class_buttons) == 4
        assert dock.progress() == (0, 12)
        assert dock.progress_label.text() == "0 of 12 labelled"
        assert dock.index == 0
        # the canvas is centred on the point at the chosen scale
        f = layer.getFeature(dock.current_fid)
        p = f.geometry().asPoint()
        c = iface.mapCanvas().center()
        assert abs(c.x() - p.x()) < 1 and abs(c.y() - p.y()) < 1
        assert iface.mapCanvas().scale() == pytest.approx(dock.scale_spin.value(), rel=0.01)

        first = dock.current_fid
        assert dock.label_current(3, advance=True)
        assert dock.progress() == (1, 12)
        assert dock.current_fid != first               # moved on to the next unlabelled point
        # saved in the file at once, the layer is not left in edit mode
        assert not layer.isEditable()
        ds = ogr.Open(str(gpkg))
        assert ds.GetLayer(0).GetFeature(first)["ref_class"] == 3
        ds = None
        dock._on_key(2)                                # key "2" = the second class
        assert dock.progress() == (2, 12)
        dock.class_buttons[0].click()
        assert dock.progress() == (3, 12)
        # navigation: previous lands on the last labelled point, which shows its label
        dock.previous()
        assert "Residential" in dock.point_label.text()
        dock.label_current(None)                      # clear
        assert dock.progress() == (2, 12)
        for _ in range(20):
            if not dock.next_unlabelled():
                break
            dock.label_current(4)
        assert dock.progress() == (12, 12)
        assert dock.next_unlabelled() is False
        ds = ogr.Open(str(gpkg))
        assert all(not f.IsFieldNull("ref_class") for f in ds.GetLayer(0))
        ds = None
    finally:
        dock.cleanup()
        dock.deleteLater()
        QgsProject.instance().removeMapLayer(layer.id())


def test_labelling_dock_never_writes_into_a_field_it_picked_itself(provider, rasters, tmp_path,
                                                                   iface):
    """A points layer without ref_class: no field is chosen for the user (a key press would
    overwrite plot ids), and the points' key and the sample design's fields are refused."""
    from qgis.core import QgsProject, QgsVectorLayer

    from plugin.gui.labelling_dock import LabellingDock

    path = tmp_path / "plots.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    lyr = ds.CreateLayer("plots", srs=srs, geom_type=ogr.wkbPoint)
    for name in ("plot_id", "stratum", "my_ref"):
        lyr.CreateField(ogr.FieldDefn(name, ogr.OFTInteger))
    for i in range(5):
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT({X0 + 50 + 20 * i} {Y0 - 50})"))
        f.SetField("plot_id", 100 + i)
        f.SetField("stratum", 1)
        lyr.CreateFeature(f)
    ds = None
    layer = QgsVectorLayer(str(path), "plots", "ogr")
    QgsProject.instance().addMapLayer(layer)
    dock = LabellingDock(iface, iface.mainWindow())

    def values(field):
        d = ogr.Open(str(path))
        out = [f.GetField(field) for f in d.GetLayer(0)]
        d = None
        return out
    try:
        dock.set_layer(layer)
        assert dock.field_name == ""
        assert dock.label_current(3) is False
        assert "no ref_class field" in dock.point_label.text()
        for field, words in (("fid", "identifies the points"),
                             ("stratum", "belongs to the sample design")):
            dock.set_field(field)
            assert dock.label_current(3) is False
            assert words in dock.point_label.text()
        assert values("plot_id") == [100, 101, 102, 103, 104]
        assert values("stratum") == [1] * 5
        dock.set_field("my_ref")          # a field the user chose
        assert dock.label_current(3)
        assert values("my_ref").count(3) == 1
    finally:
        dock.cleanup()
        dock.deleteLater()
        QgsProject.instance().removeMapLayer(layer.id())


def test_labelling_dock_arrows_undo_unknown_key_and_hidden_map(provider, rasters, tmp_path,
                                                               iface):
    """Left/right step through the points, Ctrl+Z undoes the last label, a key without a class
    says so, and the classified map is hidden while the panel is open (restored after)."""
    from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer

    from plugin.gui.labelling_dock import LabellingDock
    from plugin.qgis_common.styling import PROP_KIND

    gpkg = tmp_path / "keys.gpkg"
    _create(rasters, gpkg, SAMPLE_SIZE=6, MIN_PER_STRATUM=0, ALLOCATION=1)
    layer = QgsVectorLayer(str(gpkg), "points", "ogr")
    themap = QgsRasterLayer(rasters["map"], "the map")
    themap.setCustomProperty(PROP_KIND, "classes")
    QgsProject.instance().addMapLayers([layer, themap])
    node = QgsProject.instance().layerTreeRoot().findLayer(themap.id())
    assert node.isVisible()
    dock = LabellingDock(iface, iface.mainWindow())
    shortcut = {sc.key().toString(): sc for sc in dock.shortcuts}
    try:
        dock._on_visibility(True)                      # the panel is shown
        assert not node.isVisible()
        dock.set_layer(layer)
        assert dock.index == 0
        shortcut["Right"].activated.emit()
        assert dock.index == 1
        shortcut["Left"].activated.emit()
        assert dock.index == 0
        first = dock.current_fid
        dock.label_current(3, advance=True)
        second = dock.current_fid
        dock.label_current(2, advance=True)
        assert dock.progress() == (2, 6)
        shortcut["Ctrl+Z"].activated.emit()            # the 2 on the second point is undone
        assert dock.current_fid == second and dock.progress() == (1, 6)
        shortcut["Ctrl+Z"].activated.emit()
        assert dock.current_fid == first and dock.progress() == (0, 6)
        ds = ogr.Open(str(gpkg))
        assert all(f.IsFieldNull("ref_class") for f in ds.GetLayer(0))
        ds = None
        dock._on_key(9)                                # 4 classes: key 9 means nothing
        assert "Key 9 has no class" in dock.point_label.text()
        assert dock.progress() == (0, 6)
        dock._on_visibility(False)                     # the panel is closed
        assert node.isVisible()
    finally:
        dock.cleanup()
        dock.deleteLater()
        QgsProject.instance().removeMapLayers([layer.id(), themap.id()])


def test_assess_own_points_in_another_crs_without_map_fields(provider, rasters, tmp_path):
    """A memory layer in EPSG:4326 with just a reference field: map classes come from the raster
    (coordinates transformed), strata are the map classes (post-stratified)."""
    import processing
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature,
                           QgsField, QgsGeometry, QgsPointXY, QgsProject, QgsVectorLayer)
    from qgis.PyQt.QtCore import QVariant

    arr, truth = rasters["arr"], rasters["truth_arr"]
    layer = QgsVectorLayer("Point?crs=EPSG:4326", "own", "memory")
    layer.dataProvider().addAttributes([QgsField("truth", QVariant.Int)])
    layer.updateFields()
    ct = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32633"),
                                QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    rng = np.random.default_rng(1)
    rows, cols = np.nonzero(arr > 0)
    pick = rng.choice(len(rows), 150, replace=False)
    feats, per = [], {}
    for i in pick:
        r, c = int(rows[i]), int(cols[i])
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromPointXY(ct.transform(QgsPointXY(X0 + 10 * c + 5,
                                                                      Y0 - 10 * r - 5))))
        f["truth"] = int(truth[r, c])
        feats.append(f)
        per.setdefault(int(arr[r, c]), []).append(truth[r, c] == arr[r, c])
    layer.dataProvider().addFeatures(feats)
    res = processing.run(f"{PROVIDER_ID}:assessaccuracy", {
        "POINTS": layer, "REFERENCE_FIELD": "truth", "RASTER": rasters["map"],
        "OUTPUT_HTML": str(tmp_path / "own.html")})
    total = int((arr > 0).sum())
    oa = sum((arr == h).sum() / total * np.mean(v) for h, v in per.items())
    assert res["OVERALL_ACCURACY"] == pytest.approx(oa)
    assert res["N_POINTS"] == 150
    html = open(tmp_path / "own.html", encoding="utf-8").read()
    assert "Overall accuracy" in html


def test_plan_shows_the_sample_that_create_then_draws(provider, rasters, tmp_path):
    import processing
    common = {"INPUT": rasters["map"], "ALLOCATION": 0, "SAMPLE_SIZE": 0, "TARGET_SE": 0.03,
              "EXPECTED_UA": "0.8", "MIN_PER_STRATUM": 20}
    planned = processing.run(f"{PROVIDER_ID}:planvalidationsample", dict(common))
    assert planned["EXPECTED_SE_OA"] <= 0.03
    assert planned["N_POINTS"] >= planned["EQ13_N"] > 0
    assert not any(p.suffix == ".gpkg" for p in tmp_path.iterdir()), "planning draws nothing"
    drawn = processing.run(f"{PROVIDER_ID}:createvalidationpoints",
                           dict(common, DESIGN=0, SEED=3, MIN_DISTANCE=0.0,
                                OUTPUT=str(tmp_path / "p.gpkg")))
    assert drawn["N_POINTS"] == planned["N_POINTS"]
    assert drawn["EXPECTED_SE_OA"] == pytest.approx(planned["EXPECTED_SE_OA"])


def test_the_classified_raster_and_its_sidecar_are_never_modified(provider, rasters, tmp_path):
    """Plan, create and assess read the map with GDAL: no QGIS layer computes statistics into
    an .aux.xml beside it (a map without a palette would get one) and nothing else changes."""
    import processing
    folder = tmp_path / "map"
    folder.mkdir()
    plain = write_raster(folder / "plain_map.tif", rasters["arr"], 32633,
                         (X0, 10, 0, Y0, 0, -10), gdal.GDT_Byte, 0)

    def state():
        return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}
    before = state()
    assert list(before) == ["plain_map.tif"]
    processing.run(f"{PROVIDER_ID}:planvalidationsample", {"INPUT": plain, "SAMPLE_SIZE": 40})
    gpkg = tmp_path / "points.gpkg"
    _create(dict(rasters, map=plain), gpkg)
    from plugin.validation.labelling import label_points_file
    label_points_file(str(gpkg), rasters["truth"])
    processing.run(f"{PROVIDER_ID}:assessaccuracy", {
        "POINTS": str(gpkg), "REFERENCE_FIELD": "ref_class", "RASTER": plain,
        "OUTPUT_HTML": str(tmp_path / "r.html")})
    assert (tmp_path / "r.html").exists()
    assert state() == before
