"""The bundled sample-city model (models/sample_city_fusion.onnx): file, card, graph and accuracy.

Retrain it with ``make train-sample`` (plugin/learning/train_sample.py).
"""
import json
import os

import numpy as np
import pytest

from plugin.core.classes import class_table
from plugin.core.model_card import METADATA_KEY, card_from_metadata, read_card

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "sample_city_fusion.onnx")
CARD_MD = os.path.join(ROOT, "models", "sample_city_fusion.md")
INPUTS = ("vhr", "ntl", "s2_spring", "s2_summer", "s2_autumn", "s2_winter")
S2_BANDS = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
SUBSETS = {
    "all": INPUTS,
    "vhr_only": ("vhr",),
    "ntl_only": ("ntl",),
    "s2_only": INPUTS[2:],
    "s2_winter_only": ("s2_winter",),
    "without_vhr": INPUTS[1:],
}


@pytest.fixture(scope="module")
def session():
    ort = pytest.importorskip("onnxruntime")
    assert os.path.isfile(MODEL), f"{MODEL} is missing: run `make train-sample`"
    return ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def card(session):
    return card_from_metadata(session.get_modelmeta().custom_metadata_map, MODEL)


def random_feed(cells, present=INPUTS, n=1, seed=0):
    """Random normalised inputs for ``cells`` x ``cells`` output cells; absent inputs are zero
    with mask 0, as the engine feeds them."""
    rng = np.random.default_rng(seed)
    shapes = {"vhr": (3, 5 * cells), "ntl": (1, cells // 4)}
    feed = {}
    for name in INPUTS:
        c, s = shapes.get(name, (10, cells))
        x = rng.normal(0, 1, (n, c, s, s)).astype(np.float32)
        feed[name] = x if name in present else np.zeros_like(x)
    mask = np.zeros((n, len(INPUTS), cells, cells), np.float32)
    for k, name in enumerate(INPUTS):
        if name in present:
            mask[:, k] = 1.0
    feed["valid"] = mask
    return feed


def test_file_is_small_and_card_is_in_metadata(session):
    assert os.path.getsize(MODEL) < 10e6
    meta = session.get_modelmeta().custom_metadata_map
    raw = json.loads(meta[METADATA_KEY])
    assert raw["name"] == "sample-city-fusion"
    assert "synthetic" in raw["summary"].lower()
    assert raw["licence"] == "GPL-2.0-or-later"
    assert read_card(MODEL).name == "sample-city-fusion"  # the engine's reader agrees


def test_card_declares_the_expected_inputs_and_output(card, session):
    assert [i.name for i in card.inputs] == list(INPUTS)
    assert list(card.modalities) == list(INPUTS)
    vhr, ntl = card.inputs[0], card.inputs[1]
    assert vhr.bands == ("red", "green", "blue") and vhr.gsd_m == 2.0 and vhr.dtype == "uint8"
    assert vhr.resampling == "average" and abs(vhr.scale - 1 / 255) < 1e-12
    assert ntl.bands == ("radiance",) and ntl.gsd_m == 40.0 and ntl.transform == "log1p"
    assert ntl.resampling == "bilinear"
    for spec in card.inputs[2:]:
        assert list(spec.bands) == S2_BANDS and spec.gsd_m == 10.0 and spec.scale == 1e-4
        assert spec.dtype == "uint16" and spec.resampling == "bilinear"
    for spec in card.inputs:  # statistics baked in from the training data, not the stand-in
        assert len(spec.mean) == spec.band_count and min(spec.std) > 0
        assert spec.std != (1.0,) * spec.band_count
    assert card.mask_input == "valid" and card.min_inputs == 1
    out = card.output
    assert out.name == "probabilities" and out.gsd_m == 10.0 and out.size_multiple == 4
    assert card.tile_multiple() == 4
    assert out.default_tile % 4 == 0 and out.default_overlap % 4 == 0
    assert 0 < out.context_cells <= 64
    assert [c.__dict__ for c in card.classes] == class_table()
    assert {i.name for i in session.get_inputs()} == set(INPUTS) | {"valid"}
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    raw = card.raw
    assert set(raw["metrics"]["subsets"]) >= {"all", "vhr_only", "s2_only", "ntl_only",
                                              "without_vhr"}
    for key in ("generator_seeds", "seed", "time_s", "hardware", "torch_version", "command"):
        assert key in raw["training"]


def test_markdown_card_matches_the_onnx_card(card):
    with open(CARD_MD, encoding="utf-8") as f:
        text = f.read()
    assert card.title in text and card.raw["version"] in text
    assert f"{card.raw['metrics']['subsets']['all']['overall_accuracy']:.3f}" in text


@pytest.mark.parametrize("cells", [32, 64, 96])
@pytest.mark.parametrize("subset", sorted(SUBSETS))
def test_runs_at_several_tile_sizes_and_input_subsets(session, cells, subset):
    feed = random_feed(cells, SUBSETS[subset], n=2, seed=cells)
    probs = session.run(["probabilities"], feed)[0]
    assert probs.shape == (2, 8, cells, cells) and probs.dtype == np.float32
    assert np.all(np.isfinite(probs)) and probs.min() >= 0
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_non_square_tile(session):
    feed = random_feed(64)
    feed = {k: v[..., : v.shape[-1] // 2] for k, v in feed.items()}  # 64 x 32 cells
    probs = session.run(["probabilities"], feed)[0]
    assert probs.shape == (1, 8, 64, 32)


def test_onnx_matches_torch(card):
    try:
        import torch
    except ImportError:
        pytest.skip("torch is not installed, so the ONNX-vs-torch parity cannot be checked "
                    "(the onnxruntime checks above ran); install the training extras "
                    "(torch) to run it")
    import onnxruntime as ort

    from plugin.learning.export import torch_net_from_onnx
    from plugin.learning.model import ProbabilityModel
    net = torch_net_from_onnx(MODEL, card.raw["architecture"]["config"])
    model = ProbabilityModel(net).eval()
    sess = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    for cells, subset in ((40, INPUTS), (72, ("vhr", "s2_summer")), (48, ("ntl",))):
        feed = random_feed(cells, subset, n=2, seed=cells)
        with torch.no_grad():
            ref = model(*[torch.from_numpy(feed[n]) for n in INPUTS + ("valid",)]).numpy()
        out = sess.run(["probabilities"], feed)[0]
        assert np.abs(out - ref).max() < 1e-4


def test_classifies_a_fresh_sample_city(tmp_path):
    """End to end through the engine: a small city the model never saw (seed 3)."""
    pytest.importorskip("onnxruntime")
    try:
        from plugin.samplecity import generate_sample_city
    except ImportError as exc:
        pytest.skip(f"the sample-city generator is not available ({exc})")
    from osgeo import gdal

    from plugin.core.engine import ClassifyRequest, run_classification
    from plugin.learning.data import warp_labels
    from plugin.learning.metrics import confusion_matrix, scores

    city = generate_sample_city(str(tmp_path / "city"), seed=3, size_m=1200.0)
    out = tmp_path / "map.tif"
    res = run_classification(ClassifyRequest(dict(city.inputs), MODEL, str(out)))
    ds = gdal.Open(str(out))
    pred = ds.GetRasterBand(1).ReadAsArray().astype(np.int64) - 1  # codes 1..8 -> 0..7
    ds = None
    truth = warp_labels(city.ground_truth, res.grid, res.card)
    s = scores(confusion_matrix(truth, np.maximum(pred, 0), 8),
               [c.name for c in res.card.classes])
    assert s["cells"] > 0.8 * truth.size
    assert s["overall_accuracy"] > 0.6, s
