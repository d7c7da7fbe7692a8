"""Bad inputs and faults through the Processing algorithms, the way a careless or unlucky user
meets them (issue 12). Every case asserts four things:

1. the run fails with a QgsProcessingException whose message holds the key words;
2. the output folder holds no new file, partial or otherwise;
3. every input is byte-identical and has no new sidecar (.aux.xml and the like);
4. an existing file in the output folder (a map and its hand-edited style) survives.

Faults that need more than processing.run (a full disk, SIGTERM, a killed run's partial file)
have their own tests below, with the same four checks.
"""
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from test_processing_algorithm import (CollectingFeedback, copied_inputs, folder_state,
                                       qgis_process_env)

pytestmark = pytest.mark.usefixtures("provider")
gdal.UseExceptions()

KEEP = ("keep.tif", "keep.qml")


# --- the workspace: inputs (snapshotted once), and a fresh output folder per case ----------
class Workspace:
    pass


def _write(path, array, gt, wkt, descriptions=None, nodata=None, dtype=gdal.GDT_UInt16):
    array = array if array.ndim == 3 else array[None]
    ds = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[2], array.shape[1],
                                              array.shape[0], dtype)
    if gt:
        ds.SetGeoTransform(gt)
    if wkt:
        ds.SetProjection(wkt)
    for i, a in enumerate(array, start=1):
        band = ds.GetRasterBand(i)
        band.WriteArray(a)
        if descriptions:
            band.SetDescription(descriptions[i - 1])
        if nodata is not None:
            band.SetNoDataValue(nodata)
    ds = None
    return str(path)


def _points(path, wkt, xy, field="ref_class", values=None, ogr_type=ogr.OFTInteger):
    srs = osr.SpatialReference(wkt=wkt) if wkt else None
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("points", srs=srs, geom_type=ogr.wkbPoint)
    lyr.CreateField(ogr.FieldDefn(field, ogr_type))
    for i, (x, y) in enumerate(xy):
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT({x} {y})"))
        if values is not None and values[i] is not None:
            f.SetField(field, values[i])
        lyr.CreateFeature(f)
    ds = None
    return str(path)


