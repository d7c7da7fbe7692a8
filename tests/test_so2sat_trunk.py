"""The So2Sat LCZ42 convolutions as the fusion network's Sentinel-2 stream (training row c):
loaded from the ONNX file the importer installs, they compute what the So2Sat model computes;
the fusion network built with them exports and runs as a user model."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (training extra)")
pytest.importorskip("onnx")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H5 = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "so2sat",
                                   "S2_RESNET20_BS16_LR2e-4_IN32-32-10_PRO-52-0R12_2019-06-27.h5"))
needs_h5 = pytest.mark.skipif(not os.path.isfile(H5), reason=f"So2Sat weights absent ({H5}; "
                              "never part of the repository)")


@pytest.fixture(scope="module")
def so2sat_onnx(tmp_path_factory):
    from plugin.lcz.importer import import_so2sat_weights
    return import_so2sat_weights(H5, str(tmp_path_factory.mktemp("so2sat")))


@needs_h5
def test_trunk_reproduces_the_so2sat_network(so2sat_onnx):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from plugin.learning.fusion.so2sat_trunk import So2SatTrunk
    trunk = So2SatTrunk().eval()
    assert trunk.load_onnx(so2sat_onnx) == 572_528      # every weight but the dense layer
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(so2sat_onnx).graph.initializer}
    x = np.random.default_rng(0).uniform(0, 0.4, (3, 10, 32, 32)).astype(np.float32)
    with torch.no_grad():
        feats = trunk(torch.from_numpy(x))
    assert feats.shape == (3, 256, 8, 8)                 # 40 m features on a 10 m tile
    logits = feats.mean(dim=(2, 3)).numpy() @ inits["dense_1.kernel"] + inits["dense_1.bias"]
    sess = ort.InferenceSession(so2sat_onnx, providers=["CPUExecutionProvider"])
    ref = sess.run(["logits"], {sess.get_inputs()[0].name: x})[0]
    assert np.abs(ref - logits).max() < 5e-4


@needs_h5
def test_fusion_net_with_the_so2sat_stream_exports_with_parity(so2sat_onnx, tmp_path):
    from plugin.core.model_card import read_card
    from plugin.learning.fusion.net import UrbanFusionNet
    from plugin.learning.onnx_io import load_matching_weights
    from plugin.learning.user_training import BASE_DEFAULT, export_checkpoint
    config = dict(read_card(BASE_DEFAULT).raw["architecture"]["config"], s2_encoder="so2sat")
    net = UrbanFusionNet(**config)
    copied, skipped = load_matching_weights(net, BASE_DEFAULT)
    assert copied and all(k.startswith(("s2_trunk.", "s2_proj.", "season_embedding"))
                          for k in skipped), skipped[:5]
    net.s2_trunk.load_onnx(so2sat_onnx)
    ckpt = tmp_path / "m.pt"
    torch.save({"config": net.config, "present": ["s2_summer", "s2_winter"],
                "state_dict": net.state_dict()}, ckpt)
    summary = export_checkpoint(str(ckpt), str(tmp_path / "m.onnx"))
    assert summary["parity_max_abs_diff"] < 1e-4


@needs_h5
def test_a_model_from_the_so2sat_trunk_is_compared_with_so2sat_as_imported(so2sat_onnx,
                                                                            sample_city,
                                                                            tmp_path):
    """The untrained start of the So2Sat-trunk model is So2Sat itself: the run scores the
    imported model's own map (LCZ summed per function) on the held-out cells, so even without
    the RandomForest the model is compared with something before it can be a default."""
    from test_train_algorithm import gt_points

    from plugin.core.model_card import read_card
    from plugin.learning.labels import read_label_file
    from plugin.learning.map_scores import classify_on_grid, score
    from plugin.learning.user_training import BASE_DEFAULT, TrainRequest, prepare, run_training
    labels = read_label_file(gt_points(sample_city.ground_truth, tmp_path / "pts.gpkg",
                                       n=1500), "function")
    inputs = {"s2_summer": sample_city.inputs["s2_summer"]}
    request = TrainRequest(inputs=inputs, labels=labels, output_path=str(tmp_path / "m.onnx"),
                           s2_trunk=so2sat_onnx, epochs=1, baseline=False)
    result = run_training(request)
    comparisons = result.metrics["comparisons"]
    assert list(comparisons) == ["untrained_base"]
    assert comparisons["untrained_base"]["model"].startswith("So2Sat LCZ42 as imported")
    assert any(m.startswith("So2Sat LCZ42 as imported") for m in result.messages)
    # the figure is So2Sat's map through classify on exactly the held-out cells
    prep = prepare(request, read_card(BASE_DEFAULT), inputs, lambda m: None)
    (tmp_path / "check").mkdir()
    expect = score(prep.split.validation, classify_on_grid(
        so2sat_onnx, inputs, prep.grid, str(tmp_path / "check"), None))
    assert comparisons["untrained_base"]["overall_accuracy"] == pytest.approx(
        expect["overall_accuracy"])
    assert result.metrics["holds_up"] == (result.metrics["validation"]["overall_accuracy"] >=
                                          expect["overall_accuracy"])
