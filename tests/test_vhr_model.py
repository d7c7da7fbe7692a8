"""The bundled VHR functional-zone model (``models/vhr_scenes_resnet.onnx``, ``make train-vhr``):
its card, ONNX/torch parity, that it is the default for VHR-only input, and that Processing's
``urbanfunctions:classify`` labels a georeferenced mosaic of real validation scenes correctly.

The scene images are third-party data read from ``<repo>/../shared/data/vhr_scenes`` (never
committed); the tests that need them are skipped with a reason when they are absent.
"""
import csv
import json
import math
import os

import numpy as np
import pytest
from osgeo import gdal, osr

from conftest import ROOT

MODEL = os.path.join(ROOT, "models", "vhr_scenes_resnet.onnx")
MODEL_MD = os.path.join(ROOT, "models", "vhr_scenes_resnet.md")
SPLIT = os.path.join(ROOT, "plugin", "learning", "vhr_split.csv")
SCENES = os.path.join(ROOT, "..", "shared", "data", "vhr_scenes")
CLASSES = ("residential", "commercial", "industrial", "transportation", "public_services",
           "green_space", "water", "agricultural_undeveloped")

needs_scenes = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SCENES, "manifest.csv")),
    reason="../shared/data/vhr_scenes (AID / UC Merced / RSSCN7 scene images, third-party data "
           "that is never committed) is not available in this checkout")


def needs_shared(test):
    return pytest.mark.shared(needs_scenes(test))


@pytest.fixture(scope="module")
def card():
    from plugin.core.model_card import read_card
    assert os.path.isfile(MODEL), f"bundled model missing: {MODEL}"
    return read_card(MODEL)


def test_card_declares_a_vhr_patch_classifier(card):
    from plugin.core.classes import class_table
    from plugin.core.model_card import parse_card
    parse_card(card.raw)  # the stored JSON validates on its own
    assert card.name == "vhr-scenes-resnet"
    assert card.task == "patch_classification"
    assert card.modalities == ("vhr",)
    assert card.raw["classes"] == class_table()
    (spec,) = card.inputs
    assert spec.bands == ("red", "green", "blue") and spec.dtype == "uint8"
    assert spec.resampling == "average" and spec.scale == pytest.approx(1 / 255)
    assert len(spec.mean) == 3 and all(0.2 < m < 0.6 for m in spec.mean)
    assert all(0.05 < s < 0.4 for s in spec.std)
    p = card.patch
    assert p.input == spec.onnx_input and p.gsd_m == spec.gsd_m
    assert p.window_lo + p.window_hi + 1 == p.stride_px, "the window is centred on the cell"
    assert card.output.gsd_m == pytest.approx(p.stride_px * p.gsd_m)
    # training and inference agree on scale: a training scene is one 96 px window, i.e. UC
    # Merced (256 px at 0.3 m) at 0.8 m, 0.56-1.08 m with the scale jitter (0.7-1.35)
    assert p.patch_px == 96 and 0.8 * 0.7 <= p.gsd_m <= 0.8 * 1.35
    assert card.raw["patch"]["window_ground_m"] == pytest.approx(p.patch_px * p.gsd_m)
    assert os.path.getsize(MODEL) <= 20e6
    # the graph runs its trunk once per tile; the card says so and names the pooling inputs
    assert p.trunk_stride == 32 and p.pool_inputs == ("pool_rows", "pool_cols")
    assert p.default_mode == "accurate" and card.onnx_inputs == {"vhr", "pool_rows", "pool_cols"}