@pytest.fixture(scope="module")
def ws(sample_city, model_path, tmp_path_factory):
    import processing
    root = tmp_path_factory.mktemp("bad_inputs")
    w = Workspace()
    w.model = model_path
    inputs, _ = copied_inputs({"s2": sample_city.inputs["s2_summer"],
                               "ntl": sample_city.inputs["ntl"],
                               "vhr": sample_city.inputs["vhr"]}, root / "inputs")
    w.folder = root / "inputs"
    w.s2, w.ntl, w.vhr = inputs["s2"], inputs["ntl"], inputs["vhr"]
    src = gdal.Open(w.s2)
    gt, wkt = src.GetGeoTransform(), src.GetProjection()
    s2_full = src.ReadAsArray()
    s2 = s2_full[:, :60, :60]
    src = None
    names = [f"B{b}" for b in (2, 3, 4, 5, 6, 7, 8)] + ["B8A", "B11", "B12"]
    f = w.folder
    w.text_tif = str(f / "notes.tif")
    with open(w.text_tif, "w") as fh:
        fh.write("this is not a raster\n")
    w.empty_tif = str(f / "empty.tif")
    open(w.empty_tif, "wb").close()
    w.trunc_tif = str(f / "truncated.tif")
    with open(sample_city.inputs["s2_summer"], "rb") as fh:
        data = fh.read()
    with open(w.trunc_tif, "wb") as fh:
        fh.write(data[:len(data) // 3])
    w.nocrs_tif = _write(f / "nocrs.tif", s2, None, None)
    w.rotated_tif = _write(f / "rotated.tif", s2, (gt[0], 10, 1, gt[3], 1, -10), wkt)
    w.onepx_tif = _write(f / "onepx.tif", s2[:, :1, :1], gt, wkt, names)
    w.nodata_tif = _write(f / "allnodata.tif", np.zeros_like(s2), gt, wkt, names, nodata=0)
    w.complex_tif = _write(f / "complex.tif", s2.astype(np.complex64), gt, wkt,
                           dtype=gdal.GDT_CFloat32)
    rgb = np.random.default_rng(0).integers(0, 255, (3, 120, 120)).astype(np.uint8)
    vgt = (gt[0], 2.0, 0, gt[3], 0, -2.0)
    w.b234_vhr = _write(f / "vhr_named_b2b3b4.tif", rgb, vgt, wkt, ["B2", "B3", "B4"],
                        dtype=gdal.GDT_Byte)
    far = (gt[0] + 500000, gt[1], 0, gt[3], 0, gt[5])
    w.far_s2 = _write(f / "s2_elsewhere.tif", s2, far, wkt, names)
    # a classified map and labelled points on it (assess), a label layer (train)
    w.map = str(f / "map.tif")
    processing.run("urbanfunctions:classify", {"S2_SUMMER": w.s2, "NTL": w.ntl,
                                               "MODEL": w.model, "OUTPUT": w.map},
                   feedback=CollectingFeedback())
    m = gdal.Open(w.map)
    mgt, mwkt, codes = m.GetGeoTransform(), m.GetProjection(), m.ReadAsArray()
    m = None
    rows, cols = np.nonzero(codes > 0)
    pick = np.random.default_rng(1).choice(rows.size, 40, replace=False)
    xy = [(mgt[0] + (cols[i] + .5) * mgt[1], mgt[3] + (rows[i] + .5) * mgt[5]) for i in pick]
    ok = [int(codes[rows[i], cols[i]]) for i in pick]
    w.points = _points(f / "points.gpkg", mwkt, xy, values=ok)
    w.points_far = _points(f / "points_far.gpkg", mwkt,
                           [(x + 100000, y) for x, y in xy], values=ok)
    w.points_99 = _points(f / "points_99.gpkg", mwkt, xy, values=[99] + ok[1:])
    w.points_text = _points(f / "points_text.gpkg", mwkt, xy, values=["residential"] * 40,
                            ogr_type=ogr.OFTString)
    w.points_unlabelled = _points(f / "points_unlabelled.gpkg", mwkt, xy)
    w.labels = _points(f / "labels.gpkg", mwkt, xy, field="function",
                       values=["residential", "water", "skyscraper"] + ["green_space"] * 37,
                       ogr_type=ogr.OFTString)
    w.labels_ok = _points(f / "labels_ok.gpkg", mwkt, xy, field="function",
                          values=["residential", "water"] * 20, ogr_type=ogr.OFTString)
    w.labels_far = _points(f / "labels_far.gpkg", mwkt, [(x + 100000, y) for x, y in xy],
                           field="function", values=["residential"] * 40,
                           ogr_type=ogr.OFTString)
    w.labels_one_class = _points(f / "labels_one_class.gpkg", mwkt, xy, field="function",
                                 values=["residential"] * 40, ogr_type=ogr.OFTString)
    w.labels_nocrs = _points(f / "labels_nocrs.gpkg", None, xy, field="function",
                             values=["residential", "water"] * 20, ogr_type=ogr.OFTString)
    # Sentinel-2 as reflectance 0-1 (float), and a raster holding one value everywhere
    w.s2_unit = _write(f / "s2_reflectance_0_1.tif", s2.astype(np.float32) / 10000.0, gt, wkt,
                       names, dtype=gdal.GDT_Float32)
    w.nodata_full = _write(f / "allnodata_full.tif", np.zeros_like(s2_full), gt, wkt, names,
                           nodata=0)
    w.s2_const = _write(f / "s2_constant.tif", np.full_like(s2, 1000), gt, wkt, names)
    w.map_latin1 = str(f / "class_map_latin1.csv")
    with open(w.map_latin1, "wb") as fh:
        fh.write("value,function\nWohngebiet,residential\nGewässer,water\n".encode("latin-1"))
    w.map_twice = str(f / "class_map_twice.csv")
    with open(w.map_twice, "w") as fh:
        fh.write("value,function\nresidential,residential\nwater,water\n"
                 "# later, by mistake\nwater,green_space\n")
    w.map_ignore = str(f / "class_map_ignore.csv")
    with open(w.map_ignore, "w") as fh:
        fh.write("value,function\nresidential,ignore\nwater,ignore\n")
    models = root / "models"
    models.mkdir()
    w.broken_model = str(models / "broken-model.onnx")
    with open(w.broken_model, "wb") as fh:
        fh.write(b"\x08\x01garbage")
    w.models = str(models)
    w.text_h5 = str(f / "weights.h5")
    with open(w.text_h5, "w") as fh:
        fh.write("not hdf5\n")
    w.before = folder_state(w.folder)
    return w


@pytest.fixture
def out(tmp_path, ws):
    """An output folder holding a map and its hand-edited style, which must survive."""
    folder = tmp_path / "out"
    folder.mkdir()
    shutil.copy(ws.map, folder / "keep.tif")
    (folder / "keep.qml").write_text("<qgis><!-- my hand-made style --></qgis>")
    return folder


def classify(ws, out, **extra):
    params = {"S2_SUMMER": ws.s2, "NTL": ws.ntl, "MODEL": ws.model, "OUTPUT": str(out / "map.tif")}
    params.update(extra)
    return params


def train(ws, out, **extra):
    params = {"S2_SUMMER": ws.s2, "NTL": ws.ntl, "LABELS": ws.labels, "LABEL_FIELD": "function",
              "EPOCHS": 1, "OUTPUT_MODEL": str(out / "model.onnx")}
    params.update(extra)
    return params


def assess(ws, out, points=None, **extra):
    params = {"POINTS": points or ws.points, "REFERENCE_FIELD": "ref_class", "RASTER": ws.map,
              "OUTPUT_HTML": str(out / "report.html")}
    params.update(extra)
    return params


def create(ws, out, **extra):
    params = {"INPUT": ws.map, "SAMPLE_SIZE": 50, "OUTPUT": str(out / "points.gpkg")}
    params.update(extra)
    return params


C, T, A, P, I = ("urbanfunctions:classify", "urbanfunctions:train",
                 "urbanfunctions:assessaccuracy", "urbanfunctions:createvalidationpoints",
                 "urbanfunctions:importso2sat")

# id: (algorithm, parameters from (workspace, output folder), key words of the message)
CASES = {
    # --- outputs: never over an input, never over an existing file unless asked
    "output-is-the-s2-input": (C, lambda w, o: classify(w, o, OUTPUT=w.s2, OVERWRITE=True),
                               ["one of the inputs"]),
    "output-is-the-vhr-input": (C, lambda w, o: classify(w, o, VHR=w.vhr, OUTPUT=w.vhr,
                                                         OVERWRITE=True),
                                ["one of the inputs"]),
    "output-is-the-model": (C, lambda w, o: classify(w, o, OUTPUT=w.model, OVERWRITE=True),
                            ["one of the inputs"]),
    "existing-map": (C, lambda w, o: classify(w, o, OUTPUT=str(o / "keep.tif")),
                     ["already exists", "overwrit"]),
    "existing-style-only": (C, lambda w, o: classify(w, o, OUTPUT=str(o / "keep.tiff")),
                            ["keep.qml", "already exists"]),
    "existing-probabilities": (C, lambda w, o: (shutil.copy(w.map, o / "map_probabilities.tif"),
                                                classify(w, o, PROBABILITIES=True))[1],
                               ["map_probabilities.tif", "already exists"]),
    "existing-manifest": (C, lambda w, o: ((o / "map.manifest.json").write_text("{}"),
                                           classify(w, o))[1],
                          ["map.manifest.json", "already exists"]),
    "output-in-proc": (C, lambda w, o: classify(w, o, OUTPUT="/proc/map.tif"),
                       ["writ", "/proc"]),
    "missing-output-folder": (C, lambda w, o: classify(w, o, OUTPUT=str(o / "no" / "m.tif")),
                              ["does not exist"]),
    "output-not-geotiff": (C, lambda w, o: classify(w, o, OUTPUT=str(o / "map.png")),
                           ["geotiff"]),
    # --- unreadable or implausible inputs
    "no-input": (C, lambda w, o: {"MODEL": w.model, "OUTPUT": str(o / "map.tif")},
                 ["no input raster"]),
    "text-file-named-tif": (C, lambda w, o: classify(w, o, S2_SUMMER=w.text_tif),
                            ["not a raster format", "notes.tif"]),
    "empty-file": (C, lambda w, o: classify(w, o, S2_SUMMER=w.empty_tif),
                   ["empty", "empty.tif"]),
    "truncated-geotiff": (C, lambda w, o: classify(w, o, S2_SUMMER=w.trunc_tif),
                          ["truncated", "truncated.tif"]),
    "missing-file": (C, lambda w, o: classify(w, o, S2_SUMMER=str(o / "nowhere.tif")),
                     ["nowhere.tif", "no such file"]),
    "train-missing-file": (T, lambda w, o: train(w, o, S2_SUMMER=str(o / "nowhere.tif")),
                           ["nowhere.tif", "no such file"]),
    "no-crs": (C, lambda w, o: classify(w, o, S2_SUMMER=w.nocrs_tif),
               ["coordinate reference system"]),
    "rotated": (C, lambda w, o: classify(w, o, S2_SUMMER=w.rotated_tif), ["rotated"]),
    "one-pixel": (C, lambda w, o: classify(w, o, S2_SUMMER=w.onepx_tif, NTL=None),
                  ["too small", "1 x 1"]),
    "all-nodata": (C, lambda w, o: classify(w, o, S2_SUMMER=w.nodata_tif, NTL=None),
                   ["no cell of the map has data"]),
    "complex-values": (C, lambda w, o: classify(w, o, S2_SUMMER=w.complex_tif),
                       ["complex"]),
    "s2-stack-in-vhr-slot": (C, lambda w, o: classify(w, o, VHR=w.s2),
                             ["vhr", "10 m pixels", "right layer"]),
    "vhr-bands-named-b2-b3-b4": (C, lambda w, o: classify(w, o, VHR=w.b234_vhr),
                                 ["named b2, b3, b4", "right layer"]),
    "inputs-do-not-overlap": (C, lambda w, o: classify(w, o, S2_SUMMER=w.far_s2),
                              ["overlap"]),
    "extent-misses-inputs": (C, lambda w, o: classify(
        w, o, EXTENT="0,10,0,10 [EPSG:3857]"), ["area to process", "does not overlap"]),
    # --- parameters out of range, models that cannot be used
    "tile-size-zero": (C, lambda w, o: classify(w, o, TILE_SIZE=0), ["tile_size", "1 to 4096"]),
    "tile-size-huge": (C, lambda w, o: classify(w, o, TILE_SIZE=100000), ["1 to 4096"]),
    "overlap-negative": (C, lambda w, o: classify(w, o, OVERLAP=-1), ["overlap", "0 to 2048"]),
    "batch-negative": (C, lambda w, o: classify(w, o, BATCH_SIZE=-1), ["batch_size", "0 to 256"]),
    "device-unknown": (C, lambda w, o: classify(w, o, DEVICE=9), ["device", "choose one of"]),
    "model-unknown": (C, lambda w, o: classify(w, o, MODEL="no-such-model"),
                      ["no model named"]),
    "model-not-onnx": (C, lambda w, o: classify(w, o, MODEL=w.text_tif), ["model"]),
    "model-broken-in-folder": (C, lambda w, o: classify(w, o, MODEL="broken-model"),
                               ["broken-model", "cannot be loaded"]),
    "gpu-without-cuda": (C, lambda w, o: classify(w, o, DEVICE=2), ["cuda"]),
    # --- training
    "train-unknown-label": (T, lambda w, o: train(w, o), ["skyscraper"]),
    "train-missing-field": (T, lambda w, o: train(w, o, LABEL_FIELD="nosuchfield"),
                            ["nosuchfield"]),
    "train-labels-elsewhere": (T, lambda w, o: train(w, o, LABELS=w.labels_far),
                               ["label"]),
    "train-output-is-the-base-model": (T, lambda w, o: train(
        w, o, LABELS=w.labels_ok, BASE_MODEL=w.model, OUTPUT_MODEL=w.model, OVERWRITE=True),
        ["one of the inputs"]),
    "train-existing-model": (T, lambda w, o: (shutil.copy(w.model, o / "model.onnx"),
                                              train(w, o))[1], ["already exists"]),
    "train-epochs-negative": (T, lambda w, o: train(w, o, EPOCHS=-1), ["epochs"]),
    "train-validation-share": (T, lambda w, o: train(w, o, VALIDATION_SHARE=2),
                               ["validation_share"]),
    "train-no-input": (T, lambda w, o: train(w, o, S2_SUMMER=None, NTL=None), ["input"]),
    "train-output-tif": (T, lambda w, o: train(w, o, LABELS=w.labels_ok,
                                               OUTPUT_MODEL=str(o / "model.tif")),
                         ["must be an .onnx", ".tif"]),
    "train-output-folder": (T, lambda w, o: train(w, o, LABELS=w.labels_ok,
                                                  OUTPUT_MODEL=str(o) + os.sep),
                            ["is a folder"]),
    "train-output-in-proc": (T, lambda w, o: train(w, o, LABELS=w.labels_ok,
                                                   OUTPUT_MODEL="/proc/model.onnx"),
                             ["writ", "/proc"]),   # root: the probe fails; others: no access
    "train-labels-without-crs": (T, lambda w, o: train(w, o, LABELS=w.labels_nocrs),
                                 ["coordinate reference system"]),
    "train-one-class": (T, lambda w, o: train(w, o, LABELS=w.labels_one_class),
                        ["only one class", "at least two"]),
    "train-class-map-not-utf8": (T, lambda w, o: train(w, o, LABELS=w.labels_ok,
                                                       CLASS_MAP=w.map_latin1), ["utf-8"]),
    "train-class-map-value-twice": (T, lambda w, o: train(w, o, LABELS=w.labels_ok,
                                                          CLASS_MAP=w.map_twice),
                                    ["mapped twice", "line 3", "line 5"]),
    "train-class-map-all-ignored": (T, lambda w, o: train(w, o, LABELS=w.labels_ok,
                                                          CLASS_MAP=w.map_ignore),
                                    ["every value", "ignore"]),
    "train-all-nodata": (T, lambda w, o: train(w, o, LABELS=w.labels_ok,
                                               S2_SUMMER=w.nodata_full, NTL=None),
                         ["has data in any input"]),
    "train-aoi-of-points": (T, lambda w, o: train(w, o, LABELS=w.labels_ok, AOI=w.points),
                            ["area of interest", "no polygon"]),
    "train-gpu-without-cuda": (T, lambda w, o: train(w, o, LABELS=w.labels_ok, DEVICE=2),
                               ["cuda"]),
    "s2-reflectance-0-1": (C, lambda w, o: classify(w, o, S2_SUMMER=w.s2_unit),
                           ["reflectance 0-1", "10000"]),
    "train-s2-reflectance-0-1": (T, lambda w, o: train(w, o, LABELS=w.labels_ok,
                                                       S2_SUMMER=w.s2_unit),
                                 ["reflectance 0-1", "10000"]),
    "constant-raster": (C, lambda w, o: classify(w, o, S2_SUMMER=w.s2_const),
                        ["same value", "no imagery"]),
    # --- validation points and accuracy
    "assess-points-off-the-map": (A, lambda w, o: assess(w, o, w.points_far),
                                  ["none of the 40", "outside"]),
    "assess-reference-99": (A, lambda w, o: assess(w, o, w.points_99),
                            ["99", "not classes of this map"]),
    "assess-text-labels": (A, lambda w, o: assess(w, o, w.points_text), ["holds text"]),
    "assess-unlabelled": (A, lambda w, o: assess(w, o, w.points_unlabelled), ["label"]),
    "assess-raster-is-text": (A, lambda w, o: assess(w, o, RASTER=w.text_tif), ["notes.tif"]),
    "assess-missing-field": (A, lambda w, o: assess(w, o, REFERENCE_FIELD="nope"), ["nope"]),
    "create-points-sample-negative": (P, lambda w, o: create(w, o, SAMPLE_SIZE=-5),
                                      ["sample_size"]),
    "create-points-raster-is-text": (P, lambda w, o: create(w, o, INPUT=w.text_tif),
                                     ["notes.tif"]),
    "import-h5-is-text": (I, lambda w, o: {"H5": w.text_h5, "MODELS_DIR": str(o)}, ["h5"]),
    "import-h5-missing": (I, lambda w, o: {"H5": str(o / "none.h5"), "MODELS_DIR": str(o)},
                          ["none.h5"]),
}


def check_untouched(ws, out, extra_allowed=()):
    """Checks 2-4: nothing new in ``out``, inputs unchanged, the existing files intact."""
    left = sorted(set(os.listdir(out)) - set(KEEP) - set(extra_allowed))
    assert not left, f"files left in the output folder: {left}"
    assert folder_state(ws.folder) == ws.before, "an input changed or got a sidecar"
    assert (out / "keep.qml").read_text() == "<qgis><!-- my hand-made style --></qgis>"
    assert folder_state(out)["keep.tif"] == folder_state(ws.folder)["map.tif"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, ws, out, monkeypatch):
    import processing
    from qgis.core import QgsProcessingException
    alg, build, words = CASES[case]
    if alg == T:
        pytest.importorskip("torch", reason="training needs torch")
    monkeypatch.setenv("URBAN_FUNCTIONS_MODELS", ws.models)
    params = {k: v for k, v in build(ws, out).items() if v is not None}
    # files a case put there on purpose (an existing output) must survive too
    planted = {n: (out / n).read_bytes() for n in os.listdir(out) if n not in KEEP}
    feedback = CollectingFeedback()
    with pytest.raises(QgsProcessingException) as err:
        processing.run(alg, params, feedback=feedback)
    message = str(err.value).lower()
    for word in words:
        assert word.lower() in message, f"{word!r} not in: {err.value}"
    check_untouched(ws, out, planted)
    for name, data in planted.items():
        assert (out / name).read_bytes() == data, f"{name} was changed"


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


# --- faults beyond processing.run ----------------------------------------------------------
def test_sentinel2_with_fill_water_or_a_mask_is_not_taken_for_reflectance_0_1(ws, tmp_path):
    """The value check must not refuse real scenes: most of a tile zero-filled without a
    declared nodata, mostly open water in L2A without the +1000 offset (values of tens), or
    saturated fill marked only by a mask band (the engine's reads honour it, so does the
    check). Reflectance 0-1, and the same fill without its mask, are still refused."""
    from plugin.core import feeds
    from plugin.core.errors import InputError
    from plugin.core.model_card import read_card
    from plugin.core.rasters import inspect_raster
    spec = next(s for s in read_card(ws.model).inputs if s.modality == "s2_summer")
    src = gdal.Open(ws.s2)
    gt, wkt, s2 = src.GetGeoTransform(), src.GetProjection(), src.ReadAsArray()
    src = None
    names = [f"B{b}" for b in (2, 3, 4, 5, 6, 7, 8)] + ["B8A", "B11", "B12"]
    cut = int(s2.shape[2] * 0.9)
    fill = s2.copy()
    fill[:, :, :cut] = 0
    water = np.random.default_rng(0).integers(5, 60, s2.shape).astype(s2.dtype)
    water[:, :, cut:] = s2[:, :, cut:]
    saturated = s2.copy()
    saturated[:, :, :cut] = 65535
    masked = _write(tmp_path / "masked.tif", saturated, gt, wkt, names)
    ds = gdal.Open(masked, gdal.GA_Update)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    keep = np.zeros(s2.shape[1:], np.uint8)
    keep[:, cut:] = 255
    ds.GetRasterBand(1).GetMaskBand().WriteArray(keep)
    ds = None

    def check(path):
        feeds._CHECKED.clear()
        info = inspect_raster(path)
        feeds.check_values(gdal.Open(path), info, spec, list(range(1, 11)), info.nodata)
    for path in (_write(tmp_path / "fill.tif", fill, gt, wkt, names),
                 _write(tmp_path / "water.tif", water, gt, wkt, names), masked):
        check(path)          # accepted
    with pytest.raises(InputError, match="reflectance 0-1"):
        check(_write(tmp_path / "unit.tif", s2.astype(np.float32) / 10000.0, gt, wkt, names,
                     dtype=gdal.GDT_Float32))
    with pytest.raises(InputError, match="not reflectance|15000"):
        check(_write(tmp_path / "unmasked.tif", saturated, gt, wkt, names))


def test_gdal_pam_switched_off_is_said_before_any_work(ws, out):
    """A map keeps its class names in its .aux.xml: with GDAL_PAM_ENABLED=NO it cannot be
    completed, and a training run would fail only after its epochs. Both refuse at once."""
    import processing
    from qgis.core import QgsProcessingException
    gdal.SetConfigOption("GDAL_PAM_ENABLED", "NO")
    try:
        for alg, params in ((C, classify(ws, out)),
                            (T, train(ws, out, LABELS=ws.labels_ok))):
            with pytest.raises(QgsProcessingException, match="GDAL_PAM_ENABLED"):
                processing.run(alg, params, feedback=CollectingFeedback())
    finally:
        gdal.SetConfigOption("GDAL_PAM_ENABLED", None)
    check_untouched(ws, out)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only), nearly filled by the test itself."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a tmpfs mount, which needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    left_open = _open_files_under(mnt)  # a leaked handle keeps a deleted file's space
    r = subprocess.run(["umount", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:  # still open: a file handle leaked, which is a failure of its own
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        pytest.fail(f"the output disk is still in use after the run: {r.stderr.strip()}")
    assert not left_open, f"files still open after the run: {left_open}"


def _open_files_under(folder):
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def _fill(folder, leave):
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("leave,probabilities", [(2000, False), (12000, False),
                                                 (48000, False), (200000, True)])
def test_full_disk_publishes_nothing(ws, small_disk, leave, probabilities):
    """A full disk at any stage (the first tile, the last flush, the class names' sidecar, an
    extra output) fails clearly and leaves no file, not a damaged map under its final name."""
    import processing
    from qgis.core import QgsProcessingException
    shutil.copy(ws.map, small_disk / "keep.tif")
    (small_disk / "keep.qml").write_text("<qgis><!-- my hand-made style --></qgis>")
    _fill(small_disk, leave)
    with pytest.raises(QgsProcessingException) as err:
        processing.run(C, classify(ws, small_disk, VHR=ws.vhr, CONFIDENCE=True,
                                   PROBABILITIES=probabilities),
                       feedback=CollectingFeedback())
    message = str(err.value).lower()
    assert "cannot write" in message or "no space" in message, message
    check_untouched(ws, small_disk, ["filler"])


def test_a_killed_runs_partial_file_is_removed_by_the_next_run(ws, out):
    """SIGKILL cannot be handled: its hidden partial file (pid in the name) is removed by the
    next run for that output, which says so; a live run's partial file is left alone."""
    import processing
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = out / f".map.tif.{dead.pid}-abcd1234.partial.tif"
    stale.write_bytes(b"half a map")
    live = out / f".map.tif.{os.getpid()}-efgh5678.partial.tif"
    live.write_bytes(b"being written")
    feedback = CollectingFeedback()
    processing.run(C, classify(ws, out), feedback=feedback)
    assert not stale.exists() and live.exists()
    assert any("interrupted run" in m and stale.name in m for m in feedback.infos)
    live.unlink()
    assert sorted(os.listdir(out)) == sorted(KEEP + ("map.tif", "map.tif.aux.xml", "map.qml",
                                                     "map.manifest.json"))
    assert folder_state(ws.folder) == ws.before


def test_sigterm_cancels_a_qgis_process_run(ws, out, tmp_path):
    """SIGTERM (a kill, a scheduler's time limit) acts like Cancel: exit code 1, no file."""
    exe, env = qgis_process_env(tmp_path)
    args = [exe, "run", C, "--"] + [f"{k}={v}" for k, v in
                                    classify(ws, out, VHR=ws.vhr, TILE_SIZE=8, OVERLAP=0).items()]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any("partial" in n for n in os.listdir(out)):
        time.sleep(0.05)
    assert any("partial" in n for n in os.listdir(out)), "the run never started writing"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output[-2000:]
    assert "cancel" in output.lower()
    check_untouched(ws, out)


def test_two_runs_for_one_output_never_race(ws, out):
    """The second of two runs writing the same output while the first is still working is
    refused when it comes to publish (no-clobber), and the first run's map is kept."""
    import processing
    from qgis.core import QgsProcessingException
    target = out / "map.tif"
    first = {}

    def progress_then_publish_elsewhere(feedback):
        # while this run works, "another run" publishes the same output
        def on_progress(value):
            if value > 50 and not target.exists():
                shutil.copy(ws.map, target)
                first["bytes"] = target.read_bytes()
        feedback.progressChanged.connect(on_progress)
        return feedback

    feedback = progress_then_publish_elsewhere(CollectingFeedback())
    with pytest.raises(QgsProcessingException) as err:
        processing.run(C, classify(ws, out), feedback=feedback)
    assert "appeared while this run was writing" in str(err.value)
    assert target.read_bytes() == first["bytes"]
    check_untouched(ws, out, ["map.tif"])


def test_bands_named_in_another_order_are_reordered(ws, out, tmp_path):
    """A VHR file described blue, green, red gives the same map as the same pixels in RGB
    order, and the log says how the bands were read."""
    import processing
    src = gdal.Open(ws.vhr)
    arr, gt, wkt = src.ReadAsArray()[:3], src.GetGeoTransform(), src.GetProjection()
    src = None
    rgb = _write(tmp_path / "rgb.tif", arr, gt, wkt, ["red", "green", "blue"],
                 dtype=gdal.GDT_Byte)
    bgr = _write(tmp_path / "bgr.tif", arr[::-1], gt, wkt, ["blue", "green", "red"],
                 dtype=gdal.GDT_Byte)
    a = processing.run(C, classify(ws, out, VHR=rgb, OUTPUT=str(out / "a.tif")),
                       feedback=CollectingFeedback())
    fb = CollectingFeedback()
    b = processing.run(C, classify(ws, out, VHR=bgr, OUTPUT=str(out / "b.tif")), feedback=fb)
    ra, rb = gdal.Open(a["OUTPUT"]), gdal.Open(b["OUTPUT"])
    assert np.array_equal(ra.ReadAsArray(), rb.ReadAsArray())
    assert any("bands 3, 2, 1" in m for m in fb.infos)


def test_cancel_acts_inside_a_tile_of_the_scene_model(ws, out):
    """Cancel is checked (and progress reported, with the cells done) after every small chunk
    of patches, not only between tiles: a big CNN on a slow CPU once held cancel back 68 s."""
    import processing
    from qgis.core import QgsProcessingException
    feedback = CollectingFeedback()
    feedback.progressChanged.connect(
        lambda v: feedback.cancel() if any(" cells" in t for t in feedback.texts) else None)
    with pytest.raises(QgsProcessingException) as err:
        processing.run(C, {"VHR": ws.vhr, "MODEL": "vhr-scenes-resnet",
                           "OUTPUT": str(out / "map.tif")}, feedback=feedback)
    assert "cancel" in str(err.value).lower()
    within = [t for t in feedback.texts if t.startswith("Tile 1 of") and " cells" in t]
    assert within, feedback.texts
    # it stopped within the first tile
    assert not any(t.startswith("Tile 2 of") for t in feedback.texts)
    check_untouched(ws, out)


def test_vrt_input_in_a_read_only_folder_is_left_as_it_is(ws, out, tmp_path):
    """A VRT is not rewritten with statistics, and a read-only input folder gives no GDAL
    warning about saving auxiliary information (nothing is saved beside inputs)."""
    import processing
    folder = tmp_path / "ro"
    folder.mkdir()
    vrt = str(folder / "s2.vrt")
    gdal.Translate(vrt, ws.s2, format="VRT")
    before = folder_state(folder)
    os.chmod(folder, 0o555)
    try:
        feedback = CollectingFeedback()
        processing.run(C, classify(ws, out, S2_SUMMER=vrt), feedback=feedback)
    finally:
        os.chmod(folder, 0o755)
    assert folder_state(folder) == before
    assert not any("auxiliary" in m.lower() for m in feedback.infos)
    assert (out / "map.tif").exists()


def test_full_disk_while_publishing_a_trained_model(ws, sample_city, small_disk):
    """Training on a disk without room for the model: a clear error after training, and
    neither the model nor its card, metrics or report, partial or otherwise, is left."""
    import processing
    from qgis.core import QgsProcessingException
    pytest.importorskip("torch", reason="training needs torch")
    from test_train_algorithm import gt_points
    labels = gt_points(sample_city.ground_truth, small_disk.parent / "points.gpkg", n=400)
    shutil.copy(ws.map, small_disk / "keep.tif")
    (small_disk / "keep.qml").write_text("<qgis><!-- my hand-made style --></qgis>")
    _fill(small_disk, 300000)
    with pytest.raises(QgsProcessingException) as err:
        processing.run(T, train(ws, small_disk, LABELS=labels, BASELINE=False, BLOCK_SIZE=600),
                       feedback=CollectingFeedback())
    assert "cannot write" in str(err.value).lower(), str(err.value)
    check_untouched(ws, small_disk, ["filler"])
