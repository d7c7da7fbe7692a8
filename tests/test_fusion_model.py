"""The bundled fusion model (``models/urban_fusion.onnx``, ``make train-fusion``): its card,
ONNX/torch parity for every input subset, that it is the default whenever night light or
Sentinel-2 is given, and that the engine runs it on real rasters in mixed CRSs with its
built-up and input-weight outputs (the sample city: six of its seven inputs)."""
import os

import numpy as np
import pytest
from osgeo import gdal

from conftest import ROOT

MODEL = os.path.join(ROOT, "models", "urban_fusion.onnx")
MODEL_MD = os.path.join(ROOT, "models", "urban_fusion.md")
GATES = ("VHR", "Night-time light", "Sentinel-2", "Temporal signature")


@pytest.fixture(scope="module")
def card():
    from plugin.core.model_card import read_card
    assert os.path.isfile(MODEL), f"bundled model missing: {MODEL}"
    return read_card(MODEL)


def test_card_declares_seven_inputs_and_graph_outputs(card):
    from plugin.core.model_card import MODALITIES
    assert card.name == "urban-fusion" and card.task == "segmentation"
    assert card.purpose == "general"
    assert card.modalities == MODALITIES
    assert card.mask_input == "valid"
    outs = {d.name: d for d in card.graph_outputs}
    assert set(outs) == {"built_up", "gates"}
    assert outs["gates"].optional and outs["gates"].style == "weights"
    assert tuple(outs["gates"].bands) == GATES
    assert not outs["built_up"].optional and outs["built_up"].style == "fraction"
    metrics = card.raw["metrics"]
    assert "all" in str(metrics) and os.path.getsize(MODEL) < 20e6
    assert "simulated" in (card.raw["limitations"] + card.raw["summary"]).lower()


def test_vhr_stream_started_from_the_real_data_vhr_encoder(card):
    """Issue 6: the VHR trunk is the stem and first two stages of the bundled VHR scene
    classifier (its hash recorded), fed with that classifier's normalisation."""
    pytest.importorskip("onnx")
    from plugin.core.model_card import read_card
    from plugin.learning.onnx_io import weights_sha256
    arch = card.raw["architecture"]
    assert arch["config"]["vhr_encoder"] == "scene_resnet"
    init = arch["vhr_init"]
    vhr_file = os.path.join(ROOT, init["file"])
    # the weights' identity (the file's own hash changes when only its card is edited)
    assert init["weights_sha256"] == weights_sha256(vhr_file)
    assert len(init["sha256"]) == 64
    vhr_spec = read_card(vhr_file).raw["inputs"][0]
    spec = [s for s in card.raw["inputs"] if s["name"] == "vhr"][0]
    assert np.allclose(spec["mean"], vhr_spec["mean"], atol=1e-6)
    assert np.allclose(spec["std"], vhr_spec["std"], atol=1e-6)
    assert card.output.size_multiple == 8 and card.tile_multiple() == 8
    assert "vhr_scenes_resnet" in card.raw["provenance"]


def test_card_reports_the_misregistration_test(card):
    mis = card.raw["metrics"]["ntl_misregistration"]
    assert set(mis) == {"0px", "2px"}
    for res in mis.values():
        assert set(res) == {"all", "vhr_ntl"}
        assert all(0 < r["miou"] <= 1 for r in res.values())


def test_markdown_card_is_generated_from_the_stored_card(card):
    from plugin.learning.fusion.card import card_markdown
    with open(MODEL_MD, encoding="utf-8") as f:
        assert f.read() == card_markdown(card.raw)


def test_fusion_model_is_never_the_default_for_real_layers(card):
    """Trained on simulated night light / Sentinel-2 / temporal signatures: its card says
    "simulation only", and classify never picks it by default for a user's layers; for inputs
    no validated model accepts, the message says how to get one."""
    from plugin.core.errors import ModelError
    from plugin.core.models import default_model_for
    assert card.validation_status == "simulation_only"
    assert card.validation_summary().startswith("Warning")
    for inputs in (["vhr", "ntl"], ["ntl"], ["s2_summer"], ["vhr", "s2_spring", "s2_autumn"],
                   ["temporal"]):
        with pytest.raises(ModelError, match="validated on real data") as err:
            default_model_for(inputs)
        assert "So2Sat" in str(err.value) and "Train" in str(err.value), inputs
    assert default_model_for(["vhr"]).card.name == "vhr-scenes-resnet"


def test_onnx_matches_torch_for_every_input_subset(card):
    torch = pytest.importorskip("torch", reason="torch is not installed (training extra)")
    import onnxruntime as ort
    torch.set_num_threads(1)
    from plugin.learning.fusion.export import OUTPUT_NAMES, parity_subsets
    from plugin.learning.fusion.net import (INPUT_NAMES, FusionProbabilityModel, UrbanFusionNet,
                                            example_inputs)
    from plugin.learning.onnx_io import torch_net_from_onnx
    config = card.raw["architecture"]["config"]
    net = torch_net_from_onnx(MODEL, UrbanFusionNet, config)
    model = FusionProbabilityModel(net).eval()
    sess = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    worst = 0.0
    for k, (name, present) in enumerate(parity_subsets()):
        x = example_inputs(1, 24, 40, seed=k, present=present, config=config)
        with torch.no_grad():
            ref = [t.numpy() for t in model(*x)]
        out = sess.run(list(OUTPUT_NAMES), {n: t.numpy() for n, t in zip(INPUT_NAMES, x)})
        worst = max(worst, max(float(np.abs(r - o).max()) for r, o in zip(ref, out)))
        gates = out[2][0]
        assert np.allclose(gates.sum(axis=0), 1.0, atol=1e-4), name
    assert worst < 1e-4


def _read(path):
    ds = gdal.Open(path)
    arr = ds.ReadAsArray()
    ds = None
    return arr


def test_engine_runs_it_on_the_sample_city_with_built_up_and_weights(card, sample_city, tmp_path):
    from plugin.core.engine import ClassifyRequest, run_classification
    inputs = dict(sample_city.inputs)
    res = run_classification(ClassifyRequest(inputs, MODEL, str(tmp_path / "all.tif"),
                                             optional_outputs=True))
    assert set(res.extra_outputs) == {"built_up", "gates"}
    classes = _read(res.output_path)
    valid = classes > 0
    assert valid.mean() > 0.9
    built = _read(res.extra_outputs["built_up"])
    assert np.nanmin(built) >= 0 and np.nanmax(built) <= 1
    gates = _read(res.extra_outputs["gates"])
    assert gates.shape[0] == 4
    assert np.allclose(gates[:, valid].sum(axis=0), 1.0, atol=1e-3)
    assert np.abs(gates[3, valid]).max() < 1e-6, "no temporal input: its weight is 0"
    # built-up cells (residential, commercial, industrial) have more built-up than open land
    built_classes = np.isin(classes, [1, 2, 3])
    open_classes = np.isin(classes, [6, 7, 8])
    if built_classes.any() and open_classes.any():
        assert np.nanmean(built[built_classes]) > np.nanmean(built[open_classes])

    # a subset: VHR and night light only; Sentinel-2 gets no weight
    sub = run_classification(ClassifyRequest({"vhr": inputs["vhr"], "ntl": inputs["ntl"]}, MODEL,
                                             str(tmp_path / "vn.tif"), optional_outputs=True))
    g2 = _read(sub.extra_outputs["gates"])
    v2 = _read(sub.output_path) > 0
    assert np.abs(g2[2:, v2]).max() < 1e-6
    assert np.allclose(g2[:2, v2].sum(axis=0), 1.0, atol=1e-3)