def test_card_records_data_training_and_validation_metrics(card):
    raw = card.raw
    val = raw["metrics"]["validation"]
    for key in ("overall_accuracy", "kappa", "macro_f1", "per_class_f1", "confusion_matrix"):
        assert key in val
    assert set(val["per_class_f1"]) == set(CLASSES)
    cm = np.array(val["confusion_matrix"])
    assert cm.shape == (8, 8) and cm.sum() == val["images"]
    assert val["overall_accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-4)
    with open(SPLIT, newline="", encoding="utf-8") as f:
        split = list(csv.DictReader(f))
    assert {r["split"] for r in split} == {"train", "val"}
    assert all(r["path"].endswith(".jpg") and set(r) == {"path", "split"} for r in split)
    assert cm.sum() == sum(r["split"] == "val" for r in split)
    data = raw["data"]
    assert data["split"]["file"] == "plugin/learning/vhr_split.csv"
    assert {s["dataset"] for s in data["sources"]} == {"AID", "UCM", "RSSCN7"}
    assert all(s["citation"] and s["licence"] for s in data["sources"])
    assert set(raw["data_licences"]) == {"AID", "UCM", "RSSCN7"}
    training = raw["training"]
    for key in ("seed", "epochs", "time_s", "hardware", "device", "augmentation",
                "class_imbalance"):
        assert key in training
    assert "no pretrained" in training["from_scratch"]
    cross = raw["metrics"]["cross_source"]["runs"]
    assert {m["tested_on"] for m in cross.values()} == {"AID", "UCM", "RSSCN7"}
    arch = raw["architecture"]
    assert arch["config"]["feature_dim"] == 256 and arch["parameters"] > 0
    # the patch modes measured on the real validation mosaic: the default (accurate) is at
    # least 5x faster than window by window and not less accurate
    modes = raw["metrics"]["map_level"]["modes"]["runs"]
    assert set(modes) == {"fast", "accurate", "windows"}
    assert modes["windows"]["same_as_windows_labelled"] == 1.0
    assert modes["accurate"]["cells_per_s"] >= 5 * modes["windows"]["cells_per_s"]
    assert modes["accurate"]["overall_accuracy"] >= modes["windows"]["overall_accuracy"]


def test_markdown_card_is_generated_from_the_stored_card(card):
    from plugin.learning.vhr_card import card_markdown
    with open(MODEL_MD, encoding="utf-8") as f:
        assert f.read() == card_markdown(card.raw)


def test_onnx_gives_probabilities_and_matches_torch(card):
    """Windows classified one by one through the shared-trunk graph (the engine's ``windows``
    mode) are exactly the per-patch network with its test-time views."""
    import onnxruntime as ort
    from plugin.core.shared_trunk import classify_windows
    sess = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    p = card.patch
    assert p.trunk_stride == 32 and p.views == ("identity", "flip_x", "flip_y", "transpose")

    def run(feed):
        return sess.run([card.output.name], feed)[0]
    x = np.random.default_rng(0).normal(0, 1, (5, 3, p.patch_px, p.patch_px)).astype(np.float32)
    probs = classify_windows(run, p, x, p.views)
    assert probs.shape == (5, 8)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    one = classify_windows(run, p, x[2:3], p.views)
    assert np.allclose(one, probs[2:3], atol=1e-5), "batch size must not change results"
    torch = pytest.importorskip("torch", reason="torch is not installed (training extra): the "
                                "torch side of the parity check is skipped")
    from plugin.learning.vhr_export import torch_net_from_onnx
    from plugin.learning.vhr_model import ProbabilityNet
    views = card.raw["architecture"].get("test_time_views", ["identity"])
    net = ProbabilityNet(torch_net_from_onnx(MODEL, card.raw["architecture"]["config"]), views)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert np.abs(ref - probs).max() < 1e-4


def test_default_model_for_vhr_only_input_is_this_model(card):
    from plugin.core.models import default_model_for
    entry = default_model_for(["vhr"])
    assert entry.card.name == card.name and entry.bundled
    assert card.validated_on_real_data and "OA 0.927" in card.validation_summary()


# --- a mosaic of real validation scenes through Processing -------------------------------------
MOSAIC_GSD = 0.5          # metres per pixel of the test mosaic
SCENE_PX = 256            # each scene is shown at 256 px x 0.5 m = 128 m (about one model window)
BLOCK_SCENES = 3          # a block is 3 x 3 different scenes of one class: a 384 m "district"
# (function code, dataset) of the 3 x 3 blocks: every class and every source
BLOCKS = ((1, "UCM"), (2, "AID"), (3, "RSSCN7"), (4, "UCM"), (5, "AID"), (6, "RSSCN7"),
          (7, "AID"), (8, "UCM"), (1, "AID"))


def _load_scene(path):
    from PIL import Image
    with Image.open(os.path.join(SCENES, path)) as im:
        im = im.convert("RGB")
        if im.size != (SCENE_PX, SCENE_PX):
            im = im.resize((SCENE_PX, SCENE_PX), Image.BICUBIC)
        return np.asarray(im, np.uint8)


@pytest.fixture(scope="module")
def scene_mosaic(tmp_path_factory):
    """GeoTIFF (UTM 33N, 0.5 m, uint8 RGB) of 3 x 3 blocks; block k is a patchwork of 9
    validation-split scenes of class/dataset ``BLOCKS[k]`` drawn at random (seeded; a
    probability sample, not a selection by the model), so every window inside a block sees
    several real scenes of one function, as in a district. Returns (path, block classes, scene
    paths per block)."""
    with open(os.path.join(SCENES, "manifest.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(SPLIT, newline="", encoding="utf-8") as f:
        val = {r["path"] for r in csv.DictReader(f) if r["split"] == "val"}
    block = SCENE_PX * BLOCK_SCENES
    mosaic = np.zeros((3 * block, 3 * block, 3), np.uint8)
    chosen = []
    rng = np.random.default_rng(0)
    for k, (code, dataset) in enumerate(BLOCKS):
        pool = sorted(r["path"] for r in rows if r["path"] in val
                      and r["dataset"] == dataset and int(r["function_code"]) == code)
        assert len(pool) >= BLOCK_SCENES ** 2, f"too few validation scenes for {code} {dataset}"
        paths = [pool[i] for i in rng.choice(len(pool), BLOCK_SCENES ** 2, replace=False)]
        br, bc = divmod(k, 3)
        for j, scene in enumerate(paths):
            r, c = divmod(j, BLOCK_SCENES)
            y, x = br * block + r * SCENE_PX, bc * block + c * SCENE_PX
            mosaic[y:y + SCENE_PX, x:x + SCENE_PX] = _load_scene(scene)
        chosen.append(paths)
    path = str(tmp_path_factory.mktemp("vhr_mosaic") / "scenes_0p5m.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, mosaic.shape[1], mosaic.shape[0], 3,
                                              gdal.GDT_Byte, ["COMPRESS=DEFLATE"])
    ds.SetGeoTransform((500000.0, MOSAIC_GSD, 0, 5800000.0, 0, -MOSAIC_GSD))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(mosaic[:, :, b])
        ds.GetRasterBand(b + 1).SetColorInterpretation(gdal.GCI_RedBand + b)
    ds = None
    return path, [code for code, _ in BLOCKS], chosen


def _manifest(res):
    with open(res["MANIFEST"], encoding="utf-8") as f:
        return json.load(f)


def _block_scores(values, card, classes):
    """Share of the windows lying wholly inside each block that carry the block's class."""
    p = card.patch
    cell = card.output.gsd_m
    block_m = SCENE_PX * BLOCK_SCENES * MOSAIC_GSD
    half = p.patch_px * p.gsd_m / 2
    centres = (np.arange(values.shape[0]) + 0.5) * cell
    shares = []
    for k, code in enumerate(classes):
        r, c = divmod(k, 3)
        rows = np.flatnonzero((centres - half >= r * block_m) & (centres + half <= (r + 1) * block_m))
        cols = np.flatnonzero((centres - half >= c * block_m) & (centres + half <= (c + 1) * block_m))
        inner = values[np.ix_(rows, cols)]
        assert inner.size >= 25
        shares.append(float((inner == code).mean()))
    return shares


@pytest.mark.qgis
@needs_shared
def test_processing_classifies_a_mosaic_of_real_scenes(provider, scene_mosaic, card, tmp_path):
    import processing
    path, classes, chosen = scene_mosaic
    out = tmp_path / "functions.tif"
    res = processing.run("urbanfunctions:classify",
                         {"VHR": path, "MODEL": card.name, "OUTPUT": str(out)})
    assert _manifest(res)["model"]["name"] == card.name
    ds = gdal.Open(str(out))
    assert ds.GetGeoTransform()[1] == pytest.approx(card.output.gsd_m)
    values = ds.GetRasterBand(1).ReadAsArray()
    ds = None
    mosaic_m = 3 * SCENE_PX * BLOCK_SCENES * MOSAIC_GSD
    assert values.shape == (math.ceil(mosaic_m / card.output.gsd_m - 1e-9),) * 2
    assert (values > 0).all()
    shares = _block_scores(values, card, classes)
    report = ", ".join(f"{CLASSES[c - 1]} ({os.path.basename(p[0])}..) {s:.0%}"
                       for c, p, s in zip(classes, chosen, shares))
    print(f"\nwindows labelled with their block's class: {report}; mean {np.mean(shares):.0%}")
    assert min(shares) > 0.5, f"windows inside each scene labelled with its class: {report}"
    assert np.mean(shares) > 0.75, report


@needs_shared
def test_patch_modes_on_the_mosaic_of_real_scenes(scene_mosaic, card, tmp_path):
    """The shared trunk (accurate, the default; fast) against window by window on real scenes
    of all three sources: the default is not less accurate than the per-window network."""
    from plugin.core.engine import ClassifyRequest, run_classification
    path, classes, _ = scene_mosaic
    mean_share, maps = {}, {}
    for mode in ("windows", "accurate", "fast"):
        res = run_classification(ClassifyRequest({"vhr": path}, MODEL,
                                                 str(tmp_path / f"{mode}.tif"), inference_mode=mode))
        ds = gdal.Open(res.output_path)
        maps[mode] = ds.GetRasterBand(1).ReadAsArray()
        ds = None
        mean_share[mode] = float(np.mean(_block_scores(maps[mode], card, classes)))
    same = {m: float((maps[m] == maps["windows"]).mean()) for m in ("accurate", "fast")}
    print(f"\nmean share of windows with their district's class: {mean_share}; same class as "
          f"the windows map: {same}")
    assert mean_share["accurate"] >= mean_share["windows"] - 0.01
    assert mean_share["fast"] > 0.75 and min(same.values()) > 0.65


@pytest.mark.qgis
@needs_shared
def test_processing_picks_this_model_for_vhr_only_input(provider, scene_mosaic, card, tmp_path):
    import processing
    path, _, _ = scene_mosaic
    res = processing.run("urbanfunctions:classify", {"VHR": path, "OUTPUT": str(tmp_path / "o.tif")})
    assert _manifest(res)["model"]["name"] == card.name, "the VHR-only model is the default"


@needs_shared
@pytest.mark.parametrize("gsd", [0.3, 2.0])
def test_other_ground_resolutions_give_the_same_map(scene_mosaic, card, tmp_path, gsd):
    """The card fixes the model's ground size; the engine resamples any VHR onto it, so the
    same scenes delivered at 0.3 m or 2 m (bilinear / average resampled copies of the 0.5 m
    mosaic) are mapped like the 0.5 m original."""
    from plugin.core.engine import ClassifyRequest, run_classification
    path, classes, _ = scene_mosaic
    other = str(tmp_path / f"mosaic_{gsd:g}m.tif")
    gdal.Warp(other, path, xRes=gsd, yRes=gsd, resampleAlg="average" if gsd > MOSAIC_GSD
              else "bilinear", creationOptions=["COMPRESS=DEFLATE"])
    maps = {}
    for name, src in (("base", path), ("other", other)):
        res = run_classification(ClassifyRequest({"vhr": src}, MODEL, str(tmp_path / f"{name}.tif")))
        ds = gdal.Open(res.output_path)
        maps[name] = ds.GetRasterBand(1).ReadAsArray()
        ds = None
    assert maps["base"].shape == maps["other"].shape
    agreement = float((maps["base"] == maps["other"]).mean())
    shares = _block_scores(maps["other"], card, classes)
    print(f"\n{gsd:g} m: {agreement:.1%} of cells as at 0.5 m; block shares "
          + " ".join(f"{v:.0%}" for v in shares))
    assert agreement > 0.8, f"{gsd} m map agrees with the 0.5 m map on {agreement:.0%} of cells"
    assert np.mean(shares) > 0.75, f"windows labelled with their block's class at {gsd} m: {shares}"
